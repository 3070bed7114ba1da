"""Benchmark the paper's comparison models on the real lumbar MRI data: test Dice / IoU / HD95 and s/image.

For each ``--models`` entry (``unet3plus`` and ``deeplabv3plus`` on whole images, ``yolo-seg``; the
cascades ``yolo-unet`` / ``yolo-deeplab`` work too) it trains a run with :func:`cervkit.training.train.train_run`
on a patient-level split written under ``--out`` (never into the data folder), capped at ``--minutes`` of
training per stage, then evaluates it on the test split with :func:`cervkit.evaluation.evaluate.evaluate_predictor`
and prints one summary row per model (mean and 95 % bootstrap CI of the per-image metrics, mean seconds
per image, training seconds).

Example (about 5 minutes per model on 2 CPU cores)::

    CERVKIT_DATA_DIR=/work/shared/data python benchmarks/bench_baselines.py --minutes 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

METRICS = ("dice", "iou", "hd95", "detection_rate", "mean_vertebra_dice")


def _options(model: str, minutes: float, size: int | None) -> dict[str, dict[str, object]]:
    """Per-stage trainer options with the minutes cap."""
    if model in ("unet3plus", "deeplabv3plus"):
        seg: dict[str, object] = {"max_minutes": minutes}
        if size:
            seg["size"] = size
        return {"segmenter_options": seg}
    return {"detector_options": {"max_minutes": minutes}, "segmenter_options": {"max_minutes": minutes}}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default outputs/bench_baselines)")
    parser.add_argument("--models", nargs="+", default=["unet3plus", "deeplabv3plus", "yolo-seg"])
    parser.add_argument("--minutes", type=float, default=4.0, help="training cap per stage")
    parser.add_argument("--size", type=int, default=None, help="whole-image network size (default: trainer's)")
    parser.add_argument("--imgsz", type=int, default=None, help="YOLO image size (default: trainer's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from cervkit.core.config import outputs_dir, real_mri_manifest
    from cervkit.data.manifest import ensure_split
    from cervkit.evaluation.evaluate import evaluate_predictor, write_evaluation
    from cervkit.inference.registry import load_predictor
    from cervkit.runs.folder import read_run_info
    from cervkit.training.train import train_run

    manifest_path = real_mri_manifest()
    if manifest_path is None:
        print("real MRI data not found: set CERVKIT_DATA_DIR to the folder holding mri_lumbar_t2/", file=sys.stderr)
        return 2
    out = (args.out or outputs_dir() / "bench_baselines").resolve()
    out.mkdir(parents=True, exist_ok=True)
    split_csv = out / "split.csv"
    split = ensure_split(manifest_path, split_csv, seed=args.seed, overwrite=True)
    print(split.df.groupby("split")["patient_id"].agg(["count", "nunique"]).to_string())
    rows = []
    for model in args.models:
        run = out / model
        start = time.perf_counter()
        train_run(split_csv, run, model=model, quick=False, seed=args.seed,
                  imgsz=args.imgsz if model.startswith("yolo") else None, device=args.device, overwrite=True,
                  validate=False, **_options(model, args.minutes, args.size))
        train_seconds = time.perf_counter() - start
        predictor = load_predictor(run, device=args.device)
        evaluation = evaluate_predictor(predictor, split, split="test", progress=False)
        write_evaluation(evaluation, run / "test", overwrite=True)
        summary = evaluation.summary.set_index("metric")
        row: dict[str, object] = {"model": model, "train_s": round(train_seconds, 1)}
        for metric in METRICS:
            if metric in summary.index:
                s = summary.loc[metric]
                row[metric] = f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        images = evaluation.images
        row["s_per_image"] = round(float(images["seconds"].mean()), 3)
        if "n_pred" in images.columns:
            row["n_pred_mean"] = round(float(images["n_pred"].mean()), 2)
        info = read_run_info(run)
        row["stages"] = json.dumps(info.get("train_seconds", {}), default=lambda v: round(v, 1))
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False)
    print("\nsummary (test split, per-image means with 95 % bootstrap CI)")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
