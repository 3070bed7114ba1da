"""Compare models on the same images: the paper's Table 2 and paired tests against a reference.

Every function takes ``evaluations``: a mapping from a model name, or a ``(model, dataset)`` pair, to an
evaluation folder (``python -m cervkit evaluate … --out DIR``) or an :class:`cervkit.evaluation.evaluate.Evaluation`.
A plain model name takes its data set from the folder's ``evaluation.json`` (``dataset``, else the
manifest's folder name), else from the images' modality. **Data sets are never pooled**: each Table 2 row,
each paired test and each box plot holds one model on one data set.

* :func:`table2`: mean ± sd of Dice, IoU, PPV, sensitivity, HD95 and HD per image (distances in mm when
  every image has a pixel spacing, else in pixels, named in ``unit``), detection rate, prediction seconds
  per image and the number of images; :func:`format_table2` renders it as text cells for a notebook.
* :func:`paired_differences` / :func:`paired_comparison`: per-image differences against the reference
  model (joined by image path; different image sets are an error), median and mean difference with a
  bootstrap CI, two-sided Wilcoxon signed-rank p (:func:`cervkit.evaluation.metrics.paired_comparison`) and which
  model is better.
* Figures: :mod:`cervkit.evaluation.figures` (box plots, Figure 5); files: :func:`cervkit.evaluation.report.write_comparison`.

Metric definitions (empty predictions count as the worst case, never NaN): :mod:`cervkit.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError

TABLE_METRICS = ("dice", "iou", "ppv", "sensitivity", "hd95", "hd")
PAIRED_METRICS = ("dice", "iou", "ppv", "sensitivity", "hd95")
DISTANCE_METRICS = ("hd", "hd95")
HIGHER_IS_BETTER = {"dice": True, "iou": True, "ppv": True, "sensitivity": True, "hd95": False, "hd": False,
                    "detection_rate": True, "mean_vertebra_dice": True, "mean_vertebra_hd95": False,
                    "seconds": False}
LABELS = {"dice": "Dice", "iou": "IoU", "ppv": "PPV", "sensitivity": "Sensitivity", "hd95": "HD95", "hd": "HD",
          "detection_rate": "Detection rate", "mean_vertebra_dice": "Vertebra Dice", "seconds": "s / image"}
Key = str | tuple[str, str]
Source = str | PathLike[str] | Any


@dataclass
class ModelResult:
    """One model's per-image results on one data set, distances in one unit.

    Attributes
    ----------
    model, dataset : str
        Names used in the tables.
    images : pandas.DataFrame
        ``images.csv``; ``hd``/``hd95`` hold ``unit`` values for every row.
    unit : str
        ``"mm"`` or ``"px"``.
    info : dict
        ``evaluation.json`` (``run``, ``manifest`` …) or ``{}``.
    source : str
        The folder it was read from, or ``"<memory>"``.
    """

    model: str
    dataset: str
    images: pd.DataFrame
    unit: str
    info: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"


def _load(value: Source) -> tuple[Any, str]:
    """An :class:`~cervkit.evaluation.evaluate.Evaluation` and where it came from."""
    from cervkit.evaluation.evaluate import read_evaluation

    if isinstance(value, ModelResult):
        return value, value.source
    if hasattr(value, "images") and isinstance(value.images, pd.DataFrame):
        return value, "<memory>"
    return read_evaluation(value), str(Path(value))


def _common_unit(images: pd.DataFrame, source: str) -> tuple[pd.DataFrame, str]:
    """Put ``hd``/``hd95`` in mm when every image has mm, else in pixels (``hd_px``/``hd95_px``)."""
    units = set(images["unit"].astype(str)) if "unit" in images.columns else {"px"}
    if units == {"mm"}:
        return images, "mm"
    out = images.copy()
    for name in DISTANCE_METRICS:
        column = f"{name}_px" if f"{name}_px" in out.columns else name
        if column not in out.columns:
            raise CervkitInputError(f"images.csv has no {name!r} column", source)
        out[name] = out[column]
    return out, "px"


def collect(evaluations: Mapping[Key, Source]) -> list[ModelResult]:
    """Load and check every evaluation (model, data set and distance unit resolved).

    Parameters
    ----------
    evaluations : mapping
        ``model`` or ``(model, dataset)`` → evaluation folder or :class:`~cervkit.evaluation.evaluate.Evaluation`.

    Returns
    -------
    list of ModelResult
        In the mapping's order.

    Raises
    ------
    CervkitInputError
        No evaluations, a (model, data set) pair given twice, an image listed twice, or a NaN in a metric.
    """
    if not evaluations:
        raise CervkitInputError("no evaluations to compare")
    results, seen = [], set()
    for key, value in evaluations.items():
        evaluation, source = _load(value)
        info = dict(evaluation.info or {})
        model, dataset = key if isinstance(key, tuple) else (str(key), None)
        if dataset is None:
            manifest = info.get("manifest")
            modality = sorted(set(evaluation.images.get("modality", pd.Series(["?"])).astype(str)))
            dataset = info.get("dataset") or (Path(manifest).parent.name if manifest else "+".join(modality))
        if (model, dataset) in seen:
            raise CervkitInputError(f"model {model!r} on data set {dataset!r} is given twice", source)
        seen.add((model, dataset))
        images, unit = _common_unit(evaluation.images, source)
        if images["image"].duplicated().any():
            raise CervkitInputError(f"images.csv lists {int(images['image'].duplicated().sum())} image(s) twice",
                                    source)
        present = [m for m in (*TABLE_METRICS, "detection_rate", "seconds") if m in images.columns]
        bad = [m for m in present if images[m].isna().any()]
        if bad:
            raise CervkitInputError(f"NaN in metric column(s) {bad}: a broken evaluation (metrics never give NaN)",
                                    source)
        results.append(ModelResult(str(model), str(dataset), images, unit, info, source))
    return results


def datasets_of(results: Sequence[ModelResult]) -> list[str]:
    """Data set names in order of first appearance.

    Parameters
    ----------
    results : sequence of ModelResult
        Loaded evaluations (:func:`collect`).

    Returns
    -------
    list of str
        Each data set once.
    """
    return list(dict.fromkeys(r.dataset for r in results))


def table2(evaluations: Mapping[Key, Source], *, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """The paper's Table 2: one row per model and data set, mean and sd of each per-image metric.

    Parameters
    ----------
    evaluations : mapping
        See :func:`collect`.
    metrics : sequence of str
        Per-image metrics (``images.csv`` columns); detection rate and seconds are always added.

    Returns
    -------
    pandas.DataFrame
        ``dataset, modality, model, n_images``, ``<metric>_mean`` and ``<metric>_sd`` (sd with ddof=1, 0 for
        one image) for each metric, ``detection_rate`` and ``seconds`` (per image), and ``unit`` (of HD, HD95).
    """
    rows = []
    for r in collect(evaluations):
        modality = "+".join(sorted(set(r.images["modality"].astype(str)))) if "modality" in r.images else ""
        row: dict[str, Any] = {"dataset": r.dataset, "modality": modality, "model": r.model,
                               "n_images": len(r.images)}
        for m in (*metrics, "detection_rate", "seconds"):
            if m not in r.images.columns:
                raise CervkitInputError(f"images.csv has no {m!r} column", r.source)
            values = r.images[m].to_numpy(float)
            row[f"{m}_mean"] = float(values.mean())
            row[f"{m}_sd"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        row["unit"] = r.unit
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {d: i for i, d in enumerate(dict.fromkeys(table["dataset"]))}
    return table.sort_values("dataset", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def format_table2(table: pd.DataFrame, *, decimals: int = 3, distance_decimals: int = 1) -> pd.DataFrame:
    """Text cells ``mean ± sd`` for a notebook or a report (no markdown or LaTeX).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`table2`.
    decimals, distance_decimals : int
        Decimals of the ratios and of the distances.

    Returns
    -------
    pandas.DataFrame
        ``Data set``, ``Model``, one column per metric (HD95 and HD named with their unit, e.g.
        ``HD95 (mm)``; a data set in pixels gets its own ``(px)`` column), ``s / image``, ``n``.
    """
    metrics = [c[:-5] for c in table.columns if c.endswith("_mean")]
    out = []
    for _, row in table.iterrows():
        cells: dict[str, str] = {"Data set": row["dataset"], "Model": row["model"]}
        for m in metrics:
            places = distance_decimals if m in DISTANCE_METRICS else decimals
            name = f"{LABELS.get(m, m)} ({row['unit']})" if m in DISTANCE_METRICS else LABELS.get(m, m)
            cells[name] = f"{row[f'{m}_mean']:.{places}f} ± {row[f'{m}_sd']:.{places}f}"
        cells["n"] = str(int(row["n_images"]))
        out.append(cells)
    return pd.DataFrame(out).fillna("")


def _by_dataset(results: Sequence[ModelResult], reference: str) -> dict[str, tuple[ModelResult, list[ModelResult]]]:
    """Per data set: the reference model's result and the others' (error if the reference is missing)."""
    groups: dict[str, tuple[ModelResult, list[ModelResult]]] = {}
    for dataset in datasets_of(results):
        members = [r for r in results if r.dataset == dataset]
        refs = [r for r in members if r.model == reference]
        if not refs:
            raise CervkitInputError(f"no evaluation of the reference model {reference!r} on data set {dataset!r} "
                                    f"(models there: {[r.model for r in members]})")
        groups[dataset] = (refs[0], [r for r in members if r.model != reference])
    return groups


def join_paired(ref: ModelResult, other: ModelResult, metrics: Sequence[str]) -> pd.DataFrame:
    """Per-image rows of two models on the same images (error naming the differences otherwise).

    Parameters
    ----------
    ref, other : ModelResult
        The reference model's and another model's evaluation of one data set.
    metrics : sequence of str
        Per-image metric columns to keep.

    Returns
    -------
    pandas.DataFrame
        ``image`` and ``<metric>_ref``, ``<metric>_model`` for each metric, one row per image.
    """
    a, b = set(ref.images["image"]), set(other.images["image"])
    if a != b:
        only_ref, only_other = sorted(a - b), sorted(b - a)
        raise CervkitInputError(
            f"{other.model!r} and the reference {ref.model!r} were evaluated on different images of "
            f"{ref.dataset!r}: {len(only_ref)} only in the reference (e.g. {only_ref[:2]}), {len(only_other)} "
            f"only in {other.model!r} (e.g. {only_other[:2]}); evaluate both on the same manifest and split",
            other.source)
    cols = ["image", *metrics]
    return ref.images[cols].merge(other.images[cols], on="image", suffixes=("_ref", "_model"), validate="1:1")


def paired_differences(evaluations: Mapping[Key, Source], *, reference: str = "yolo-unet",
                       metrics: Sequence[str] = PAIRED_METRICS) -> pd.DataFrame:
    """Per-image differences of every model against the reference, within each data set.

    Parameters
    ----------
    evaluations : mapping
        See :func:`collect`.
    reference : str
        The model the others are compared with.
    metrics : sequence of str
        Per-image metrics to compare.

    Returns
    -------
    pandas.DataFrame
        Long table: ``dataset, model, reference, image, metric, value, reference_value, difference``
        (``value - reference_value``), ``unit`` (of the distances; ``""`` for ratios).
    """
    frames = []
    for dataset, (ref, others) in _by_dataset(collect(evaluations), reference).items():
        for other in others:
            joined = join_paired(ref, other, metrics)
            for m in metrics:
                frames.append(pd.DataFrame({
                    "dataset": dataset, "model": other.model, "reference": reference, "image": joined["image"],
                    "metric": m, "value": joined[f"{m}_model"], "reference_value": joined[f"{m}_ref"],
                    "difference": joined[f"{m}_model"] - joined[f"{m}_ref"],
                    "unit": ref.unit if m in DISTANCE_METRICS else ""}))
    columns = ["dataset", "model", "reference", "image", "metric", "value", "reference_value", "difference", "unit"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _better(metric: str, median: float, mean: float, model: str, reference: str) -> str:
    """The model favoured by the median difference (the mean breaks a zero median), or ``tie``."""
    sign = np.sign(median) if median != 0 else np.sign(mean)
    if sign == 0:
        return "tie"
    return model if (sign > 0) == HIGHER_IS_BETTER.get(metric, True) else reference


def paired_comparison(evaluations: Mapping[Key, Source], *, reference: str = "yolo-unet",
                      metrics: Sequence[str] = PAIRED_METRICS, alpha: float = 0.05, n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """Each model against the reference on the same images: differences and a Wilcoxon signed-rank test.

    Parameters
    ----------
    evaluations : mapping
        See :func:`collect`; every data set needs the reference model.
    reference : str
        The model compared against (the paper's YOLO-UNet).
    metrics : sequence of str
        Per-image metrics compared.
    alpha : float
        Significance level of the ``significant`` column (no multiple-comparison correction).
    n_boot, seed : int
        Bootstrap of the mean difference's 95 % CI.

    Returns
    -------
    pandas.DataFrame
        One row per data set, model and metric: ``n``, ``model_mean``, ``reference_mean``, ``median_diff``,
        ``mean_diff``, ``ci_low``, ``ci_high`` (differences are model − reference), ``wilcoxon_p``,
        ``better`` (model, reference or ``tie``, from the sign of the median difference and whether higher
        is better), ``significant`` (p < alpha), ``unit`` and ``note``.
    """
    from cervkit.evaluation.metrics import paired_comparison as paired_stats

    diffs = paired_differences(evaluations, reference=reference, metrics=metrics)
    rows = []
    for (dataset, model, metric), group in diffs.groupby(["dataset", "model", "metric"], sort=False):
        stats = paired_stats(group["value"].to_numpy(float), group["reference_value"].to_numpy(float),
                             n_boot=n_boot, seed=seed)
        median = float(np.median(group["difference"]))
        rows.append({"dataset": dataset, "model": model, "reference": reference, "metric": metric,
                     "n": stats["n"], "model_mean": float(group["value"].mean()),
                     "reference_mean": float(group["reference_value"].mean()), "median_diff": median,
                     "mean_diff": stats["mean_diff"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
                     "wilcoxon_p": stats["wilcoxon_p"],
                     "better": _better(metric, median, stats["mean_diff"], model, reference),
                     "significant": bool(stats["wilcoxon_p"] < alpha), "unit": group["unit"].iloc[0],
                     "note": stats["note"]})
    return pd.DataFrame(rows)


