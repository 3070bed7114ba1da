"""Issue 18: editor actions until every body has Dice ≥ 0.95, box prompts against brush strokes only.

On each shipped model's held-out test images (real MRI: the ``mri`` card's T2 and Dixon test patients; X-ray:
the ``xray`` card's phantoms), the scripted annotator of :mod:`cervkit.editor.simulate` corrects

* ``draft``: the shipped model's prediction (what a user of the correction queue starts from), and
* ``scratch``: an empty map (annotating a new image by hand, or every body the model missed),

worst body first, with box prompts (a box from the true body, each side up to 3 px off; brush strokes
where a box cannot help) and, on the same images, with brush strokes only. Counts actions (box prompts,
strokes, erasures, deletions, new labels) until every annotated body reaches Dice 0.95 (NoC@90-style), capped
at ``--max-actions``; reports the mean actions per image, the share of images that reached the target, the ratio
brush / box and the seconds of model time per box prompt. Writes ``OUT/images.csv`` and ``OUT/summary.csv``.

    CERVKIT_DATA_DIR=../shared/data python benchmarks/bench_annotation_cost.py --out outputs/bench_annotation
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    """Run the benchmark and print the tables."""
    from cervkit.editor.simulate import annotate
    from cervkit.editor.state import EditorState
    from cervkit.evaluation.matching import drop_unannotated
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image, read_mask
    from cervkit.zoo.catalog import test_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench_annotation")
    parser.add_argument("--models", nargs="*", default=["mri", "xray"])
    parser.add_argument("--max-actions", type=int, default=200)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per source")
    args = parser.parse_args()

    rows = []
    for name in args.models:
        split = test_manifest(name)
        predictor = load_predictor(name, device="cpu")
        df = split.df
        for source in sorted(df["source"].astype(str).unique()):
            idx = [i for i in range(len(df)) if df["split"].iloc[i] == "test" and str(df["source"].iloc[i]) == source]
            for i in idx[: args.limit]:
                image, gt = read_image(split.image_path(i)), read_mask(split.mask_path(i))
                draft = drop_unannotated(predictor.predict(image).labels, gt)
                for start_name, start in (("draft", draft), ("scratch", np.zeros_like(gt))):
                    for mode in ("box", "brush"):
                        t0 = time.perf_counter()
                        run = annotate(EditorState(image, start), gt, mode=mode, model=name,
                                       max_actions=args.max_actions, seed=i)
                        rows.append({"model": name, "source": source, "image": split.image_path(i).name,
                                     "start": start_name, "mode": mode, "actions": run.actions,
                                     "boxes": run.kinds.get("box", 0), "reached": run.reached,
                                     "min_dice_start": min(run.dice_start), "min_dice_end": min(run.dice_end),
                                     "model_seconds": run.model_seconds, "seconds": time.perf_counter() - t0})
    images = pd.DataFrame(rows)
    summary = (images.groupby(["source", "start", "mode"])
               .agg(images=("actions", "size"), actions_mean=("actions", "mean"), reached=("reached", "mean"),
                    boxes=("boxes", "sum"), model_seconds=("model_seconds", "sum")).reset_index())
    summary["seconds_per_box"] = summary["model_seconds"] / summary["boxes"].where(summary["boxes"] > 0)
    wide = summary.pivot_table(index=["source", "start"], columns="mode", values="actions_mean")
    wide["brush_over_box"] = wide["brush"] / wide["box"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images.to_csv(out / "images.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    wide.to_csv(out / "ratio.csv")
    print(summary.round(3).to_string(index=False))
    print(wide.round(2).to_string())


if __name__ == "__main__":
    main()
