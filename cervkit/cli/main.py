"""The command line: ``python -m cervkit <command> …`` (a stable contract, see DESIGN.md).

Each command's work lives in its own module; this file only parses arguments and
reports errors. Heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from cervkit.core.errors import CervkitInputError

Handler = Callable[[argparse.Namespace], int]


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from cervkit.cli.notebooks import run_all

    from cervkit.cli.report import notebook_html, write_index
    from cervkit.core.config import outputs_dir

    results = run_all(Path(args.out), folder=Path(args.folder) if args.folder else None, only=args.only)
    failed = [r for r in results if r.error is not None]
    total = sum(r.seconds for r in results)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({total:.0f} s); executed copies in {args.out}")
    for r in results:
        notebook_html(r.executed)
    print("report:", write_index(outputs_dir(), results))
    return 1 if failed or not results else 0


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from cervkit.data.synth.dataset import write_phantom_dataset

    path = write_phantom_dataset(Path(args.out), args.n, style=args.style, seed=args.seed,
                                 size=(args.size, args.size), overwrite=args.overwrite)
    print(f"wrote {args.n} {args.style} phantoms: {path}")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from cervkit.data.manifest import ensure_split
    from cervkit.data.split import summary

    manifest = ensure_split(Path(args.manifest), Path(args.out) if args.out else None, seed=args.seed)
    print(summary(manifest).to_string())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from cervkit.data.checks import validate_manifest
    from cervkit.data.manifest import load_manifest

    manifest = load_manifest(Path(args.manifest), validate=False)
    problems = validate_manifest(manifest, check_sha256=args.sha256)
    for problem in problems:
        print(f"- {problem}")
    print(f"{args.manifest}: {len(manifest.df)} rows, {len(problems)} problem(s)")
    return 1 if problems else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from cervkit.training.train import train_run

    # --no-amp: float32 on CUDA too (ultralytics' own AMP for the detectors, cervkit.training.mixed_precision for the rest)
    no_amp = {"detector_options": {"overrides": {"amp": False}}, "segmenter_options": {"amp": False}}
    manifests = [Path(m) for m in args.manifest]
    run = train_run(manifests[0] if len(manifests) == 1 else manifests, Path(args.out), model=args.model, quick=True if args.quick else None,
                    seed=args.seed, imgsz=args.imgsz, device=args.device, overwrite=args.overwrite,
                    detector_classes=args.detector_classes, resume=args.resume, max_minutes=args.max_minutes,
                    **(no_amp if args.no_amp else {}))
    from cervkit.runs.folder import read_run_info

    info = read_run_info(run)
    model = info["model"]
    for stage, limits in (info.get("limits") or {}).items():
        cap = limits.get("max_minutes")
        print(f"{stage}: stopped after epoch {limits.get('epochs_run')} of {limits.get('epochs')} "
              f"({limits.get('stop_reason')}; time cap {'none' if cap is None else f'{cap:g} min'})")
    print(f"fine-tuned {model} from {args.resume}: {run}" if args.resume else f"trained {model}: {run}")
    return 0


def _max_minutes(text: str) -> object:
    """argparse type of ``train --max-minutes`` (:func:`cervkit.training.limits.parse_max_minutes`)."""
    from cervkit.training.limits import parse_max_minutes

    try:
        return parse_max_minutes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_predict(args: argparse.Namespace) -> int:
    from cervkit.inference.predict import predict_files
    from cervkit.inference.registry import load_predictor

    predictor = load_predictor(args.model, device=args.device)
    print(predictor.model_source.describe())
    table = predict_files(predictor, args.inputs, Path(args.out), overwrite=args.overwrite, resume=args.resume,
                          names=args.names, modality=args.modality, keep_identifiers=args.keep_identifiers,
                          run=args.model, salt=args.salt, levels=args.levels)
    failed = int((table["status"] != "ok").sum())
    ok = table[table["status"] == "ok"]
    mean = f", {ok['seconds'].mean():.3f} s/image" if len(ok) else ""
    print(f"{len(ok)} predicted, {failed} failed{mean}; outputs in {args.out}, "
          f"least confident first in {Path(args.out) / 'queue.csv'}")
    return 1 if failed or table.empty else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cervkit.core.files import check_writable
    from cervkit.data.manifest import load_manifest
    from cervkit.evaluation.evaluate import evaluate_run, write_evaluation

    for name in ("images.csv", "vertebrae.csv", "summary.csv", "evaluation.json"):
        check_writable(Path(args.out) / name, args.overwrite)  # before the (long) evaluation
    from cervkit.zoo.store import resolve_model

    print(resolve_model(args.model).describe())
    evaluation = evaluate_run(args.model, load_manifest(Path(args.manifest)), split=args.split,
                              device=args.device, dataset=args.dataset)
    out = write_evaluation(evaluation, Path(args.out), overwrite=args.overwrite)
    print(evaluation.summary.to_string(index=False))
    print(f"{len(evaluation.images)} images evaluated; tables in {out}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from cervkit.zoo import store

    if args.zoo_command == "build":
        from cervkit.zoo.recipes import build

        card = build(args.name, device=args.device)
        print(f"built {args.name} in {card['built']['minutes']} min; card: {store.ZOO_DIR / (args.name + '.md')}")
        for source, m in card["metrics"].items():
            print(f"  {source}: Dice/image {m['dice_image']:.3f}, Dice/vertebra {m['dice_vertebra']:.3f}, "
                  f"found {m['found']:.3f} ({m['images']} test images)")
        return 0
    if args.zoo_command == "score":
        from cervkit.zoo.recipes import rescore

        card = store.card(args.name)
        metrics = rescore(args.name, device=args.device, write=args.write)
        for source, m in metrics.items():
            old = card["metrics"].get(source, {})
            print(f"  {source}: Dice/image {m['dice_image']:.3f} (card {old.get('dice_image', float('nan')):.3f}), "
                  f"Dice/vertebra {m['dice_vertebra']:.3f} (card {old.get('dice_vertebra', float('nan')):.3f}), "
                  f"found {m['found']:.3f}, {m['seconds_median']:.3f} s/image ({m['images']} test images)")
        print(f"card {'updated' if args.write else 'unchanged (add --write to record these numbers)'}: "
              f"{store.ZOO_DIR / (args.name + '.md')}")
        return 0
    names = [args.name] if getattr(args, "name", None) else store.available()
    if args.zoo_command == "list":
        if not names:
            print("no shipped models in", store.ZOO_DIR)
        for name in names:
            card = store.card(name)
            heads = "; ".join(f"{s} Dice/vertebra {m['dice_vertebra']:.3f}, found {m['found']:.2f}"
                              for s, m in card["metrics"].items())
            print(f"{name}: {card['summary']} [{card['modality']}] built {card['built']['date']}: {heads}")
        return 0
    bad = 0
    for name in names:
        problems = store.check(name)
        print(f"{name}: {'ok' if not problems else 'FAILED'} ({len(store.card(name)['files'])} files)")
        for line in problems:
            print("  " + line)
        bad += bool(problems)
    return 1 if bad or not names else 0


def _named_folders(items: list[str]) -> dict:
    """``MODEL[@DATASET]=DIR`` arguments → {model or (model, dataset): DIR}."""
    out: dict = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise CervkitInputError(f"expected MODEL=EVALDIR or MODEL@DATASET=EVALDIR, got {item!r}")
        model, at, dataset = name.partition("@")
        out[(model, dataset) if at else model] = Path(folder)
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    from cervkit.evaluation.compare import format_table2, table2
    from cervkit.evaluation.report import write_comparison

    evaluations = _named_folders(args.evaluations)
    written = write_comparison(evaluations, Path(args.out), reference=args.reference,
                               figures=not args.no_figures, figure5_kwargs={"device": args.device},
                               overwrite=args.overwrite)
    print(format_table2(table2(evaluations)).to_string(index=False))
    print(f"wrote {', '.join(sorted(written))} in {args.out}")
    return 0


def _cmd_crossval(args: argparse.Namespace) -> int:
    from cervkit.evaluation.crossval import cross_validate

    if args.by == "source":
        from cervkit.core.files import check_writable
        from cervkit.data.manifest import load_manifest
        from cervkit.data.sources import source_of
        from cervkit.evaluation.leave_out import leave_one_source_out

        manifests = [load_manifest(m) for m in args.manifest]
        sources = {source_of(m): m for m in manifests}
        if len(sources) < 2:
            raise CervkitInputError("crossval --by source needs two --manifest sources or more")
        check_writable(Path(args.out) / "table.csv", args.overwrite)
        table = leave_one_source_out(sources, Path(args.out), n_finetune=args.finetune_images, seed=args.seed,
                                     device=args.device, quick=True if args.quick else False,
                                     detector_options={"imgsz": args.imgsz} if args.imgsz else None)
        table.to_csv(Path(args.out) / "table.csv", index=False)
        print(table.to_string(index=False))
        print(f"{len(sources)} sources left out in turn; table in {Path(args.out) / 'table.csv'}")
        return 0
    if len(args.manifest) != 1:
        raise CervkitInputError("crossval by patient takes one --manifest (several: --by source)")
    result = cross_validate(Path(args.manifest[0]), Path(args.out), model=args.model, k=args.k, seed=args.seed,
                            quick=True if args.quick else None, device=args.device, imgsz=args.imgsz,
                            overwrite=args.overwrite)
    print(result.folds.drop(columns=["run"]).to_string(index=False))
    print(result.summary.to_string(index=False))
    print(f"{args.k} folds; tables in {result.out}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from cervkit.measurements.batch import measure_files

    batch = measure_files(args.masks, Path(args.out), spacing_mm=args.spacing_mm, expected=args.levels,
                          anterior_side=args.anterior_side, overwrite=args.overwrite)
    for _, row in batch.summary[batch.summary["status"] != "ok"].iterrows():
        print(f"failed: {row['file']}: {row['error']}", file=sys.stderr)
    ok = batch.summary[batch.summary["status"] == "ok"]
    print(f"{len(ok)} measured ({int(ok['levels_unsure'].astype(bool).sum())} with levels unsure), "
          f"{batch.n_failed} failed; {batch.summary_path}, {batch.vertebrae_path}")
    return 1 if batch.n_failed or batch.summary.empty else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from cervkit.export.bundle import export_all, export_stem
    from cervkit.io.images import read_image, read_mask
    from cervkit.io.nifti import is_nifti_path, read_nifti_spacing
    from cervkit.io.privacy import is_dicom_path

    labels = read_mask(args.mask)
    image = read_image(args.image) if args.image else None
    spacing = tuple(args.spacing_mm) if args.spacing_mm else None
    if spacing is None and image is None and is_nifti_path(Path(args.mask)):
        spacing = read_nifti_spacing(args.mask)
    stem = args.stem or (export_stem(manifest_id=args.manifest_id) if args.manifest_id else None)
    written = export_all(labels, image, Path(args.out), stem, spacing_mm=spacing,
                         source_dicom=args.image if args.image and is_dicom_path(args.image) else None,
                         level_names=dict(enumerate(args.levels, start=1)) if args.levels else None,
                         formats=args.formats, keep_identifiers=args.keep_identifiers, overwrite=args.overwrite)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return 0


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
    p.add_argument("--manifest", required=True, action="append",
                   help="manifest CSV; repeat it for several sources (split by patient within each, each "
                        "source's `levels` respected: a body outside them is unannotated, not background)")
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--model", choices=["yolo-unet", "yolo-deeplab", "unet3plus", "deeplabv3plus", "yolo-seg"],
                   help="default yolo-unet; with --resume the resumed run's model")
    p.add_argument("--quick", action="store_true", help="quick mode (also CERVKIT_QUICK=1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--imgsz", type=int, help="detector image size")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 on CUDA too (default: mixed precision on CUDA, float32 on CPU)")
    p.add_argument("--overwrite", action="store_true", help="train into a non-empty run folder")
    p.add_argument("--detector-classes", default="auto", choices=["auto", "levels", "single"],
                   help="cascade detector: one class per level (auto when every mask has the same levels) "
                        "or the paper's single 'vertebra' class")
    p.add_argument("--resume", metavar="RUN",
                   help="fine-tune: a new run (--out) starting from RUN's weights, classes and sizes, with a smaller "
                        "learning rate and epoch budget; RUN is a run folder or a shipped model (mri, xray) and "
                        "is not changed")
    p.add_argument("--max-minutes", metavar="MIN|STAGE=MIN,...", type=_max_minutes, default="auto",
                   help="wall-clock cap per training stage, in minutes: stop after the epoch in which it passes "
                        "(best weights kept). One value for every stage (e.g. 30; 'none' for no cap), or per stage, "
                        "e.g. detector=20,segmenter=none (stages: detector, segmenter; 'model' for the one-stage "
                        "baselines); a stage not named keeps the default 'auto': on a CPU the stage's CPU cap "
                        "(detector 15, segmenter 12, baselines 15; 8 for a fine-tune's detector or baseline), on "
                        "CUDA no cap, so the paper's epochs and patience run in full. Each stage prints its limits "
                        "at its start; its config.json and run.json record the cap in force and the stop reason "
                        "(early_stop, epochs_done or time_cap)")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("predict", help="segment images (files or folders) with a trained run or a shipped model")
    p.add_argument("--model", required=True, help="a run folder, or a shipped model: mri, xray (`zoo list`)")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--overwrite", action="store_true", help="start afresh, replacing existing outputs")
    p.add_argument("--resume", action="store_true",
                   help="continue the batch in --out: skip inputs already done, redo failed ones")
    p.add_argument("--names", choices=["auto", "stem", "hash"], default="auto",
                   help="output file names: input stem, hash of the input path, or auto (hash for DICOM inputs)")
    p.add_argument("--modality", choices=["XR", "MRI"],
                   help="for inputs whose header does not say (default: the run's training modality, else XR)")
    p.add_argument("--keep-identifiers", action="store_true",
                   help="write raw DICOM patient IDs instead of pseudonyms (p-<hash>)")
    p.add_argument("--salt", help="secret mixed into the pseudonyms (default: $CERVKIT_PSEUDONYM_SALT)")
    p.add_argument("--levels", help="keep only the bodies named in this range, e.g. C2-C7 or L1-L5 (names anchored on C2 "
                                    "or on L5 above the sacrum; default: keep every body)")
    p.add_argument("inputs", nargs="+", help="DICOM, PNG, JPG or TIFF files, or folders")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a trained run or a shipped model on a manifest")
    p.add_argument("--model", required=True, help="a run folder, or a shipped model: mri, xray (`zoo list`)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test", help="split to evaluate (every row when the manifest has none)")
    p.add_argument("--out", required=True)
    p.add_argument("--device")
    p.add_argument("--dataset", help="data set name recorded for `compare` (default: the manifest's folder name)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("zoo", help="the shipped models: list, check their sha256, rebuild one from its recipe")
    zoo = p.add_subparsers(dest="zoo_command", required=True)
    q = zoo.add_parser("list", help="shipped models with their cards' headline numbers")
    q.add_argument("name", nargs="?")
    q.set_defaults(handler=_cmd_zoo)
    q = zoo.add_parser("check", help="verify every shipped file against the sha256 on its card")
    q.add_argument("name", nargs="?")
    q.set_defaults(handler=_cmd_zoo)
    q = zoo.add_parser("score", help="score a shipped model again on its card's held-out test images")
    q.add_argument("name", choices=["mri", "xray"])
    q.add_argument("--write", action="store_true", help="record the numbers on the card (weights unchanged)")
    q.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    q.set_defaults(handler=_cmd_zoo)
    q = zoo.add_parser("build", help="rebuild a shipped model from scratch with its recipe (writes cervkit/zoo/)")
    q.add_argument("name", choices=["mri", "xray"])
    q.add_argument("--device", help="cpu or cuda (default: CUDA when visible)")
    q.set_defaults(handler=_cmd_zoo)

    p = sub.add_parser("compare", help="Table 2, paired Wilcoxon tests, box plots and Figure 5 from evaluations")
    p.add_argument("--out", required=True, help="folder for table2.csv, paired.csv and the figures")
    p.add_argument("--reference", default="yolo-unet", help="model the others are tested against")
    p.add_argument("--device", help="for Figure 5's predictions (cpu or cuda)")
    p.add_argument("--no-figures", action="store_true", help="tables only (Figure 5 needs the runs)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("evaluations", nargs="+", metavar="MODEL[@DATASET]=EVALDIR",
                   help="evaluation folders written by `evaluate`; data sets are never pooled")
    p.set_defaults(handler=_cmd_compare)

    p = sub.add_parser("crossval", help="k-fold cross-validation by patient, or leave one source out (--by source)")
    p.add_argument("--manifest", required=True, action="append",
                   help="the data; give it once per source with --by source")
    p.add_argument("--by", choices=["patient", "source"], default="patient",
                   help="patient: k folds of patients; source: train on all sources but one, test on it, "
                        "fine-tune on --finetune-images of it and test again")
    p.add_argument("--finetune-images", type=int, default=5, help="with --by source (0: no fine-tune)")
    p.add_argument("--out", required=True, help="folder for the fold runs, folds.csv and summary.csv")
    p.add_argument("--model", default="yolo-unet",
                   choices=["yolo-unet", "yolo-deeplab", "unet3plus", "deeplabv3plus", "yolo-seg"])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="quick mode (also CERVKIT_QUICK=1)")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--device")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_crossval)

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

    p = sub.add_parser("export", help="label PNG, overlay, NIfTI, DICOM SEG and measurements of one label map")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mask", required=True, help="label map (PNG, TIFF or NIfTI): 1..K top to bottom")
    p.add_argument("--image", help="the image the mask belongs to; a DICOM image is also the SEG's source")
    p.add_argument("--stem", help="file-name stem (default: a pseudonym of the image)")
    p.add_argument("--manifest-id", help="use this manifest ID as the stem")
    p.add_argument("--levels", nargs="+", help="level names of labels 1..K, e.g. C2 C3 C4 C5 C6 C7")
    p.add_argument("--formats", nargs="+", choices=["label_png", "overlay_png", "nifti", "dicom_seg", "measurements"],
                   help="default: every format the inputs allow")
    p.add_argument("--spacing-mm", nargs=2, type=float, metavar=("ROW", "COL"),
                   help="pixel spacing (default: the image's, else the NIfTI mask's)")
    p.add_argument("--keep-identifiers", action="store_true", help="keep patient name/ID in the DICOM SEG")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(handler=_cmd_export)
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
