"""k-fold cross-validation by patient: one run per fold, each evaluated on its held-out patients.

The patients are dealt into ``k`` folds with balanced image counts (:func:`cervkit.data.split.assign_folds`).
For fold ``i``, fold ``i`` is the **test** part; the other folds' patients are split again by patient into
**train** and **val** (``val_ratio``, for early stopping), so no patient is in two parts and every patient
is tested exactly once. Each fold trains a run (:func:`cervkit.training.train.train_run`) into ``OUT/fold<i>/``,
from the split manifest ``OUT/splits/fold<i>.csv``, and is evaluated on its test part into
``OUT/fold<i>/test/`` (:mod:`cervkit.evaluation.evaluate`). ``OUT/folds.csv`` has one row per fold (patients, images,
mean per-image metrics) and ``OUT/summary.csv`` the mean ± sd over the folds.

``python -m cervkit crossval --manifest M --out DIR [--model yolo-unet] [--k 5] [--quick]``
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from cervkit.core.errors import CervkitInputError

FOLD_METRICS = ("dice", "iou", "ppv", "sensitivity", "hd95", "hd", "detection_rate", "seconds")


@dataclass
class CrossValidation:
    """What :func:`cross_validate` wrote.

    Attributes
    ----------
    folds : pandas.DataFrame
        One row per fold: ``fold``, patient and image counts, ``test_patients`` (``;``-joined), the mean of
        each per-image metric over the fold's test images, ``unit`` (of HD), ``train_seconds``, ``run``.
    summary : pandas.DataFrame
        One row per metric: ``mean``, ``sd`` (over folds, ddof=1), ``min``, ``max``, ``n_folds``.
    out : pathlib.Path
        The folder.
    """

    folds: pd.DataFrame
    summary: pd.DataFrame
    out: Path


def fold_splits(manifest: Any, k: int = 5, *, seed: int = 0, val_ratio: float = 0.25) -> list[Any]:
    """One split manifest per fold: fold ``i`` is ``test``, the rest is split into ``train``/``val`` by patient.

    Parameters
    ----------
    manifest : Manifest or str or PathLike
        Every row takes part (an existing ``split`` or ``fold`` column is ignored).
    k : int
        Number of folds (2 … number of patients).
    seed : int
        Fold assignment and train/val split seed.
    val_ratio : float
        Share of the non-test patients used for validation (early stopping), in (0, 1).

    Returns
    -------
    list of Manifest
        ``k`` manifests with ``split`` and ``fold`` columns, the same root as the input.

    Raises
    ------
    CervkitInputError
        Bad ``k`` or ``val_ratio``, or too few patients for a train and a val part in every fold.
    """
    from cervkit.data.checks import check_no_leak
    from cervkit.data.manifest import load_manifest
    from cervkit.data.split import assign_folds, split_by_patient

    if not hasattr(manifest, "df"):
        manifest = load_manifest(manifest)
    if not 0 < val_ratio < 1:
        raise CervkitInputError(f"val_ratio must be in (0, 1), got {val_ratio}", manifest.path)
    base = manifest.with_df(manifest.df.drop(columns=["split", "fold"], errors="ignore"))
    folded = assign_folds(base, k, seed=seed, exclude_split=None)
    out = []
    for f in range(k):
        in_fold = (folded.df["fold"] == f).to_numpy()
        rest = split_by_patient(folded.with_df(folded.df.loc[~in_fold]), (1 - val_ratio, val_ratio, 0.0), seed=seed)
        part = dict(zip(rest.df["patient_id"].astype(str), rest.df["split"]))
        df = folded.df.copy()
        df["split"] = ["test" if t else part[str(p)] for t, p in zip(in_fold, df["patient_id"])]
        for name in ("train", "val"):
            if not (df["split"] == name).any():
                raise CervkitInputError(f"fold {f}: no {name} patients left (k={k} with "
                                        f"{df['patient_id'].nunique()} patients); use a smaller k", manifest.path)
        split = folded.with_df(df)
        check_no_leak(split)
        out.append(split)
    return out


def _fold_row(f: int, split: Any, evaluation: Any, run: Path, train_seconds: float) -> dict[str, Any]:
    """One row of ``folds.csv``."""
    parts = {name: split.df.loc[split.df["split"] == name, "patient_id"].astype(str) for name in
             ("train", "val", "test")}
    images = evaluation.images
    row: dict[str, Any] = {"fold": f, **{f"{n}_patients": s.nunique() for n, s in parts.items()},
                           "test_images": len(images), "test_patients": ";".join(sorted(set(parts["test"])))}
    row.update({m: float(images[m].mean()) for m in FOLD_METRICS if m in images.columns})
    units = set(images["unit"].astype(str)) if "unit" in images.columns else {"px"}
    row["unit"] = units.pop() if len(units) == 1 else "mixed"
    row.update(train_seconds=round(train_seconds, 2), run=str(run))
    return row


def summarize_folds(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over folds of each metric in ``folds`` (one row per metric).

    Parameters
    ----------
    folds : pandas.DataFrame
        ``folds.csv``.

    Returns
    -------
    pandas.DataFrame
        ``metric, mean, sd, min, max, n_folds`` (sd with ddof=1; 0 for one fold).
    """
    rows = []
    for m in [m for m in FOLD_METRICS if m in folds.columns]:
        v = folds[m].astype(float)
        rows.append({"metric": m, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                     "min": float(v.min()), "max": float(v.max()), "n_folds": int(len(v))})
    return pd.DataFrame(rows)


