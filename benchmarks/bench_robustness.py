"""Robustness of a trained cascade to simulated scanner / sequence / field-of-view shifts (issue 3).

Evaluates a run on the test split of its own ``split.csv``, first as is and then under every shift of
:data:`cervkit.transforms.shift.SHIFTS` over its severity grid (T1-like contrast, inversion, gamma, contrast,
window, bias field, Rician noise, blur, down-up resampling, zoom out / in, a smaller matrix). Per shifted
image: Dice of the whole foreground, detection rate (ground-truth bodies matched at IoU >= 0.5), HD95 in
mm (pixel spacing from the manifest, scaled by the zoom) and ``dice_gt_boxes``, the Dice of stage 2
alone (the segmenter on the ground-truth boxes), which tells a detector failure from a segmenter
one. Intensity shifts with a random part (bias field, noise) use a fixed seed per image, so two
runs see identical inputs.

Writes ``<out>/images.csv`` (one row per image and condition) and ``<out>/summary.csv`` (one row per
condition: mean Dice and its change from the unshifted score, pooled detection rate, per-vertebra Dice
over every annotated body with a missed one counted 0, the detection rate of the bodies clear of the image
border (``found_clear_of_edge``; a zoom-in cuts bodies), mean HD95) and prints the summary. ``--figures``
saves one overlay per condition (the first image: ground truth | prediction).

``--model NAME --source S`` scores a shipped model on its card's held-out test images of source ``S``
(:func:`cervkit.zoo.catalog.test_manifest`; every source of the card without ``--source``; a summary row per
source) instead of a run's split, dropping predicted bodies beyond the
source's annotated levels before scoring, as the cards do. ``--conditions zoom=0.5 matrix=256`` runs only
those conditions (after ``none``). ``matrix`` resamples the whole image to N × N and scores at
N × N against the label map resampled nearest-neighbour (issue 15: small images).

    OMP_NUM_THREADS=1 CERVKIT_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/bench_robustness.py \\
        --run outputs/runs/real_default --out outputs/bench_robustness/real_default
    OMP_NUM_THREADS=1 CERVKIT_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/bench_robustness.py \\
        --model mri --source mri_lumbar_t2 mri_lumbar_dixon --conditions zoom=0.5 zoom=2 matrix=256 \\
        --out outputs/bench_robustness_zoo --figures
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def _dice_with_gt_boxes(predictor: object, image: np.ndarray, labels: np.ndarray) -> float:
    """Stage 2 alone: the segmenter on the ground-truth boxes, pasted as the cascade does; foreground Dice."""
    from cervkit.evaluation.metrics import dice
    from cervkit.inference.cascade import paste_by_probability
    from cervkit.labels.instances import boxes_from_labels

    segmenter = getattr(predictor, "segmenter", None)
    boxes = boxes_from_labels(labels)
    if segmenter is None or not len(boxes):
        return float("nan")
    crops = segmenter.predict_crops(image, boxes)
    pred, _, _ = paste_by_probability(image.shape, [c.int_box for c in crops], [c.prob for c in crops],
                                      threshold=getattr(predictor, "threshold", 0.5),
                                      min_area=getattr(predictor, "min_area", 20))
    return dice(pred > 0, labels > 0)


def _found_clear_of_edge(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(found, count) of the true bodies that do not touch the image border (a zoom-in cuts some bodies)."""
    from cervkit.evaluation.matching import match_instances

    border = np.zeros(gt.shape, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    clear = {int(k) for k in np.unique(gt) if k and not (border & (gt == k)).any()}
    found = {m.gt_label for m in match_instances(pred, gt, 0.5).matches}
    return len(clear & found), len(clear)


def _save_overlay(path: Path, image: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> None:
    """Write ground truth | prediction overlays of one shifted image side by side as a PNG."""
    import cv2

    from cervkit.viz import overlay

    rgb = np.hstack([overlay(image, gt), np.full((image.shape[0], 4, 3), 255, np.uint8), overlay(image, pred)])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def evaluate_shifts(run: str | Path, shifts: list[str] | None = None, *, split: str = "test",
                    limit: int | None = None, table: object | None = None,
                    conditions: list[tuple[str, float]] | None = None,
                    figures: Path | None = None, unannotated: bool = False) -> pd.DataFrame:
    """Predict every image under every condition and score it against the shifted label map.

    Parameters
    ----------
    run : str or Path
        A run folder or a shipped model's name (:func:`cervkit.inference.registry.load_predictor`).
    shifts : list of str, optional
        Shifts of :data:`cervkit.transforms.shift.SHIFTS` over their grids (default all).
    split : str
        The split of the run's ``split.csv`` (when ``table`` is not given).
    limit : int, optional
        Only the first N images.
    table : Manifest, optional
        The images to score instead of the run's split (e.g. a shipped model's test manifest).
    conditions : list of (str, float), optional
        Exactly these (shift, severity) pairs instead of ``shift_grid(shifts)``.
    figures : Path, optional
        Folder for one overlay per condition and source (its first image).
    unannotated : bool
        Drop predicted bodies beyond the annotated levels before scoring, as the model cards do
        (:func:`cervkit.evaluation.matching.drop_unannotated`).

    Returns
    -------
    pandas.DataFrame
        One row per (condition, image): source (the manifest's, else ``split``), dice, detection_rate, tp,
        n_gt, n_pred, tp_clear / n_clear (the same for the true bodies clear of the image border),
        vertebra_dice (mean over the true bodies, a missed one 0), hd95 (mm), dice_gt_boxes.
    """
    from cervkit.data.manifest import load_manifest
    from cervkit.evaluation.matching import drop_unannotated, image_metrics
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image, read_mask
    from cervkit.transforms.shift import apply_shift, shift_grid

    if table is None:
        table = load_manifest(Path(run) / "split.csv").subset(split=split)
    rows_in = list(table.rows())[:limit]
    pairs = [(read_image(r.image), read_mask(r.mask)) for r in rows_in]
    predictor = load_predictor(run)
    out = []
    for name, severity in conditions or shift_grid(shifts):
        drawn = set()
        for i, (row, (image, gt)) in enumerate(zip(rows_in, pairs)):
            source = str(row.extra.get("source") or split)
            shifted = apply_shift(name, image.array, gt, severity, seed=i)
            spacing = row.pixel_spacing_mm or image.spacing_mm
            if spacing is not None:
                spacing = (spacing[0] * shifted.pixel_scale[0], spacing[1] * shifted.pixel_scale[1])
            pred = predictor.predict(shifted.image)
            labels = drop_unannotated(pred.labels, shifted.labels) if unannotated else pred.labels
            m = image_metrics(labels, shifted.labels, spacing)
            tp_clear, n_clear = _found_clear_of_edge(labels, shifted.labels)
            if figures is not None and source not in drawn:
                drawn.add(source)
                _save_overlay(figures / f"{name}_{severity:g}_{Path(row.image).stem}.png", shifted.image,
                              shifted.labels, pred.labels)
            out.append({"source": source, "shift": name, "severity": severity, "image": Path(row.image).name,
                        "dice": m["dice"], "detection_rate": m["detection_rate"], "tp": m["tp"],
                        "n_gt": m["n_gt"], "n_pred": m["n_pred"], "tp_clear": tp_clear, "n_clear": n_clear,
                        "vertebra_dice": m["mean_vertebra_dice"],
                        "hd95_mm": m["hd95"],
                        "dice_gt_boxes": _dice_with_gt_boxes(predictor, shifted.image, shifted.labels)})
    return pd.DataFrame(out)


def summarise(images: pd.DataFrame) -> pd.DataFrame:
    """One row per source and condition: dice mean/min, change from ``none``, pooled detection rate, HD95 …

    Parameters
    ----------
    images : pandas.DataFrame
        :func:`evaluate_shifts`'s rows.

    Returns
    -------
    pandas.DataFrame
        Per (source, shift, severity): dice, dice_change (from the source's ``none``), dice_min, detection_rate,
        vertebra_dice (over every true body, a missed one 0), n_gt, n_pred, found_clear_of_edge, n_clear,
        hd95_mm, dice_gt_boxes.
    """
    images = images.assign(_vd=images["vertebra_dice"] * images["n_gt"])
    groups = images.groupby(["source", "shift", "severity"], sort=False)
    summary = groups.agg(dice=("dice", "mean"), dice_min=("dice", "min"), tp=("tp", "sum"), n_gt=("n_gt", "sum"),
                         n_pred=("n_pred", "sum"), tp_clear=("tp_clear", "sum"),
                         n_clear=("n_clear", "sum"), hd95_mm=("hd95_mm", "mean"),
                         dice_gt_boxes=("dice_gt_boxes", "mean"), _vd=("_vd", "sum")).reset_index()
    summary["detection_rate"] = summary["tp"] / summary["n_gt"]
    summary["found_clear_of_edge"] = summary["tp_clear"] / summary["n_clear"]
    summary["vertebra_dice"] = summary["_vd"] / summary["n_gt"]  # over every annotated body, a missed one 0
    base = summary[summary["shift"] == "none"].set_index("source")["dice"]
    summary["dice_change"] = summary["dice"] - summary["source"].map(base)
    cols = ["source", "shift", "severity", "dice", "dice_change", "dice_min", "detection_rate", "vertebra_dice", "n_gt",
            "n_pred", "found_clear_of_edge", "n_clear", "hd95_mm", "dice_gt_boxes"]
    return summary[cols]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/runs/real_default", help="a trained cascade run folder")
    parser.add_argument("--out", help="output folder (default outputs/bench_robustness/<run name>)")
    parser.add_argument("--shifts", nargs="*", help="subset of cervkit.transforms.shift.SHIFTS (default: all)")
    parser.add_argument("--model", help="a shipped model's name: score its card's test images (with --source)")
    parser.add_argument("--source", nargs="*", help="with --model: only these sources of its card")
    parser.add_argument("--conditions", nargs="*", help="only these shifts, as name=severity (e.g. zoom=2 matrix=256)")
    parser.add_argument("--figures", action="store_true", help="an overlay per condition and source in <out>/figures")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="only the first N images (smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cervkit.core.files import atomic_path, check_writable

    run = args.model or Path(args.run)
    out = Path(args.out or Path("outputs/bench_robustness") / Path(run).name)
    for name in ("images.csv", "summary.csv"):
        check_writable(out / name, args.overwrite)
    start = time.perf_counter()
    table = None
    if args.model:
        from cervkit.zoo.catalog import test_manifest

        table = test_manifest(args.model, sources=args.source)
    conditions = None
    if args.conditions:
        conditions = [("none", 0.0)] + [(c.split("=")[0], float(c.split("=")[1])) for c in args.conditions]
    images = evaluate_shifts(run, args.shifts, split=args.split, limit=args.limit, table=table,
                             conditions=conditions, figures=out / "figures" if args.figures else None,
                             unannotated=bool(args.model))
    summary = summarise(images)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("images.csv", images), ("summary.csv", summary)):
        with atomic_path(out / name, overwrite=args.overwrite) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(summary.round(4).to_string(index=False))
    print(f"run {run}, {images['image'].nunique()} {'card test' if args.model else args.split} images, "
          f"threads {args.threads}, "
          f"{time.perf_counter() - start:.0f} s; tables in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
