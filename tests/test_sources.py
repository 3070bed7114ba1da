"""Several sources with their own level protocols: merged, split within each source, unannotated bodies kept
out of the detector's background and out of the scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError


def _bodies(rows: list[tuple[int, int]], shape: tuple[int, int] = (100, 40)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for k, (top, bottom) in enumerate(rows, start=1):
        labels[top:bottom, 10:30] = k
    return labels


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two phantom sets standing in for two scanners; B annotates C3-C6 only (C2 and C7 visible, unlabelled)."""
    from cervkit.data.manifest import load_manifest
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.data.table import save_manifest
    from cervkit.io.images import read_mask, write_png

    root = tmp_path_factory.mktemp("sources")
    a = write_phantom_dataset(root / "a", 10, size=(96, 96), seed=1, n_patients=5)
    b_path = write_phantom_dataset(root / "b", 10, style="mri", size=(96, 96), seed=2, n_patients=5)
    b = load_manifest(b_path)
    for i in range(len(b)):  # keep C3..C6 only: C2 and C7 become unannotated
        labels = read_mask(b.mask_path(i))
        inner = np.where((labels >= 2) & (labels <= 5), labels - 1, 0).astype(np.uint8)
        write_png(b.mask_path(i), inner, overwrite=True)
    b.df["levels"] = "C3,C4,C5,C6"
    b.df["n_vertebrae"] = 4
    b.df["patient_id"] = [p.replace("synth-mri-", "synth-xr-") for p in b.df["patient_id"]]  # clash with A
    b.df["source"] = "scanner_b"
    b.df = b.df.drop(columns=["sha256"])
    save_manifest(b, b_path, overwrite=True)
    return (a if a.name == "manifest.csv" else a / "manifest.csv"), b_path


