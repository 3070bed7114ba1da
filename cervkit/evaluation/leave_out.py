"""Leave one source out: train on every source but one, score on the one left out, then fine-tune on a few of it.

This is how a model meets a scanner it has never seen. For each held-out source ``S`` (``crossval --by source``,
``benchmarks/bench_sources.py``):

1. **train** a YOLO-UNet run on the other sources (:func:`cervkit.training.train.train_run`, several manifests: one
   ``vertebra`` class learnt from each source's annotated span). Their patients are split 80:20 into train and val
   within each source; nothing of ``S`` is seen;
2. **score** it on every image of ``S`` (bodies outside ``S``'s annotated levels are not scored), per image, per
   vertebra and per level;
3. **fine-tune** it on ``n_finetune`` annotated images of ``S`` (``train --resume``; the first patients, by ID), and
   score the fine-tuned run on the images of ``S``'s *other* patients, next to the step-2 model on the same images.

``OUT/<S>/`` holds the runs, their evaluations and ``result.json``; :func:`leave_one_source_out` returns one row
per held-out source and stage (``unseen``: step 2 on the fine-tune test images, ``unseen_all``: step 2 on all of
``S``, ``finetuned``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from cervkit.core.errors import CervkitInputError

__all__ = ["area_ratio", "finetune_subset", "leave_one_source_out", "score_source"]


def area_ratio(vertebrae: pd.DataFrame) -> float | None:
    """Median predicted / annotated area of the matched bodies: above 1 the masks are larger than the annotations.

    A source annotated by another convention shows here before anywhere else: on the water-fat Dixon set, whose
    outlines lie about a pixel inside the bone's edge, a model trained on T2 (outlines through the dark cortical
    rim) draws 1.14× the annotated area, 1.05× after a 5-image fine-tune, 0.99× on T2 itself.

    Parameters
    ----------
    vertebrae : pandas.DataFrame
        Per-vertebra rows (:func:`cervkit.evaluation.matching.per_vertebra_metrics`): ``matched``, ``gt_area_px``,
        ``pred_area_px``.

    Returns
    -------
    float or None
        None when no body was matched.
    """
    matched = vertebrae[vertebrae["matched"].astype(bool) & (vertebrae["gt_area_px"] > 0)]
    if matched.empty:
        return None
    return round(float((matched["pred_area_px"] / matched["gt_area_px"]).median()), 4)


def score_source(run: str | PathLike[str], manifest: Any, out: str | PathLike[str], *,
                 device: str | None = "cpu") -> dict[str, Any]:
    """Score a run on every image of a manifest: per image, per vertebra, per level, bodies found.

    Parameters
    ----------
    run : str or PathLike
        A run folder or a shipped model's name.
    manifest : Manifest
        Every row is scored (its ``split`` is ignored).
    out : str or PathLike
        Where the evaluation tables go.
    device : str, optional

    Returns
    -------
    dict
        ``images``, ``bodies``, ``dice_image``, ``dice_vertebra`` (a missed body counts 0), ``found`` (IoU ≥ 0.5),
        ``per_level`` (level → mean Dice), ``seconds_median``, ``named_right`` (bodies found and named right,
        :mod:`cervkit.evaluation.naming`; None without a ``levels`` column), ``area_ratio`` (:func:`area_ratio`).
    """
    import numpy as np

    from cervkit.evaluation.evaluate import evaluate_predictor, write_evaluation
    from cervkit.inference.registry import load_predictor

    table = manifest.with_df(manifest.df.assign(split="test"))
    predictor = load_predictor(run, device=device)
    made: dict[str, Any] = {}
    ev = evaluate_predictor(predictor, table, split="test", progress=False, n_boot=200, unannotated=True, keep=made)
    write_evaluation(ev, out, overwrite=True)
    gt = ev.vertebrae[~ev.vertebrae["false_positive"]].copy()
    if "levels" in table.df.columns:  # label k of an image is the k-th of its row's annotated levels
        names = {str(table.image_path(i)): str(table.df["levels"].iloc[i]).split(",") for i in range(len(table))}
        gt["level"] = [names.get(str(img), [])[int(k) - 1] if 0 < int(k) <= len(names.get(str(img), [])) else None
                       for img, k in zip(gt["image"], gt["gt_label"])]
    per_level = {str(k): round(float(v), 4) for k, v in gt.groupby("level")["dice"].apply(
        lambda d: d.fillna(0).mean()).items()}
    named_right = None
    if "levels" in table.df.columns:
        from cervkit.evaluation.naming import body_names

        named_right = round(float(body_names(predictor, table, predictions=made)["right"].mean()), 4)
    return {"images": int(len(ev.images)), "bodies": int(len(gt)), "named_right": named_right,
            "dice_image": round(float(ev.images["dice"].mean()), 4),
            "dice_vertebra": round(float(gt["dice"].fillna(0).mean()), 4),
            "found": round(float(gt["matched"].mean()), 4), "area_ratio": area_ratio(gt), "per_level": per_level,
            "seconds_median": round(float(np.median(ev.images["seconds"])), 4)}


def finetune_subset(manifest: Any, n_images: int) -> tuple[Any, Any]:
    """The fine-tuning images of a source and the images of its other patients.

    One image per patient (its middle slice, the body most in plane) from the first ``n_images`` patients by ID:
    five annotated images of five people, as a user would pick them. The last of them is the validation image (its
    own patient); every image of the patients not used is the test set, so no patient is in both.

    Parameters
    ----------
    manifest : Manifest
    n_images : int
        At least 2.

    Returns
    -------
    tune : Manifest
        ``n_images`` rows with ``split`` train (all but one) and val (one).
    rest : Manifest
        The other patients' rows.

    Raises
    ------
    CervkitInputError
        Fewer than 2 images asked, or the source has no patient left to test on.
    """
    if n_images < 2:
        raise CervkitInputError(f"fine-tuning needs at least 2 images (train and val), got {n_images}")
    df = manifest.df.sort_values(["patient_id", "image"], kind="stable").reset_index(drop=True)
    patients = sorted(df["patient_id"].astype(str).unique())
    used = patients[:n_images]
    rest = df[~df["patient_id"].astype(str).isin(used)].reset_index(drop=True)
    if len(used) < n_images or rest.empty:
        raise CervkitInputError(f"{n_images} fine-tuning patients leave none to test on "
                                f"({len(patients)} patients)", manifest.root)
    rows = [df[df["patient_id"].astype(str) == p].iloc[[len(df[df["patient_id"].astype(str) == p]) // 2]]
            for p in used]
    tune = pd.concat(rows, ignore_index=True)
    tune["split"] = ["train"] * (len(tune) - 1) + ["val"]
    return manifest.with_df(tune), manifest.with_df(rest)


def _save(manifest: Any, path: Path) -> Path:
    from cervkit.data.table import save_manifest

    return save_manifest(manifest, path, overwrite=True)


def _train_val(manifest: Any, seed: int) -> Any:
    """Every patient of a training source in train or val (80:20): the held-out source is the test."""
    from cervkit.data.split import split_by_patient

    return split_by_patient(manifest.with_df(manifest.df.drop(columns=["split"], errors="ignore")), (0.8, 0.2, 0.0),
                            seed=seed)


def leave_one_source_out(sources: Mapping[str, Any], out: str | PathLike[str], *, held_out: Sequence[str] | None = None,
                         extra: Sequence[Any] = (), n_finetune: int = 5, seed: int = 0, device: str | None = None,
                         max_minutes: Mapping[str, Any] | None = None,
                         finetune_minutes: Mapping[str, Any] | None = None,
                         detector_options: Mapping[str, Any] | None = None,
                         finetune_options: Mapping[str, Mapping[str, Any]] | None = None, reuse: bool = False,
                         quick: bool = False, segmenter_options: Mapping[str, Any] | None = None,
                         anchor_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Leave each of ``held_out`` out in turn: train on the rest, score, fine-tune on a few images, score again.

    Parameters
    ----------
    sources : mapping
        Source name → Manifest (real sources; each one may be held out).
    out : str or PathLike
        ``OUT/<held-out source>/`` gets the runs, evaluations, manifests and ``result.json``.
    held_out : sequence of str, optional
        Which sources to hold out (default: each of ``sources``).
    extra : sequence of Manifest
        Always in training, never held out (e.g. phantoms).
    n_finetune : int
        Annotated images of the held-out source to fine-tune on (0: skip fine-tuning).
    seed : int
    device : str, optional
    max_minutes, finetune_minutes : mapping, optional
        Stage → cap in minutes for training and fine-tuning (``detector``, ``segmenter``).
    detector_options, segmenter_options, anchor_options : mapping, optional
        Extra options of each stage for training (e.g. ``imgsz``, ``epochs``, ``patience``; a shipped recipe's).
    finetune_options : mapping, optional
        ``{"detector": {...}, "segmenter": {...}}`` options of the fine-tune (e.g. ``epochs``, ``patience``).
    reuse : bool
        Keep a finished ``OUT/<source>/run`` instead of training it again (the fine-tune is always redone).
    quick : bool
        The smoke-test budget.

    Returns
    -------
    pandas.DataFrame
        One row per held-out source and stage: ``held_out``, ``stage``, the :func:`score_source` numbers (without
        ``per_level``, which is in ``result.json``), ``train_minutes``.
    """
    from cervkit.training.train import train_run

    root = Path(out)
    names = list(held_out) if held_out is not None else list(sources)
    unknown = [n for n in names if n not in sources]
    if unknown or len(sources) + len(extra) < 2:
        raise CervkitInputError(f"leave-one-source-out needs two sources or more and known names; got {unknown or names}")
    rows = []
    for name in names:
        folder = root / name
        train_csvs = [_save(_train_val(m, seed), folder / "manifests" / f"{other}.csv")
                      for other, m in sources.items() if other != name]
        train_csvs += [_save(_train_val(m, seed), folder / "manifests" / f"extra{i}.csv") for i, m in enumerate(extra)]
        start = time.perf_counter()
        run = folder / "run"
        previous = folder / "result.json"
        if reuse and (run / "run.json").is_file() and json.loads((run / "run.json").read_text())["status"] == "done":
            minutes = {"unseen": json.loads(previous.read_text())["minutes"]["unseen"] if previous.is_file() else None}
        else:
            run = train_run(train_csvs if len(train_csvs) > 1 else train_csvs[0], run, seed=seed,
                            device=device, quick=quick, overwrite=True, validate=False,
                            detector_classes="single",
                            detector_options=dict(detector_options or {}),
                            segmenter_options=dict(segmenter_options or {}),
                            anchor_options=dict(anchor_options) if anchor_options else None,
                            max_minutes=dict(max_minutes) if max_minutes else "auto")
            minutes = {"unseen": (time.perf_counter() - start) / 60}
        result: dict[str, Any] = {"held_out": name, "trained_on": [p.stem for p in train_csvs],
                                  "unseen_all": score_source(run, sources[name], folder / "eval_unseen_all",
                                                             device="cpu")}
        if n_finetune:
            tune, rest = finetune_subset(sources[name], n_finetune)
            tune_csv = _save(tune, folder / "manifests" / "finetune.csv")
            result["unseen"] = score_source(run, rest, folder / "eval_unseen", device="cpu")
            start = time.perf_counter()
            options = dict(finetune_options or {})
            tuned = train_run(tune_csv, folder / "finetuned", resume=run, seed=seed, device=device, quick=quick,
                              overwrite=True, validate=False, detector_options=dict(options.get("detector", {})),
                              segmenter_options=dict(options.get("segmenter", {})),
                              max_minutes=dict(finetune_minutes) if finetune_minutes else "auto")
            minutes["finetuned"] = (time.perf_counter() - start) / 60
            result["finetuned"] = score_source(tuned, rest, folder / "eval_finetuned", device="cpu")
            result["finetune_images"] = [str(p) for p in tune.df["image"]]
        result["minutes"] = {k: None if v is None else round(v, 2) for k, v in minutes.items()}
        (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        for stage in ("unseen_all", "unseen", "finetuned"):
            if stage in result:
                numbers = {k: v for k, v in result[stage].items() if k != "per_level"}
                rows.append({"held_out": name, "stage": stage, **numbers,
                             "train_minutes": result["minutes"].get("finetuned" if stage == "finetuned" else "unseen")})
    return pd.DataFrame(rows)
