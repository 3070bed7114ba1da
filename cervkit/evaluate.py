"""Evaluate a predictor on a manifest: per-image and per-vertebra metrics, and a summary.

``python -m cervkit evaluate --model RUN --manifest M [--split test] --out DIR`` writes
``images.csv`` (one row per image, a column per metric: ``dice``, ``iou``, ``ppv``,
``sensitivity``, ``hd``, ``hd95`` … and ``seconds``), ``vertebrae.csv`` (one row per
ground-truth vertebra plus false positives) and ``summary.csv`` (mean, sd, median and
95 % bootstrap CI per metric, and seconds per image). Without a ``split`` column every
row is evaluated. Metric definitions: :mod:`cervkit.metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import pandas as pd

from cervkit.errors import CervkitInputError

SUMMARY_METRICS = ("dice", "iou", "ppv", "sensitivity", "hd", "hd95", "detection_rate", "mean_vertebra_dice",
                   "seconds")


@dataclass
class Evaluation:
    """Tables produced by :func:`evaluate_predictor`.

    Attributes
    ----------
    images : pandas.DataFrame
        One row per image.
    vertebrae : pandas.DataFrame
        One row per ground-truth vertebra (and per false-positive prediction).
    summary : pandas.DataFrame
        One row per metric: mean, sd, median, ci_low, ci_high, n.
    """

    images: pd.DataFrame
    vertebrae: pd.DataFrame
    summary: pd.DataFrame


def evaluate_predictor(predictor, manifest, *, split: str | None = "test", progress: bool | None = None,
                       n_boot: int = 2000, seed: int = 0) -> Evaluation:
    """Predict every image of a manifest (one split) and compare with its mask.

    Parameters
    ----------
    predictor : object
        Has ``predict(image) -> CascadePrediction``.
    manifest : cervkit.manifest.Manifest
        With masks.
    split : str, optional
        Evaluate only this split; ignored (every row) when the manifest has no ``split`` column.
    progress : bool, optional
        Progress bar (default: on a terminal).
    n_boot : int
        Bootstrap resamples for the confidence intervals.
    seed : int
        Bootstrap seed.

    Returns
    -------
    Evaluation
        Per-image, per-vertebra and summary tables.
    """
    from tqdm.auto import tqdm

    from cervkit.io import read_image, read_mask
    from cervkit.metrics import image_and_vertebra_metrics, summarize

    subset = manifest.subset(split=split) if split and "split" in manifest.df.columns else manifest
    if len(subset) == 0:
        raise CervkitInputError(f"no rows to evaluate (split={split!r})", manifest.path)
    image_rows, vertebra_tables = [], []
    for row in tqdm(list(subset.rows()), desc="evaluate", unit="image", disable=None if progress is None else not progress):
        if row.mask is None:
            raise CervkitInputError("row has no mask to evaluate against", row.image)
        image = read_image(row.image)
        gt = read_mask(row.mask)
        if gt.shape != image.shape:
            raise CervkitInputError(f"mask {gt.shape} and image {image.shape} differ in size", row.mask)
        spacing = row.pixel_spacing_mm or image.spacing_mm
        start = time.perf_counter()
        pred = predictor.predict(image.array)
        seconds = time.perf_counter() - start
        per_image, per_vertebra = image_and_vertebra_metrics(pred.labels, gt, spacing)
        image_rows.append({"image": str(row.image), "patient_id": row.patient_id, "modality": row.modality,
                           **per_image, "seconds": seconds})
        per_vertebra.insert(0, "image", str(row.image))
        vertebra_tables.append(per_vertebra)
    images = pd.DataFrame(image_rows)
    vertebrae = pd.concat(vertebra_tables, ignore_index=True)
    summary = pd.DataFrame([{"metric": m, **summarize(images[m].to_numpy(float), n_boot=n_boot, seed=seed)}
                            for m in SUMMARY_METRICS if m in images.columns])
    return Evaluation(images=images, vertebrae=vertebrae, summary=summary)


def write_evaluation(evaluation: Evaluation, out_dir: str | PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``images.csv``, ``vertebrae.csv`` and ``summary.csv`` atomically.

    Parameters
    ----------
    evaluation : Evaluation
        The tables.
    out_dir : str or PathLike
        Folder (created).
    overwrite : bool
        Replace existing files; otherwise FileExistsError before anything is written.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    from cervkit.fileutil import atomic_path, check_writable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"images.csv": evaluation.images, "vertebrae.csv": evaluation.vertebrae,
              "summary.csv": evaluation.summary}
    for name in tables:
        check_writable(out / name, overwrite)
    for name, table in tables.items():
        with atomic_path(out / name, overwrite=overwrite) as tmp:
            table.to_csv(tmp, index=False)
    return out
