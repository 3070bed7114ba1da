"""The command line: ``python -m cervkit <command> …`` (a stable contract, see DESIGN.md).

Each command's work lives in its own module; this file only parses arguments and
reports errors. Heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from cervkit.errors import CervkitInputError

Handler = Callable[[argparse.Namespace], int]


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from cervkit.notebook_runner import run_all

    results = run_all(Path(args.out), folder=Path(args.folder) if args.folder else None, only=args.only)
    failed = [r for r in results if r.error is not None]
    total = sum(r.seconds for r in results)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({total:.0f} s); executed copies in {args.out}")
    return 1 if failed or not results else 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from cervkit.synth import write_phantom_dataset

    path = write_phantom_dataset(Path(args.out), args.n, style=args.style, seed=args.seed,
                                 size=(args.size, args.size), overwrite=args.overwrite)
    print(f"wrote {args.n} {args.style} phantoms: {path}")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from cervkit.manifest import ensure_split, summary

    manifest = ensure_split(Path(args.manifest), Path(args.out) if args.out else None, seed=args.seed)
    print(summary(manifest).to_string())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from cervkit.manifest import load_manifest, validate_manifest

    manifest = load_manifest(Path(args.manifest), validate=False)
    problems = validate_manifest(manifest, check_sha256=args.sha256)
    for problem in problems:
        print(f"- {problem}")
    print(f"{args.manifest}: {len(manifest.df)} rows, {len(problems)} problem(s)")
    return 1 if problems else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from cervkit.train import train_run

    run = train_run(Path(args.manifest), Path(args.out), model=args.model, quick=True if args.quick else None,
                    seed=args.seed, imgsz=args.imgsz, device=args.device, overwrite=args.overwrite,
                    detector_classes=args.detector_classes)
    print(f"trained {args.model}: {run}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cervkit.predict import predict_files
    from cervkit.runs import load_predictor

    predictor = load_predictor(Path(args.model), device=args.device)
    table = predict_files(predictor, args.inputs, Path(args.out), overwrite=args.overwrite)
    failed = int((table["status"] != "ok").sum())
    ok = table[table["status"] == "ok"]
    mean = f", {ok['seconds'].mean():.3f} s/image" if len(ok) else ""
    print(f"{len(ok)} predicted, {failed} failed{mean}; outputs in {args.out}")
    return 1 if failed or table.empty else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cervkit.evaluate import evaluate_predictor, write_evaluation
    from cervkit.manifest import load_manifest
    from cervkit.runs import load_predictor

    manifest = load_manifest(Path(args.manifest))
    evaluation = evaluate_predictor(load_predictor(Path(args.model), device=args.device), manifest,
                                    split=args.split)
    out = write_evaluation(evaluation, Path(args.out), overwrite=args.overwrite)
    print(evaluation.summary.to_string(index=False))
    print(f"{len(evaluation.images)} images evaluated; tables in {out}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from cervkit.measure_batch import measure_files

    batch = measure_files(args.masks, Path(args.out), spacing_mm=args.spacing_mm, expected=args.levels,
                          anterior_side=args.anterior_side, overwrite=args.overwrite)
    for _, row in batch.summary[batch.summary["status"] != "ok"].iterrows():
        print(f"failed: {row['file']}: {row['error']}", file=sys.stderr)
    ok = batch.summary[batch.summary["status"] == "ok"]
    print(f"{len(ok)} measured ({int(ok['levels_unsure'].astype(bool).sum())} with levels unsure), "
          f"{batch.n_failed} failed; {batch.summary_path}, {batch.vertebrae_path}")
    return 1 if batch.n_failed or batch.summary.empty else 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-command per task.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each sub-parser's ``handler`` default runs it.
    """
    parser = argparse.ArgumentParser(prog="cervkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("notebooks", help="execute the numbered notebooks (quick mode with CERVKIT_QUICK=1)")
    p.add_argument("--out", default="outputs/notebooks", help="folder for the executed copies")
    p.add_argument("--folder", help="notebooks folder (default: the checkout's notebooks/)")
    p.add_argument("--only", nargs="*", help="name prefixes to run, e.g. 00 01")
    p.set_defaults(handler=_cmd_notebooks)

    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--model", default="yolo-unet",
                   choices=["yolo-unet", "yolo-deeplab", "unet3plus", "deeplabv3plus", "yolo-seg"])
    p.add_argument("--quick", action="store_true", help="quick mode (also CERVKIT_QUICK=1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--imgsz", type=int, help="detector image size")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="train into a non-empty run folder")
    p.add_argument("--detector-classes", default="auto", choices=["auto", "levels", "single"],
                   help="cascade detector: one class per level (auto when every mask has the same levels) "
                        "or the paper's single 'vertebra' class")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("predict", help="segment images (files or folders) with a trained run")
    p.add_argument("--model", required=True, help="the run folder")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("inputs", nargs="+", help="DICOM, PNG, JPG or TIFF files, or folders")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a trained run on a manifest")
    p.add_argument("--model", required=True, help="the run folder")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test", help="split to evaluate (every row when the manifest has none)")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("phantoms", help="write a synthetic phantom dataset with a manifest")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--style", choices=["xray", "mri", "both"], default="xray")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_phantoms)

    p = sub.add_parser("split", help="patient-level 6:2:2 split written to a CSV")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", help="where to write the split manifest (default: <stem>_split.csv beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_split)

    p = sub.add_parser("validate", help="report every problem in a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--sha256", action="store_true", help="also check image hashes")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("measure", help="C2-C7 Cobb angle and per-vertebra measurements of label maps")
    p.add_argument("--out", required=True, help="summary CSV (<stem>_vertebrae.csv is written beside it)")
    p.add_argument("--spacing-mm", nargs=2, type=float, metavar=("ROW", "COL"),
                   help="pixel spacing for masks without one (NIfTI spacing wins; default: pixels)")
    p.add_argument("--levels", nargs="+", default=["C2", "C3", "C4", "C5", "C6", "C7"],
                   help="expected levels top to bottom (default C2 ... C7)")
    p.add_argument("--anterior-side", choices=["left", "right"], help="default: from the curve of the column")
    p.add_argument("--overwrite", action="store_true", help="replace existing CSV files")
    p.add_argument("masks", nargs="+", help="label maps: PNG, TIFF or NIfTI")
    p.set_defaults(handler=_cmd_measure)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 1 when something failed, 2 for bad input.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (CervkitInputError, FileExistsError, FileNotFoundError) as exc:
        print(f"cervkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
