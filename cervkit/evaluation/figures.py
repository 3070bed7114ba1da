"""Figures of a model comparison: per-image box plots and the paper's Figure 5.

Figure 5 shows, on the same images, the input, the ground truth and each model's prediction side by side.
The images are chosen by code from the per-image results (:func:`choose_figure5_images`): the reference
model's worst image, the worst image of every other model (its failure case, shown rather than hidden)
and a typical image (the reference's median rank). Inputs are the ``evaluations`` mapping of
:mod:`cervkit.evaluation.compare`; one data set per Figure 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.evaluation.compare import (
    HIGHER_IS_BETTER,
    LABELS,
    Key,
    ModelResult,
    Source,
    collect,
    datasets_of,
    join_paired,
)


def boxplots(evaluations: Mapping[Key, Source], metrics: Sequence[str] = ("dice", "hd95"), *,
             size: tuple[float, float] = (4.2, 3.2)) -> Any:
    """Per-image distributions: one row of panels per data set, one panel per metric, one box per model.

    Every image is drawn as a dot over its box, so failures (Dice 0, HD95 = image diagonal) stay visible.

    Parameters
    ----------
    evaluations : mapping
        See :func:`cervkit.evaluation.compare.collect`.
    metrics : sequence of str
        ``images.csv`` columns.
    size : (float, float)
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib.pyplot as plt

    results = collect(evaluations)
    datasets = datasets_of(results)
    fig, axes = plt.subplots(len(datasets), len(metrics), squeeze=False,
                             figsize=(size[0] * len(metrics), size[1] * len(datasets)))
    rng = np.random.default_rng(0)
    for i, dataset in enumerate(datasets):
        members = [r for r in results if r.dataset == dataset]
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            values = [r.images[metric].to_numpy(float) for r in members]
            ax.boxplot(values, showfliers=False, widths=0.6)
            for k, v in enumerate(values, start=1):
                ax.scatter(k + rng.uniform(-0.15, 0.15, v.size), v, s=9, alpha=0.6, color="tab:red", zorder=3)
            ax.set_xticks(range(1, len(members) + 1), [r.model for r in members], rotation=30, ha="right",
                          fontsize=8)
            unit = f" ({members[0].unit})" if metric in ("hd", "hd95", "mean_vertebra_hd95") else ""
            ax.set_ylabel(LABELS.get(metric, metric) + unit)
            ax.set_title(f"{dataset}: {LABELS.get(metric, metric)} per image", fontsize=9)
    fig.tight_layout()
    return fig


def _one_dataset(results: list[ModelResult], dataset: str | None) -> tuple[str, list[ModelResult]]:
    names = datasets_of(results)
    if dataset is None:
        if len(names) > 1:
            raise CervkitInputError(f"several data sets {names}: pick one with dataset=")
        dataset = names[0]
    members = [r for r in results if r.dataset == dataset]
    if not members:
        raise CervkitInputError(f"no evaluation on data set {dataset!r} (have {names})")
    return dataset, members


def _worst(values: pd.Series, images: pd.Series, higher_is_better: bool) -> str:
    """The image with the worst value (ties: the first image path in sorted order)."""
    frame = pd.DataFrame({"v": values.to_numpy(float) * (1 if higher_is_better else -1), "image": images})
    return str(frame.sort_values(["v", "image"], kind="stable")["image"].iloc[0])


def choose_figure5_images(evaluations: Mapping[Key, Source], *, reference: str = "yolo-unet",
                          dataset: str | None = None, metric: str = "dice", n_typical: int = 1) -> pd.DataFrame:
    """Pick Figure 5's images from the per-image results of one data set.

    Parameters
    ----------
    evaluations : mapping
        See :func:`cervkit.evaluation.compare.collect`; every model evaluated on the same images.
    reference : str
        The headline model (its worst and typical images are shown).
    dataset : str, optional
        Required when the evaluations span several data sets.
    metric : str
        Per-image metric that ranks the images (``dice`` by default; lower is worse, or higher for distances).
    n_typical : int
        How many typical reference images to add (the image at the reference's median rank, then its
        neighbours in rank).

    Returns
    -------
    pandas.DataFrame
        One row per chosen image, in display order: ``image``, ``mask`` (when known), ``reason`` (e.g.
        ``worst yolo-unet; worst unet3plus`` when one image is both) and one column per model with its value.
    """
    dataset, members = _one_dataset(collect(evaluations), dataset)
    refs = [r for r in members if r.model == reference]
    if not refs:
        raise CervkitInputError(f"no evaluation of the reference model {reference!r} on data set {dataset!r}")
    ref = refs[0]
    ordered = [ref] + [r for r in members if r is not ref]
    wide = ref.images[["image"] + (["mask"] if "mask" in ref.images.columns else [])].copy()
    for r in ordered:
        wide = wide.merge(join_paired(ref, r, [metric])[["image", f"{metric}_model"]].rename(
            columns={f"{metric}_model": r.model}), on="image", validate="1:1")
    higher = HIGHER_IS_BETTER.get(metric, True)
    reasons: dict[str, list[str]] = {}
    for r in ordered:
        reasons.setdefault(_worst(wide[r.model], wide["image"], higher), []).append(f"worst {r.model}")
    ranked = list(wide.sort_values([reference, "image"], kind="stable")["image"])
    middle = len(ranked) // 2  # the median rank, then its neighbours outwards
    typical = sorted(range(len(ranked)), key=lambda i: (abs(i - middle), i))
    for image in [ranked[i] for i in typical if ranked[i] not in reasons][:max(0, n_typical)]:
        reasons[image] = [f"typical {reference} (median rank of {metric})"]
    chosen = wide.set_index("image").loc[list(reasons)].reset_index()
    chosen.insert(1 + ("mask" in chosen.columns), "reason", ["; ".join(reasons[i]) for i in chosen["image"]])
    return chosen


