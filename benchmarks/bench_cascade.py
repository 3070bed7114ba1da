"""Issue 3's targets for the YOLO-UNet cascade on the real MRI set, measured end to end.

Trains with ``cervkit train`` defaults (unless ``--run`` points at an existing run), then reports:
training wall time, the test split's per-image Dice and the fraction of vertebral bodies found
(IoU >= 0.5), and predict time per image (model time: detector + one batched crop pass + paste,
excluding process start and file I/O).

    CERVKIT_DATA_DIR=../shared/data python benchmarks/bench_cascade.py --out outputs/bench_cascade
    python benchmarks/bench_cascade.py --run outputs/runs/real_full      # evaluate an existing run
    python benchmarks/bench_cascade.py --run mri                         # the shipped model, its card's T2 test
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an existing run folder (skip training)")
    parser.add_argument("--out", default="outputs/bench_cascade", help="run folder to train into")
    parser.add_argument("--manifest", help="default: $CERVKIT_DATA_DIR/mri_lumbar_t2/manifest.csv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timing passes over the test images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cervkit.core.config import real_mri_manifest
    from cervkit.data.manifest import load_manifest
    from cervkit.evaluation.evaluate import evaluate_predictor
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image
    from cervkit.runs.folder import read_run_info
    from cervkit.training.train import train_run

    if args.run:
        from cervkit.zoo.catalog import test_manifest
        from cervkit.zoo.store import resolve_model

        resolved = resolve_model(args.run)  # a run folder, or a shipped model's name (its card's T2 test images)
        run = resolved.path
        print(resolved.describe())
        train_seconds = sum(read_run_info(run).get("train_seconds", {}).values()) or float("nan")
        split = (test_manifest(args.run, sources=["mri_lumbar_t2"]) if resolved.kind == "zoo"
                 else load_manifest(run / "split.csv"))
    else:
        manifest = args.manifest or real_mri_manifest()
        if manifest is None:
            raise SystemExit("set CERVKIT_DATA_DIR or pass --manifest")
        start = time.perf_counter()
        run = train_run(manifest, args.out, overwrite=True)
        train_seconds = time.perf_counter() - start
        split = load_manifest(run / "split.csv")
    predictor = load_predictor(run)
    evaluation = evaluate_predictor(predictor, split, split="test", progress=False)
    test = split.subset(split="test")
    images = [read_image(test.image_path(i)).array for i in range(len(test))]
    predictor.predict(images[0])  # warm-up
    per_image = []
    for _ in range(args.repeats):
        for image in images:
            start = time.perf_counter()
            predictor.predict(image)
            per_image.append(time.perf_counter() - start)
    found = evaluation.images["tp"].sum() / evaluation.images["n_gt"].sum()
    report = {
        "run": str(run), "threads": args.threads, "train_minutes": round(train_seconds / 60, 2),
        "test_images": len(test), "dice_mean": round(float(evaluation.images["dice"].mean()), 4),
        "dice_min": round(float(evaluation.images["dice"].min()), 4),
        "vertebrae_found_iou50": round(float(found), 4),
        "hd95_mm_mean": round(float(evaluation.images["hd95"].mean()), 3),
        "predict_s_per_image_median": round(float(np.median(per_image)), 4),
        "predict_s_per_image_p90": round(float(np.percentile(per_image, 90)), 4),
        "image_shape": list(images[0].shape),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
