"""The paper's comparison models: whole-image U-Net3+ / DeepLabV3+ and YOLO-seg as `cervkit train` models.

Conversion helpers are checked on synthetic arrays with exact answers; the trainers with tiny quick runs on
phantoms (the models learn nothing in two epochs, so those tests check the run folder, the loading and the
output contract, not accuracy — benchmarks/bench_baselines.py measures accuracy on real data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from cervkit.core.errors import CervkitInputError
from cervkit.inference.cascade import CascadePrediction
from cervkit.inference.whole_image import (
    WholeImageModel,
    prepare_image,
    prob_to_instances,
)
from cervkit.inference.yolo_seg import masks_to_labels
from cervkit.labels.instances import boxes_from_labels
from cervkit.training.whole_image import WholeImageDataset

REPO = Path(__file__).resolve().parents[1]


def _rows_increase(labels: np.ndarray) -> bool:
    """Instances 1..K have strictly increasing centroid rows (top to bottom)."""
    k = int(labels.max())
    if k < 2:
        return True
    rows = [c[0] for c in ndimage.center_of_mass(np.ones(labels.shape), labels, range(1, k + 1))]
    return bool(np.all(np.diff(rows) > 0))


# --- conversion helpers, exact answers -------------------------------------------------------------------

def test_prob_to_instances_components_islands_and_order() -> None:
    prob = np.zeros((40, 30), np.float32)
    prob[20:30, 5:15] = 0.9          # lower block (100 px)
    prob[2:10, 5:15] = 0.7           # upper block (80 px)
    prob[2:10, 15:25] = 0.5          # touches the upper block but sits exactly at the threshold: background
    prob[35:37, 25:27] = 0.95        # island of 4 px
    prob[12:16, 20:24] = 0.8         # 16 px block ...
    prob[16:20, 24:28] = 0.6         # ... touching the one above only diagonally: separate with 4-connectivity
    labels, mean_prob, n = prob_to_instances(prob, threshold=0.5, min_area=10)
    assert labels.dtype == np.uint8 and labels.shape == prob.shape
    assert n == 5 and labels.max() == 4
    assert np.array_equal(labels == 1, prob == 0.7)
    assert np.array_equal(labels == 2, prob == 0.8)
    assert np.array_equal(labels == 3, prob == 0.6)
    assert np.array_equal(labels == 4, prob == 0.9)
    np.testing.assert_allclose(mean_prob, [0.7, 0.8, 0.6, 0.9], rtol=1e-6)
    # 8-connectivity merges the diagonal pair; min_fraction drops what is small next to the largest
    labels8, mean8, _ = prob_to_instances(prob, min_area=10, connectivity=2)
    assert labels8.max() == 3 and np.isclose(mean8[1], (16 * 0.8 + 16 * 0.6) / 32)
    labels_f, _, _ = prob_to_instances(prob, min_area=1, min_fraction=0.5)
    assert labels_f.max() == 2  # only the 80 and 100 px blocks reach half of 100 px
    empty, mean_e, n_e = prob_to_instances(np.zeros((5, 5)))
    assert empty.max() == 0 and mean_e.shape == (0,) and n_e == 0


def test_masks_to_labels_resolves_overlaps_by_score() -> None:
    shape = (30, 20)
    low = np.zeros(shape, bool)
    low[15:25, 2:12] = True          # bottom, score 0.9
    high = np.zeros(shape, bool)
    high[5:18, 2:12] = True          # top, overlaps rows 15..17 of `low`, score 0.6
    covered = np.zeros(shape, bool)
    covered[6:8, 3:5] = True         # inside `high`, score 0.3: loses everything, vanishes
    sliver = np.zeros(shape, bool)
    sliver[20:27, 11:13] = True      # mostly under `low` (score 0.9 wins there): 9 px of its own, dropped
    labels, kept = masks_to_labels(np.stack([low, high, covered, sliver]), [0.9, 0.6, 0.3, 0.5], min_area=10)
    assert labels.dtype == np.uint8 and labels.max() == 2
    assert kept == [1, 0]                               # label 1 = `high` (top), label 2 = `low`
    assert np.array_equal(labels == 2, low)             # the overlap rows 15..17 went to the higher score
    assert np.array_equal(labels == 1, high & ~low)
    assert _rows_increase(labels)
    # with equal scores the earlier mask wins the overlap
    labels_eq, kept_eq = masks_to_labels([high, low], [0.5, 0.5], min_area=1)
    assert kept_eq == [0, 1] and np.array_equal(labels_eq == 1, high)
    with pytest.raises(CervkitInputError):
        masks_to_labels([], [])


# --- whole-image data and inference -----------------------------------------------------------------------

def _scene(shape: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full(shape, 0.2, np.float32)
    labels = np.zeros(shape, np.uint8)
    height = shape[0] // (n + 1)
    for k in range(n):
        r0 = height // 2 + k * height + 2
        image[r0:r0 + height - 4, shape[1] // 4:3 * shape[1] // 4] = 0.9
        labels[r0:r0 + height - 4, shape[1] // 4:3 * shape[1] // 4] = k + 1
    return image, labels


def test_dataset_items_and_determinism() -> None:
    image, labels = _scene((90, 70), 4)
    val = WholeImageDataset([(image, labels)], size=32, augment=False)
    x, y = val.arrays(0)
    assert x.shape == y.shape == (32, 32) and x.dtype == y.dtype == np.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    assert set(np.unique(y)) == {0.0, 1.0}
    rows = np.minimum(((np.arange(32) + 0.5) * 90 / 32).astype(int), 89)
    cols = np.minimum(((np.arange(32) + 0.5) * 70 / 32).astype(int), 69)
    assert np.array_equal(y > 0, (labels > 0)[rows[:, None], cols[None, :]])  # nearest resize of "any vertebra"
    np.testing.assert_allclose(x, prepare_image(image, 32))                   # the inference code path
    train = WholeImageDataset([(image, labels)], size=32, augment=True, seed=5)
    a = [train.arrays(0)[0] for _ in range(2)]
    train.set_epoch(1)
    b = train.arrays(0)[0]
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b)
    tensor_x, tensor_y = train[0]
    assert tuple(tensor_x.shape) == tuple(tensor_y.shape) == (1, 32, 32)


class _Bright(torch.nn.Module):
    """Stand-in network: logit +8 where the normalised input is above 0.5, -8 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0.5, 8.0, -8.0)


