"""Round trips and privacy of the standard exports (cervkit.export.bundle, cervkit.export.dicom_seg)."""

from __future__ import annotations

import gzip
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from skips import skip_or_fail_in_ci

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.export.bundle import (
    export_all,
    export_paths,
    export_stem,
    read_measurements,
    write_label_nifti,
    write_label_png,
    write_measurements,
    write_overlay_png,
)
from cervkit.export.dicom_seg import read_dicom_seg, write_dicom_seg
from cervkit.io.images import read_mask
from cervkit.io.nifti import read_nifti_spacing
from cervkit.io.privacy import pseudonym
from cervkit.viz import label_colors

NAME, PID = "Doe^Jane", "SECRET-123"
SECRETS = [b"Doe^Jane", b"Doe Jane", b"SECRET-123", b"Who^Doctor", b"ACC-777", b"St Example Hospital",
           b"OTHER-456"]


def _identify(ds: Dataset) -> Dataset:
    """Give a dataset the identifiers the privacy rules must remove."""
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, "19700101"
    ds.OtherPatientIDs, ds.InstitutionName = "OTHER-456", "St Example Hospital"
    ds.ReferringPhysicianName, ds.AccessionNumber = "Who^Doctor", "ACC-777"
    ds.StudyDescription = f"neck of {NAME}"  # an identifier hidden in free text
    return ds


def _mr_source(tmp_path: Path) -> Path:
    ds = _identify(pydicom.dcmread(get_testdata_file("MR_small.dcm")))
    path = tmp_path / "src" / "mr.dcm"
    path.parent.mkdir(exist_ok=True)
    ds.save_as(path)
    return path


