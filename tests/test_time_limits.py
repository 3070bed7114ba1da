"""Honest training limits: every stage's wall-clock cap is explicit, printed, and recorded with why it stopped.

These fail if a cap were hidden again: a default cap on CUDA, a cap missing from ``config.json`` or ``run.json``,
a stop reason that does not match what happened, or ``train --max-minutes`` missing.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.training.limits import (
    AUTO,
    EpochLimits,
    YoloStopWatch,
    describe_limits,
    parse_max_minutes,
    resolve_max_minutes,
    stage_max_minutes,
)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Four small MRI phantoms split 2:1:1 by patient (a Manifest)."""
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset

    root = tmp_path_factory.mktemp("limits")
    data = write_phantom_dataset(root / "ph", 4, style="mri", size=(96, 96), n_patients=4)
    return ensure_split(data / "manifest.csv" if data.is_dir() else data, root / "split.csv",
                        ratios=(0.5, 0.25, 0.25))


def _train_segmenter(split: Any, run: Path, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    from cervkit.training.segmenter import train_segmenter

    result = train_segmenter(split, run, crop_size=64, batch_size=8, cat_channels=8, quick=False, device="cpu",
                             **kwargs)
    return result, json.loads(result.config_json.read_text())


# --- the crop segmenter's own loop ----------------------------------------------------------------------------

def test_segmenter_time_cap_is_printed_and_recorded(split: Any, tmp_path: Path, one_thread: object,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    result, config = _train_segmenter(split, tmp_path / "run", epochs=3, max_minutes=0.0001)
    assert result.stop_reason == "time_cap" and result.epochs_run == 1 and result.max_minutes == 0.0001
    assert config["limits"] == {"epochs": 3, "patience": 30, "max_minutes": 0.0001, "max_minutes_source": "given",
                                "stop_reason": "time_cap", "epochs_run": 1}
    assert "segmenter: at most 3 epochs, patience 30, time cap 0.0001 min" in capsys.readouterr().out


def test_segmenter_without_cap_runs_every_epoch(split: Any, tmp_path: Path, one_thread: object,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    result, config = _train_segmenter(split, tmp_path / "run", epochs=2, max_minutes=None)
    assert result.stop_reason == "epochs_done" and result.epochs_run == 2
    assert config["limits"]["max_minutes"] is None and config["limits"]["stop_reason"] == "epochs_done"
    assert "segmenter: at most 2 epochs, patience 30, no time cap" in capsys.readouterr().out


def test_segmenter_default_cap_on_cpu_is_open(split: Any, tmp_path: Path, one_thread: object,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cervkit.training.segmenter import CPU_MAX_MINUTES

    result, config = _train_segmenter(split, tmp_path / "run", epochs=1)
    assert config["arguments"]["max_minutes"] == AUTO
    assert config["limits"]["max_minutes"] == result.max_minutes == CPU_MAX_MINUTES
    assert config["limits"]["max_minutes_source"] == "cpu_default"
    assert (f"time cap {CPU_MAX_MINUTES:g} min (CPU default; --max-minutes to change)"
            in capsys.readouterr().out)


def test_segmenter_early_stop_is_recorded(split: Any, tmp_path: Path, one_thread: object,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cervkit.training import segmenter

    monkeypatch.setattr(segmenter, "evaluate_crops", lambda *args: (0.5, 0.6))  # never improves after epoch 1
    result, config = _train_segmenter(split, tmp_path / "run", epochs=5, patience=1, max_minutes=None)
    assert result.stop_reason == "early_stop" and result.epochs_run == 2 and result.best_epoch == 1
    assert config["limits"]["stop_reason"] == "early_stop" and config["limits"]["epochs_run"] == 2


def test_whole_image_records_its_stop(split: Any, tmp_path: Path, one_thread: object) -> None:
    from cervkit.training.whole_image import train_whole_image

    result = train_whole_image(split, tmp_path / "run", model="deeplabv3plus", size=32, epochs=4,
                               max_minutes=0.0, quick=False, device="cpu")
    limits = json.loads(result.config_json.read_text())["limits"]
    assert result.stop_reason == limits["stop_reason"] == "time_cap" and limits["epochs_run"] == 1
    assert limits["max_minutes"] == 0.0


def test_epoch_limits_reasons() -> None:
    rule = EpochLimits(epochs=3, patience=2, max_minutes=None)
    assert not rule.stop_after(1, 1) and not rule.stop_after(2, 1)
    assert rule.stop_after(3, 1) and rule.stop_reason == "epochs_done"  # the last epoch is not an early stop
    rule = EpochLimits(epochs=10, patience=2, max_minutes=None)
    assert rule.stop_after(3, 1) and rule.stop_reason == "early_stop"
    rule = EpochLimits(epochs=10, patience=5, max_minutes=0.0)
    assert rule.stop_after(1, 1) and rule.stop_reason == "time_cap"


# --- no default cap on CUDA -----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cuda", "cuda:1", "0", 0, "0,1"])
def test_auto_means_no_cap_on_cuda(device: Any) -> None:
    import torch

    for spelling in (device, torch.device("cuda") if device == "cuda" else device):
        assert resolve_max_minutes(AUTO, 12.0, spelling) == (None, "cuda_default")
    assert resolve_max_minutes(20, 12.0, device) == (20.0, "given")  # an explicit cap still holds on CUDA
    assert resolve_max_minutes(AUTO, 12.0, "cpu") == (12.0, "cpu_default")
    assert resolve_max_minutes(None, 12.0, "cpu") == (None, "given")


def test_every_trainer_defaults_to_auto_and_is_uncapped_on_a_mocked_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from cervkit.core import device
    from cervkit.training.detector import train_detector
    from cervkit.training.segmenter import train_segmenter
    from cervkit.training.whole_image import train_whole_image
    from cervkit.training.yolo_seg import train_yolo_seg

    monkeypatch.setattr(device, "cuda_available", lambda: True)
    for trainer, default_device in ((train_segmenter, device.resolve_device(None)),
                                    (train_whole_image, device.resolve_device(None)),
                                    (train_detector, device.ultralytics_device(None)),
                                    (train_yolo_seg, device.ultralytics_device(None))):
        params = inspect.signature(trainer).parameters
        assert params["max_minutes"].default == AUTO, trainer.__name__
        cpu_cap = params["cpu_max_minutes"].default
        assert cpu_cap is not None and cpu_cap > 0, trainer.__name__  # the CPU default is a real, open cap
        assert resolve_max_minutes(AUTO, cpu_cap, default_device) == (None, "cuda_default"), trainer.__name__


def test_fine_tune_budget_caps_cpu_only() -> None:
    from cervkit.training.finetune import (
        FINETUNE_DETECTOR,
        FINETUNE_SEGMENTER,
        FINETUNE_WHOLE_IMAGE,
    )

    for budget in (FINETUNE_DETECTOR, FINETUNE_SEGMENTER, FINETUNE_WHOLE_IMAGE):
        assert "max_minutes" not in budget  # a fixed cap here would cut a GPU fine-tune too


def test_limits_line_says_where_the_cap_comes_from() -> None:
    assert describe_limits("segmenter", 100, 30, 12.0, "cpu_default") == (
        "segmenter: at most 100 epochs, patience 30, time cap 12 min (CPU default; --max-minutes to change)")
    assert describe_limits("detector", 200, 20, None, "cuda_default").startswith(
        "detector: at most 200 epochs, patience 20, no time cap")
    assert describe_limits("detector", 200, 20, 20.0, "given") == "detector: at most 200 epochs, patience 20, " \
                                                                    "time cap 20 min"


# --- ultralytics stages ---------------------------------------------------------------------------------------

def _trainer(epoch: int, epochs: int, stopper: Any) -> SimpleNamespace:
    return SimpleNamespace(epoch=epoch, epochs=epochs, stopper=stopper, stop=False, args=SimpleNamespace(time=None))


def test_yolo_watch_tells_early_stop_from_epochs_done_and_time_cap() -> None:
    from cervkit.core.ultralytics_env import import_ultralytics

    import_ultralytics()
    from ultralytics.utils.torch_utils import EarlyStopping

    stopper = EarlyStopping(patience=2)
    assert not stopper(1, 0.5) and not stopper(2, 0.4) and stopper(3, 0.4)  # ultralytics' own rule stops at 3
    watch = YoloStopWatch(None)
    for epoch in range(3):  # ultralytics' trainer.epoch is 0-based
        watch(_trainer(epoch, 10, stopper))
    assert watch.stop_reason == "early_stop" and watch.epoch == 3
    watch(_trainer(3, 10, stopper))  # the final validation of best.pt runs the callbacks once more
    assert watch.reason(3, 10) == "early_stop"

    watch, trainer = YoloStopWatch(None), _trainer(1, 2, EarlyStopping(patience=20))
    watch(trainer)
    assert watch.stop_reason == "epochs_done" and not trainer.stop

    watch, trainer = YoloStopWatch(0.0), _trainer(0, 5, EarlyStopping(patience=20))
    watch(trainer)
    assert watch.stop_reason == "time_cap" and trainer.stop, "the cap stops the trainer"
    assert YoloStopWatch(None).reason(5, 5) == "epochs_done"


def test_detector_time_cap_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.training.detector import train_detector

    data = write_phantom_dataset(tmp_path / "ph", 4, size=(96, 96), seed=5, n_patients=4)
    split = ensure_split(data, tmp_path / "split.csv", ratios=(0.5, 0.25, 0.25))
    run = train_detector(split, tmp_path / "run", epochs=4, imgsz=64, batch=4, device="cpu", quick=False,
                         max_minutes=1e-4)
    limits = json.loads(run.config_json.read_text())["limits"]
    assert run.stop_reason == limits["stop_reason"] == "time_cap" and run.epochs_run == limits["epochs_run"] == 1
    assert limits["max_minutes"] == 1e-4 and limits["epochs"] == 4 and limits["patience"] == 20
    assert "detector: at most 4 epochs, patience 20, time cap 0.0001 min" in capsys.readouterr().out


# --- train_run and the command line ---------------------------------------------------------------------------

def test_parse_max_minutes() -> None:
    assert parse_max_minutes("30") == 30.0 and parse_max_minutes("none") is None and parse_max_minutes("auto") == AUTO
    assert parse_max_minutes("detector=20,segmenter=none") == {"detector": 20.0, "segmenter": None}
    for bad in ("abc", "-1", "detector=20,detector=3", "=5", "detector=soon"):
        with pytest.raises(ValueError):
            parse_max_minutes(bad)
    assert stage_max_minutes({"detector": 20.0}, "segmenter", ("detector", "segmenter")) == AUTO
    with pytest.raises(CervkitInputError, match="this run's stages are model"):
        stage_max_minutes({"detector": 20.0}, "model", ("model",))


def test_cli_help_lists_max_minutes_and_refuses_a_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    from cervkit.cli.main import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-minutes" in text and "detector=20,segmenter=none" in text and "time_cap" in text
    args = parser.parse_args(["train", "--manifest", "m.csv", "--out", "r", "--max-minutes", "detector=20"])
    assert args.max_minutes == {"detector": 20.0}
    assert parser.parse_args(["train", "--manifest", "m.csv", "--out", "r"]).max_minutes == AUTO
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--manifest", "m.csv", "--out", "r", "--max-minutes", "soon"])
    assert "not a number of minutes" in capsys.readouterr().err


def test_train_run_passes_caps_and_records_limits(split: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in trainers: train_run hands each stage its own cap (none injected under "auto"), run.json lists them."""
    from cervkit.runs.folder import read_run_info
    from cervkit.training import detector, segmenter
    from cervkit.training.train import train_run

    seen: dict[str, dict[str, Any]] = {}

    def fake(stage: str, reason: str) -> Any:
        def trainer(manifest: Any, run_dir: Path, **kwargs: Any) -> SimpleNamespace:
            seen[stage] = kwargs
            folder = Path(run_dir) / stage
            folder.mkdir(parents=True, exist_ok=True)
            cap = kwargs.get("max_minutes", AUTO)
            limits = {"epochs": 3, "patience": 1, "max_minutes": None if cap == AUTO else cap,
                      "max_minutes_source": "cuda_default" if cap == AUTO else "given", "stop_reason": reason,
                      "epochs_run": 2}
            (folder / "config.json").write_text(json.dumps({"limits": limits}))
            return SimpleNamespace(config_json=folder / "config.json")
        return trainer

    monkeypatch.setattr(detector, "train_detector", fake("detector", "early_stop"))
    monkeypatch.setattr(segmenter, "train_segmenter", fake("segmenter", "time_cap"))
    run = train_run(split.path, tmp_path / "run", quick=True, device="cpu", validate=False,
                    max_minutes={"segmenter": 5})
    assert "max_minutes" not in seen["detector"] and seen["segmenter"]["max_minutes"] == 5.0
    info = read_run_info(run)
    assert info["arguments"]["max_minutes"] == {"segmenter": 5}
    assert {s: (v["stop_reason"], v["max_minutes"]) for s, v in info["limits"].items()} == {
        "detector": ("early_stop", None), "segmenter": ("time_cap", 5.0)}

    run = train_run(split.path, tmp_path / "run2", quick=True, device="cpu", validate=False, max_minutes=None)
    assert seen["detector"]["max_minutes"] is None and seen["segmenter"]["max_minutes"] is None
    with pytest.raises(CervkitInputError, match="max-minutes names model"):
        train_run(split.path, tmp_path / "run3", quick=True, validate=False, max_minutes={"model": 3})
    assert not (tmp_path / "run3").exists(), "refused before anything is written"
