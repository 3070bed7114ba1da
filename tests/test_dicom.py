"""Tests of DICOM reading (cervkit.io.dicom through cervkit.io.images.read_image) on pydicom's test files.

Expected images are computed here independently with pydicom's own LUT
functions and the DICOM standard's output ranges (PS3.3 C.11.2.1.2).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from skips import skip_or_fail_in_ci

from cervkit.core.errors import CervkitInputError
from cervkit.io.images import read_image


def _file(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        skip_or_fail_in_ci(f"pydicom test file {name} not installed (pydicom-data, in the dev extra)")
    return Path(path)


def _expected(name: str) -> np.ndarray:
    """Modality LUT -> VOI window -> divide by the standard's output range -> MONOCHROME1 inversion."""
    ds = pydicom.dcmread(_file(name))
    y = apply_modality_lut(ds.pixel_array, ds)
    if "WindowCenter" in ds:
        bits = int(ds.BitsStored)
        lo, hi = (0, 2**bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)),
                                                                      2 ** (bits - 1) - 1)
        assert "RescaleSlope" not in ds  # the range below would need rescaling otherwise
        unit = (apply_voi_lut(y, ds) - lo) / (hi - lo)
    else:
        unit = (y - y.min()) / (y.max() - y.min())
    return 1.0 - unit if ds.PhotometricInterpretation == "MONOCHROME1" else unit


MR_VARIANTS = ["", "_implicit", "_bigendian", "_expb", "_RLE", "_jpeg_ls_lossless",
               "_jp2klossless", "_padded"]


@pytest.mark.filterwarnings("ignore:The pixel data is:UserWarning")
@pytest.mark.parametrize("variant", MR_VARIANTS)
def test_mr_small_every_transfer_syntax_decodes_the_same(variant: str) -> None:
    reference = read_image(_file("MR_small.dcm"))
    path = _file(f"MR_small{variant}.dcm")
    image = read_image(path)
    assert image.array.dtype == np.float32 and image.shape == (64, 64)
    np.testing.assert_array_equal(image.array, reference.array)
    assert image.meta["transfer_syntax_uid"] == pydicom.dcmread(path).file_meta.TransferSyntaxUID
    assert image.spacing_mm == (0.3125, 0.3125) and image.meta["spacing_kind"] == "patient"


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "RG1_UNCR.dcm"])
def test_display_pipeline_matches_pydicom_luts(name: str) -> None:
    image = read_image(_file(name))
    np.testing.assert_allclose(image.array, _expected(name), atol=1e-6)
    assert 0.0 <= image.array.min() and image.array.max() <= 1.0


def test_mr_small_window_clips_at_the_window_edges() -> None:
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    raw = ds.pixel_array.astype(float)
    image = read_image(_file("MR_small.dcm"))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    inside = (raw > center - 0.5 - (width - 1) / 2) & (raw <= center - 0.5 + (width - 1) / 2)
    # signed 16-bit output range: the window maps linearly onto the middle of it
    assert image.meta["intensity"] == "window" and image.meta["window"] == (center, width)
    corr = np.corrcoef(raw[inside], image.array[inside])[0, 1]
    assert corr > 0.9999


def test_monochrome1_is_inverted_and_j2k_matches_uncompressed() -> None:
    uncompressed = read_image(_file("RG1_UNCR.dcm"))
    j2k = read_image(_file("RG1_J2KR.dcm"))
    np.testing.assert_array_equal(uncompressed.array, j2k.array)
    raw = pydicom.dcmread(_file("RG1_UNCR.dcm")).pixel_array
    assert uncompressed.meta["inverted"] and uncompressed.meta["photometric"] == "MONOCHROME1"
    # the smallest stored value must be displayed brightest
    assert uncompressed.array.flat[raw.argmin()] > uncompressed.array.flat[raw.argmax()]
    # PixelSpacing is 0\0 in this file: unknown, never 1.0
    assert uncompressed.spacing_mm is None and uncompressed.meta["spacing_kind"] is None