def cross_validate(manifest: str | PathLike[str] | Any, out: str | PathLike[str], *, model: str = "yolo-unet",
                   k: int = 5, seed: int = 0, val_ratio: float = 0.25, quick: bool | None = None,
                   device: str | None = None, imgsz: int | None = None,
                   detector_options: dict[str, Any] | None = None, segmenter_options: dict[str, Any] | None = None,
                   n_boot: int = 500, overwrite: bool = False, progress: bool | None = None) -> CrossValidation:
    """Train and test ``model`` on ``k`` patient-level folds.

    Parameters
    ----------
    manifest : Manifest or str or PathLike
        Every row takes part (see :func:`fold_splits`).
    out : str or PathLike
        The folder for the splits, the fold runs and the tables.
    model : str
        Any model of :func:`cervkit.training.train.train_run` (default the paper's ``yolo-unet``).
    k, seed, val_ratio
        See :func:`fold_splits`; ``seed`` also seeds training.
    quick, device, imgsz, detector_options, segmenter_options
        Passed to :func:`cervkit.training.train.train_run` (the same budget for every fold).
    n_boot : int
        Bootstrap resamples of each fold's evaluation summary.
    overwrite : bool
        Replace existing fold runs and tables; otherwise FileExistsError before any training.
    progress : bool, optional
        Progress bars of the evaluations.

    Returns
    -------
    CrossValidation
        The per-fold table, the summary and the folder.
    """
    from cervkit.core.files import atomic_path, check_writable
    from cervkit.data.table import save_manifest
    from cervkit.evaluation.evaluate import evaluate_run, write_evaluation
    from cervkit.training.train import train_run

    folder = Path(out).resolve()
    splits = fold_splits(manifest, k, seed=seed, val_ratio=val_ratio)
    tested = [set(s.df.loc[s.df["split"] == "test", "patient_id"].astype(str)) for s in splits]
    if sum(map(len, tested)) != len(set().union(*tested)):  # a bug, not a user error
        raise CervkitInputError("folds' test patients overlap", folder)
    for name in ("folds.csv", "summary.csv"):
        check_writable(folder / name, overwrite)
    for f in range(k):
        run = folder / f"fold{f}"
        if run.exists() and any(run.iterdir()) and not overwrite:
            raise FileExistsError(f"{run} exists and is not empty; pass overwrite=True (--overwrite)")
    rows = []
    for f, split in enumerate(splits):
        split_csv = save_manifest(split, folder / "splits" / f"fold{f}.csv", overwrite=True)
        run = folder / f"fold{f}"
        start = time.perf_counter()
        train_run(split_csv, run, model=model, quick=quick, seed=seed, imgsz=imgsz, device=device,
                  overwrite=overwrite, detector_options=detector_options, segmenter_options=segmenter_options,
                  validate=False)
        train_seconds = time.perf_counter() - start
        evaluation = evaluate_run(run, split, split="test", device=device, progress=progress, n_boot=n_boot,
                                  seed=seed, dataset=f"fold{f}")
        write_evaluation(evaluation, run / "test", overwrite=True)
        rows.append(_fold_row(f, split, evaluation, run, train_seconds))
    folds = pd.DataFrame(rows)
    summary = summarize_folds(folds)
    for name, table in (("folds.csv", folds), ("summary.csv", summary)):
        with atomic_path(folder / name, overwrite=overwrite) as tmp:
            table.to_csv(tmp, index=False)
    return CrossValidation(folds, summary, folder)


def read_crossval(out: str | PathLike[str]) -> CrossValidation:
    """Load ``folds.csv`` and ``summary.csv`` written by :func:`cross_validate`.

    Parameters
    ----------
    out : str or PathLike
        The cross-validation folder.

    Returns
    -------
    CrossValidation
        Per-fold table, its summary and the folder.

    Raises
    ------
    CervkitInputError
        The folder has no ``folds.csv``.
    """
    folder = Path(out)
    if not (folder / "folds.csv").is_file():
        raise CervkitInputError("not a cross-validation folder (no folds.csv)", folder)
    folds = pd.read_csv(folder / "folds.csv", dtype={"test_patients": str})
    return CrossValidation(folds, summarize_folds(folds), folder)
