"""The paper's augmentations keep image, label map and boxes aligned, within the paper's ranges."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image as PILImage
from scipy import ndimage
from skimage.draw import ellipse

from cervkit.core.errors import CervkitInputError
from cervkit.labels.instances import boxes_from_labels, relabel_top_to_bottom
from cervkit.transforms import augment as aug
from cervkit.transforms.offline import expand_dataset

SHAPE = (160, 128)
SEEDS = range(25)
NOISE_FREE = ["hflip", "vflip", "rotate", "scale", "translate", "crop"]
# The paper's ranges (Wang et al. 2025), written out so that changing the module's constants fails the tests.
PAPER_ROTATION_DEG, PAPER_SHIFT_PX, PAPER_SCALE = 10.0, 5, (0.9, 1.1)


def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three rectangles and two ellipses, distinct sizes, far (> 16 px) from the border; image = mask > 0."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[20:38, 30:80] = 1
    rr, cc = ellipse(52, 70, 9, 24, rotation=0.2, shape=SHAPE)
    lab[rr, cc] = 2
    lab[72:92, 40:96] = 3
    rr, cc = ellipse(108, 60, 8, 20, rotation=-0.3, shape=SHAPE)
    lab[rr, cc] = 4
    lab[126:142, 36:70] = 5
    return (lab > 0).astype(np.float32), lab


def off_boundary_mismatch(image: np.ndarray, labels: np.ndarray) -> int:
    """Pixels where 'bright' and 'in a mask' disagree, away from the 1-px band around mask edges."""
    mask = labels > 0
    band = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
    return int(((image > 0.5) != mask)[~band].sum())


def rotated_box_bound(box: np.ndarray, max_deg: float) -> tuple[float, float]:
    """Largest (width, height) of the box bounding a w×h box rotated by up to ``max_deg``."""
    w, h = box[2] - box[0], box[3] - box[1]
    t = np.radians(np.linspace(0, max_deg, 101))
    return float(np.max(w * np.cos(t) + h * np.sin(t))), float(np.max(h * np.cos(t) + w * np.sin(t)))


def test_transform_names_and_options() -> None:
    names = list(aug.paper_transforms())
    assert names == ["hflip", "rotate", "scale", "translate", "crop", "salt_pepper"]
    assert "vflip" in aug.paper_transforms(vertical_flip=True)
    resized = aug.augment_sample(*blobs(), transform=aug.paper_transforms((64, 48))["resize"], seed=0)
    assert resized.image.shape == resized.labels.shape == (64, 48)
    assert resized.labels.max() == 5
    pipe = aug.paper_pipeline((64, 48), seed=0)
    assert aug.augment_sample(*blobs(), transform=pipe, seed=1).labels.shape == (64, 48)


@pytest.mark.parametrize("name", [*NOISE_FREE, "salt_pepper"])
def test_each_transform_keeps_image_mask_and_boxes_aligned(name: str) -> None:
    image, lab = blobs()
    transform = aug.paper_transforms(p=1.0, vertical_flip=True)[name]
    in_boxes = boxes_from_labels(lab)
    raw = aug.as_compose(transform)
    for seed in SEEDS:
        raw.set_random_seed(seed)
        raw_mask = raw(image=image, mask=lab, bboxes=in_boxes, box_labels=np.arange(1, 6))["mask"]
        assert set(np.unique(raw_mask)) <= set(np.unique(lab))  # nearest: values never blended
        s = aug.augment_sample(image, lab, transform=transform, seed=seed)
        assert s.image.shape == s.labels.shape == SHAPE and s.image.dtype == np.float32
        assert s.labels.max() == 5 and set(np.unique(s.labels)) == set(range(6))  # nothing lost
        rows = [c[0] for c in ndimage.center_of_mass(s.labels > 0, s.labels, range(1, 6))]
        assert rows == sorted(rows)  # numbered top to bottom
        allowed = 0 if name != "salt_pepper" else aug.SALT_PEPPER_AMOUNT[1] * image.size
        assert off_boundary_mismatch(s.image, s.labels) <= allowed
        assert np.array_equal(s.boxes, boxes_from_labels(s.labels))
        assert sorted(s.album_box_labels.tolist()) == [1, 2, 3, 4, 5]
        mask_boxes = s.boxes[s.album_box_labels - 1]
        if name == "rotate":
            # the rotated-box bound contains the mask's box, and is no larger than a ≤10° rotation allows
            assert np.all(s.album_boxes[:, :2] <= mask_boxes[:, :2] + 1.0)
            assert np.all(s.album_boxes[:, 2:] >= mask_boxes[:, 2:] - 1.0)
            for box, src in zip(s.album_boxes, in_boxes[s.album_box_labels - 1]):
                bw, bh = rotated_box_bound(src, PAPER_ROTATION_DEG)
                assert box[2] - box[0] <= bw + 1.0 and box[3] - box[1] <= bh + 1.0
        else:
            # flips, integer shifts and noise are exact; resampling (scale, crop) moves an edge ≤ 1 px
            tol = 1.0 if name in ("scale", "crop") else 1e-4
            assert np.abs(s.album_boxes - mask_boxes).max() <= tol


def test_combined_pipeline_stays_aligned_over_many_seeds() -> None:
    image, lab = blobs()
    for vertical in (False, True):
        pipe = aug.paper_pipeline(p=0.5, vertical_flip=vertical)
        outputs = set()
        for seed in range(40):
            s = aug.augment_sample(image, lab, transform=pipe, seed=seed)
            outputs.add(s.image.tobytes())
            assert set(np.unique(s.labels)) <= set(range(6))
            assert off_boundary_mismatch(s.image, s.labels) <= aug.SALT_PEPPER_AMOUNT[1] * image.size
            keep = s.album_box_labels > 0
            mask_boxes = s.boxes[s.album_box_labels[keep] - 1]
            assert np.all(s.album_boxes[keep, :2] <= mask_boxes[:, :2] + 2.0)
            assert np.all(s.album_boxes[keep, 2:] >= mask_boxes[:, 2:] - 2.0)
        assert len(outputs) > 30  # the seeds really vary the augmentation


def principal_angle_deg(mask: np.ndarray) -> float:
    rows, cols = np.nonzero(mask)
    cov = np.cov(np.vstack([cols, rows]))
    vals, vecs = np.linalg.eigh(cov)
    vx, vy = vecs[:, np.argmax(vals)]
    angle = math.degrees(math.atan2(vy, vx))
    return (angle + 90) % 180 - 90


def test_rotation_stays_within_ten_degrees() -> None:
    lab = np.zeros(SHAPE, np.uint8)
    lab[77:83, 19:109] = 1  # a horizontal 90 x 6 bar through the centre
    image = lab.astype(np.float32)
    angles = []
    for seed in range(40):
        s = aug.augment_sample(image, lab, transform=aug.paper_transforms(p=1.0)["rotate"], seed=seed)
        a_mask = principal_angle_deg(s.labels > 0)
        assert abs(principal_angle_deg(s.image > 0.5) - a_mask) < 0.5  # image rotated with the mask
        angles.append(a_mask)
    assert max(map(abs, angles)) <= PAPER_ROTATION_DEG + 0.5
    assert max(angles) > 5 and min(angles) < -5  # both directions, not a no-op


def test_translation_is_at_most_five_pixels() -> None:
    image, lab = blobs()
    before = np.array(ndimage.center_of_mass(lab > 0))
    shifts = []
    for seed in SEEDS:
        s = aug.augment_sample(image, lab, transform=aug.paper_transforms(p=1.0)["translate"], seed=seed)
        shift = np.array(ndimage.center_of_mass(s.labels > 0)) - before
        assert np.allclose(shift, np.round(shift), atol=1e-6)  # whole pixels: the mask is moved, not resampled
        assert np.allclose(np.array(ndimage.center_of_mass(s.image > 0.5)) - before, shift)
        shifts.append(shift)
    shifts = np.abs(np.array(shifts))
    assert shifts.max() <= PAPER_SHIFT_PX and shifts.max() >= 3


def test_scaling_between_90_and_110_percent() -> None:
    lab = np.zeros(SHAPE, np.uint8)
    lab[50:110, 34:94] = 1  # 60 x 60 square at the centre
    factors = []
    for seed in range(30):
        s = aug.augment_sample(lab.astype(np.float32), lab, transform=aug.paper_transforms(p=1.0)["scale"],
                               seed=seed)
        box = s.boxes[0]
        fx, fy = (box[2] - box[0]) / 60, (box[3] - box[1]) / 60
        assert abs(fx - fy) <= 2 / 60  # isotropic
        factors.append(math.sqrt((s.labels > 0).sum() / 3600))
    assert PAPER_SCALE[0] - 0.02 <= min(factors) and max(factors) <= PAPER_SCALE[1] + 0.02
    assert min(factors) < 0.96 and max(factors) > 1.04


def test_crop_keeps_size_and_zooms_by_at_most_one_over_085() -> None:
    lab = np.zeros(SHAPE, np.uint8)
    lab[50:110, 34:94] = 1
    zooms = []
    for seed in range(30):
        s = aug.augment_sample(lab.astype(np.float32), lab, transform=aug.paper_transforms(p=1.0)["crop"],
                               seed=seed)
        assert s.labels.shape == SHAPE
        box = s.boxes[0]
        zooms += [(box[2] - box[0]) / 60, (box[3] - box[1]) / 60]
    assert min(zooms) >= 1 - 1 / 60 and max(zooms) <= 1 / 0.85 + 2 / 60
    assert max(zooms) > 1.05


def test_flips_mirror_exactly_and_vertical_flip_relabels() -> None:
    image, lab = blobs()
    t = aug.paper_transforms(p=1.0, vertical_flip=True)
    h = aug.augment_sample(image, lab, transform=t["hflip"], seed=0)
    assert np.array_equal(h.image, image[:, ::-1]) and np.array_equal(h.labels, lab[:, ::-1])
    v = aug.augment_sample(image, lab, transform=t["vflip"], seed=0)
    assert np.array_equal(v.image, image[::-1])
    areas_before = np.bincount(lab.ravel())[1:]
    areas_after = np.bincount(v.labels.ravel())[1:]
    assert areas_after.tolist() == areas_before[::-1].tolist()  # old bottom vertebra is now label 1
    assert np.array_equal(v.labels, relabel_top_to_bottom(lab[::-1]))


def test_salt_and_pepper_touches_the_image_only() -> None:
    _, lab = blobs()
    gray = np.full(SHAPE, 0.5, np.float32)
    for seed in range(10):
        s = aug.augment_sample(gray, lab, transform=aug.paper_transforms(p=1.0)["salt_pepper"], seed=seed)
        assert np.array_equal(s.labels, lab)
        changed = s.image != gray
        assert set(np.unique(s.image[changed])) <= {0.0, 1.0}
        lo, hi = aug.SALT_PEPPER_AMOUNT
        assert lo - 0.002 <= changed.mean() <= hi + 0.002


def test_instances_that_leave_the_image_are_dropped() -> None:
    image, lab = blobs()
    lab = lab.copy()
    lab[60:66, 118:126] = 6  # a small blob at the right border
    push = aug.albumentations_module().Affine(translate_px={"x": (20, 20), "y": (0, 0)}, p=1.0)
    s = aug.augment_sample((lab > 0).astype(np.float32), lab, transform=push, seed=0)
    assert s.labels.max() == 5 and len(s.boxes) == 5
    assert set(s.album_box_labels.tolist()) <= set(range(6))
    kept = boxes_from_labels(np.where(lab == 6, 0, lab))  # labels 1..5 are already top to bottom
    assert np.array_equal(s.boxes, kept + np.float32([20, 0, 20, 0]))


def test_augment_sample_is_reproducible() -> None:
    image, lab = blobs()
    pipe = aug.paper_pipeline(p=0.5)
    a = aug.augment_sample(image, lab, transform=pipe, seed=7)
    b = aug.augment_sample(image, lab, transform=aug.paper_pipeline(p=0.5), seed=7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    with pytest.raises(CervkitInputError):
        aug.augment_sample(image, lab[:10], transform=pipe)


def test_dataset_items_are_tensors_seeded_per_epoch_and_index() -> None:
    image, lab = blobs()
    ds = aug.AugmentedDataset([image, image[::-1].copy()], [lab, lab[::-1].copy()], aug.paper_pipeline(), seed=3)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 2
    x, y, boxes = ds[0]
    assert x.shape == (1, *SHAPE) and x.dtype == torch.float32
    assert y.shape == SHAPE and y.dtype == torch.int64 and boxes.dtype == torch.float32
    assert np.array_equal(boxes.numpy(), boxes_from_labels(y.numpy().astype(np.uint8)))
    twin = aug.AugmentedDataset([image, image[::-1].copy()], [lab, lab[::-1].copy()], aug.paper_pipeline(), seed=3)
    assert torch.equal(twin[0][0], x) and torch.equal(ds[0][0], x)
    epochs = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        epochs.add(ds[0][0].numpy().tobytes())
    assert len(epochs) >= 5
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=aug.AugmentedDataset.collate)
    xb, yb, bb = next(iter(loader))
    assert xb.shape == (2, 1, *SHAPE) and yb.shape == (2, *SHAPE) and len(bb) == 2
    plain = aug.AugmentedDataset([image], [lab])
    assert np.array_equal(plain[0][0][0].numpy(), image)


def write_synthetic_manifest(folder, with_split: bool = True):
    image, lab = blobs()
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = []
    for i, (pid, split) in enumerate([("p1", "train"), ("p1", "train"), ("p2", "train"), ("p3", "test")]):
        name = f"s{i}.png"
        PILImage.fromarray((np.roll(image, 3 * i, axis=1) * 255).astype(np.uint8)).save(folder / "images" / name)
        PILImage.fromarray(np.roll(lab, 3 * i, axis=1)).save(folder / "masks" / name)
        rows.append({"image": f"images/{name}", "mask": f"masks/{name}", "patient_id": pid, "modality": "MRI",
                     "split": split, "n_vertebrae": 5, "height": SHAPE[0], "width": SHAPE[1]})
    table = pd.DataFrame(rows)
    if not with_split:
        table = table.drop(columns="split")
    table.to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv", table


def test_expand_dataset_augments_training_rows_only(tmp_path) -> None:
    src, table = write_synthetic_manifest(tmp_path / "src")
    out = expand_dataset(src, tmp_path / "out", factor=3, seed=1)
    result = pd.read_csv(out, dtype={"patient_id": str}, keep_default_na=False)
    copies = result[result["augmented_from"] != ""]
    n_train = int((table["split"] == "train").sum())
    assert len(copies) == n_train * 3 and len(result) == len(table) + n_train * 3
    assert set(copies["split"]) == {"train"} and "p3" not in set(copies["patient_id"])
    originals = result[result["augmented_from"] == ""].set_index("image")
    for _, row in copies.iterrows():
        assert originals.loc[row["augmented_from"], "patient_id"] == row["patient_id"]
        img = np.asarray(PILImage.open(out.parent / row["image"]))
        lab = np.asarray(PILImage.open(out.parent / row["mask"]))
        assert img.shape == lab.shape == SHAPE and lab.max() == row["n_vertebrae"]
        assert off_boundary_mismatch(img / 255.0, lab) <= aug.SALT_PEPPER_AMOUNT[1] * lab.size
    for _, row in originals.reset_index().iterrows():  # originals are referenced, not copied
        assert (out.parent / row["image"]).resolve().is_relative_to((tmp_path / "src").resolve())
    with pytest.raises(FileExistsError):
        expand_dataset(src, tmp_path / "out", factor=3, seed=1)
    again = expand_dataset(src, tmp_path / "out", factor=3, seed=1, overwrite=True)
    assert pd.read_csv(again).equals(pd.read_csv(out))


def test_expand_dataset_requires_a_split(tmp_path) -> None:
    src, table = write_synthetic_manifest(tmp_path / "src", with_split=False)
    with pytest.raises(CervkitInputError, match="split"):
        expand_dataset(src, tmp_path / "out", factor=1)
    out = expand_dataset(src, tmp_path / "out", factor=1, splits=None, include_originals=False)
    assert len(pd.read_csv(out)) == len(table)


@pytest.mark.realdata
def test_real_mri_rows_augment_consistently(real_manifest_path, tmp_path) -> None:
    table = pd.read_csv(real_manifest_path).head(2)
    table["image"] = [str(real_manifest_path.parent / p) for p in table["image"]]
    table["mask"] = [str(real_manifest_path.parent / p) for p in table["mask"]]
    table["split"] = "train"
    table.to_csv(tmp_path / "m.csv", index=False)
    out = expand_dataset(tmp_path / "m.csv", tmp_path / "out", factor=2, seed=0)
    copies = pd.read_csv(out, keep_default_na=False).query("augmented_from != ''")
    assert len(copies) == 4
    for _, row in copies.iterrows():
        lab = np.asarray(PILImage.open(out.parent / row["mask"]))
        assert lab.shape == (row["height"], row["width"]) and lab.max() == row["n_vertebrae"]
        assert row["n_vertebrae"] >= 6  # at most one of the 7 vertebrae clipped away
        assert np.array_equal(relabel_top_to_bottom(lab), lab)
    image = np.asarray(PILImage.open(table["image"][0]), dtype=np.float32) / 255
    lab = np.asarray(PILImage.open(table["mask"][0]))
    for seed in range(5):
        s = aug.augment_sample(image, lab, transform=aug.paper_pipeline(p=0.5), seed=seed)
        keep = s.album_box_labels > 0
        mask_boxes = s.boxes[s.album_box_labels[keep] - 1]
        assert np.all(s.album_boxes[keep, :2] <= mask_boxes[:, :2] + 2.0)
        assert np.all(s.album_boxes[keep, 2:] >= mask_boxes[:, 2:] - 2.0)
