"""Manifest: loading, validation (every problem at once), patient-level split, k-fold, round trip."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from cervkit.core.errors import CervkitInputError, ManifestError
from cervkit.data.checks import check_no_leak, validate_manifest
from cervkit.data.manifest import ensure_split, load_manifest
from cervkit.data.split import (
    assign_folds,
    kfold_splits,
    largest_remainder,
    split_by_patient,
    summary,
)
from cervkit.data.table import (
    Manifest,
    manifest_from_records,
    read_manifest,
    save_manifest,
)

HEADER = ["image", "mask", "patient_id", "modality", "extra_note", "slice_index"]


def _png(path: Path, shape: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros(shape, np.uint8)
    arr[shape[0] // 4: shape[0] // 2, 2:6] = value
    PILImage.fromarray(arr).save(path)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """Six patients, two images each, PNG images and masks (32x24), manifest in tmp_path/data."""
    root = tmp_path / "data"
    rows = []
    for p in range(6):
        for s in range(2):
            name = f"p{p}_s{s}.png"
            _png(root / "images" / name, (32, 24), 200)
            _png(root / "masks" / name, (32, 24), 1)
            rows.append([f"images/{name}", f"masks/{name}", f"00{p}", "MRI", f"note {p}", s])
    _write_csv(root / "manifest.csv", HEADER, rows)
    return root / "manifest.csv"


def _records(n_patients: int, modality: str, images_of: callable = lambda p: 2) -> list[dict]:
    return [{"image": f"{modality}/{p}_{s}.png", "mask": f"{modality}/{p}_{s}_m.png",
             "patient_id": f"{modality}-{p:02d}", "modality": modality}
            for p in range(n_patients) for s in range(images_of(p))]


# --- the real manifest -------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_manifest_loads_unchanged_and_valid(real_manifest_path: Path) -> None:
    text = real_manifest_path.read_text()
    header = next(csv.reader(io.StringIO(text)))
    m = load_manifest(real_manifest_path, check_sha256=True)
    assert list(m.df.columns) == header
    assert len(m) == 84 and len(m.patients()) == 14
    assert validate_manifest(m, check_sha256=True) == []
    buf = io.StringIO()
    m.df.to_csv(buf, index=False, lineterminator="\n")
    assert buf.getvalue() == text  # every value reads back as written
    first = next(csv.DictReader(io.StringIO(text)))
    assert m.image_path(0) == real_manifest_path.parent / first["image"]
    row = next(m.rows())
    assert row.patient_id == first["patient_id"] and row.mask == real_manifest_path.parent / first["mask"]
    assert row.pixel_spacing_mm == (float(first["pixel_spacing_mm"]),) * 2
    assert row.extra["citation"] == first["citation"]


@pytest.mark.realdata
def test_real_manifest_split_saved_elsewhere_points_back(real_manifest_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs" / "split.csv"
    m = ensure_split(real_manifest_path, out, seed=0)  # data folder untouched: written to out
    assert m.path == out and out.is_file()
    assert not (real_manifest_path.parent / "manifest_split.csv").exists()
    original = load_manifest(real_manifest_path, check_files=False)
    assert [m.image_path(i) for i in range(len(m))] == [original.image_path(i) for i in range(84)]
    assert next(csv.DictReader(open(out)))["image"].startswith("../")
    counts = m.df.groupby("split")["patient_id"].nunique().to_dict()
    assert counts == {"train": 8, "val": 3, "test": 3}  # 14 * (0.6, 0.2, 0.2) by largest remainder
    assert ensure_split(real_manifest_path, out, seed=0).df.equals(m.df)  # reused, same split


# --- validation --------------------------------------------------------------------------------

def test_every_problem_reported_at_once(dataset: Path) -> None:
    root = dataset.parent
    _png(root / "masks" / "empty.png", (32, 24), 0)
    _png(root / "masks" / "small.png", (30, 24), 1)
    sha_ok = hashlib.sha256((root / "images/p0_s0.png").read_bytes()).hexdigest()
    header = [*HEADER[:4], "split", "fold", "sha256"]
    rows = [
        ["images/p0_s0.png", "masks/p0_s0.png", "A", "MRI", "train", 0, sha_ok],      # line 2 ok
        ["images/missing.png", "masks/p1_s0.png", "B", "MRI", "train", 1, ""],      # 3 no image
        ["images/p1_s1.png", "masks/gone.png", "B", "MRI", "train", 1, ""],         # 4 no mask
        ["images/p2_s0.png", "masks/small.png", "C", "MRI", "train", 2, ""],        # 5 size
        ["images/p2_s1.png", "masks/empty.png", "C", "MRI", "train", 2, ""],        # 6 empty
        ["images/p3_s0.png", "masks/p3_s0.png", "D", "MRI", "train", 3, "0" * 64],  # 7 sha
        ["images/p3_s0.png", "masks/p3_s0.png", "D", "MRI", "train", 3, ""],        # 8 duplicate
        ["images/p4_s0.png", "masks/p4_s0.png", "E", "mri", "train", 0, ""],        # 9 modality
        ["images/p4_s1.png", "masks/p4_s1.png", "E", "MRI", "validation", 0, ""],   # 10 split + leak
        ["images/p5_s0.png", "masks/p5_s0.png", "F", "MRI", "test", 4, ""],         # 11 fold leak
        ["images/p5_s1.png", "masks/p5_s1.png", "F", "MRI", "test", 1, ""],         # 12
        ["images/p0_s1.png", "masks/p0_s1.png", "A", "MRI", "train", 0, "xyz"],     # 13 bad sha
    ]
    path = root / "bad.csv"
    _write_csv(path, header, rows)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, check_sha256=True)
    problems = info.value.problems
    text = "\n".join(problems)
    assert str(path) in str(info.value)

    def has(*words: str) -> bool:
        return any(all(w in p for w in words) for p in problems)

    assert has("line 3", "image file not found", "images/missing.png")
    assert has("line 4", "mask file not found", "masks/gone.png")
    assert has("line 5", "32x24", "30x24", "masks/small.png")
    assert has("line 6", "empty", "masks/empty.png")
    assert has("sha256", "images/p3_s0.png", "line 7")
    assert has("lines 7-8", "images/p3_s0.png", "duplicate")
    assert has("line 9", "'mri'", "did you mean 'MRI'")
    assert has("line 10", "'validation'", "did you mean 'val'")
    assert has("patient 'E'", "splits", "train", "validation")
    assert has("patient 'F'", "2 folds", "1 (line 12)", "4 (line 11)")
    assert has("line 13 (images/p0_s1.png)", "64 hex")
    assert has("line 9 (images/p4_s0.png)", "modality")
    assert not has("line 2:") and "patient 'A'" not in text  # the good row is not blamed
    assert len(problems) == 11


def test_missing_columns_and_file_problems_together(dataset: Path) -> None:
    path = dataset.parent / "nocol.csv"
    _write_csv(path, ["image", "mask", "modality"],
               [["images/p0_s0.png", "masks/nope.png", "MRI"]])
    problems = validate_manifest(read_manifest(path))
    assert any("missing required column" in p and "patient_id" in p for p in problems)
    assert any("line 2" in p and "masks/nope.png" in p for p in problems)


def test_sizes_from_dicom_and_nifti_headers(tmp_path: Path) -> None:
    import shutil

    import nibabel as nib
    from pydicom.data import get_testdata_file

    dcm = Path(get_testdata_file("CT_small.dcm"))  # 128 x 128, ships with pydicom
    shutil.copy(dcm, tmp_path / "ct.dcm")
    _png(tmp_path / "ok.png", (128, 128), 1)
    _png(tmp_path / "wide.png", (100, 128), 1)
    labels = np.zeros((100, 128), np.uint8)  # (rows, cols); NIfTI stores (x=cols, y=rows)
    labels[10:20, 5:9] = 1
    nib.save(nib.Nifti1Image(labels.T[:, :, None], np.eye(4)), tmp_path / "m.nii.gz")
    _png(tmp_path / "img100.png", (100, 128), 50)
    records = [
        {"image": "ct.dcm", "mask": "ok.png", "patient_id": "a", "modality": "XR"},
        {"image": "ct.dcm", "mask": "wide.png", "patient_id": "b", "modality": "XR", "slice_index": 1},
        {"image": "img100.png", "mask": "m.nii.gz", "patient_id": "c", "modality": "MRI"},
    ]
    problems = validate_manifest(manifest_from_records(records, tmp_path))
    assert len(problems) == 1 and "row 2" in problems[0] and "100x128" in problems[0]


def test_unlabelled_rows_and_ensure_valid_pass(dataset: Path) -> None:
    m = load_manifest(dataset)
    m.df.loc[0, "mask"] = None  # an unlabelled image is allowed
    assert validate_manifest(m) == [] and m.mask_path(0) is None and m.mask_path(1) is not None


# --- splitting ---------------------------------------------------------------------------------

def test_largest_remainder_rounding() -> None:
    assert largest_remainder(14, (0.6, 0.2, 0.2)) == [8, 3, 3]
    assert largest_remainder(3, (0.8, 0.1, 0.1)) == [1, 1, 1]  # each part gets one
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, r = int(rng.integers(0, 60)), rng.random(3) + 0.05
        counts = largest_remainder(n, r)
        assert sum(counts) == n
        if n >= 3:
            assert min(counts) >= 1
        if min(n * r / r.sum()) >= 1:
            assert np.all(np.abs(np.array(counts) - n * r / r.sum()) < 1)


def _parts(m: Manifest) -> dict[str, set[str]]:
    return {s: set(m.df.loc[m.df["split"] == s, "patient_id"]) for s in ("train", "val", "test")}


def test_split_by_patient_no_leak_ratios_seeded() -> None:
    m = manifest_from_records(_records(14, "MRI", lambda p: 1 + p % 4), "/data")
    a = split_by_patient(m, seed=0)
    parts = _parts(a)
    assert set().union(*parts.values()) == set(m.patients())
    assert sum(len(v) for v in parts.values()) == 14  # disjoint
    for name, ratio in zip(("train", "val", "test"), (0.6, 0.2, 0.2)):
        assert abs(len(parts[name]) - 14 * ratio) < 1
    check_no_leak(a)
    assert split_by_patient(m, seed=0).df.equals(a.df)
    assert any(not split_by_patient(m, seed=s).df["split"].equals(a.df["split"]) for s in (1, 2))
    assert m.df.columns.tolist() == a.df.columns.tolist()[:-1]  # input untouched, column added


def test_split_stratifies_modalities() -> None:
    m = manifest_from_records(_records(10, "XR") + _records(7, "MRI"), "/data")
    s = split_by_patient(m, seed=3)
    for name, group in s.df.groupby("split"):
        assert set(group["modality"]) == {"XR", "MRI"}, name
    for modality, n in (("XR", 10), ("MRI", 7)):
        sub = s.subset(modality=modality)
        for name, ratio in zip(("train", "val", "test"), (0.6, 0.2, 0.2)):
            assert abs(sub.subset(name).df["patient_id"].nunique() - n * ratio) < 1
    totals = s.df.groupby("split")["patient_id"].nunique()
    assert abs(totals["train"] - 17 * 0.6) < 1.5


def test_summary_counts_match_groupby() -> None:
    s = split_by_patient(manifest_from_records(_records(6, "XR") + _records(5, "MRI"), "/d"))
    table = summary(s).set_index(["split", "modality"])
    for (part, mod), group in s.df.groupby(["split", "modality"]):
        assert table.loc[(part, mod), "images"] == len(group)
        assert table.loc[(part, mod), "patients"] == group["patient_id"].nunique()
    assert table.loc[("all", "all"), "images"] == len(s)


def test_leak_check_names_patient() -> None:
    m = manifest_from_records(_records(3, "XR"), "/d")
    m.df["split"] = ["train", "test", "val", "val", "test", "test"]
    with pytest.raises(ManifestError, match="XR-00.*test.*train|XR-00.*train.*test"):
        check_no_leak(m)


# --- k-fold ------------------------------------------------------------------------------------

def test_assign_folds_balanced_by_patient() -> None:
    images = lambda p: 1 + (p * 7) % 5  # noqa: E731  uneven: 1..5 images per patient
    m = split_by_patient(manifest_from_records(_records(20, "XR", images), "/d"), seed=1)
    f = assign_folds(m, 4, seed=0)
    assert (f.df.loc[f.df["split"] == "test", "fold"] == -1).all()
    pool = f.df[f.df["split"] != "test"]
    assert (pool.groupby("patient_id")["fold"].nunique() == 1).all()
    assert sorted(pool["fold"].unique()) == [0, 1, 2, 3]
    sizes = pool.groupby("fold").size()
    assert sizes.max() - sizes.min() <= 5  # within one patient's images
    seen: list[str] = []
    for train, val in kfold_splits(f, 4):
        assert not set(train.patients()) & set(val.patients())
        assert len(train) + len(val) == len(pool)
        seen += list(val.df["image"])
    assert sorted(seen) == sorted(pool["image"])  # every image validated exactly once
    with pytest.raises(CervkitInputError):
        list(kfold_splits(f, 5))


def test_folds_balance_images_not_patients() -> None:
    sizes = [10] + [1] * 10  # one big patient: balance needs it alone in its fold
    m = manifest_from_records(_records(11, "XR", lambda p: sizes[p]), "/d")
    f = assign_folds(m, 2, exclude_split=None)
    assert sorted(f.df.groupby("fold").size()) == [10, 10]
    assert f.df.groupby("fold")["patient_id"].nunique().sort_values().tolist() == [1, 10]


def test_kfold_assigns_when_missing_and_checks_k() -> None:
    m = manifest_from_records(_records(5, "MRI"), "/d")
    folds = list(kfold_splits(m, 5, exclude_split=None))
    assert [len(v.patients()) for _, v in folds] == [1] * 5
    with pytest.raises(CervkitInputError):
        assign_folds(m, 6)


# --- round trip --------------------------------------------------------------------------------

def test_save_load_round_trip_other_folder(dataset: Path, tmp_path: Path) -> None:
    m = load_manifest(dataset)
    m.df["maybe"] = pd.array([33, None] * 6, dtype="Int64")
    out = tmp_path / "elsewhere" / "deep" / "copy.csv"
    save_manifest(m, out)
    again = load_manifest(out)
    assert list(again.df.columns) == [*HEADER, "maybe"]
    assert again.df["patient_id"].iloc[0] == "000"  # leading zeros kept
    assert again.df.drop(columns=["image", "mask"]).equals(m.df.drop(columns=["image", "mask"]))
    assert [again.image_path(i) for i in range(len(m))] == [m.image_path(i) for i in range(len(m))]
    written = list(csv.DictReader(open(out)))
    assert written[0]["image"] == "../../data/images/p0_s0.png" and written[1]["maybe"] == ""
    with pytest.raises(FileExistsError):
        save_manifest(m, out)
    before = out.read_text()
    save_manifest(again.with_df(again.df.iloc[:3]), out, overwrite=True)
    assert out.read_text() != before and len(load_manifest(out)) == 3


def test_text_columns_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    _write_csv(path, ["image", "mask", "patient_id", "modality", "source", "n"],
               [["a.png", "", "12", "XR", "NA", "1"], ["b.png", "", "7", "XR", "", "2"]])
    m = read_manifest(path)
    assert m.patients() == ["12", "7"] and m.df["source"].iloc[0] == "NA"
    assert m.df["patient_id"].tolist() == ["12", "7"]  # not numbers
    assert m.df["n"].dtype == np.int64 and pd.isna(m.df["source"].iloc[1])
    assert next(m.rows()).patient_id == "12" and m.mask_path(0) is None


def test_save_same_folder_byte_identical(dataset: Path) -> None:
    target = dataset.with_name("copy.csv")
    save_manifest(load_manifest(dataset), target)
    assert target.read_text() == dataset.read_text()


def test_ensure_split_writes_once_and_reuses(dataset: Path) -> None:
    m = ensure_split(dataset, seed=0)
    written = dataset.with_name("manifest_split.csv")
    assert m.path == written and len(_parts(m)["test"]) >= 1
    before = written.read_text()
    assert ensure_split(dataset, seed=0).df.equals(m.df) and written.read_text() == before
    assert ensure_split(written).df.equals(m.df)  # a manifest with a split is used as it is
    different = next(s for s in range(1, 20)
                     if not split_by_patient(load_manifest(dataset), seed=s).df["split"]
                     .equals(m.df["split"]))
    with pytest.raises(ManifestError, match="another split"):
        ensure_split(dataset, seed=different)


def test_ensure_split_unwritable_folder_asks_for_out_path(dataset: Path, monkeypatch) -> None:
    import cervkit.data.manifest as mod

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mod, "save_manifest", refuse)
    with pytest.raises(CervkitInputError, match="out_path"):
        ensure_split(dataset)


def test_subset_and_rows(dataset: Path) -> None:
    s = split_by_patient(load_manifest(dataset), seed=0)
    train = s.subset("train")
    assert set(train.df["split"]) == {"train"} and train.path is None
    assert train.image_path(0) == s.image_path(int(np.flatnonzero(s.df["split"] == "train")[0]))
    rows = list(s.subset(["val", "test"]).rows())
    assert {r.split for r in rows} == {"val", "test"} and all(r.image.is_file() for r in rows)
    assert rows[0].extra["slice_index"] in (0, 1) and rows[0].fold is None


@pytest.mark.realdata
def test_split_of_shared_data_goes_to_outputs(real_manifest_path: Path, outputs_tmp: Path) -> None:
    """cervkit never writes into CERVKIT_DATA_DIR: the default split file lands under outputs/splits."""
    from cervkit.data.manifest import default_split_path, ensure_split

    before = sorted(p.name for p in real_manifest_path.parent.iterdir())
    target = default_split_path(real_manifest_path)
    assert target.is_relative_to(outputs_tmp.resolve())
    split = ensure_split(real_manifest_path)
    assert target.is_file() and set(split.df["split"]) == {"train", "val", "test"}
    assert sorted(p.name for p in real_manifest_path.parent.iterdir()) == before
    assert split.image_path(0).is_file()
