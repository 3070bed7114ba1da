"""Stage-2 crop segmenter: crop dataset, training run folder, reload, batched crop inference, geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cervkit.inference.segmenter import CropPrediction, Segmenter
from cervkit.io.resize import resize
from cervkit.labels.crops import crop_window, normalise_crop
from cervkit.labels.instances import boxes_from_labels, paste_crop
from cervkit.training.crop_dataset import CropDataset


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[np.ndarray, np.ndarray]]:
    from cervkit.data.synth.phantom import make_phantom

    return [(p.image, p.labels) for p in (make_phantom("mri", seed=s, size=(128, 128)) for s in range(3))]


def test_crop_dataset_shapes_and_items(phantoms) -> None:
    ds = CropDataset(phantoms, crop_size=48, seed=1)
    assert len(ds) == sum(int(lab.max()) for _, lab in phantoms)
    image, target = ds[len(ds) - 1]
    assert image.shape == target.shape == (1, 48, 48)
    assert image.dtype == target.dtype == torch.float32
    assert set(torch.unique(target).tolist()) <= {0.0, 1.0} and target.sum() > 0
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std(unbiased=False)) - 1) < 1e-3


def test_target_is_only_vertebra_k(phantoms) -> None:
    ds = CropDataset(phantoms, crop_size=64, augment=False, jitter=0.1, margin=0.4, seed=0)
    saw_neighbour = False
    for index in range(len(ds)):
        s = ds.sample(index)
        labels = phantoms[s.image_index][1]
        x0, y0, x1, y1 = s.int_box
        window = resize(labels[y0:y1, x0:x1], (64, 64), nearest=True)
        np.testing.assert_array_equal(s.target, (window == s.label).astype(np.float32))
        others = (window > 0) & (window != s.label)
        saw_neighbour |= bool(others.any())
        assert not s.target[others].any()
    assert saw_neighbour, "with a 0.4 margin some crops must show a neighbour (as background)"


def test_jitter_keeps_the_whole_vertebra_inside(phantoms) -> None:
    ds = CropDataset(phantoms, crop_size=32, augment=False, jitter=0.1, margin=0.15, seed=3)
    windows = set()
    for epoch in range(15):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            s = ds.sample(index)
            bx0, by0, bx1, by1 = boxes_from_labels((phantoms[s.image_index][1] == s.label).astype(np.uint8))[0]
            x0, y0, x1, y1 = s.int_box
            assert x0 <= bx0 and y0 <= by0 and x1 >= bx1 and y1 >= by1
            windows.add((index, s.int_box))
    assert len(windows) > 3 * len(ds), "jitter must move the windows between epochs"


def test_items_are_deterministic_per_seed_and_epoch(phantoms) -> None:
    a = CropDataset(phantoms, crop_size=48, seed=5)
    b = CropDataset(phantoms, crop_size=48, seed=5)
    order = list(range(len(a)))
    first = {i: a.sample(i) for i in order}
    for i in reversed(order):  # another access order, another instance: same items
        s = b.sample(i)
        np.testing.assert_array_equal(s.image, first[i].image)
        np.testing.assert_array_equal(s.target, first[i].target)
    b.set_epoch(1)
    assert any(not np.array_equal(b.sample(i).image, first[i].image) for i in order)
    c = CropDataset(phantoms, crop_size=48, seed=6)
    assert any(not np.array_equal(c.sample(i).image, first[i].image) for i in order)


class _Stub(torch.nn.Module):
    """Logits = 8 × the normalised input: bright squares become foreground (geometry test only)."""

    build_config = {"name": "stub"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * x


def test_inference_crops_match_training_crops(phantoms) -> None:
    image, labels = phantoms[0]
    ds = CropDataset(phantoms[:1], crop_size=40, augment=False, jitter=0.0, margin=0.2)
    seg = Segmenter(_Stub(), crop_size=40, margin=0.2, device="cpu")
    int_boxes, batch = seg.prepare(image, boxes_from_labels(labels))
    assert batch.shape == (len(ds), 1, 40, 40)
    for index in range(len(ds)):
        s = ds.sample(index)
        assert int_boxes[index] == s.int_box
        np.testing.assert_allclose(batch[index, 0].numpy(), s.image, atol=1e-6)


def test_predict_crops_sizes_one_forward_and_paste_geometry() -> None:
    image = np.full((100, 120), 0.1, np.float32)
    rects = [(20, 10, 50, 30), (60, 50, 100, 80), (5, 70, 25, 95)]  # x0, y0, x1, y1
    for x0, y0, x1, y1 in rects:
        image[y0:y1, x0:x1] = 0.9
    stub = _Stub()
    calls = []
    stub.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    seg = Segmenter(stub, crop_size=64, margin=0.15, device="cpu")
    preds = seg.predict_crops(image, np.asarray(rects, np.float32))
    assert calls == [6], "one forward pass: the three crops and their mirrors in one batch"
    assert all(isinstance(p, CropPrediction) for p in preds)
    for p, rect in zip(preds, rects):
        x0, y0, x1, y1 = p.int_box
        assert p.prob.shape == (y1 - y0, x1 - x0) and p.prob.dtype == np.float32
        assert p.int_box == crop_window(rect, image.shape, 0.15)
        pasted = paste_crop(p.prob, p.int_box, image.shape) > 0.5
        truth = np.zeros(image.shape, bool)
        truth[rect[1]:rect[3], rect[0]:rect[2]] = True
        inter, union = (pasted & truth).sum(), (pasted | truth).sum()
        assert inter / union > 0.9
    assert seg.predict_crops(image, np.zeros((0, 4), np.float32)) == []


class _Ramp(torch.nn.Module):
    """Logits rising left to right, whatever the input: the mirror of a crop disagrees with it."""

    build_config = {"name": "ramp"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linspace(-4.0, 4.0, x.shape[-1]).expand_as(x).clone()


def test_mirroring_averages_a_crop_and_its_mirror() -> None:
    image = np.full((64, 64), 0.5, np.float32)
    box = np.array([[8, 8, 56, 56]], np.float32)
    plain = Segmenter(_Ramp(), crop_size=32, margin=0.0, device="cpu", mirror=False).predict_crops(image, box)[0]
    mirrored = Segmenter(_Ramp(), crop_size=32, margin=0.0, device="cpu").predict_crops(image, box)[0]
    assert plain.prob[:, 0].mean() < 0.1 and plain.prob[:, -1].mean() > 0.9, "the ramp as it is"
    np.testing.assert_allclose(mirrored.prob, 0.5, atol=1e-5)  # sigmoid(r) and sigmoid(-r) average to one half


def test_normalise_crop_is_scale_free() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((20, 30)).astype(np.float32)
    np.testing.assert_allclose(normalise_crop(x), normalise_crop(0.5 * x + 0.2), atol=1e-5)
    assert np.all(normalise_crop(np.full((4, 4), 0.3, np.float32)) == 0)


def test_train_two_epochs_writes_run_and_reloads(tmp_path: Path, one_thread) -> None:
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.training.segmenter import evaluate_crops, train_segmenter

    data = write_phantom_dataset(tmp_path / "ph", 6, style="mri", size=(128, 128), n_patients=6)
    manifest = data / "manifest.csv" if data.is_dir() else data
    split = ensure_split(manifest, tmp_path / "split.csv")
    run = train_segmenter(split, tmp_path / "run", epochs=2, crop_size=64, batch_size=8, cat_channels=8,
                          quick=False, seed=0)
    folder = tmp_path / "run" / "segmenter"
    for name in ("model.pt", "config.json", "history.csv", "curves.png"):
        assert (folder / name).is_file()
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_iou", "val_dice", "lr", "seconds"]
    assert len(history) == run.epochs_run == 2 and history["train_loss"].notna().all()
    config = json.loads((folder / "config.json").read_text())
    assert config["arguments"]["crop_size"] == 64 and config["data"]["train"]["crops"] > 0

    seg = Segmenter.load(tmp_path / "run", device="cpu")
    assert (seg.crop_size, seg.margin) == (64, 0.15)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in seg.model.modules())  # folded for inference
    # the saved weights are the best epoch's: recomputing its validation IoU gives the recorded value
    val = CropDataset(split.subset(split="val"), crop_size=64, margin=0.15, jitter=0.1, augment=False, seed=0)
    loader = torch.utils.data.DataLoader(val, batch_size=64)
    val_iou, _ = evaluate_crops(seg.model, loader, torch.device("cpu"))
    assert val_iou == pytest.approx(history["val_iou"].max(), abs=1e-5)
    image, labels = val.samples[0]
    boxes = boxes_from_labels(labels)
    again = Segmenter.load(folder / "model.pt", device="cpu").predict_crops(image, boxes)
    for p, q in zip(seg.predict_crops(image, boxes), again):
        assert p.int_box == q.int_box
        np.testing.assert_array_equal(p.prob, q.prob)
    with pytest.raises(FileExistsError):
        train_segmenter(split, tmp_path / "run", epochs=1, crop_size=64, quick=False)


def test_deeplab_baseline_uses_the_same_training_code(tmp_path: Path, one_thread) -> None:
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.data.synth.phantom import make_phantom
    from cervkit.training.segmenter import train_segmenter

    phantom = make_phantom("mri", seed=11, size=(96, 96))
    image, labels = phantom.image, phantom.labels

    data = write_phantom_dataset(tmp_path / "ph", 4, style="mri", size=(96, 96), n_patients=4)
    split = ensure_split(data / "manifest.csv" if data.is_dir() else data, tmp_path / "split.csv",
                         ratios=(0.5, 0.25, 0.25))
    train_segmenter(split, tmp_path / "run", model="deeplabv3plus", encoder_name="mobilenet_v2", epochs=1,
                    crop_size=64, batch_size=8, quick=False)
    seg = Segmenter.load(tmp_path / "run", device="cpu")
    assert seg.model.build_config["name"] == "deeplabv3plus"
    preds = seg.predict_crops(image, boxes_from_labels(labels))
    assert len(preds) == int(labels.max()) and all(np.isfinite(p.prob).all() for p in preds)


@pytest.mark.realdata
def test_real_mri_crops(real_manifest_path: Path) -> None:
    from cervkit.data.manifest import load_manifest

    manifest = load_manifest(real_manifest_path, check_files=False)
    part = manifest.with_df(manifest.df.iloc[:3])
    ds = CropDataset(part, crop_size=64, augment=True, seed=0)
    assert len(ds) == int(part.df["n_vertebrae"].sum())
    for index in range(len(ds)):
        s = ds.sample(index)
        assert s.image.shape == s.target.shape == (64, 64)
        assert s.target.mean() > 0.2, "the vertebra fills a good part of its crop"


def test_edge_cut_teaches_bodies_that_the_image_border_cuts(phantoms) -> None:
    from cervkit.training.crop_dataset import cut_at_border

    image, labels = phantoms[0]
    rng = np.random.default_rng(0)
    sides = set()
    for _ in range(20):
        part_image, part = cut_at_border(image, labels, 3, rng)
        rows = np.flatnonzero((part == 3).any(axis=1))
        full = np.flatnonzero((labels == 3).any(axis=1))
        assert part_image.shape == part.shape and 0.15 < rows.size / full.size < 0.85
        assert rows[0] == 0 or rows[-1] == part.shape[0] - 1  # the body now ends at the border
        sides.add(int(rows[0] == 0))
    assert sides == {0, 1}, "both the top and the bottom border cut"

    def touching(ds: CropDataset) -> float:
        hits = [bool(s.target[0].any() or s.target[-1].any()) for s in (ds.sample(i) for i in range(len(ds)))]
        return float(np.mean(hits))

    assert touching(CropDataset(phantoms, crop_size=32, augment=True, seed=2, edge_cut=1.0)) > 0.9
    assert touching(CropDataset(phantoms, crop_size=32, augment=True, seed=2)) < 0.3
    assert CropDataset(phantoms, crop_size=32, augment=False, edge_cut=1.0).edge_cut == 0.0  # training only


def test_the_cpu_segmenter_runs_channels_last_with_the_same_output() -> None:
    """oneDNN's channels-last convolutions (0.108 -> 0.075 s per T2 image on 2 cores), same probabilities."""
    from cervkit.models.factory import build_segmentation_model

    torch.manual_seed(0)
    net = build_segmentation_model("unet3plus", encoder_name="mobilenet_v2", encoder_weights=None)
    image = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    boxes = np.array([[20, 20, 50, 45], [30, 50, 70, 80]], np.float32)
    seg = Segmenter(net, crop_size=64, margin=0.15, device="cpu")
    weights = [p for p in seg.model.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    fast = [c.prob.copy() for c in seg.predict_crops(image, boxes)]
    seg.model = seg.model.to(memory_format=torch.contiguous_format)
    for a, c in zip(fast, seg.predict_crops(image, boxes)):
        np.testing.assert_allclose(a, c.prob, atol=1e-4)


def test_a_loaded_segmenter_folds_its_batch_norms_into_the_convolutions(tmp_path: Path) -> None:
    """Conv + batch norm folded for inference (40 -> 36 ms per 14 crops on 2 cores), the same logits."""
    import copy

    from cervkit.inference.segmenter import _fuse_batchnorm
    from cervkit.models.factory import build_segmentation_model

    torch.manual_seed(0)
    net = build_segmentation_model("unet3plus", encoder_name="mobilenet_v2", encoder_weights=None)
    for module in net.modules():  # statistics as after training, not the identity of a fresh layer
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    folded = copy.deepcopy(net)
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert _fuse_batchnorm(folded) == n_norms > 50
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 1, 64, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(x).numpy(), net(x).numpy(), atol=1e-4)
    training = copy.deepcopy(net).train()
    with pytest.raises(AssertionError):  # a model in training keeps its batch norms
        _fuse_batchnorm(training)


def test_other_sequences_remaps_training_crops_by_random_intensity_curves(phantoms) -> None:
    from cervkit.training.crop_dataset import intensity_pipeline
    from cervkit.transforms.scanner import RandomIntensityCurve

    assert not any(isinstance(t, RandomIntensityCurve) for t in intensity_pipeline().transforms)
    assert isinstance(intensity_pipeline(0.5).transforms[0], RandomIntensityCurve)
    plain = CropDataset(phantoms[:1], crop_size=48, seed=3)
    curved = CropDataset(phantoms[:1], crop_size=48, seed=3, other_sequences=1.0)
    same_window = [plain.sample(i).int_box == curved.sample(i).int_box for i in range(len(plain))]
    assert all(same_window)  # the same crops, only their intensities differ
    changed = [not np.allclose(plain.sample(i).image, curved.sample(i).image, atol=1e-3) for i in range(len(plain))]
    assert sum(changed) >= len(plain) // 2
    assert not CropDataset(phantoms[:1], crop_size=48, augment=False, other_sequences=1.0)._intensity
