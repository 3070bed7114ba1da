"""Domain-shift transforms (cervkit.transforms.shift) and the detector's scanner augmentation (cervkit.transforms.scanner)."""

from __future__ import annotations

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.labels.instances import boxes_from_labels
from cervkit.transforms.shift import (
    SHIFTS,
    apply_shift,
    bias_field,
    contrast,
    gamma,
    invert,
    matrix,
    resample,
    rician_noise,
    shift_grid,
    t1_like,
    zoom,
)


def _phantom(h: int = 80, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Air 0, tissue 0.3, two bright fluid stripes 0.9, three stacked 'bodies' at 0.2 labelled 1..3."""
    rng = np.random.default_rng(0)
    image = np.zeros((h, w), np.float32)
    image[:, 10:50] = 0.3
    image[:, 30:34] = 0.9
    labels = np.zeros((h, w), np.uint8)
    for k, top in enumerate((8, 32, 56), start=1):
        labels[top:top + 16, 14:28] = k
        image[top:top + 16, 14:28] = 0.2
    image += rng.uniform(0, 0.01, image.shape).astype(np.float32)
    return np.clip(image, 0, 1), labels


@pytest.mark.parametrize("name, severity", [c for c in shift_grid() if c[0] == "none" or not SHIFTS[c[0]].geometric])
def test_intensity_shifts_keep_shape_range_and_labels(name: str, severity: float) -> None:
    image, labels = _phantom()
    out = apply_shift(name, image, labels, severity, seed=3)
    assert out.image.shape == image.shape and out.image.dtype == np.float32
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    assert np.array_equal(out.labels, labels) and out.labels.dtype == np.uint8
    assert out.pixel_scale == (1.0, 1.0)
    if name != "none":
        assert not np.allclose(out.image, image), f"{name} {severity} changed nothing"


def test_t1_like_inverts_fluid_tissue_order_and_keeps_air_dark() -> None:
    image, labels = _phantom()
    fluid, body, air = image[:, 30:34].mean(), image[labels > 0].mean(), image[:, :5].mean()
    assert fluid > body > air
    out = t1_like(image, 0.9)
    f2, b2, a2 = out[:, 30:34].mean(), out[labels > 0].mean(), out[:, :5].mean()
    assert b2 > f2 and b2 > a2
    assert f2 == pytest.approx(0.1, abs=0.02)  # everything above the fluid quantile -> 1 - severity
    assert a2 < 0.1


@pytest.mark.realdata
def test_t1_like_on_real_t2_makes_bodies_brighter_than_fluid(real_manifest_path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.io.images import read_image, read_mask

    m = load_manifest(real_manifest_path)
    image, labels = read_image(m.image_path(0)).array, read_mask(m.mask_path(0))
    bright = image >= np.quantile(image, 0.98)  # CSF / disc nuclei on sagittal T2
    assert image[bright].mean() > np.median(image[labels > 0])
    out = t1_like(image, 0.9)
    assert out[bright].mean() < np.median(out[labels > 0])


def test_simple_remaps_match_their_formulas() -> None:
    image, _ = _phantom()
    assert np.allclose(invert(image) + image, 1.0)
    assert np.allclose(gamma(image, 2.0), image.astype(np.float64) ** 2, atol=1e-6)
    mid = np.linspace(0.4, 0.6, 100, dtype=np.float32).reshape(10, 10)
    out = contrast(mid, 0.5)
    assert out.mean() == pytest.approx(mid.mean(), abs=1e-5)
    assert out.std() == pytest.approx(0.5 * mid.std(), rel=1e-4)


def test_bias_field_is_bounded_smooth_and_seeded() -> None:
    flat = np.full((64, 64), 0.4, np.float32)
    out = bias_field(flat, 0.5, seed=1)
    ratio = out / flat
    assert ratio.min() >= np.exp(-0.5) - 1e-5 and ratio.max() <= np.exp(0.5) + 1e-5
    assert ratio.max() / ratio.min() > 1.5  # it really varies ...
    assert np.abs(np.diff(ratio, axis=0)).max() < 0.05  # ... but smoothly
    assert np.array_equal(out, bias_field(flat, 0.5, seed=1))
    assert not np.array_equal(out, bias_field(flat, 0.5, seed=2))


def test_rician_noise_on_air_has_rayleigh_mean() -> None:
    out = rician_noise(np.zeros((200, 200), np.float32), 0.05, seed=0)
    assert out.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.03)


def test_resample_removes_fine_detail_only() -> None:
    checker = (np.indices((40, 40)).sum(axis=0) % 2).astype(np.float32)
    assert np.allclose(resample(checker, 1.0), checker)
    low = resample(checker, 0.5)
    assert low.std() < 0.1 * checker.std()
    assert low.mean() == pytest.approx(0.5, abs=0.02)


def test_zoom_in_labels_are_the_central_crop_repeated() -> None:
    image, labels = _phantom(80, 60)
    img, lab, scale = zoom(image, labels, 2.0)
    centre = labels[20:60, 15:45]  # the central 40 x 30 crop
    expected = np.repeat(np.repeat(centre, 2, axis=0), 2, axis=1)
    present = [v for v in (1, 2, 3) if (expected == v).any()]
    relabelled = np.zeros_like(expected)
    for new, old in enumerate(present, start=1):
        relabelled[expected == old] = new
    assert np.array_equal(lab, relabelled)
    assert scale == (0.5, 0.5) and img.shape == image.shape and img.dtype == np.float32


@pytest.mark.parametrize("factor", [0.5, 0.6, 0.8, 1.25, 1.5, 2.0])
def test_zoom_moves_boxes_and_image_edges_alike(factor: float) -> None:
    image, labels = _phantom(80, 60)
    img, lab, scale = zoom(image, labels, factor)
    assert img.shape == image.shape and lab.shape == labels.shape and lab.dtype == np.uint8
    assert scale[0] == pytest.approx(1 / factor, rel=0.05)
    centre = np.array([30.0, 40.0, 30.0, 40.0])  # (x, y, x, y) of the image centre, pixel-edge
    expected = centre + factor * (boxes_from_labels(labels) - centre)
    expected = np.clip(expected, 0.0, [60.0, 80.0, 60.0, 80.0])  # bodies cut by the view
    visible = (expected[:, 2] - expected[:, 0] >= 1) & (expected[:, 3] - expected[:, 1] >= 1)
    after = boxes_from_labels(lab)
    assert len(after) == visible.sum()
    assert np.allclose(after, expected[visible], atol=1.0)
    # the darker body in the image sits where its label is (linear image vs nearest mask)
    body = lab > 0
    assert img[body].mean() < 0.25 < img[(~body) & (np.abs(img - 0.3) < 0.05)].mean()


@pytest.mark.parametrize("size", [32, 256])
def test_matrix_resamples_the_whole_view_and_labels_nearest(size: int) -> None:
    image, labels = _phantom(80, 60)
    out = apply_shift("matrix", image, labels, float(size))
    assert out.image.shape == out.labels.shape == (size, size) and out.image.dtype == np.float32
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    assert out.pixel_scale == (80 / size, 60 / size)
    assert set(np.unique(out.labels)) == {0, 1, 2, 3}  # label values never blended, every body kept
    sy, sx = size / 80, size / 60
    expected = boxes_from_labels(labels) * np.array([sx, sy, sx, sy])
    assert np.allclose(boxes_from_labels(out.labels), expected, atol=1.0)
    body = out.labels > 0
    assert out.image[body].mean() < 0.25  # the darker bodies sit where their labels are
    with pytest.raises(ValueError):
        matrix(image, labels, 1)


def test_zoom_in_drops_bodies_that_leave_the_view_and_renumbers() -> None:
    image, labels = _phantom(80, 60)
    _, lab, _ = zoom(image, labels, 2.0)  # rows 20..60 kept: body 1 (8..24) cut, body 3 (56..72) cut
    assert sorted(np.unique(lab[lab > 0])) == list(range(1, int(lab.max()) + 1))
    rows = [np.nonzero(lab == k)[0].mean() for k in range(1, int(lab.max()) + 1)]
    assert rows == sorted(rows)


def test_apply_shift_rejects_unknown_and_grid_is_complete() -> None:
    image, labels = _phantom()
    with pytest.raises(CervkitInputError):
        apply_shift("thermal", image, labels, 1.0)
    grid = shift_grid()
    assert grid[0] == ("none", 0.0)
    assert {n for n, _ in grid[1:]} == set(SHIFTS)
    with pytest.raises(CervkitInputError):
        shift_grid(["nope"])


def test_detector_scanner_augmentation_roundtrips_and_keeps_gray_uint8() -> None:
    from cervkit.transforms.augment import seed_transform
    from cervkit.transforms.scanner import A, RandomIntensityCurve, detector_transforms

    assert detector_transforms(0.0) == []
    stored = [A.to_dict(t) for t in detector_transforms(1.0)]  # what ultralytics keeps in checkpoints
    restored = [A.from_dict(d) for d in stored]
    assert [type(t).__name__ for t in restored][:2] == ["RandomIntensityCurve", "InvertImg"]
    gray = (np.clip(_phantom()[0], 0, 1) * 255).astype(np.uint8)
    gray[:, :5] = 0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    pipe = A.Compose(restored)
    seed_transform(pipe, 5)
    out = pipe(image=rgb)["image"]
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2])
    curve = A.Compose([RandomIntensityCurve(p=1.0)])
    outs = []
    for seed in range(20):
        seed_transform(curve, seed)
        outs.append(curve(image=rgb)["image"][..., 0])
    assert all(o[:, :5].max() == 0 for o in outs)  # air stays black
    fluid_above_tissue = [o[:, 30:34].mean() > o[:, 40:50].mean() for o in outs]
    assert any(fluid_above_tissue) and not all(fluid_above_tissue)  # both orders occur
