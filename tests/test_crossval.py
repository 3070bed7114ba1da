"""k-fold cross-validation by patient: patient-disjoint folds, every patient tested once, per-fold tables.

Training and evaluation are replaced by stand-ins (a run folder with run.json; per-image scores that are a
known function of the patient) so the tests check the fold bookkeeping and the tables, in well under a second.
Notebook 06 runs the real thing in quick mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cervkit.evaluation.evaluate
import cervkit.training.train
from cervkit.cli.main import main
from cervkit.core.errors import CervkitInputError
from cervkit.data.table import manifest_from_records, save_manifest
from cervkit.evaluation.crossval import cross_validate, fold_splits, read_crossval
from cervkit.evaluation.evaluate import Evaluation


def _write_files(manifest) -> None:
    from PIL import Image as PILImage

    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    for i in range(len(manifest)):
        for path, array in ((manifest.image_path(i), mask * 200), (manifest.mask_path(i), mask)):
            path.parent.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(array).save(path)


def _manifest(tmp_path: Path, n_patients: int = 10):
    records = [{"image": f"img/p{p}_{j}.png", "mask": f"msk/p{p}_{j}.png", "patient_id": f"p{p}",
                "modality": "MRI", "split": "train" if p % 2 else "test"}      # an existing split is ignored
               for p in range(n_patients) for j in range(1 + p % 3)]
    return manifest_from_records(records, tmp_path)


def test_folds_are_patient_disjoint_and_cover_every_patient(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    splits = fold_splits(manifest, 4, seed=3)
    assert len(splits) == 4
    tested = []
    for split in splits:
        df = split.df
        parts = {name: set(df.loc[df["split"] == name, "patient_id"]) for name in ("train", "val", "test")}
        assert all(parts.values()), "every fold has train, val and test patients"
        assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
        assert len(df) == len(manifest.df) and set(df["split"]) == {"train", "val", "test"}
        tested.append(parts["test"])
    assert sum(map(len, tested)) == 10 and set().union(*tested) == set(manifest.patients())
    # image counts per test fold are balanced (patients hold 1-3 images: within one patient's worth)
    counts = [int((s.df["split"] == "test").sum()) for s in splits]
    assert max(counts) - min(counts) <= 3
    assert [s.df["split"].tolist() for s in fold_splits(manifest, 4, seed=3)] == [s.df["split"].tolist() for s in splits]


def test_fold_splits_refuse_impossible_folds(tmp_path: Path) -> None:
    with pytest.raises(CervkitInputError, match="folds need"):
        fold_splits(_manifest(tmp_path, 3), 4)
    with pytest.raises(CervkitInputError, match="no val patients"):
        fold_splits(_manifest(tmp_path, 2), 2)       # one patient left per fold: nothing to validate on
    with pytest.raises(CervkitInputError, match="val_ratio"):
        fold_splits(_manifest(tmp_path, 6), 2, val_ratio=1.0)


def _score(patient: str) -> float:
    return int(patient[1:]) / 10


@pytest.fixture()
def fake_training(monkeypatch):
    calls = []

    def train_run(manifest, out, **kwargs):
        calls.append((Path(manifest), kwargs))
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not kwargs.get("overwrite"):
            raise FileExistsError(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps({"model": kwargs["model"], "status": "done"}))
        return out

    def evaluate_run(run, manifest, *, split="test", **kwargs):
        rows = manifest.df[manifest.df["split"] == split]
        images = pd.DataFrame({"image": rows["image"], "patient_id": rows["patient_id"],
                               "dice": [_score(p) for p in rows["patient_id"]], "hd95": 2.0, "unit": "mm",
                               "seconds": 0.5})
        return Evaluation(images, pd.DataFrame(), pd.DataFrame(), {"run": str(run)})

    monkeypatch.setattr(cervkit.training.train, "train_run", train_run)
    monkeypatch.setattr(cervkit.evaluation.evaluate, "evaluate_run", evaluate_run)
    return calls


def test_cross_validate_tables(tmp_path: Path, fake_training) -> None:
    manifest = _manifest(tmp_path)
    result = cross_validate(manifest, tmp_path / "cv", k=3, seed=1, quick=True)
    assert len(fake_training) == 3 and all(kw["model"] == "yolo-unet" and kw["quick"] for _, kw in fake_training)
    folds = result.folds
    expected = []
    for f, split in enumerate(fold_splits(manifest, 3, seed=1)):
        test = split.df[split.df["split"] == "test"]
        expected.append(np.mean([_score(p) for p in test["patient_id"]]))
        row = folds.iloc[f]
        assert row["test_images"] == len(test) and row["test_patients"] == ";".join(sorted(set(test["patient_id"])))
        written = pd.read_csv(fake_training[f][0])       # each fold trained from its own split file
        assert (written["split"] == "test").sum() == len(test)
    assert folds["dice"].tolist() == pytest.approx(expected)
    summary = result.summary.set_index("metric")
    assert summary.loc["dice", "mean"] == pytest.approx(np.mean(expected))
    assert summary.loc["dice", "sd"] == pytest.approx(np.std(expected, ddof=1))
    assert summary.loc["hd95", "sd"] == 0.0 and summary.loc["dice", "n_folds"] == 3
    assert (tmp_path / "cv" / "fold2" / "test" / "images.csv").is_file()
    again = read_crossval(tmp_path / "cv")
    assert again.folds["dice"].tolist() == pytest.approx(expected)
    with pytest.raises(FileExistsError):
        cross_validate(manifest, tmp_path / "cv", k=3, seed=1)
    assert len(fake_training) == 3, "refused before training anything"


def test_crossval_cli(tmp_path: Path, fake_training, capsys) -> None:
    manifest = _manifest(tmp_path, 6)
    _write_files(manifest)
    path = save_manifest(manifest, tmp_path / "m.csv")
    assert main(["crossval", "--manifest", str(path), "--out", str(tmp_path / "cv"), "--k", "2",
                 "--model", "unet3plus", "--quick"]) == 0
    assert "2 folds" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "cv" / "folds.csv")) == 2 and fake_training[0][1]["model"] == "unet3plus"
    assert main(["crossval", "--manifest", str(path), "--out", str(tmp_path / "cv"), "--k", "2"]) == 2
