"""`cervkit train` for the paper's cascade: one run folder with both stages, loadable, per-level by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset

    root = tmp_path_factory.mktemp("train")
    path = write_phantom_dataset(root / "ph", 8, size=(96, 96), seed=5)
    ensure_split(path, root / "split.csv", ratios=(0.5, 0.25, 0.25))
    return root / "split.csv"


def test_yolo_unet_run_is_complete_and_per_level(phantoms: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.inference.cascade import Cascade, CascadePrediction
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image
    from cervkit.runs.folder import read_run_info
    from cervkit.training.train import train_run

    monkeypatch.setenv("CERVKIT_OUTPUTS", str(tmp_path / "outputs"))
    run = train_run(phantoms, tmp_path / "run", quick=True, imgsz=64, device="cpu")
    info = read_run_info(run)
    assert info["status"] == "done" and info["stages"] == {"detector": "detector", "segmenter": "segmenter",
                                                           "anchor": "anchor"}  # phantoms annotate C2
    assert info["detector_classes"] == {"classes": "levels", "level_names": ["C2", "C3", "C4", "C5", "C6", "C7"]}
    # every stage's cap in force and stop reason (quick mode: 2 epochs, well within the CPU default caps)
    assert {s: (v["stop_reason"], v["epochs_run"]) for s, v in info["limits"].items()} == {
        "detector": ("epochs_done", 2), "segmenter": ("epochs_done", 2)}
    assert info["limits"]["detector"]["max_minutes"] == 15.0 and info["limits"]["segmenter"]["max_minutes"] == 12.0
    assert (run / "split.csv").is_file() and (run / "validation" / "images.csv").is_file()
    predictor = load_predictor(run, device="cpu")
    assert isinstance(predictor, Cascade) and predictor.one_per_class
    image = read_image(load_manifest(phantoms).image_path(0)).array
    pred = predictor.predict(image)
    assert isinstance(pred, CascadePrediction) and pred.labels.shape == image.shape
    assert len(set(pred.classes.tolist())) == len(pred.classes), "at most one body per level"
    assert pred.labels.dtype == np.uint8


def test_levels_refused_when_masks_cover_different_ranges(phantoms: Path, tmp_path: Path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.data.table import save_manifest
    from cervkit.training.train import train_run

    manifest = load_manifest(phantoms)
    df = manifest.df.assign(levels="")
    df.loc[df.index[df["split"] == "train"][0], "n_vertebrae"] = 5   # one training mask misses a level
    uneven = manifest.with_df(df)
    path = save_manifest(uneven, tmp_path / "uneven.csv")
    with pytest.raises(CervkitInputError, match="same number of vertebrae"):
        train_run(path, tmp_path / "run", quick=True, detector_classes="levels")


def test_a_run_trained_again_on_another_split_records_the_new_split(phantoms: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from cervkit.data.manifest import load_manifest, same_split
    from cervkit.data.table import save_manifest
    from cervkit.training.train import train_run

    monkeypatch.setenv("CERVKIT_OUTPUTS", str(tmp_path / "outputs"))
    full = load_manifest(phantoms)
    run = train_run(phantoms, tmp_path / "run", quick=True, imgsz=64, device="cpu", validate=False,
                    detector_classes="single")
    assert same_split(load_manifest(run / "split.csv", validate=False), full)
    keep = [p for p in full.patients() if p in set(full.df.loc[full.df["split"] == "train", "patient_id"])][:1]
    keep += list(full.df.loc[full.df["split"] == "val", "patient_id"].unique()[:1])
    smaller = save_manifest(full.subset(patients=keep), tmp_path / "smaller.csv")
    train_run(smaller, run, quick=True, imgsz=64, device="cpu", validate=False, detector_classes="single",
              overwrite=True)
    recorded = load_manifest(run / "split.csv", validate=False)
    assert same_split(recorded, load_manifest(smaller)) and len(recorded) < len(full), "not the old run's split"
