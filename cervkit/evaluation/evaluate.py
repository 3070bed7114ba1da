"""Evaluate a predictor on a manifest: per-image and per-vertebra metrics, and a summary.

``python -m cervkit evaluate --model RUN --manifest M [--split test] --out DIR`` writes
``images.csv`` (one row per image, a column per metric: ``dice``, ``iou``, ``ppv``,
``sensitivity``, ``hd``, ``hd95`` … and ``seconds``), ``vertebrae.csv`` (one row per
ground-truth vertebra plus false positives), ``summary.csv`` (mean, sd, median and
95 % bootstrap CI per metric, and seconds per image) and, when the run is known
(:func:`evaluate_run`, the CLI), ``evaluation.json`` (run, model, manifest, split, dataset).
Without a ``split`` column every row is evaluated. Metric definitions: :mod:`cervkit.evaluation.metrics`;
:func:`read_evaluation` loads a folder back, :mod:`cervkit.evaluation.compare` compares several.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError

INFO_FILE = "evaluation.json"
TABLE_FILES = ("images.csv", "vertebrae.csv", "summary.csv")
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
    info : dict
        What was evaluated (``run``, ``model``, ``manifest``, ``split``, ``dataset`` …); empty when unknown.
    """

    images: pd.DataFrame
    vertebrae: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def evaluate_predictor(predictor, manifest, *, split: str | None = "test", progress: bool | None = None,
                       n_boot: int = 2000, seed: int = 0, unannotated: bool | str = "auto",
                       keep: dict[str, Any] | None = None) -> Evaluation:
    """Predict every image of a manifest (one split) and compare with its mask.

    Parameters
    ----------
    predictor : object
        Has ``predict(image) -> CascadePrediction``.
    manifest : cervkit.data.table.Manifest
        With masks.
    split : str, optional
        Evaluate only this split; ignored (every row) when the manifest has no ``split`` column.
    progress : bool, optional
        Progress bar (default: on a terminal).
    n_boot : int
        Bootstrap resamples for the confidence intervals.
    seed : int
        Bootstrap seed.
    unannotated : bool or "auto"
        Drop predicted bodies outside the annotated levels before scoring
        (:func:`cervkit.evaluation.matching.drop_unannotated`). ``"auto"``: when the manifest has a ``levels``
        column, i.e. declares which levels its masks annotate.
    keep : dict, optional
        Filled with image path (``str``) → prediction, for a second look without predicting again
        (e.g. :func:`cervkit.evaluation.naming.body_names`).

    Returns
    -------
    Evaluation
        Per-image, per-vertebra and summary tables (``images.csv`` records ``unannotated_dropped``).
    """
    from tqdm.auto import tqdm

    from cervkit.evaluation.matching import drop_unannotated, image_and_vertebra_metrics
    from cervkit.evaluation.metrics import summarize
    from cervkit.io.images import read_image, read_mask

    subset = manifest.subset(split=split) if split and "split" in manifest.df.columns else manifest
    if len(subset) == 0:
        raise CervkitInputError(f"no rows to evaluate (split={split!r})", manifest.path)
    if unannotated == "auto":
        unannotated = "levels" in manifest.df.columns
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
        if keep is not None:
            keep[str(row.image)] = pred
        labels = drop_unannotated(pred.labels, gt) if unannotated else pred.labels
        dropped = len(np.unique(pred.labels)) - len(np.unique(labels))
        per_image, per_vertebra = image_and_vertebra_metrics(labels, gt, spacing)
        image_rows.append({"image": str(row.image), "mask": str(row.mask), "patient_id": row.patient_id,
                           "modality": row.modality, **per_image, "seconds": seconds,
                           "unannotated_dropped": int(dropped)})
        per_vertebra.insert(0, "image", str(row.image))
        vertebra_tables.append(per_vertebra)
    images = pd.DataFrame(image_rows)
    vertebrae = pd.concat(vertebra_tables, ignore_index=True)
    summary = pd.DataFrame([{"metric": m, **summarize(images[m].to_numpy(float), n_boot=n_boot, seed=seed)}
                            for m in SUMMARY_METRICS if m in images.columns])
    return Evaluation(images=images, vertebrae=vertebrae, summary=summary)