def test_jpeg_lossless_min_max_and_spacing() -> None:
    image = read_image(_file("JPEG-LL.dcm"))
    ds = pydicom.dcmread(_file("JPEG-LL.dcm"))
    assert image.shape == (int(ds.Rows), int(ds.Columns))
    assert image.spacing_mm == tuple(float(v) for v in ds.PixelSpacing)
    np.testing.assert_allclose(image.array, _expected("JPEG-LL.dcm"), atol=1e-6)
    assert image.meta["intensity"] == "minmax"


def test_multiframe_middle_default_and_explicit_frame() -> None:
    path = _file("emri_small.dcm")
    frames = pydicom.dcmread(path).pixel_array.astype(float)
    n = frames.shape[0]

    def norm(f: np.ndarray) -> np.ndarray:
        return (f - f.min()) / (f.max() - f.min())

    default = read_image(path)
    assert default.meta["n_frames"] == n and default.meta["slice_index"] == n // 2
    np.testing.assert_allclose(default.array, norm(frames[n // 2]), atol=1e-6)
    np.testing.assert_allclose(read_image(path, slice_index=2).array, norm(frames[2]), atol=1e-6)
    np.testing.assert_allclose(read_image(path, slice_index=-1).array, norm(frames[-1]), atol=1e-6)
    with pytest.raises(CervkitInputError, match=f"out of range.*{n} slice"):
        read_image(path, slice_index=n)


def test_truncated_file_names_the_file() -> None:
    with pytest.raises(CervkitInputError, match="MR_truncated.dcm"):
        read_image(_file("MR_truncated.dcm"))


def _write_series(folder: Path, n: int, *, description: str = "T2 SAG", series: str = "1.2.3.4",
                  instance_numbers: bool = True, position_step: float = 5.0) -> None:
    """Write n copies of MR_small; copy k has a 100*k marker block and InstanceNumber k+1."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = pydicom.dcmread(_file("MR_small.dcm"))
        arr = ds.pixel_array.copy()
        arr[:8, :8] = 100 * k
        ds.PixelData = arr.tobytes()
        ds.SeriesInstanceUID = series
        ds.SeriesDescription = description
        ds.SOPInstanceUID = f"{series}.{k}"
        if instance_numbers:
            ds.InstanceNumber = k + 1
        else:
            del ds.InstanceNumber
        normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float),
                          np.asarray(ds.ImageOrientationPatient[3:], float))
        ds.ImagePositionPatient = list(np.asarray(ds.ImagePositionPatient, float)
                                       + normal * position_step * k)
        ds.save_as(folder / f"{description[:2]}_{(3 * k + 1) % n:03d}.dcm")  # names scrambled


def _marker(image_array: np.ndarray) -> float:
    return float(image_array[:8, :8].mean())


def _marker_of(k: int) -> float:
    # window 600/1600 on signed 16-bit output: same formula as _expected
    c, w = 600.0 - 0.5, 1600.0 - 1
    return ((100 * k - c) / w + 0.5)


def test_folder_series_sorted_by_instance_number(tmp_path: Path) -> None:
    _write_series(tmp_path / "s", 5)
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    image = read_image(tmp_path / "s")
    assert image.meta["n_slices"] == 5 and image.meta["slice_index"] == 2
    assert image.meta["sorted_by"] == "InstanceNumber"
    markers = [_marker(read_image(tmp_path / "s", slice_index=i).array) for i in range(5)]
    assert np.all(np.diff(markers) > 0)  # slice i has marker of copy i
    np.testing.assert_allclose(_marker(image.array), _marker_of(2), atol=1e-4)
    with pytest.raises(CervkitInputError, match="out of range"):
        read_image(tmp_path / "s", slice_index=5)


def test_folder_series_sorted_by_position_without_instance_numbers(tmp_path: Path) -> None:
    _write_series(tmp_path / "s", 4, instance_numbers=False, position_step=-5.0)
    first = read_image(tmp_path / "s", slice_index=0)
    assert first.meta["sorted_by"] == "ImagePositionPatient"
    # copy k sits at -5k along the normal, so ascending position starts at copy 3
    np.testing.assert_allclose(_marker(first.array), _marker_of(3), atol=1e-4)


def test_folder_with_two_series_names_them(tmp_path: Path) -> None:
    _write_series(tmp_path / "mixed", 2, description="T2 SAG", series="1.2.3.4")
    _write_series(tmp_path / "mixed", 2, description="T1 SAG", series="1.2.3.5")
    with pytest.raises(CervkitInputError, match="2 DICOM series") as info:
        read_image(tmp_path / "mixed")
    assert "T1 SAG" in str(info.value) and "T2 SAG" in str(info.value)


def test_imager_pixel_spacing_fallback_is_flagged(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.2, 0.25]
    ds.save_as(tmp_path / "dx.dcm")
    image = read_image(tmp_path / "dx.dcm")
    assert image.spacing_mm == (0.2, 0.25) and image.meta["spacing_kind"] == "detector"
    assert any("detector" in note for note in image.meta["notes"])
    del ds.ImagerPixelSpacing
    ds.save_as(tmp_path / "none.dcm")
    assert read_image(tmp_path / "none.dcm").spacing_mm is None


def test_dicom_found_by_content_and_no_patient_identity(tmp_path: Path) -> None:
    reference = read_image(_file("MR_small.dcm"))
    for name in ("IM0001", "scan.bin"):
        shutil.copy(_file("MR_small.dcm"), tmp_path / name)
        image = read_image(tmp_path / name)
        np.testing.assert_array_equal(image.array, reference.array)
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    text = repr(image.meta)
    for identity in (str(ds.PatientName), str(ds.PatientID)):
        if identity:
            assert identity not in text


def test_bad_dicom_inputs(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CervkitInputError, match="junk.dcm"):
        read_image(junk)
    ds = pydicom.dcmread(_file("MR_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(CervkitInputError, match="no pixel data"):
        read_image(tmp_path / "nopix.dcm")
    with pytest.raises(CervkitInputError, match="not found"):
        read_image(tmp_path / "missing.dcm")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CervkitInputError, match="no DICOM images"):
        read_image(tmp_path / "empty_dir")


def test_colour_dicom_converted_to_luminance() -> None:
    image = read_image(_file("SC_rgb.dcm"))
    rgb = pydicom.dcmread(_file("SC_rgb.dcm")).pixel_array.astype(float) / 255.0
    luminance = 0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]  # Rec. 709
    np.testing.assert_allclose(image.array, luminance, atol=1e-6)
    assert any("colour" in note for note in image.meta["notes"])


def test_voi_lut_sequence_applied_and_scaled_by_lut_range(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(_file("MR_small.dcm"))
    raw = ds.pixel_array.astype(int)
    first, n = int(raw.min()), int(raw.max() - raw.min() + 1)
    table = np.sqrt(np.linspace(0, 1, n)) * 200 + 20  # a curve, not a window; 20..220
    item = Dataset()
    item.add_new(0x00283002, "SS" if first < 0 else "US", [n, first, 8])  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in np.rint(table)])  # LUT Data
    ds.VOILUTSequence = [item]
    ds.save_as(tmp_path / "lut.dcm")
    image = read_image(tmp_path / "lut.dcm")
    lut = np.rint(table)
    expected = (lut[raw - first] - lut.min()) / (lut.max() - lut.min())
    assert image.meta["intensity"] == "voi_lut"
    np.testing.assert_allclose(image.array, expected, atol=1e-6)


def test_enhanced_multiframe_functional_groups(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(_file("emri_small.dcm"))
    frames = ds.pixel_array.astype(float)
    measures = Dataset()
    measures.PixelSpacing = [0.7, 0.8]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(frames.shape[0]):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 200 + 10 * k, 300
        group = Dataset()
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.save_as(tmp_path / "enh.dcm")
    image = read_image(tmp_path / "enh.dcm", slice_index=3)
    assert image.spacing_mm == (0.7, 0.8) and image.meta["window"] == (230.0, 300.0)
    c, w = 230.0 - 0.5, 300.0 - 1  # LINEAR window, unsigned output range
    expected = np.clip((frames[3] - c) / w + 0.5, 0, 1)
    np.testing.assert_allclose(image.array, expected, atol=1e-6)