def _mask_of(result: ModelResult, image: str, row: pd.Series) -> Path:
    """The ground-truth mask of an image: the ``mask`` column, else the manifest in ``evaluation.json``."""
    if "mask" in row.index and isinstance(row["mask"], str) and row["mask"] not in ("", "None"):
        return Path(row["mask"])
    manifest_path = result.info.get("manifest")
    if manifest_path:
        from cervkit.data.manifest import load_manifest

        manifest = load_manifest(manifest_path, validate=False)
        masks = {str(manifest.image_path(i)): manifest.mask_path(i) for i in range(len(manifest))}
        if masks.get(image) is not None:
            return Path(masks[image])
    raise CervkitInputError("no ground-truth mask known for this image (no mask column in images.csv and no "
                            "manifest in evaluation.json); re-run `python -m cervkit evaluate`", image)


def predict_chosen(evaluations: Mapping[Key, Source], chosen: pd.DataFrame, *, dataset: str | None = None,
                   predictors: Mapping[str, Any] | None = None, device: str | None = None
                   ) -> dict[str, list[np.ndarray]]:
    """Each model's label map on the chosen images.

    Parameters
    ----------
    evaluations : mapping
        See :func:`cervkit.evaluation.compare.collect`.
    chosen : pandas.DataFrame
        From :func:`choose_figure5_images` (column ``image``).
    dataset : str, optional
        Required with several data sets.
    predictors : mapping, optional
        Model → object with ``predict(image) -> CascadePrediction``; other models are loaded from the
        ``run`` recorded in their ``evaluation.json``.
    device : str, optional
        For the loaded runs.

    Returns
    -------
    dict
        Model → label maps, one per chosen image, in order.
    """
    from cervkit.io.images import read_image

    _, members = _one_dataset(collect(evaluations), dataset)
    images = [read_image(p).array for p in chosen["image"]]
    out = {}
    for r in members:
        predictor = (predictors or {}).get(r.model)
        if predictor is None:
            run = r.info.get("run")
            if not run:
                raise CervkitInputError(f"Figure 5 needs model {r.model!r}'s run: its evaluation.json names none "
                                        "(evaluate with `python -m cervkit evaluate`, or pass predictors=)", r.source)
            from cervkit.inference.registry import load_predictor

            predictor = load_predictor(run, device=device)
        out[r.model] = [np.asarray(predictor.predict(image).labels) for image in images]
    return out


def figure5(evaluations: Mapping[Key, Source], chosen: pd.DataFrame | None = None, *, reference: str = "yolo-unet",
            dataset: str | None = None, metric: str = "dice", predictions: Mapping[str, list[np.ndarray]] | None = None,
            predictors: Mapping[str, Any] | None = None, device: str | None = None, size: float = 2.3) -> Any:
    """The paper's Figure 5: input, ground truth and each model's prediction, one row per chosen image.

    Parameters
    ----------
    evaluations : mapping
        See :func:`cervkit.evaluation.compare.collect`.
    chosen : pandas.DataFrame, optional
        Default :func:`choose_figure5_images` (``reference``, ``dataset``, ``metric``).
    reference, dataset, metric : str
        As in :func:`choose_figure5_images`; ``metric`` is printed under each prediction (from the CSVs).
    predictions : mapping, optional
        Model → label maps on the chosen images (default :func:`predict_chosen`).
    predictors, device
        Passed to :func:`predict_chosen`.
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(chosen)`` rows and ``2 + number of models`` columns.
    """
    import matplotlib.pyplot as plt

    from cervkit.io.images import read_image, read_mask
    from cervkit.viz import show_overlay

    dataset, members = _one_dataset(collect(evaluations), dataset)
    if chosen is None:
        chosen = choose_figure5_images(evaluations, reference=reference, dataset=dataset, metric=metric)
    members = sorted(members, key=lambda r: r.model != reference)
    if predictions is None:
        predictions = predict_chosen(evaluations, chosen, dataset=dataset, predictors=predictors, device=device)
    values = {r.model: r.images.set_index("image")[metric] for r in members}
    ncols = 2 + len(members)
    fig, axes = plt.subplots(len(chosen), ncols, squeeze=False, figsize=(size * ncols, size * len(chosen)))
    for i, (_, row) in enumerate(chosen.reset_index(drop=True).iterrows()):
        image = read_image(row["image"]).array
        truth = read_mask(_mask_of(members[0], row["image"], row))
        show_overlay(axes[i, 0], image, title=f"{row['reason']}\n{Path(row['image']).name}")
        show_overlay(axes[i, 1], image, truth, title=f"ground truth ({int(truth.max())} bodies)")
        for j, r in enumerate(members, start=2):
            labels = predictions[r.model][i]
            n_found = int(labels.max()) if np.any(labels) else 0
            found = "nothing found" if not n_found else f"{n_found} bod{'y' if n_found == 1 else 'ies'}"
            show_overlay(axes[i, j], image, labels,
                         title=f"{r.model}\n{LABELS.get(metric, metric)} {values[r.model][row['image']]:.3f}, {found}")
    fig.suptitle(f"{dataset}: input, ground truth and each model's prediction", fontsize=10)
    fig.tight_layout()
    return fig
