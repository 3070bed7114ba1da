"""Issues 15 and 16: leave one real source out, score the unseen source, fine-tune on 5 of its images.

For each real MRI source (``mri_lumbar_t2``, ``mri_lumbar_dixon``): a YOLO-UNet is trained on the other real
source plus the cervical MRI phantoms of the shipped ``mri`` recipe (never on the held-out one), scored on every
image of the held-out source (per image, per vertebra, per level, bodies found at IoU ≥ 0.5; bodies outside the
source's annotated levels are not scored), then fine-tuned (``train --resume``) on 5 annotated images of the
held-out source (one slice each of five patients; a fixed budget, no early stop on the one validation image) and
scored on the images of its other patients
(:func:`cervkit.evaluation.leave_out.leave_one_source_out`).

Every stage takes the shipped ``mri`` recipe's options (detector: image size, epochs, patience, batch, zoom
copies; segmenter: epochs, patience; anchor: epochs, patience); budgets
are wall-clock caps per stage (``--minutes detector,segmenter`` and ``--finetune-minutes``); the shipped recipe
uses 30 + 18 minutes, this benchmark less by default, so its numbers are a lower bound for the recipe. Writes
``OUT/table.csv`` and ``OUT/<source>/result.json`` (per-level Dice).

    CERVKIT_DATA_DIR=../shared/data python benchmarks/bench_sources.py --out outputs/bench_sources
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


FINETUNE = {"detector": {"epochs": 100, "patience": 100}, "segmenter": {"epochs": 60, "patience": 60}}
"""Five images are few: no early stop on one validation image; the time caps bound the fine-tune (best epoch kept)."""


def main() -> None:
    """Run the benchmark and print the table."""
    from cervkit.data.datasets import get_dataset
    from cervkit.data.manifest import load_manifest
    from cervkit.evaluation.leave_out import leave_one_source_out
    from cervkit.zoo.catalog import RECIPES, source_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench_sources")
    parser.add_argument("--held-out", nargs="*", default=["mri_lumbar_dixon", "mri_lumbar_t2"])
    parser.add_argument("--minutes", default="12,8", help="detector,segmenter caps (minutes)")
    parser.add_argument("--finetune-minutes", default="5,4", help="detector,segmenter caps when fine-tuning")
    parser.add_argument("--n-finetune", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep finished leave-out runs; redo the fine-tunes")
    parser.add_argument("--quick", action="store_true", help="smoke test: one epoch, tiny images")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    def caps(text: str) -> dict[str, float]:
        det, seg = (float(v) for v in text.split(","))
        return {"detector": det, "segmenter": seg}

    out = Path(args.out)
    recipe = RECIPES["mri"]
    real = {name: load_manifest(get_dataset(name, quick=False)) for name in ("mri_lumbar_t2", "mri_lumbar_dixon")}
    for name, manifest in real.items():
        manifest.df["source"] = name
    phantoms = [source_manifest(s, out / "work", quick=args.quick, recipe=recipe)
                for s in recipe.sources if s.phantoms is not None]
    start = time.perf_counter()
    table = leave_one_source_out(real, out, held_out=args.held_out, extra=phantoms, n_finetune=args.n_finetune,
                                 device=args.device, max_minutes=caps(args.minutes),
                                 finetune_minutes=caps(args.finetune_minutes),
                                 detector_options={"imgsz": 96, "epochs": 1} if args.quick else
                                 {k: v for k, v in recipe.detector.items() if k not in ("classes", "max_minutes")},
                                 segmenter_options=None if args.quick else
                                 {k: v for k, v in recipe.segmenter.items() if k != "max_minutes"},
                                 anchor_options=None if args.quick else dict(recipe.anchor),
                                 finetune_options=None if args.quick else FINETUNE, reuse=args.reuse,
                                 quick=args.quick)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    print(table.to_string(index=False))
    print(f"total {(time.perf_counter() - start) / 60:.1f} min; table in {out / 'table.csv'}")


if __name__ == "__main__":
    main()