def _dx_source(tmp_path: Path, shape: tuple[int, int] = (40, 50)) -> Path:
    """A single-frame DX with ImagerPixelSpacing only: no position, orientation or frame of reference."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.StudyDate, ds.StudyTime, ds.StudyID, ds.PatientSex = "DX", "20240102", "101010", "S1", "F"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.15, 0.2]
    ds.PixelData = (np.arange(shape[0] * shape[1]) % 4096).astype(np.uint16).tobytes()
    path = tmp_path / "src" / "dx.dcm"
    path.parent.mkdir(exist_ok=True)
    _identify(ds).save_as(path, enforce_file_format=True)
    return path


def _boxes(shape: tuple[int, int], n: int = 3) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for k in range(1, n + 1):
        labels[10 * k: 10 * k + 6, 5:25] = k
    return labels


def _plain_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _assert_no_secrets(folder: Path) -> None:
    for path in folder.iterdir():
        data = _plain_bytes(path)
        for secret in SECRETS:
            assert secret not in data, f"{secret!r} found in {path.name}"
            assert secret.decode() not in path.name


def _source_uids(ref: Dataset) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for i in ref.ReferencedSeriesSequence[0].ReferencedInstanceSequence}


def test_simple_formats_round_trip(tmp_path: Path) -> None:
    labels = _boxes((40, 30))
    image = np.full((40, 30), 0.5, np.float32)
    assert np.array_equal(read_mask(write_label_png(tmp_path / "m.png", labels)), labels)
    nii = write_label_nifti(tmp_path / "m.nii.gz", labels, (0.7, 1.3))
    assert np.array_equal(read_mask(nii), labels)
    assert read_nifti_spacing(nii) == pytest.approx((0.7, 1.3))
    from PIL import Image as PILImage

    rgb = np.asarray(PILImage.open(write_overlay_png(tmp_path / "o.png", image, labels, alpha=0.4)))
    assert rgb.shape == (40, 30, 3)
    assert np.all(rgb[0, 0] == 128)  # background: the gray image
    for k, colour in enumerate(label_colors(3), start=1):
        inner = rgb[10 * k + 3, 15]  # away from the outline drawn at full opacity
        assert np.abs(inner.astype(float) - (0.6 * 127.5 + 0.4 * colour)).max() <= 1.0
    with pytest.raises(FileExistsError):
        write_label_png(tmp_path / "m.png", labels)


def test_dicom_seg_mr_references_spacing_and_privacy(tmp_path: Path) -> None:
    src = _mr_source(tmp_path)
    labels = _boxes((64, 64))
    out = tmp_path / "out"
    written = export_all(labels, None, out, source_dicom=src, level_names={1: "C2", 2: "C3", 3: "C4"})
    assert set(written) == {"label_png", "overlay_png", "nifti", "dicom_seg", "measurements", "measurements_csv"}
    source = pydicom.dcmread(src)
    seg = pydicom.dcmread(written["dicom_seg"])
    assert np.array_equal(read_dicom_seg(written["dicom_seg"]), labels)
    assert _source_uids(seg) == {source.SOPInstanceUID}
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [float(v) for v in source.PixelSpacing]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["C2 vertebral body", "C3 vertebral body",
                                                              "C4 vertebral body"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "C3 vertebra"
    assert seg.PatientID == pseudonym(PID, prefix="p-") and str(seg.PatientName) == seg.PatientID
    assert np.array_equal(read_mask(written["nifti"]), labels)
    assert read_nifti_spacing(written["nifti"]) == pytest.approx(tuple(float(v) for v in source.PixelSpacing))
    _assert_no_secrets(out)


def test_keep_identifiers_keeps_them(tmp_path: Path) -> None:
    src = _mr_source(tmp_path)
    path = write_dicom_seg(tmp_path / "seg.dcm", _boxes((64, 64)), src, keep_identifiers=True)
    seg = pydicom.dcmread(path)
    assert str(seg.PatientName) == NAME and seg.PatientID == PID
    assert b"SECRET-123" in path.read_bytes()


def test_dicom_seg_projection_xray_without_patient_coordinates(tmp_path: Path) -> None:
    import highdicom as hd

    src = _dx_source(tmp_path)
    labels = _boxes((40, 50))
    out = tmp_path / "out"
    written = export_all(labels, None, out, source_dicom=src, formats=["dicom_seg", "nifti"])
    seg = pydicom.dcmread(written["dicom_seg"])
    assert "FrameOfReferenceUID" not in seg and "PlanePositionSequence" not in seg.PerFrameFunctionalGroupsSequence[0]
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [0.15, 0.2]  # ImagerPixelSpacing, said in ContentDescription
    assert "ImagerPixelSpacing" in seg.ContentDescription
    assert np.array_equal(read_dicom_seg(written["dicom_seg"]), labels)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [f"Vertebral body {k}" for k in (1, 2, 3)]
    source_uid = pydicom.dcmread(src).SOPInstanceUID
    assert _source_uids(seg) == {source_uid}
    decoded = hd.seg.segread(written["dicom_seg"]).get_pixels_by_source_instance(
        [source_uid], combine_segments=True, relabel=False)  # highdicom's own reader agrees
    assert np.array_equal(decoded[0], labels)
    assert read_nifti_spacing(written["nifti"]) == pytest.approx((0.15, 0.2))
    _assert_no_secrets(out)


def test_real_cr_with_zero_spacing(tmp_path: Path) -> None:
    path = get_testdata_file("RG1_UNCR.dcm")
    if path is None:
        skip_or_fail_in_ci("pydicom-data's RG1_UNCR.dcm is not installed (pydicom-data, in the dev extra)")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.Modality == "CR" and "ImagePositionPatient" not in header
    labels = _boxes((int(header.Rows), int(header.Columns)), n=6)
    seg_path = write_dicom_seg(tmp_path / "cr_seg.dcm", labels, path)
    seg = pydicom.dcmread(seg_path)
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]  # 0/0 spacing is not copied
    assert np.array_equal(read_dicom_seg(seg_path), labels)
    assert str(header.PatientName).encode() not in seg_path.read_bytes()


def test_measurements_equal_measure(tmp_path: Path) -> None:
    from cervkit.data.synth.phantom import make_phantom
    from cervkit.measurements.spine import measure_spine, measure_vertebrae

    ph = make_phantom("xray", seed=3, size=(160, 160))
    names = {k: f"C{k + 1}" for k in range(1, 7)}
    json_path, csv_path = write_measurements(tmp_path / "a_measurements.json", ph.labels, ph.spacing_mm,
                                             level_names=names, source_id="a")
    assert csv_path.name == "a_vertebrae.csv"
    doc = read_measurements(json_path)
    table = measure_vertebrae(ph.labels, ph.spacing_mm, levels=names)
    spine = measure_spine(ph.labels, ph.spacing_mm, levels=names)
    assert doc["levels"] == names and doc["unit"] == "mm" and doc["source_id"] == "a"
    assert doc["c2c7_cobb_deg"] == pytest.approx(spine["c2c7_cobb_deg"])
    assert doc["adjacent_endplate_angles_deg"] == pytest.approx(spine["adjacent_endplate_angles_deg"])
    assert [r["level"] for r in doc["vertebrae"]] == [f"C{k}" for k in range(2, 8)]
    for row, (_, expected) in zip(doc["vertebrae"], table.iterrows(), strict=True):
        for column, value in expected.items():
            got = row[column]
            if isinstance(value, float) and math.isnan(value):
                assert got is None
            elif isinstance(value, (float, np.floating)):
                assert got == pytest.approx(float(value), rel=1e-12)
            else:
                assert got == value
    csv = pd.read_csv(csv_path)
    assert list(csv.columns) == list(table.columns)
    assert np.allclose(csv["width_mm"], table["width_mm"])
    json.loads(json_path.read_text())  # strict JSON: no NaN


def test_not_dicom_source_and_partial_failure(tmp_path: Path) -> None:
    labels = _boxes((40, 50))
    png = write_label_png(tmp_path / "src.png", labels)
    with pytest.raises(CervkitInputError, match="not one"):
        export_all(labels, None, tmp_path / "a", source_dicom=png, formats=["dicom_seg"])
    with pytest.warns(UserWarning, match="no DICOM SEG"):
        written = export_all(labels, None, tmp_path / "b", source_dicom=png)
    assert "dicom_seg" not in written and written["overlay_png"].exists()
    wrong = _boxes((30, 30))  # not the source's 40 x 50 grid: the SEG fails, nothing is left behind
    with pytest.raises(CervkitInputError, match="does not match"):
        export_all(wrong, np.zeros((30, 30)), tmp_path / "c", source_dicom=_dx_source(tmp_path))
    assert list((tmp_path / "c").glob("*")) == []


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cervkit.export.bundle

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cervkit.export.bundle, "write_measurements", boom)
    labels = _boxes((40, 50))
    with pytest.raises(OSError, match="disk full"):
        export_all(labels, np.zeros((40, 50)), tmp_path / "d", source_dicom=_dx_source(tmp_path))
    assert list((tmp_path / "d").glob("*")) == []


def test_no_silent_overwrite_and_stems(tmp_path: Path) -> None:
    labels = _boxes((40, 50))
    image = Image(np.zeros((40, 50), np.float32), (0.5, 0.5), {"source": str(tmp_path / "Doe^Jane.png")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = export_all(labels, image, tmp_path, formats=["label_png", "nifti"])
        stem = first["label_png"].name.removesuffix("_mask.png")
        assert stem == export_stem(source=tmp_path / "Doe^Jane.png") and "Doe" not in stem
        before = first["nifti"].read_bytes()
        with pytest.raises(FileExistsError):
            export_all(labels + (labels > 0), image, tmp_path, formats=["nifti", "label_png"])
        assert first["nifti"].read_bytes() == before
        again = export_all(labels * 0, image, tmp_path, formats=["label_png"], overwrite=True)
        assert not read_mask(again["label_png"]).any()
    assert export_stem(manifest_id="pt 07/slice 3") == "pt_07_slice_3"
    src = _dx_source(tmp_path)
    assert export_stem(source=src) == pseudonym(pydicom.dcmread(src).SOPInstanceUID, prefix="img-")
    assert export_paths(tmp_path, "x")["dicom_seg"] == tmp_path / "x_seg.dcm"
    with pytest.raises(CervkitInputError):
        export_paths(tmp_path, "../x")


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cervkit.cli.main import main

    src = _dx_source(tmp_path)
    mask = write_label_png(tmp_path / "src" / "mask.png", _boxes((40, 50)))
    argv = ["export", "--out", str(tmp_path / "out"), "--mask", str(mask), "--image", str(src),
            "--levels", "C2", "C3", "C4", "--formats", "dicom_seg", "label_png"]
    assert main(argv) == 0
    seg = pydicom.dcmread(next((tmp_path / "out").glob("*_seg.dcm")))
    assert [s.SegmentLabel for s in seg.SegmentSequence][0] == "C2 vertebral body"
    _assert_no_secrets(tmp_path / "out")
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