def test_combine_and_split_within_each_source(two_sources: tuple[Path, Path], tmp_path: Path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.data.sources import combine_sources, source_of, split_sources

    a, b = (load_manifest(p) for p in two_sources)
    assert source_of(b) == "scanner_b"
    merged = combine_sources([a, b], tmp_path)
    assert len(merged) == 20 and set(merged.df["source"]) == {source_of(a), "scanner_b"}
    assert all(merged.image_path(i).is_file() for i in range(len(merged)))
    clashing = set(a.df["patient_id"]) & {p.split(":", 1)[-1] for p in merged.df["patient_id"]}
    assert clashing and all(":" in p for p in merged.df["patient_id"] if p.split(":", 1)[-1] in clashing), \
        "a patient ID two sources share is told apart by its source"
    split = split_sources(merged, seed=0)
    for name, part in split.df.groupby("source"):
        assert set(part["split"]) == {"train", "val", "test"}, name
        for patient, rows in part.groupby("patient_id"):
            assert rows["split"].nunique() == 1, "a patient is in one split only"
    with pytest.raises(CervkitInputError, match="two sources"):
        combine_sources([a, a], tmp_path)


def test_annotated_span_stops_half_a_disc_beyond_the_last_annotated_body() -> None:
    from cervkit.data.sources import annotated_span

    labels = _bodies([(20, 30), (40, 50), (60, 70)])  # discs of 10 rows; an unlabelled body would start at 80
    assert annotated_span(labels) == (15, 75)
    assert annotated_span(labels, disc_fraction=0.0) == (20, 70)
    with pytest.raises(CervkitInputError, match="empty"):
        annotated_span(np.zeros((10, 10), np.uint8))


def test_span_crops_leave_unannotated_bodies_out(two_sources: tuple[Path, Path], tmp_path: Path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.data.sources import annotated_span, write_span_crops
    from cervkit.io.images import read_image, read_mask

    b = load_manifest(two_sources[1])
    b.df["split"] = "train"
    crops = write_span_crops(b, tmp_path / "crops")
    assert len(crops) == len(b) and (tmp_path / "crops" / "manifest.csv").is_file()
    for i in range(len(b)):
        top, bottom = annotated_span(read_mask(b.mask_path(i)))
        assert crops.df["span_rows"].iloc[i] == f"{top}:{bottom}"
        np.testing.assert_array_equal(read_mask(crops.mask_path(i)), read_mask(b.mask_path(i))[top:bottom])
        assert read_image(crops.image_path(i)).array.shape[0] == bottom - top


def test_bodies_outside_the_annotated_levels_are_not_scored() -> None:
    from cervkit.evaluation.matching import drop_unannotated, image_metrics

    gt = _bodies([(20, 30), (40, 50)])
    pred = _bodies([(5, 14), (20, 30), (40, 50), (60, 70)])  # the unannotated neighbours found too
    kept = drop_unannotated(pred, gt)
    assert sorted(np.unique(kept)) == [0, 2, 3]
    assert image_metrics(kept, gt)["dice"] == 1.0 and image_metrics(pred, gt)["dice"] < 1.0
    stray = pred.copy()
    stray[31:39, 0:5] = 9  # a false body between annotated levels stays a false positive
    assert 9 in np.unique(drop_unannotated(stray, gt))
    touching = pred.copy()
    touching[49:60, 10:13] = 4  # a tilted S1 whose corner touches the last annotated body (3 pixels)
    assert 4 not in np.unique(drop_unannotated(touching, gt))
    big = pred.copy()
    big[45:60, 10:30] = 4  # a third of it inside the annotated body: a real over-segmentation, kept
    assert 4 in np.unique(drop_unannotated(big, gt))


def test_train_takes_several_sources(two_sources: tuple[Path, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from cervkit.cli.main import main
    from cervkit.data.manifest import load_manifest
    from cervkit.runs.folder import read_run_info

    monkeypatch.setenv("CERVKIT_OUTPUTS", str(tmp_path / "outputs"))
    run = tmp_path / "run"
    assert main(["train", "--manifest", str(two_sources[0]), "--manifest", str(two_sources[1]), "--out", str(run),
                 "--quick", "--imgsz", "64", "--device", "cpu"]) == 0
    info = read_run_info(run)
    assert info["detector_classes"]["classes"] == "single"
    assert set(info["split"]["sources"]) == {load_manifest(two_sources[0]).df["source"].iloc[0], "scanner_b"}
    assert isinstance(info["arguments"]["manifest"], list) and len(info["arguments"]["manifest"]) == 2
    crops = load_manifest(run / "detector_data" / "manifest.csv", validate=False)
    assert set(crops.df["split"]) <= {"train", "val"} and "span_rows" in crops.df.columns
    split = load_manifest(run / "split.csv", validate=False)
    assert set(split.df["source"]) == set(info["split"]["sources"])


def test_leave_one_source_out_never_trains_on_the_held_out_source(two_sources: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    import json

    from cervkit.data.manifest import load_manifest
    from cervkit.evaluation.leave_out import finetune_subset, leave_one_source_out

    a, b = (load_manifest(p) for p in two_sources)
    tune, rest = finetune_subset(b, 3)
    assert len(tune) == 3 and tune.df["patient_id"].is_unique and list(tune.df["split"]) == ["train", "train", "val"]
    assert not set(tune.df["patient_id"]) & set(rest.df["patient_id"]) and len(tune) + len(rest) < len(b) + 1
    with pytest.raises(CervkitInputError, match="none to test on"):
        finetune_subset(b, 5)
    table = leave_one_source_out({"a": a, "scanner_b": b}, tmp_path / "loso", held_out=["scanner_b"], n_finetune=3,
                                 device="cpu", quick=True, detector_options={"imgsz": 64})
    assert list(table["stage"]) == ["unseen_all", "unseen", "finetuned"]
    assert table.loc[table["stage"] == "unseen_all", "images"].item() == len(b)
    assert (table.loc[table["stage"] != "unseen_all", "images"] == len(rest)).all()
    trained = load_manifest(tmp_path / "loso" / "scanner_b" / "run" / "split.csv", validate=False)
    assert not set(trained.df["image"].map(lambda p: Path(p).name)) & set(b.df["image"].map(lambda p: Path(p).name))
    result = json.loads((tmp_path / "loso" / "scanner_b" / "result.json").read_text())
    assert set(result["unseen_all"]["per_level"]) == {"C3", "C4", "C5", "C6"}, "scored per annotated level"
    info = json.loads((tmp_path / "loso" / "scanner_b" / "finetuned" / "run.json").read_text())
    assert info["resumed_from"]["path"] == str((tmp_path / "loso" / "scanner_b" / "run").resolve())


def test_crossval_by_source_from_the_command_line(two_sources: tuple[Path, Path], tmp_path: Path) -> None:
    import pandas as pd

    from cervkit.cli.main import main
    from cervkit.data.manifest import load_manifest
    from cervkit.data.sources import source_of

    out = tmp_path / "cv"
    assert main(["crossval", "--by", "source", "--manifest", str(two_sources[0]), "--manifest", str(two_sources[1]),
                 "--out", str(out), "--quick", "--imgsz", "64", "--finetune-images", "0", "--device", "cpu"]) == 0
    table = pd.read_csv(out / "table.csv")
    names = {source_of(load_manifest(p)) for p in two_sources}
    assert set(table["held_out"]) == names and len(names) == 2 and set(table["stage"]) == {"unseen_all"}
    assert main(["crossval", "--manifest", str(two_sources[0]), "--manifest", str(two_sources[1]),
                 "--out", str(tmp_path / "cv2")]) != 0, "by patient takes one manifest"


def test_area_ratio_says_how_much_larger_the_masks_are_than_the_annotations() -> None:
    import pandas as pd

    from cervkit.evaluation.leave_out import area_ratio

    rows = pd.DataFrame({"matched": [True, True, True, False], "gt_area_px": [100, 200, 400, 300],
                         "pred_area_px": [110, 240, 400, 0]})
    assert area_ratio(rows) == 1.1  # the median of 1.1, 1.2, 1.0; the missed body is not a ratio
    assert area_ratio(rows.assign(matched=False)) is None