def test_whole_image_predict_maps_back_to_input_size() -> None:
    image, labels = _scene((150, 90), 5)
    pred = WholeImageModel(_Bright(), size=64, device="cpu").predict(image)
    assert isinstance(pred, CascadePrediction)
    assert pred.labels.shape == image.shape and pred.labels.dtype == np.uint8
    assert pred.n_vertebrae == 5 == pred.labels.max() and _rows_increase(pred.labels)
    for k in range(1, 6):  # each instance is the k-th rectangle up to the resize round trip
        inter = np.sum((pred.labels == k) & (labels == k))
        union = np.sum((pred.labels == k) | (labels == k))
        assert inter / union > 0.85
    np.testing.assert_array_equal(pred.boxes, boxes_from_labels(pred.labels))
    assert np.all(pred.scores > 0.9) and np.array_equal(pred.scores, pred.mean_prob)
    assert pred.classes.dtype == np.int64 and not pred.classes.any()


def test_recalibrate_batchnorm_averages_the_loader() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from cervkit.training.whole_image import recalibrate_batchnorm

    net = torch.nn.Sequential(torch.nn.BatchNorm2d(1))
    data = torch.arange(4 * 1 * 3 * 3, dtype=torch.float32).reshape(4, 1, 3, 3) * 0.5 + 2.0
    loader = DataLoader(TensorDataset(data, torch.zeros(4)), batch_size=2)  # equal batches
    assert recalibrate_batchnorm(net, loader, torch.device("cpu")) == 1
    bn = net[0]
    assert not net.training and bn.momentum == 0.1
    np.testing.assert_allclose(bn.running_mean.numpy(), [float(data.mean())], rtol=1e-6)
    batch_vars = [float(data[i:i + 2].var(unbiased=True)) for i in (0, 2)]
    np.testing.assert_allclose(bn.running_var.numpy(), [np.mean(batch_vars)], rtol=1e-5)


# --- training into run folders ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small X-ray phantoms with a patient-level split (path of the split manifest)."""
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset

    root = tmp_path_factory.mktemp("baselines")
    path = write_phantom_dataset(root / "ph", 8, size=(96, 96), seed=3)
    ensure_split(path, root / "split.csv", ratios=(0.5, 0.25, 0.25))
    return root / "split.csv"


