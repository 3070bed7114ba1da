"""Tests of cervkit.io.images: raster images, label masks, NIfTI, PNG writing, resizing, real data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image as PILImage

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.io.images import binarize, read_image, read_mask, write_png
from cervkit.io.nifti import read_nifti_spacing, write_nifti
from cervkit.io.resize import resize, resize_image

RNG = np.random.default_rng(7)
REC709 = np.array([0.2125, 0.7154, 0.0721])  # luminance weights (ITU-R BT.709)


def _labels(h: int = 12, w: int = 9) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[1:4, 2:5] = 1
    lab[6:10, 1:3] = 2
    lab[h - 1, w - 1] = 7  # corner pixel pins the orientation
    return lab


# ---------------------------------------------------------------- raster images
def test_png_8_and_16_bit_scaled_by_dtype_range(tmp_path: Path) -> None:
    a8 = RNG.integers(0, 256, (10, 13), dtype=np.uint8)
    PILImage.fromarray(a8).save(tmp_path / "g8.png")
    image = read_image(tmp_path / "g8.png")
    np.testing.assert_allclose(image.array, a8 / 255.0, atol=1e-6)
    assert image.spacing_mm is None and image.array.dtype == np.float32
    a16 = RNG.integers(0, 65536, (10, 13), dtype=np.uint16)
    PILImage.fromarray(a16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png").array, a16 / 65535.0, atol=1e-6)


def test_rgb_rgba_and_palette_png_become_luminance(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    expected = (rgb / 255.0) @ REC709
    PILImage.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png").array, expected, atol=1e-6)
    rgba = np.dstack([rgb, np.full((6, 7), 40, np.uint8)])
    PILImage.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png").array, expected, atol=1e-6)
    palette_img = PILImage.fromarray(rgb).quantize(colors=8)
    palette_img.save(tmp_path / "pal.png")
    as_rgb = np.asarray(palette_img.convert("RGB")) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / "pal.png").array, as_rgb @ REC709, atol=1e-6)


def test_tiff_16_bit_float_and_volume(tmp_path: Path) -> None:
    a16 = RNG.integers(0, 65536, (8, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a16)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif").array, a16 / 65535.0, atol=1e-6)
    f = np.array([[-0.5, 0.25], [0.75, 2.0]], np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", f)
    image = read_image(tmp_path / "f.tiff")
    np.testing.assert_allclose(image.array, [[0, 0.25], [0.75, 1]])
    assert any("clipped" in n for n in image.meta["notes"])
    tifffile.imwrite(tmp_path / "vol.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(CervkitInputError, match="3D volume"):
        read_image(tmp_path / "vol.tif")
    planes = RNG.integers(0, 256, (3, 4, 6), dtype=np.uint8)  # RGB as separate planes
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    expected = np.moveaxis(planes, 0, -1) / 255.0 @ REC709
    np.testing.assert_allclose(read_image(tmp_path / "planar.tif").array, expected, atol=1e-6)


def test_jpeg_read_close_to_source(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    PILImage.fromarray(ramp).save(tmp_path / "r.jpg", quality=95)
    image = read_image(tmp_path / "r.jpg")
    assert image.shape == (16, 32) and image.meta["format"] == "jpg"
    assert np.abs(image.array - ramp / 255.0).max() < 0.05


def test_bad_raster_inputs(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(CervkitInputError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(CervkitInputError, match="unsupported file type"):
        read_image(tmp_path / "notes.xyz")
    (tmp_path / "README").write_text("plain text, no extension")
    with pytest.raises(CervkitInputError, match="README"):
        read_image(tmp_path / "README")
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(CervkitInputError, match="slice_index"):
        read_image(tmp_path / "one.png", slice_index=3)


# ---------------------------------------------------------------- masks
def test_read_mask_png_variants(tmp_path: Path) -> None:
    lab = _labels()
    PILImage.fromarray(lab).save(tmp_path / "m8.png")
    got = read_mask(tmp_path / "m8.png")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, lab)
    PILImage.fromarray(lab.astype(np.uint16)).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), lab)
    PILImage.fromarray(np.dstack([lab] * 3)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_rgb.png"), lab)
    pal = PILImage.fromarray(lab, mode="L").convert("P")  # palette indices == values
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "pal.png"), np.asarray(pal))


def test_read_mask_rejects_bad_masks(tmp_path: Path) -> None:
    big = _labels().astype(np.uint16)
    big[0, 0] = 300
    PILImage.fromarray(big).save(tmp_path / "big.png")
    with pytest.raises(CervkitInputError, match="0..255"):
        read_mask(tmp_path / "big.png")
    rgb = np.dstack([_labels()] * 3)
    rgb[0, 0] = (255, 0, 0)
    PILImage.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(CervkitInputError, match="colour mask"):
        read_mask(tmp_path / "colour.png")
    PILImage.fromarray(_labels()).save(tmp_path / "m.jpg")
    with pytest.raises(CervkitInputError, match="lossy"):
        read_mask(tmp_path / "m.jpg")
    with pytest.raises(CervkitInputError, match="not found"):
        read_mask(tmp_path / "nothing.png")


def test_binarize() -> None:
    lab = _labels()
    out = binarize(lab)
    assert out.dtype == bool and out.sum() == np.count_nonzero(lab)
    assert binarize(np.array([[0, 255], [3, 0]])).tolist() == [[False, True], [True, False]]


# ---------------------------------------------------------------- NIfTI
@pytest.mark.parametrize("name", ["m.nii", "m.nii.gz"])
def test_nifti_round_trip_with_spacing(tmp_path: Path, name: str) -> None:
    lab = _labels()
    write_nifti(tmp_path / name, lab, spacing_mm=(0.5, 0.8))
    np.testing.assert_array_equal(read_mask(tmp_path / name), lab)
    assert read_nifti_spacing(tmp_path / name) == pytest.approx((0.5, 0.8), abs=1e-6)
    header = nib.load(tmp_path / name).header
    assert header.get_zooms()[:2] == pytest.approx((0.8, 0.5))  # x = columns, y = rows
    assert header.get_xyzt_units()[0] == "mm"
    with pytest.raises(FileExistsError):
        write_nifti(tmp_path / name, lab)
    write_nifti(tmp_path / name, lab, overwrite=True)  # no spacing: unknown, not 1.0
    assert read_nifti_spacing(tmp_path / name) is None


def test_nifti_axis_convention_matches_itk_layout(tmp_path: Path) -> None:
    lab = _labels()
    h, w = lab.shape
    itk = np.zeros((w, h, 1), np.uint8)  # ITK-SNAP stores data[x=col, y=row, z]
    for row in range(h):
        for col in range(w):
            itk[col, row, 0] = lab[row, col]
    nib.save(nib.Nifti1Image(itk, np.diag([-1.0, -1.0, 1.0, 1.0])), tmp_path / "itk.nii.gz")
    np.testing.assert_array_equal(read_mask(tmp_path / "itk.nii.gz"), lab)
    nib.save(nib.Nifti1Image(itk[:, :, 0].astype(np.int16), np.eye(4)), tmp_path / "flat.nii")
    np.testing.assert_array_equal(read_mask(tmp_path / "flat.nii"), lab)
    image = read_image(tmp_path / "itk.nii.gz")
    np.testing.assert_allclose(image.array, lab / lab.max(), atol=1e-6)


def test_nifti_bad_masks(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3), np.uint8), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(CervkitInputError, match="3D volume"):
        read_mask(tmp_path / "vol.nii.gz")
    frac = np.full((5, 4, 1), 1.5, np.float32)
    nib.save(nib.Nifti1Image(frac, np.eye(4)), tmp_path / "frac.nii")
    with pytest.raises(CervkitInputError, match="non-integer"):
        read_mask(tmp_path / "frac.nii")
    neg = np.full((5, 4, 1), -1, np.int16)
    nib.save(nib.Nifti1Image(neg, np.eye(4)), tmp_path / "neg.nii")
    with pytest.raises(CervkitInputError, match="0..255"):
        read_mask(tmp_path / "neg.nii")
    with pytest.raises(CervkitInputError, match=".nii"):
        write_nifti(tmp_path / "x.png", _labels())


# ---------------------------------------------------------------- PNG writing
def test_write_png_float_uint8_uint16(tmp_path: Path) -> None:
    f = RNG.random((7, 9)).astype(np.float32)
    write_png(tmp_path / "f.png", f)
    stored = np.asarray(PILImage.open(tmp_path / "f.png"))
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, np.rint(f * 255).astype(np.uint8))
    lab = _labels()
    write_png(tmp_path / "sub" / "lab.png", lab)
    np.testing.assert_array_equal(read_mask(tmp_path / "sub" / "lab.png"), lab)
    a16 = RNG.integers(0, 65536, (5, 6), dtype=np.uint16)
    write_png(tmp_path / "a16.png", a16)
    with PILImage.open(tmp_path / "a16.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), a16)
    rgb = RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "rgb.png")), rgb)


def test_write_png_refuses_overwrite_and_bad_values(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", _labels())
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_png(tmp_path / "a.png", np.zeros((3, 3), np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), _labels())
    write_png(tmp_path / "a.png", np.zeros((3, 3), np.uint8), overwrite=True)
    assert read_mask(tmp_path / "a.png").shape == (3, 3)
    with pytest.raises(CervkitInputError, match=r"\[0, 1\]"):
        write_png(tmp_path / "b.png", np.full((2, 2), 1.5))
    with pytest.raises(CervkitInputError, match=".png"):
        write_png(tmp_path / "b.jpg", _labels())
    with pytest.raises(CervkitInputError):
        write_png(tmp_path / "c.png", np.zeros((2, 3, 4, 5), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# ---------------------------------------------------------------- resizing
def test_resize_mask_nearest_integer_factor_is_block_repeat() -> None:
    lab = _labels(6, 4)
    up = resize_image(lab, (12, 12), is_mask=True)
    assert up.dtype == np.uint8
    np.testing.assert_array_equal(up, np.kron(lab, np.ones((2, 3), np.uint8)))
    down = resize_image(up, (6, 4), is_mask=True)
    np.testing.assert_array_equal(down, lab)
    assert resize_image(lab.astype(bool), 5, is_mask=True).dtype == bool


def test_one_nearest_resizer_for_masks_and_label_maps() -> None:
    """resize_image(is_mask=True) is resize(nearest=True), the crop pipeline's resizer: pixel centres aligned.

    Checked against exact integer arithmetic, and against scikit-image's order-0 resize (what
    resize_image used before), which agrees everywhere but where an output pixel centre falls exactly
    on an input pixel edge (there the pixel after the edge is taken; scikit-image's rounding varies).
    """
    from skimage.transform import resize as sk_resize

    rng = np.random.default_rng(0)
    cases = [((7, 5), (12, 9)), ((12, 12), (6, 4)), ((2, 4), (49, 47)), ((128, 96), (96, 128)), ((31, 17), (5, 40)),
             ((6, 6), (6, 6))]
    ties_seen = 0
    for (h, w), (oh, ow) in cases:
        lab = rng.integers(0, 8, size=(h, w)).astype(np.uint8)
        ours = resize(lab, (oh, ow), nearest=True)
        assert ours.dtype == np.uint8 and np.array_equal(resize_image(lab, (oh, ow), is_mask=True), ours)
        rows = np.minimum((2 * np.arange(oh) + 1) * h // (2 * oh), h - 1)  # floor((i + 0.5) * h / oh), exactly
        cols = np.minimum((2 * np.arange(ow) + 1) * w // (2 * ow), w - 1)
        np.testing.assert_array_equal(ours, lab[rows[:, None], cols[None, :]])
        ref = sk_resize(lab, (oh, ow), order=0, mode="edge", anti_aliasing=False, preserve_range=True)
        tie_rows = (2 * np.arange(oh) + 1) * h % (2 * oh) == 0
        tie_cols = (2 * np.arange(ow) + 1) * w % (2 * ow) == 0
        np.testing.assert_array_equal(ours[~tie_rows][:, ~tie_cols], ref.astype(np.uint8)[~tie_rows][:, ~tie_cols])
        ties_seen += int(tie_rows.any() or tie_cols.any())
    assert ties_seen >= 2
    assert resize(lab.astype(bool), (3, 3)).dtype == bool  # integer and bool arrays default to nearest


def test_resize_image_linear_and_spacing() -> None:
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))
    out = resize_image(ramp, (10, 80))
    assert out.shape == (10, 80) and out.dtype == np.float32
    assert np.all(np.diff(out[5]) >= -1e-6)  # still a monotone ramp
    assert abs(float(out.mean()) - float(ramp.mean())) < 0.01
    image = Image(ramp, (0.5, 0.5), {"source": "x"})
    small = resize_image(image, (10, 80))
    assert isinstance(small, Image) and small.spacing_mm == pytest.approx((1.0, 0.25))
    assert small.meta["resized_from"] == (20, 40)
    assert resize_image(Image(ramp), 16).spacing_mm is None


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_masks_and_images(real_manifest_path: Path) -> None:
    manifest = pd.read_csv(real_manifest_path)
    root = real_manifest_path.parent
    for row in manifest.itertuples():
        mask = read_mask(root / row.mask)
        assert mask.dtype == np.uint8 and mask.shape == (row.height, row.width)
        assert set(np.unique(mask).tolist()) == set(range(int(row.n_vertebrae) + 1))
    first = manifest.iloc[0]
    image = read_image(root / first.image)
    assert image.shape == (first.height, first.width)
    assert 0.0 <= image.array.min() < image.array.max() <= 1.0
    raw = np.asarray(PILImage.open(root / first.image).convert("L"))
    np.testing.assert_allclose(image.array, raw / 255.0, atol=1e-6)
