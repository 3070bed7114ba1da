"""`cervkit train --resume RUN`: a new run that starts from RUN's weights; RUN stays byte-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cervkit.core.errors import CervkitInputError


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A quick X-ray-phantom cascade run (``old``) and MRI phantoms standing in for corrected images."""
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.training.train import train_run

    root = tmp_path_factory.mktemp("finetune")
    mp = pytest.MonkeyPatch()
    mp.setenv("CERVKIT_OUTPUTS", str(root / "outputs"))
    source = write_phantom_dataset(root / "xray", 8, size=(96, 96), seed=5)
    ensure_split(source, root / "split.csv", ratios=(0.5, 0.25, 0.25))
    old = train_run(root / "split.csv", root / "old", quick=True, imgsz=64, device="cpu", validate=False,
                    detector_options={"epochs": 1, "input_norm": "equalize"}, segmenter_options={"epochs": 1})
    corrected = write_phantom_dataset(root / "mri", 8, size=(96, 96), seed=9, style="mri")
    yield {"root": root, "old": old, "corrected": corrected}
    mp.undo()


@pytest.fixture(scope="module")
def resumed(work: dict[str, Path]) -> dict[str, object]:
    """Fine-tune ``old`` on the corrected set through the command line; digests of ``old`` before and after."""
    from cervkit.cli.main import main

    before = _digests(work["old"])
    new = work["root"] / "new"
    status = main(["train", "--manifest", str(work["corrected"]), "--out", str(new), "--resume", str(work["old"]),
                   "--quick", "--device", "cpu", "--no-amp"])
    return {"status": status, "new": new, "before": before, "after": _digests(work["old"])}


def test_resumed_run_loads_and_old_run_is_untouched(work: dict[str, Path], resumed: dict) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image
    from cervkit.runs.folder import read_run_info

    assert resumed["status"] == 0
    assert resumed["after"] == resumed["before"], "the resumed run's files must stay byte-identical"
    new = resumed["new"]
    info, old_info = read_run_info(new), read_run_info(work["old"])
    assert info["status"] == "done" and info["model"] == "yolo-unet"
    record = info["resumed_from"]
    assert Path(record["path"]) == work["old"].resolve()
    assert record["created"] == old_info["created"] and record["model"] == old_info["model"]
    for stage, marker in (("detector", "detector/weights/best.pt"), ("segmenter", "segmenter/model.pt")):
        assert record["weights"][stage] == {"file": marker, "sha256": resumed["before"][marker]}
    assert info["detector_classes"]["classes"] == "levels" and not info["detector_classes"]["reheaded"]
    # --no-amp reached both stages (each trainer's own default would be AMP on CUDA)
    assert yaml.safe_load((new / "detector" / "args.yaml").read_text())["amp"] is False
    seg_config = json.loads((new / "segmenter" / "config.json").read_text())
    assert seg_config["arguments"]["amp"] is False and seg_config["amp"]["enabled"] is False
    corrected = load_manifest(new / "split.csv")
    image = read_image(corrected.image_path(0)).array
    prediction = load_predictor(new, device="cpu").predict(image)
    assert prediction.labels.shape == image.shape and prediction.labels.dtype == np.uint8


def test_first_epoch_starts_from_the_old_weights(work: dict[str, Path], resumed: dict) -> None:
    from ultralytics.nn.tasks import load_checkpoint as load_yolo

    from cervkit.models.factory import load_checkpoint
    from cervkit.training.finetune import state_checksum

    old, new = work["old"], resumed["new"]
    det_new = json.loads((new / "detector" / "config.json").read_text())
    det_old = json.loads((old / "detector" / "config.json").read_text())
    yolo_old, _ = load_yolo(old / "detector" / "weights" / "best.pt")
    assert det_new["init"]["state_sha256"] == state_checksum(yolo_old.state_dict())
    assert det_new["init"]["weights_sha256"] == resumed["before"]["detector/weights/best.pt"]
    assert det_old["init"]["state_sha256"] != det_new["init"]["state_sha256"], "not a fresh initialisation"
    assert det_new["arguments"]["imgsz"] == det_old["arguments"]["imgsz"] == 64, "image size taken from RUN"
    assert det_new["arguments"]["input_norm"] == "equalize", "input normalisation taken from RUN"

    seg_new = json.loads((new / "segmenter" / "config.json").read_text())
    seg_old = json.loads((old / "segmenter" / "config.json").read_text())
    old_net, _ = load_checkpoint(old / "segmenter" / "model.pt")
    new_net, _ = load_checkpoint(new / "segmenter" / "model.pt")
    assert seg_new["init"]["state_sha256"] == state_checksum(old_net.state_dict())
    assert seg_old["init"]["state_sha256"] != seg_new["init"]["state_sha256"], "not a fresh initialisation"
    assert state_checksum(new_net.state_dict()) != state_checksum(old_net.state_dict()), "it did train"
    assert new_net.build_config == old_net.build_config


