"""Batch predict and evaluate: outputs, CSVs, bad files skipped, nothing overwritten silently.

The predictor here is a stand-in with a known, exact rule (bright connected regions are vertebrae) so the
tests check the batch machinery and the metric bookkeeping, not a model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from cervkit.data.table import manifest_from_records
from cervkit.evaluation import metrics
from cervkit.evaluation.evaluate import evaluate_predictor, write_evaluation
from cervkit.inference.cascade import CascadePrediction
from cervkit.inference.predict import collect_inputs, predict_files
from cervkit.labels.instances import boxes_from_labels, relabel_top_to_bottom

REPO = Path(__file__).resolve().parents[1]


class BrightRegions:
    """Label map = connected components of image > 0.5, numbered top to bottom; optional shift."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift
        self.calls = 0

    def predict(self, image: np.ndarray) -> CascadePrediction:
        self.calls += 1
        labels = relabel_top_to_bottom(ndimage.label(np.roll(image > 0.5, self.shift, axis=0))[0].astype(np.uint8))
        boxes = boxes_from_labels(labels)
        n = len(boxes)
        return CascadePrediction(labels, boxes, np.ones(n, np.float32), np.ones(n, np.float32),
                                 np.zeros(n, np.int64), n)


def _scene(n: int, shape: tuple[int, int] = (60, 40)) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    for k in range(n):
        image[5 + 15 * k:15 + 15 * k, 10:30] = 1.0
        labels[5 + 15 * k:15 + 15 * k, 10:30] = k + 1
    return image, labels


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (array * 255).astype(np.uint8) if array.dtype != np.uint8 else array
    PILImage.fromarray(data).save(path)
    return path


def test_predict_batch_skips_bad_files_and_never_overwrites(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    _png(inputs / "a.png", _scene(3)[0])
    _png(inputs / "sub" / "b.png", _scene(2, (50, 70))[0])
    _png(inputs / "other" / "a.png", _scene(1)[0])               # same stem as a.png
    (inputs / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    (inputs / "notes.txt").write_text("not an image")            # ignored: not an image suffix
    files = collect_inputs([inputs, tmp_path / "missing.png"])
    assert len(files) == 5 and files[-1].name == "missing.png"

    out = tmp_path / "out"
    table = predict_files(BrightRegions(), [inputs, tmp_path / "missing.png"], out, progress=False)
    assert list(table.columns)[:2] == ["file", "output_stem"]
    assert {"n_vertebrae", "seconds", "status", "error", "confidence", "patient_id"} <= set(table.columns)
    ok, failed = table[table.status == "ok"], table[table.status == "failed"]
    assert len(ok) == 3 and len(failed) == 2
    assert all(("broken.dcm" in e) or ("missing.png" in e) for e in failed.error)
    assert sorted(ok.output_stem) == ["a", "a_2", "b"]
    assert sorted(ok.n_vertebrae.astype(int)) == [1, 2, 3]
    mask_b = np.array(PILImage.open(out / "b_mask.png"))
    assert mask_b.shape == (50, 70) and mask_b.max() == 2          # same size as its input
    assert np.array(PILImage.open(out / "b_overlay.png")).shape == (50, 70, 3)
    assert pd.read_csv(out / "predictions.csv").shape[0] == 5

    before = (out / "a_mask.png").read_bytes()
    with pytest.raises(FileExistsError):
        predict_files(BrightRegions(shift=3), [inputs], out, progress=False)
    assert (out / "a_mask.png").read_bytes() == before
    again = predict_files(BrightRegions(shift=3), [inputs], out, overwrite=True, progress=False)
    assert (again.status == "ok").sum() == 3 and (out / "a_mask.png").read_bytes() != before


def _manifest(tmp_path: Path, with_split: bool):
    records = []
    for i, n in enumerate([3, 2, 3, 1]):
        image, labels = _scene(n)
        _png(tmp_path / "images" / f"{i}.png", image)
        _png(tmp_path / "masks" / f"{i}.png", labels)
        row = {"image": f"images/{i}.png", "mask": f"masks/{i}.png", "patient_id": f"p{i}", "modality": "XR",
               "pixel_spacing_mm": 0.5}
        if with_split:
            row["split"] = ["train", "val", "test", "test"][i]
        records.append(row)
    return manifest_from_records(records, tmp_path)


def test_evaluate_tables_match_direct_metrics(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, with_split=True)
    evaluation = evaluate_predictor(BrightRegions(shift=2), manifest, split="test", progress=False, n_boot=200)
    assert len(evaluation.images) == 2
    for _, row in evaluation.images.iterrows():
        image = np.array(PILImage.open(row["image"])) / 255.0
        gt = np.array(PILImage.open(row["image"].replace("images", "masks")))
        pred = BrightRegions(shift=2).predict(image).labels
        assert row["dice"] == pytest.approx(metrics.dice(pred > 0, gt > 0))
        assert row["hd_mm"] == pytest.approx(2 * 0.5)               # 2-row shift at 0.5 mm
    for column in ("dice", "iou", "ppv", "sensitivity", "hd", "hd95", "seconds"):
        assert column in evaluation.images.columns
    assert len(evaluation.vertebrae) == 3 + 1                      # every ground-truth vertebra has a row
    summary = evaluation.summary.set_index("metric")
    assert summary.loc["dice", "mean"] == pytest.approx(evaluation.images["dice"].mean())
    assert summary.loc["dice", "ci_low"] <= summary.loc["dice", "mean"] <= summary.loc["dice", "ci_high"]
    out = write_evaluation(evaluation, tmp_path / "eval")
    assert {p.name for p in out.iterdir()} == {"images.csv", "vertebrae.csv", "summary.csv"}
    with pytest.raises(FileExistsError):
        write_evaluation(evaluation, tmp_path / "eval")


def test_evaluate_without_split_uses_every_row(tmp_path: Path) -> None:
    evaluation = evaluate_predictor(BrightRegions(), _manifest(tmp_path, with_split=False), split="test",
                                    progress=False, n_boot=100)
    assert len(evaluation.images) == 4 and (evaluation.images["dice"] == 1.0).all()


def test_cli_predict_rejects_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cervkit", "predict", "--model", str(tmp_path), "--out",
                           str(tmp_path / "o"), str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "not a run folder" in proc.stderr and "Traceback" not in proc.stderr
