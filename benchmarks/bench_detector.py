"""Benchmark the stage-1 detector on the real lumbar MRI data: epochs/minutes to good test recall.

For each configuration it trains YOLOv11n from scratch on the train split (patient-level split
written under --out, never into the data folder), keeps a checkpoint per epoch, then measures
on the test split, for every --eval-every-th epoch: recall and precision of the boxes
(one-to-one matching, IoU >= 0.5 with the ground-truth boxes), and the predict time per image
of the best checkpoint. Prints one table per configuration and a summary table.

Example (about 10 minutes per configuration on 2 CPU cores)::

    CERVKIT_DATA_DIR=/work/shared/data python benchmarks/bench_detector.py \
        --configs 320:16:mosaic 384:16:nomosaic --minutes 10 --epochs 80
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _gt_boxes(manifest: object, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Test images and their ground-truth boxes."""
    from cervkit.io.images import read_image, read_mask
    from cervkit.labels.instances import boxes_from_labels

    part = manifest.subset(split=split)  # type: ignore[attr-defined]
    images, boxes = [], []
    for row in part.rows():
        images.append(read_image(row.image).array)
        boxes.append(boxes_from_labels(read_mask(row.mask)))
    return images, boxes


def _score(weights: Path, images: list[np.ndarray], gts: list[np.ndarray], imgsz: int,
           conf: float) -> dict[str, float]:
    """Recall / precision at IoU 0.5 and predict time of one checkpoint on the test images."""
    from cervkit.inference.detector import Detector, match_boxes

    det = Detector.load(weights, imgsz=imgsz, device="cpu")
    det.predict(images[:1], conf=conf)  # warm-up
    preds = det.predict(images, conf=conf, batch=8)
    batched = det.last_seconds / len(images)
    t0 = time.perf_counter()
    for im in images[:5]:
        det.predict([im], conf=conf)
    single = (time.perf_counter() - t0) / min(5, len(images))
    counts = {"tp": 0, "fp": 0, "fn": 0}
    for p, g in zip(preds, gts):
        for k, v in match_boxes(p.boxes, g).items():
            counts[k] += v
    recall = counts["tp"] / max(1, counts["tp"] + counts["fn"])
    precision = counts["tp"] / max(1, counts["tp"] + counts["fp"])
    return {"recall": recall, "precision": precision, "s_per_img_batch": batched, "s_per_img_single": single}


def _parse(config: str) -> dict[str, object]:
    """``IMGSZ:BATCH:mosaic|nomosaic[:lr0][:xFACTOR]`` → settings."""
    parts = config.split(":")
    out: dict[str, object] = {"name": config, "imgsz": int(parts[0]), "batch": int(parts[1]),
                              "mosaic": parts[2] != "nomosaic", "lr0": None, "expand": 0}
    for extra in parts[3:]:
        if extra.startswith("x"):
            out["expand"] = int(extra[1:])
        else:
            out["lr0"] = float(extra)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default outputs/bench_detector)")
    parser.add_argument("--configs", nargs="+", default=["320:16:mosaic"],
                        help="IMGSZ:BATCH:mosaic|nomosaic[:LR0][:xEXPAND] each")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=0.0, help="ultralytics time limit per config (0: none)")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from cervkit.core.config import outputs_dir, real_mri_manifest
    from cervkit.data.manifest import ensure_split, load_manifest
    from cervkit.training.detector import read_results, train_detector
    from cervkit.transforms.offline import expand_dataset

    real = real_mri_manifest()
    if real is None:
        print("real data not found: set CERVKIT_DATA_DIR", file=sys.stderr)
        return 2
    out = (args.out or outputs_dir() / "bench_detector").resolve()
    out.mkdir(parents=True, exist_ok=True)
    split_csv = out / "split.csv"
    manifest = ensure_split(real, out_path=split_csv, seed=args.seed)
    images, gts = _gt_boxes(manifest, "test")
    sizes = {s: len(manifest.subset(split=s)) for s in ("train", "val", "test")}
    print(f"split {sizes}; torch threads {torch.get_num_threads()}; test boxes {sum(len(g) for g in gts)}")
    summary = []
    for text in args.configs:
        cfg = _parse(text)
        tag = text.replace(":", "_")
        train_manifest = manifest
        if cfg["expand"]:
            exp = out / f"expanded_x{cfg['expand']}"
            path = exp / "manifest.csv"
            if not path.exists():
                expand_dataset(split_csv, exp, factor=int(cfg["expand"]), seed=args.seed)
            train_manifest = load_manifest(path)
        overrides: dict[str, object] = {"save_period": 1}
        if args.minutes > 0:
            overrides["time"] = args.minutes / 60.0
        if cfg["lr0"] is not None:
            overrides.update(lr0=cfg["lr0"], optimizer="AdamW")
        start = time.perf_counter()
        run = train_detector(train_manifest, out / tag, epochs=args.epochs, patience=args.patience,
                             imgsz=int(cfg["imgsz"]), batch=int(cfg["batch"]), seed=args.seed, device="cpu",
                             augment={"mosaic": 1.0 if cfg["mosaic"] else 0.0}, overrides=overrides,
                             quick=False, overwrite=True)
        wall = time.perf_counter() - start
        table = read_results(run.results_csv)
        rows, first98 = [], None
        for epoch in range(args.eval_every, len(table) + 1, args.eval_every):
            ckpt = run.run_dir / "weights" / f"epoch{epoch - 1}.pt"  # ultralytics numbers them from 0
            if not ckpt.exists():
                continue
            score = _score(ckpt, images, gts, int(cfg["imgsz"]), args.conf)
            minutes = float(table["time"].iloc[epoch - 1]) / 60
            rows.append({"epoch": epoch, "train_min": round(minutes, 2), "val_mAP50": table["metrics/mAP50(B)"]
                         .iloc[epoch - 1], "test_recall": score["recall"], "test_precision": score["precision"]})
            if first98 is None and score["recall"] >= 0.98:
                first98 = (epoch, minutes)
        best = _score(run.weights, images, gts, int(cfg["imgsz"]), args.conf)
        print(f"\n== {text}: {run.epochs_run} epochs in {wall / 60:.1f} min (best epoch {run.best_epoch})")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        summary.append({"config": text, "epochs": run.epochs_run, "train_min": round(wall / 60, 1),
                        "best_epoch": run.best_epoch, "best_recall": round(best["recall"], 3),
                        "best_precision": round(best["precision"], 3),
                        "epoch_to_98": None if first98 is None else first98[0],
                        "min_to_98": None if first98 is None else round(first98[1], 1),
                        "ms_per_img_batch": round(1000 * best["s_per_img_batch"], 1),
                        "ms_per_img_single": round(1000 * best["s_per_img_single"], 1)})
        for extra in run.run_dir.glob("weights/epoch*.pt"):
            extra.unlink()
    print("\n== summary (test split, IoU >= 0.5)")
    print(pd.DataFrame(summary).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