def test_fine_tuning_budget_is_smaller(work: dict[str, Path], resumed: dict) -> None:
    from cervkit.training.finetune import FINETUNE_SEGMENTER

    seg_new = json.loads((resumed["new"] / "segmenter" / "config.json").read_text())["arguments"]
    seg_old = json.loads((work["old"] / "segmenter" / "config.json").read_text())["arguments"]
    assert seg_new["lr"] == FINETUNE_SEGMENTER["lr"] < seg_old["lr"]
    yolo_args = json.loads((resumed["new"] / "detector" / "config.json").read_text())["ultralytics_args"]
    assert yolo_args["optimizer"] == "AdamW" and yolo_args["lr0"] < 1e-3 and yolo_args["warmup_epochs"] == 0


def test_conflicts_are_named_before_anything_is_written(work: dict[str, Path], tmp_path: Path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.data.table import save_manifest
    from cervkit.training.train import train_run

    old, corrected = work["old"], work["corrected"]
    cases = [({"out": old / "again"}, "never changes the old one"),
             ({"model": "unet3plus"}, "conflicts with the resumed run, a yolo-unet run"),
             ({"imgsz": 96}, "imgsz=64"),
             ({"detector_options": {"input_norm": "none"}}, "input_norm='equalize'"),
             ({"segmenter_options": {"crop_size": 32}}, "crop_size=64")]
    for kwargs, message in cases:
        out = kwargs.pop("out", tmp_path / "run")
        with pytest.raises(CervkitInputError, match=message):
            train_run(corrected, out, resume=old, quick=True, device="cpu", **kwargs)
        assert not out.exists(), "a refused fine-tune writes nothing"
    five = load_manifest(corrected)
    path = save_manifest(five.with_df(five.df.assign(n_vertebrae=5, levels="")), tmp_path / "five.csv")
    with pytest.raises(CervkitInputError, match=r"one class per level \(6: C2.*5 vertebrae.*re-head"):
        train_run(path, tmp_path / "run", resume=old, quick=True, device="cpu")
    assert not (tmp_path / "run").exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    info = json.loads((old / "run.json").read_text()) | {"status": "training"}
    (unfinished / "run.json").write_text(json.dumps(info))
    with pytest.raises(CervkitInputError, match="status is 'training'"):
        train_run(corrected, tmp_path / "run2", resume=unfinished, quick=True)


def test_explicit_classes_re_head_the_detector(work: dict[str, Path], tmp_path: Path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.data.split import split_by_patient
    from cervkit.data.table import save_manifest
    from cervkit.training.finetune import load_resume_source, plan_stages

    five = load_manifest(work["corrected"])
    path = save_manifest(five.with_df(five.df.assign(n_vertebrae=5, levels="")), tmp_path / "five.csv")
    split = split_by_patient(load_manifest(path, check_files=False))
    source = load_resume_source(work["old"])
    single = plan_stages(source, split, detector_classes="single")
    assert single["detector_classes"] == {"classes": "single", "level_names": None, "reheaded": True}
    assert single["detector"]["weights"] == str(work["old"] / "detector" / "weights" / "best.pt")
    levels = plan_stages(source, split, detector_classes="levels")
    assert levels["detector_classes"]["reheaded"] and len(levels["detector_classes"]["level_names"]) == 5
    same = plan_stages(source, load_manifest(work["old"] / "split.csv"), detector_classes="levels")
    assert not same["detector_classes"]["reheaded"]


def test_whole_image_baseline_resumes(work: dict[str, Path], tmp_path: Path) -> None:
    from cervkit.inference.registry import load_predictor
    from cervkit.models.factory import load_checkpoint
    from cervkit.runs.folder import read_run_info
    from cervkit.training.finetune import state_checksum
    from cervkit.training.train import train_run

    options = {"epochs": 1, "encoder_name": "mobilenet_v2"}
    old = train_run(work["root"] / "split.csv", tmp_path / "old", model="unet3plus", quick=True, imgsz=64,
                    device="cpu", segmenter_options=options, validate=False)
    before = _digests(old)
    new = train_run(work["corrected"], tmp_path / "new", resume=old, quick=True, device="cpu", validate=False,
                    segmenter_options={"epochs": 1})
    assert _digests(old) == before
    config = json.loads((new / "model" / "config.json").read_text())
    old_net, _ = load_checkpoint(old / "model" / "model.pt")
    assert config["init"]["state_sha256"] == state_checksum(old_net.state_dict())
    assert config["arguments"]["size"] == 64 and read_run_info(new)["model"] == "unet3plus"
    assert load_predictor(new, device="cpu").predict(np.zeros((80, 96), np.float32)).labels.shape == (80, 96)


def test_state_checksum_follows_values_not_order_or_precision() -> None:
    from cervkit.training.finetune import state_checksum

    a = {"w": torch.tensor([0.5, -1.25]), "b": torch.tensor([2.0]), "n": torch.tensor(3)}
    b = {"b": torch.tensor([2.0], dtype=torch.float16), "w": torch.tensor([0.5, -1.25]), "n": torch.tensor(7)}
    assert state_checksum(a) == state_checksum(b)
    assert state_checksum(a) != state_checksum({**a, "w": torch.tensor([0.5, -1.0])})