def evaluate_run(run: str | PathLike[str], manifest: Any, *, split: str | None = "test", device: str | None = None,
                 dataset: str | None = None, progress: bool | None = None, n_boot: int = 2000,
                 seed: int = 0) -> Evaluation:
    """Load a run folder and evaluate it on a manifest, recording what was evaluated in ``info``.

    Parameters
    ----------
    run : str or PathLike
        A finished run folder or a shipped model's name (:func:`cervkit.inference.registry.load_predictor`).
    manifest : Manifest or str or PathLike
        The manifest (a path is loaded and validated).
    split : str, optional
        As in :func:`evaluate_predictor`.
    device : str, optional
        ``cpu`` or ``cuda``.
    dataset : str, optional
        A name for the data set (default: the manifest's folder name), used by :mod:`cervkit.evaluation.compare`.
    progress, n_boot, seed
        As in :func:`evaluate_predictor`.

    Returns
    -------
    Evaluation
        With ``info``: ``run``, ``model``, ``manifest``, ``split``, ``dataset``, ``device``, ``created``.
    """
    from cervkit.data.manifest import load_manifest
    from cervkit.inference.registry import load_predictor
    from cervkit.runs.folder import read_run_info

    from cervkit.zoo.store import resolve_model

    if not hasattr(manifest, "df"):
        manifest = load_manifest(manifest)
    run = resolve_model(run).path  # a run folder, or a shipped model's (sha256-checked) folder
    model = read_run_info(run).get("model")
    evaluation = evaluate_predictor(load_predictor(run, device=device), manifest, split=split, progress=progress,
                                    n_boot=n_boot, seed=seed)
    source = str(manifest.path) if manifest.path is not None else None
    evaluation.info.update(run=str(Path(run).resolve()), model=model, manifest=source,
                           split=split if split and "split" in manifest.df.columns else None,
                           dataset=dataset or (Path(source).parent.name if source else None), device=device,
                           created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    return evaluation


def write_evaluation(evaluation: Evaluation, out_dir: str | PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``images.csv``, ``vertebrae.csv``, ``summary.csv`` (and ``evaluation.json``) atomically.

    ``evaluation.json`` is written when ``evaluation.info`` is not empty (:func:`evaluate_run` fills it).

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
    from cervkit.core.files import atomic_path, atomic_write_bytes, check_writable

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = dict(zip(TABLE_FILES, (evaluation.images, evaluation.vertebrae, evaluation.summary)))
    with_info = bool(evaluation.info)
    for name in (*tables, *((INFO_FILE,) if with_info else ())):
        check_writable(out / name, overwrite)
    for name, table in tables.items():
        with atomic_path(out / name, overwrite=overwrite) as tmp:
            table.to_csv(tmp, index=False)
    if with_info:
        atomic_write_bytes(out / INFO_FILE, (json.dumps(evaluation.info, indent=2) + "\n").encode(),
                           overwrite=overwrite)
    return out


def read_evaluation(folder: str | PathLike[str]) -> Evaluation:
    """Load a folder written by :func:`write_evaluation` (or ``python -m cervkit evaluate``).

    Parameters
    ----------
    folder : str or PathLike
        Holds ``images.csv`` (required), ``summary.csv``, ``vertebrae.csv`` and ``evaluation.json`` (optional).

    Returns
    -------
    Evaluation
        The tables (missing optional ones empty) and ``info`` (``{}`` without ``evaluation.json``).

    Raises
    ------
    CervkitInputError
        No ``images.csv``, or it has no ``image`` column or no rows.
    """
    path = Path(folder)
    images_csv = path / "images.csv"
    if not images_csv.is_file():
        raise CervkitInputError("not an evaluation folder (no images.csv); write one with "
                                "`python -m cervkit evaluate --model RUN --manifest M --out DIR`", path)
    text = {c: str for c in ("image", "mask", "patient_id", "modality", "unit", "empty")}
    images = pd.read_csv(images_csv, dtype=text, keep_default_na=False, na_values=[""])
    if "image" not in images.columns or images.empty:
        raise CervkitInputError("images.csv has no 'image' column or no rows", images_csv)
    if "empty" in images.columns:
        images["empty"] = images["empty"].fillna("")
    tables = [pd.read_csv(path / name) if (path / name).is_file() else pd.DataFrame() for name in TABLE_FILES[1:]]
    info_json = path / INFO_FILE
    try:
        info = json.loads(info_json.read_text()) if info_json.is_file() else {}
    except json.JSONDecodeError as exc:
        raise CervkitInputError(f"{INFO_FILE} is not valid JSON ({exc})", info_json) from exc
    return Evaluation(images=images, vertebrae=tables[0], summary=tables[1], info=info)
