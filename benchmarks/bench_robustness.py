"""Robustness of a trained cascade to simulated scanner / sequence / field-of-view shifts (issue 3).

Evaluates a run on the test split of its own ``split.csv``, first as is and then under every shift of
:data:`cervkit.transforms.shift.SHIFTS` over its severity grid (T1-like contrast, inversion, gamma, contrast,
window, bias field, Rician noise, blur, down-up resampling, zoom out / in). Per shifted image: Dice
of the whole foreground, detection rate (ground-truth bodies matched at IoU >= 0.5), HD95 in mm
(pixel spacing from the manifest, scaled by the zoom) and ``dice_gt_boxes``, the Dice of stage 2
alone (the segmenter on the ground-truth boxes), which tells a detector failure from a segmenter
one. Intensity shifts with a random part (bias field, noise) use a fixed seed per image, so two
runs see identical inputs.

Writes ``<out>/images.csv`` (one row per image and condition) and ``<out>/summary.csv`` (one row per
condition: mean Dice and its change from the unshifted score, pooled detection rate, mean HD95) and
prints the summary.

    OMP_NUM_THREADS=1 CERVKIT_DATA_DIR=/work/shared/data PYTHONPATH=. python benchmarks/bench_robustness.py \\
        --run outputs/runs/real_default --out outputs/bench_robustness/real_default
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


def evaluate_shifts(run: Path, shifts: list[str] | None = None, *, split: str = "test",
                    limit: int | None = None) -> pd.DataFrame:
    """One row per (condition, image): dice, detection_rate, tp, n_gt, n_pred, hd95 (mm), dice_gt_boxes."""
    from cervkit.data.manifest import load_manifest
    from cervkit.evaluation.matching import image_metrics
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image, read_mask
    from cervkit.transforms.shift import apply_shift, shift_grid

    table = load_manifest(run / "split.csv").subset(split=split)
    rows_in = list(table.rows())[:limit]
    pairs = [(read_image(r.image), read_mask(r.mask)) for r in rows_in]
    predictor = load_predictor(run)
    out = []
    for name, severity in shift_grid(shifts):
        for i, (row, (image, gt)) in enumerate(zip(rows_in, pairs)):
            shifted = apply_shift(name, image.array, gt, severity, seed=i)
            spacing = row.pixel_spacing_mm or image.spacing_mm
            if spacing is not None:
                spacing = (spacing[0] * shifted.pixel_scale[0], spacing[1] * shifted.pixel_scale[1])
            pred = predictor.predict(shifted.image)
            m = image_metrics(pred.labels, shifted.labels, spacing)
            out.append({"shift": name, "severity": severity, "image": Path(row.image).name,
                        "dice": m["dice"], "detection_rate": m["detection_rate"], "tp": m["tp"],
                        "n_gt": m["n_gt"], "n_pred": m["n_pred"], "hd95_mm": m["hd95"],
                        "dice_gt_boxes": _dice_with_gt_boxes(predictor, shifted.image, shifted.labels)})
    return pd.DataFrame(out)


def summarise(images: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: dice mean/min, dice change from ``none``, pooled detection rate, HD95 mean."""
    groups = images.groupby(["shift", "severity"], sort=False)
    summary = groups.agg(dice=("dice", "mean"), dice_min=("dice", "min"), tp=("tp", "sum"), n_gt=("n_gt", "sum"),
                         n_pred=("n_pred", "sum"), hd95_mm=("hd95_mm", "mean"),
                         dice_gt_boxes=("dice_gt_boxes", "mean")).reset_index()
    summary["detection_rate"] = summary["tp"] / summary["n_gt"]
    base = float(summary.loc[summary["shift"] == "none", "dice"].iloc[0])
    summary["dice_change"] = summary["dice"] - base
    cols = ["shift", "severity", "dice", "dice_change", "dice_min", "detection_rate", "n_gt", "n_pred", "hd95_mm",
            "dice_gt_boxes"]
    return summary[cols]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/runs/real_default", help="a trained cascade run folder")
    parser.add_argument("--out", help="output folder (default outputs/bench_robustness/<run name>)")
    parser.add_argument("--shifts", nargs="*", help="subset of cervkit.transforms.shift.SHIFTS (default: all)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="only the first N images (smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cervkit.core.files import atomic_path, check_writable

    run = Path(args.run)
    out = Path(args.out or Path("outputs/bench_robustness") / run.name)
    for name in ("images.csv", "summary.csv"):
        check_writable(out / name, args.overwrite)
    start = time.perf_counter()
    images = evaluate_shifts(run, args.shifts, split=args.split, limit=args.limit)
    summary = summarise(images)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("images.csv", images), ("summary.csv", summary)):
        with atomic_path(out / name, overwrite=args.overwrite) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(summary.round(4).to_string(index=False))
    print(f"run {run}, {images['image'].nunique()} {args.split} images, threads {args.threads}, "
          f"{time.perf_counter() - start:.0f} s; tables in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
