"""Benchmark the stage-2 crop segmenter on the real lumbar MRI data (ground-truth boxes).

For each configuration ``encoder:cat_channels:crop_size`` it trains :func:`cervkit.training.segmenter.train_segmenter`
on the train split (patient-level split written under --out, never into the data folder), then measures
with ground-truth boxes (no jitter), on the val and test splits:

* per crop: Dice / IoU of ``prob > 0.5`` against ``labels == k`` inside each window;
* per image: every crop's probability pasted into a full-size (N, H, W) stack with
  :func:`cervkit.labels.instances.paste_crop`, argmax where the max probability exceeds 0.5 (overlaps resolved by
  probability), compared with the ground-truth label map: foreground Dice / IoU and the mean per-vertebra
  Dice of :func:`cervkit.evaluation.matching.image_metrics`;
* the time of ``predict_crops`` for 7 boxes of one image (median of 20 calls).

Example (about 15 minutes per configuration on 2 CPU cores)::

    CERVKIT_DATA_DIR=/work/shared/data python benchmarks/bench_segmenter.py \
        --configs mobilenet_v2:16:64 --epochs 60 --max-minutes 12 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _pairs(manifest: object, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images and ground-truth label maps of one split."""
    from cervkit.training.crop_dataset import load_samples

    return load_samples(manifest.subset(split=split))  # type: ignore[attr-defined]


def evaluate_split(seg: object, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Per-crop and per-image Dice / IoU of a segmenter given ground-truth boxes."""
    from cervkit.evaluation.matching import image_metrics
    from cervkit.evaluation.metrics import dice, iou
    from cervkit.labels.instances import boxes_from_labels, paste_crop

    crop_d, crop_i, img_d, img_i, vert_d = [], [], [], [], []
    for image, labels in pairs:
        boxes = boxes_from_labels(labels)
        preds = seg.predict_crops(image, boxes)  # type: ignore[attr-defined]
        stack = np.zeros((len(preds), *labels.shape), np.float32)
        for k, p in enumerate(preds, start=1):
            x0, y0, x1, y1 = p.int_box
            gt = labels[y0:y1, x0:x1] == k
            crop_d.append(dice(p.prob > 0.5, gt))
            crop_i.append(iou(p.prob > 0.5, gt))
            stack[k - 1] = paste_crop(p.prob, p.int_box, labels.shape)
        pred_labels = np.where(stack.max(0) > 0.5, stack.argmax(0) + 1, 0).astype(np.uint8)
        img_d.append(dice(pred_labels > 0, labels > 0))
        img_i.append(iou(pred_labels > 0, labels > 0))
        vert_d.append(float(image_metrics(pred_labels, labels)["mean_vertebra_dice"]))
    return {"crop_dice": float(np.mean(crop_d)), "crop_iou": float(np.mean(crop_i)),
            "image_dice": float(np.mean(img_d)), "image_iou": float(np.mean(img_i)),
            "image_vertebra_dice": float(np.mean(vert_d)), "n_images": len(pairs), "n_crops": len(crop_d)}


def time_predict(seg: object, pairs: list[tuple[np.ndarray, np.ndarray]], repeats: int = 20) -> float:
    """Median milliseconds of predict_crops on the first image with 7 boxes."""
    from cervkit.labels.instances import boxes_from_labels

    image, labels = next(((im, lab) for im, lab in pairs if lab.max() >= 7), pairs[0])
    boxes = boxes_from_labels(labels)[:7]
    seg.predict_crops(image, boxes)  # type: ignore[attr-defined]  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg.predict_crops(image, boxes)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train and measure every configuration, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=None, help="default: $CERVKIT_DATA_DIR/mri_lumbar_t2")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_segmenter"))
    parser.add_argument("--configs", nargs="+", default=["mobilenet_v2:16:64"],
                        help="encoder:cat_channels:crop_size (one training each)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--margin", type=float, default=0.15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids oversubscription on a shared 2-core machine)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    from cervkit.core.config import real_mri_manifest
    from cervkit.data.manifest import ensure_split
    from cervkit.inference.segmenter import Segmenter
    from cervkit.training.segmenter import train_segmenter

    source = args.manifest or real_mri_manifest()
    if source is None:
        print("no manifest: set CERVKIT_DATA_DIR or pass --manifest", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    split = ensure_split(source, args.out / "split.csv", seed=args.seed)
    parts = {s: _pairs(split, s) for s in ("val", "test")}
    rows = []
    for cfg in args.configs:
        encoder, cat, size = cfg.split(":")
        tag = cfg.replace(":", "_")
        run = train_segmenter(split, args.out / tag, encoder_name=encoder, cat_channels=int(cat),
                              crop_size=int(size), epochs=args.epochs, patience=args.patience, lr=args.lr,
                              alpha=args.alpha, margin=args.margin, batch_size=args.batch_size, seed=args.seed,
                              device=args.device, max_minutes=args.max_minutes, overwrite=True)
        seg = Segmenter.load(run.model_path, device=args.device)
        row = {"config": cfg, "train_min": run.seconds / 60, "epochs": run.epochs_run, "best_epoch": run.best_epoch}
        for name, pairs in parts.items():
            row.update({f"{name}_{k}": v for k, v in evaluate_split(seg, pairs).items() if not k.startswith("n_")})
        row["predict_7_ms"] = time_predict(seg, parts["test"])
        rows.append(row)
        print(pd.read_csv(run.history_csv).to_string(index=False, float_format="{:.4f}".format), flush=True)
        print(pd.DataFrame([row]).T.to_string(header=False, float_format="{:.4f}".format), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "summary.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False, float_format="{:.4f}".format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
