"""Issue 6's level naming, measured on X-ray-style phantoms with known levels (C7 occluded or not).

Trains a YOLO-UNet cascade with the per-level detector (classes C2…C7) on X-ray phantoms, about
30 % of them with the shoulders over C7 (unless ``--run`` points at an existing run), then
predicts held-out phantoms (half with ``occlude=True``) and names the predicted bodies three ways:

* ``detector``: the per-level detector's class of each kept box, as it is;
* ``detector+order``: :func:`cervkit.measurements.levels.assign_levels` with those classes (a majority vote
  fixed against the order and spacing of the bodies);
* ``anatomy``: :func:`cervkit.measurements.levels.assign_levels` from order and anatomy alone (dens, tallest
  body, spacing gaps).

Per level C2…C7, a name is right when the predicted body carrying it overlaps the true body of
that level with IoU >= 0.5. Per image, when the predicted bodies do not match the true ones one
to one (a level not detected, an extra body), the naming is *flagged correctly* when it says so
(``unsure``, or for ``detector`` a missing class) and every body that was found keeps its true
name (nothing shifted); a complete image flagged anyway is a false alarm. ``gt_minus_c7`` repeats
the anatomy naming on the true label maps with C7 erased, and ``pred_minus_bottom/*`` the three
namings on the prediction with its bottom body dropped (a C7 that was never detected).

    OMP_NUM_THREADS=1 python benchmarks/bench_levels.py --out outputs/runs/phantom_levels --minutes 5
    # continue a detector that had too few epochs (5 min on a shared CPU: 18 epochs, mAP50 0.03)
    OMP_NUM_THREADS=1 python benchmarks/bench_levels.py --overwrite --detector-weights W.pt --detector-minutes 10
    python benchmarks/bench_levels.py --run outputs/runs/phantom_levels      # evaluate an existing run

``--zoo xray mri`` measures the **shipped** models instead (single-class detector, names from
:func:`cervkit.inference.level_names.name_bodies` anchored on C2 or L5 with the model's anchor classifier, as
:func:`cervkit.segment` does): on each
model card's phantom test images (:func:`cervkit.zoo.catalog.test_manifest`; true levels from their geometry
JSON) and on ``--n-test`` fresh held-out phantoms (X-ray: every other one with C7 behind the shoulders). Per
annotated body: found (a predicted body at IoU >= 0.5) and named right. ``accuracy_all`` counts a missed body
and a found body with a wrong (or no) name as errors; ``accuracy_found`` is over the found bodies only.
Writes ``<out>/summary.csv`` (one row per model, set and group) and ``<out>/bodies.csv``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_levels.py --zoo xray mri --out outputs/bench_levels_zoo
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

LEVELS = ("C2", "C3", "C4", "C5", "C6", "C7")
METHODS = ("detector", "detector+order", "anatomy")


def detector_names(classes: np.ndarray, names: Mapping[int, str]) -> tuple[dict[int, str], bool]:
    """Name label k+1 by the detector class of box k; unsure when a level is missing or doubled.

    Parameters
    ----------
    classes : numpy.ndarray
        (K,) class ids of the kept boxes (row k ↔ label k + 1).
    names : mapping of int to str
        Class id → level name.

    Returns
    -------
    (levels, unsure)
        Label → name, and whether the set of names differs from C2…C7.
    """
    levels = {k + 1: str(names[int(c)]) for k, c in enumerate(classes)}
    values = list(levels.values())
    return levels, len(values) != len(set(values)) or set(values) != set(LEVELS)


def score(levels: Mapping[int, str], unsure: bool, pred: np.ndarray, gt: np.ndarray,
          gt_level: Mapping[int, str]) -> dict[str, Any]:
    """Per-level correctness and the missing/extra flag of one naming.

    Parameters
    ----------
    levels : mapping of int to str
        Predicted label → level name.
    unsure : bool
        Whether the naming says something is off.
    pred, gt : numpy.ndarray
        Predicted and true label maps.
    gt_level : mapping of int to str
        True label → level name.

    Returns
    -------
    dict
        ``correct`` (level → bool, for the levels present in ``gt``), ``complete`` (found bodies
        match the true ones one to one), ``shifted`` (a found body carries a wrong name),
        ``flagged`` (``unsure``), ``missed`` (the true levels no predicted body matches).
    """
    from cervkit.evaluation.matching import match_instances

    match = match_instances(pred, gt, 0.5)
    true_of_pred = {m.pred_label: gt_level[m.gt_label] for m in match.matches}
    correct = {}
    for g, name in gt_level.items():
        if not (gt == g).any():
            continue
        carriers = [p for p, n in levels.items() if n == name]
        correct[name] = any(true_of_pred.get(p) == name for p in carriers) and len(carriers) == 1
    shifted = any(levels.get(p) not in (None, name) for p, name in true_of_pred.items())
    complete = not match.missed and not match.extra
    missed = sorted(gt_level[g] for g in match.missed)
    return {"correct": correct, "complete": complete, "shifted": shifted, "flagged": bool(unsure),
            "missed": missed}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-level accuracy and flag rates over a list of :func:`score` results.

    Parameters
    ----------
    records : list of dict
        :func:`score` outputs.

    Returns
    -------
    dict
        ``images``, per-level accuracy, all-levels-right rate, incomplete images and how many were
        flagged correctly (flagged and nothing shifted), false alarms on complete images, and
        the same for the images whose C7 was not detected.
    """
    out: dict[str, Any] = {"images": len(records)}
    for name in LEVELS:
        vals = [r["correct"][name] for r in records if name in r["correct"]]
        out[name] = round(float(np.mean(vals)), 3) if vals else None
    out["all_levels_right"] = round(float(np.mean([all(r["correct"].values()) for r in records])), 3)
    bad = [r for r in records if not r["complete"]]
    good = [r for r in records if r["complete"]]
    out["incomplete"] = len(bad)
    out["incomplete_flagged_not_shifted"] = sum(r["flagged"] and not r["shifted"] for r in bad)
    out["incomplete_shifted"] = sum(r["shifted"] for r in bad)
    out["complete_false_alarms"] = sum(r["flagged"] for r in good)
    no_c7 = [r for r in records if "C7" in r["missed"]]
    out["c7_not_detected"] = len(no_c7)
    out["c7_not_detected_flagged_not_shifted"] = sum(r["flagged"] and not r["shifted"] for r in no_c7)
    out["c7_not_detected_shifted"] = sum(r["shifted"] for r in no_c7)
    return out