@pytest.mark.parametrize("model", ["unet3plus", "deeplabv3plus", "yolo-seg"])
def test_train_run_writes_a_loadable_run(model: str, phantoms: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image
    from cervkit.runs.folder import read_run_info
    from cervkit.training.train import train_run

    monkeypatch.setenv("CERVKIT_OUTPUTS", str(tmp_path / "outputs"))
    run = train_run(phantoms, tmp_path / "run", model=model, quick=True, imgsz=64, device="cpu")
    info = read_run_info(run)
    assert info["model"] == model and info["status"] == "done" and info["stages"] == {"model": "model"}
    assert "model" in info["train_seconds"] and "dice" in info["validation"]
    stage = run / "model"
    assert (stage / "config.json").is_file() and (stage / "curves.png").is_file()
    if model == "yolo-seg":
        assert (stage / "weights" / "best.pt").is_file() and (stage / "results.csv").is_file()
        assert not (run / "yolo11n-seg").exists()
    else:
        assert (stage / "model.pt").is_file()
        history = pd.read_csv(stage / "history.csv")
        assert list(history["epoch"]) == [1, 2]  # quick mode: two epochs
        assert json.loads((stage / "config.json").read_text())["arguments"]["size"] == 64
    predictor = load_predictor(run, device="cpu")
    image = read_image(load_manifest(phantoms).image_path(0)).array[:, 5:]  # non-square input
    pred = predictor.predict(image)
    assert isinstance(pred, CascadePrediction)
    assert pred.labels.shape == image.shape and pred.labels.dtype == np.uint8
    k = int(pred.labels.max())
    assert pred.boxes.shape == (k, 4) and pred.scores.shape == (k,) and pred.classes.shape == (k,)
    assert sorted(np.unique(pred.labels[pred.labels > 0])) == list(range(1, k + 1)) and _rows_increase(pred.labels)
    with pytest.raises(FileExistsError):
        train_run(phantoms, run, model=model, quick=True, imgsz=64, device="cpu")


def test_yolo_seg_dataset_polygons_match_masks(phantoms: Path, tmp_path: Path) -> None:
    from cervkit.io.images import read_mask
    from cervkit.labels.yolo import read_yolo_seg_labels
    from cervkit.training.yolo_seg import build_yolo_seg_dataset

    data_yaml = build_yolo_seg_dataset(phantoms, tmp_path / "data")
    sources = pd.read_csv(data_yaml.parent / "sources.csv")
    assert set(sources["split"]) == {"train", "val"}
    for _, row in sources.iterrows():
        gt = read_mask(row["mask"])
        back, classes = read_yolo_seg_labels(data_yaml.parent / "labels" / row["split"] / f"{row['name']}.txt",
                                             gt.shape)
        assert back.max() == len(np.unique(gt[gt > 0])) and not classes.any()
        inter, union = np.sum((back > 0) & (gt > 0)), np.sum((back > 0) | (gt > 0))
        assert inter / union > 0.9


def test_time_cap_and_foreign_checkpoint(phantoms: Path, tmp_path: Path) -> None:
    from cervkit.models.factory import build_segmentation_model, save_checkpoint
    from cervkit.training.whole_image import train_whole_image

    result = train_whole_image(phantoms, tmp_path / "run", model="deeplabv3plus", size=32, epochs=5,
                               max_minutes=0.0, quick=False, device="cpu")
    assert result.epochs_run == 1 and result.best_epoch == 1 and result.stop_reason == "time_cap"
    assert WholeImageModel.load(tmp_path / "run", device="cpu").size == 32
    foreign = save_checkpoint(tmp_path / "crop.pt", build_segmentation_model("deeplabv3plus"), {"crop_size": 64})
    with pytest.raises(CervkitInputError, match="not a whole-image checkpoint"):
        WholeImageModel.load(foreign, device="cpu")


def test_cli_train_and_predict(phantoms: Path, tmp_path: Path) -> None:
    from cervkit.data.manifest import load_manifest

    env = {**os.environ, "CERVKIT_OUTPUTS": str(tmp_path / "outputs"),  # this checkout, whatever is installed
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run, out = tmp_path / "run", tmp_path / "pred"
    subprocess.run([sys.executable, "-m", "cervkit", "train", "--manifest", str(phantoms), "--out", str(run),
                    "--model", "deeplabv3plus", "--quick", "--imgsz", "64", "--device", "cpu", "--no-amp"],
                   check=True, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["arguments"]["amp"] is False and config["amp"] == {"enabled": False, "dtype": "float32",
                                                                     "loss_scaling": False, "steps": 2,
                                                                     "skipped_steps": 0, "final_scale": None}
    image = load_manifest(phantoms).image_path(0)
    proc = subprocess.run([sys.executable, "-m", "cervkit", "predict", "--model", str(run), "--out", str(out),
                           "--device", "cpu", str(image)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image as PILImage

    mask = np.array(PILImage.open(out / f"{image.stem}_mask.png"))
    assert mask.shape == np.array(PILImage.open(image)).shape[:2]
    assert len(pd.read_csv(out / "predictions.csv")) == 1