def train(args: argparse.Namespace) -> Path:
    """Write the X-ray phantom training set and train the per-level cascade into ``args.out``."""
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.training.train import train_run

    data = Path(args.data)
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        write_phantom_dataset(data, args.n_train, style="xray", seed=args.seed, size=(args.size, args.size))
    det: dict[str, Any] = {"max_minutes": args.detector_minutes or args.minutes}
    if args.detector_weights:
        det["weights"] = args.detector_weights
    if args.no_mosaic:  # a mosaic tile puts bodies out of their column: harder to name by level
        det["augment"] = {"mosaic": 0.0, "close_mosaic": 0}
    return train_run(manifest, args.out, quick=False, seed=args.seed, overwrite=args.overwrite,
                     detector_classes="levels", detector_options=det,
                     segmenter_options={"max_minutes": args.minutes})


def evaluate(run: Path, n_test: int, size: int, seed0: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Predict held-out phantoms (even index: C7 occluded) and score every naming method."""
    from cervkit.data.synth.phantom import make_phantom
    from cervkit.inference.registry import load_predictor
    from cervkit.measurements.levels import assign_levels

    predictor = load_predictor(run, device="cpu")
    names = predictor.detector.names
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rows = []
    for i in range(n_test):
        ph = make_phantom("xray", seed=seed0 + i, size=(size, size), occlude=i % 2 == 0)
        group = "occluded_c7" if "C7" in ph.geometry["occluded_levels"] else "normal"
        gt_level = {int(v["label"]): lv for lv, v in ph.geometry["vertebrae"].items()}
        pred = predictor.predict(ph.as_image())
        det_levels, det_unsure = detector_names(pred.classes, names)
        voted = assign_levels(pred.labels, classes=det_levels, spacing_mm=ph.spacing_mm)
        anat = assign_levels(pred.labels, spacing_mm=ph.spacing_mm)
        gt_cut = np.where(ph.labels == gt_level_inv(gt_level)["C7"], 0, ph.labels).astype(np.uint8)
        cut = assign_levels(gt_cut, spacing_mm=ph.spacing_mm)
        # the prediction with its bottom body dropped: a C7 the cascade did not find
        bottom = int(pred.labels.max())
        p_cut = np.where(pred.labels == bottom, 0, pred.labels).astype(np.uint8)
        d_cut = {k: v for k, v in det_levels.items() if k != bottom}
        d_cut_unsure = detector_names(np.asarray(pred.classes)[:bottom - 1], names)[1] if bottom else True
        v_cut = assign_levels(p_cut, classes=d_cut, spacing_mm=ph.spacing_mm)
        a_cut = assign_levels(p_cut, spacing_mm=ph.spacing_mm)
        scored = {"detector": score(det_levels, det_unsure, pred.labels, ph.labels, gt_level),
                  "detector+order": score(voted.levels, voted.unsure, pred.labels, ph.labels, gt_level),
                  "anatomy": score(anat.levels, anat.unsure, pred.labels, ph.labels, gt_level),
                  "gt_minus_c7": score(cut.levels, cut.unsure, gt_cut, ph.labels, gt_level),
                  "pred_minus_bottom/detector": score(d_cut, d_cut_unsure, p_cut, ph.labels, gt_level),
                  "pred_minus_bottom/detector+order": score(v_cut.levels, v_cut.unsure, p_cut, ph.labels,
                                                            gt_level),
                  "pred_minus_bottom/anatomy": score(a_cut.levels, a_cut.unsure, p_cut, ph.labels, gt_level)}
        for method, rec in scored.items():
            groups.setdefault(group, {}).setdefault(method, []).append(rec)
        rows.append({"seed": seed0 + i, "group": group, "n_pred": int(pred.n_vertebrae),
                     "detector": [det_levels[k] for k in sorted(det_levels)],
                     "anatomy": [anat.levels.get(k) for k in sorted(det_levels)],
                     "anatomy_reasons": anat.reasons,
                     **{f"{m}_all_right": all(r["correct"].values()) for m, r in scored.items()}})
    report = {g: {m: summarise(recs) for m, recs in by_method.items()} for g, by_method in sorted(groups.items())}
    return report, rows


def name_bodies_scored(pred: np.ndarray, gt: np.ndarray, gt_level: Mapping[int, str],
                       spacing_mm: tuple[float, float] | None,
                       anchor_scores: Mapping[int, Mapping[str, float]] | None = None
                       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Name the predicted bodies from a landmark and score each annotated body: found, and named right.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        Predicted and true label maps.
    gt_level : mapping of int to str
        True label → level name.
    spacing_mm : (float, float), optional
        Pixel spacing passed to :func:`cervkit.inference.level_names.name_bodies`.
    anchor_scores : mapping, optional
        The prediction's anchor classifier scores (``CascadePrediction.anchor_scores``), as ``cervkit.segment``
        passes them.

    Returns
    -------
    (list of dict, dict)
        Per annotated body ``level``, ``found``, ``name`` (the found body's name, None when unnamed or
        missed), ``right``; and for the image ``anchor``, ``unsure``, ``extra_named`` (unmatched predicted
        bodies carrying one of the annotated level names).
    """
    from cervkit.evaluation.matching import match_instances
    from cervkit.inference.level_names import name_bodies

    named = name_bodies(pred, spacing_mm=spacing_mm, anchor_scores=dict(anchor_scores) if anchor_scores else None)
    pred_of_gt = {m.gt_label: m.pred_label for m in match_instances(pred, gt, 0.5).matches}
    bodies = []
    for g, level in sorted(gt_level.items()):
        if not (gt == g).any():
            continue
        p = pred_of_gt.get(g)
        name = named.names.get(p) if p is not None else None
        bodies.append({"level": level, "found": p is not None, "name": name, "right": name == level})
    matched = set(pred_of_gt.values())
    extra = sum(n in gt_level.values() for p, n in named.names.items() if p not in matched)
    return bodies, {"anchor": named.anchor, "unsure": named.unsure, "extra_named": int(extra)}


def _zoo_cases(name: str, n_test: int, seed0: int) -> Iterator[tuple[str, str, str, np.ndarray, np.ndarray,
                                                                     dict[int, str], Any]]:
    """(set, group, image id, image, true labels, label → level, spacing) of a shipped model's phantoms."""
    from cervkit.data.synth.phantom import make_phantom
    from cervkit.io.images import read_image, read_mask
    from cervkit.zoo.catalog import RECIPES, test_manifest

    phantom_sources = [s for s in RECIPES[name].sources if s.phantoms is not None]
    for source in phantom_sources:
        for row in test_manifest(name, sources=[source.name]).rows():
            geometry = json.loads((row.image.parent.parent / str(row.extra["geometry"])).read_text())
            group = "occluded_c7" if "C7" in geometry["occluded_levels"] else "normal"
            gt_level = {int(v["label"]): lv for lv, v in geometry["vertebrae"].items()}
            yield ("card_test", group, row.image.name, read_image(row.image).array, read_mask(row.mask), gt_level,
                   row.pixel_spacing_mm)
        style, size = source.phantoms["style"], tuple(source.phantoms["size"])
        for i in range(n_test):
            extra = {"occlude": i % 2 == 0} if style == "xray" else {}
            ph = make_phantom(style, seed=seed0 + i, size=size, **extra)
            group = "occluded_c7" if "C7" in ph.geometry["occluded_levels"] else "normal"
            gt_level = {int(v["label"]): lv for lv, v in ph.geometry["vertebrae"].items()}
            yield "fresh", group, f"seed{seed0 + i}", ph.image, ph.labels, gt_level, ph.spacing_mm


def evaluate_zoo(names: list[str], n_test: int, seed0: int) -> tuple[Any, Any]:
    """Level-name accuracy of the shipped models on their phantom test images and on fresh phantoms.

    Parameters
    ----------
    names : list of str
        Shipped models (``xray``, ``mri``).
    n_test : int
        Fresh held-out phantoms per model (seeds from ``seed0``).
    seed0 : int
        First fresh phantom seed.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        Summary per (model, set, group), incl. ``all``: bodies, found, named_right, wrong_name, missed,
        accuracy_all (right / bodies), accuracy_found (right / found), images, images_all_right, unsure,
        extra_named; and one row per annotated body.
    """
    import pandas as pd

    from cervkit.inference.registry import load_predictor

    rows = []
    for name in names:
        predictor = load_predictor(name, device="cpu")
        for kind, group, image_id, image, gt, gt_level, spacing in _zoo_cases(name, n_test, seed0):
            result = predictor.predict(image)
            bodies, info = name_bodies_scored(result.labels, gt, gt_level, spacing,
                                              getattr(result, "anchor_scores", None))
            rows += [{"model": name, "set": kind, "group": group, "image": image_id, **b, **info} for b in bodies]
    bodies = pd.DataFrame(rows)
    parts = []
    for keys, frame in [*bodies.groupby(["model", "set", "group"]),
                        *((k + ("all",), f) for k, f in bodies.groupby(["model", "set"]))]:
        per_image = frame.groupby("image")
        right, found = int(frame["right"].sum()), int(frame["found"].sum())
        parts.append({"model": keys[0], "set": keys[1], "group": keys[2], "images": per_image.ngroups,
                      "bodies": len(frame), "found": found, "named_right": right, "wrong_name": found - right,
                      "missed": len(frame) - found, "accuracy_all": right / len(frame),
                      "accuracy_found": right / found if found else float("nan"),
                      "images_all_right": int(per_image["right"].all().sum()),
                      "unsure": int(per_image["unsure"].first().sum()),
                      "extra_named": int(per_image["extra_named"].first().sum())})
    return pd.DataFrame(parts), bodies


def gt_level_inv(gt_level: Mapping[int, str]) -> dict[str, int]:
    """Level name → true label."""
    return {name: label for label, name in gt_level.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an existing run folder (skip training)")
    parser.add_argument("--zoo", nargs="*", help="measure these shipped models instead (xray, mri); see above")
    parser.add_argument("--out", default="outputs/runs/phantom_levels", help="run folder to train into")
    parser.add_argument("--data", default="outputs/phantom_levels_data", help="training phantoms folder")
    parser.add_argument("--n-train", type=int, default=90)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--minutes", type=float, default=5.0, help="max minutes per stage")
    parser.add_argument("--detector-minutes", type=float, help="max detector minutes (default --minutes)")
    parser.add_argument("--detector-weights", help="a per-level detector .pt to continue from")
    parser.add_argument("--no-mosaic", action="store_true", help="train the detector without mosaic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-seed", type=int, default=900_000, help="first held-out phantom seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.zoo:
        import pandas as pd

        summary, bodies = evaluate_zoo(args.zoo, args.n_test, args.test_seed)
        out = Path(args.out if args.out != parser.get_default("out") else "outputs/bench_levels_zoo")
        out.mkdir(parents=True, exist_ok=True)
        summary.to_csv(out / "summary.csv", index=False, float_format="%.4f")
        bodies.to_csv(out / "bodies.csv", index=False)
        with pd.option_context("display.width", 200):
            print(summary.round(4).to_string(index=False))
        print(f"{time.perf_counter() - start:.0f} s, threads {args.threads}; tables in {out}")
        return 0
    run = Path(args.run) if args.run else train(args)
    train_minutes = (time.perf_counter() - start) / 60
    report, rows = evaluate(run, args.n_test, args.size, args.test_seed)
    result = {"run": str(run), "threads": args.threads, "train_minutes": round(train_minutes, 2),
              "n_test": args.n_test, "size": args.size, "by_group": report}
    print(json.dumps(result, indent=1))
    (run / "bench_levels.json").write_text(json.dumps({**result, "images": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
