"""``python -m cervkit train``: split, train every stage of a model, validate, write the run folder.

For the cascades (``yolo-unet``, the paper's model, and ``yolo-deeplab``) this trains the
YOLOv11 detector (:func:`cervkit.training.detector.train_detector`) and the crop segmenter
(:func:`cervkit.training.segmenter.train_segmenter`) on the same patient-level split, then runs
the whole cascade on the validation split and records its metrics. The paper's one-stage
baselines (``yolo-seg``, whole-image ``unet3plus`` and ``deeplabv3plus``) train one stage into
``RUN/model/`` and are validated the same way. The run folder
(see :mod:`cervkit.runs.folder`) is what ``predict``, ``evaluate`` and the editor load.

``resume=RUN`` fine-tunes: a new run folder whose stages start from RUN's weights, with RUN's model
kind, classes, sizes and architecture and a smaller budget (:mod:`cervkit.training.finetune`); RUN is only read.

No hidden limits: ``max_minutes`` (``--max-minutes``) is each stage's wall-clock cap, one value for every stage
or per stage; by default (``"auto"``) each trainer's CPU cap on a CPU and none on CUDA
(:mod:`cervkit.training.limits`). Each stage prints its limits at its start, and ``run.json`` records every
stage's ``limits`` (``max_minutes`` in force, ``stop_reason``, ``epochs_run`` …) from its ``config.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.core.errors import CervkitInputError
from cervkit.runs.folder import (
    CASCADE_MODELS,
    MODELS,
    read_run_info,
    start_run,
    write_run_info,
)
from cervkit.training.limits import AUTO, MaxMinutes, stage_max_minutes

SEGMENTER_OF = {"yolo-unet": "unet3plus", "yolo-deeplab": "deeplabv3plus"}


def _train_baseline(model: str, split: Any, run: Path, kwargs: dict[str, Any], *, seed: int, quick: bool,
                    device: str | None, overwrite: bool) -> Path:
    """Train a one-stage baseline into ``run/model/``: ``yolo-seg`` or a whole-image ``unet3plus`` /
    ``deeplabv3plus``, with the trainer's keyword arguments ``kwargs`` (:func:`_baseline_kwargs`); its config.json."""
    if model == "yolo-seg":
        from cervkit.training.yolo_seg import train_yolo_seg

        return train_yolo_seg(split, run, seed=seed, quick=quick, device=device, overwrite=overwrite,
                              **kwargs).config_json
    from cervkit.training.whole_image import train_whole_image

    return train_whole_image(split, run, model=model, seed=seed, quick=quick, device=device, overwrite=overwrite,
                             **kwargs).config_json


def _with_cap(kwargs: dict[str, Any], spec: Any, stage: str, stages: tuple[str, ...]) -> dict[str, Any]:
    """``kwargs`` with the stage's ``max_minutes`` from ``spec`` unless that is ``"auto"`` (then the stage's
    options, the fine-tune plan or the trainer's default decide)."""
    value = stage_max_minutes(spec, stage, stages)
    return dict(kwargs) if value == AUTO else {**kwargs, "max_minutes": value}


def _stage_limits(config_json: Path) -> dict[str, Any]:
    """A stage's ``limits`` (cap in force, stop reason, epochs) from its ``config.json``."""
    return dict(json.loads(Path(config_json).read_text()).get("limits") or {})


def _baseline_kwargs(model: str, imgsz: int | None, detector_options: dict[str, Any] | None,
                     segmenter_options: dict[str, Any] | None) -> dict[str, Any]:
    """A baseline's trainer options from scratch: ``detector_options`` and ``imgsz`` for ``yolo-seg``,
    ``segmenter_options`` and ``size=imgsz`` (the network input size) for the whole-image models."""
    if model == "yolo-seg":
        return dict(detector_options or {}) | ({"imgsz": imgsz} if imgsz is not None else {})
    return dict(segmenter_options or {}) | ({"size": imgsz} if imgsz is not None else {})


def _sources(manifest: Any) -> list[Path]:
    """One manifest path or several (``train --manifest A --manifest B``) as a list of paths."""
    if isinstance(manifest, (str, PathLike)):
        return [Path(manifest)]
    paths = [Path(m) for m in manifest]
    if not paths:
        raise CervkitInputError("no manifest given")
    return paths


def _combined_split(manifests: list[Path], folder: Path, seed: int) -> Any:
    """Several sources as one manifest, split by patient within each source (rows with a split keep it)."""
    from cervkit.data.manifest import load_manifest
    from cervkit.data.sources import combine_sources, split_sources

    return split_sources(combine_sources([load_manifest(m) for m in manifests], folder), seed=seed)


def _preview_split(manifest: Any, seed: int) -> Any:
    """The split :func:`cervkit.data.manifest.ensure_split` will use, computed in memory (nothing written)."""
    from cervkit.data.manifest import load_manifest
    from cervkit.data.split import split_by_patient

    paths = _sources(manifest)
    if len(paths) > 1:
        return _combined_split(paths, paths[0].parent, seed)
    source = load_manifest(paths[0])
    return source if "split" in source.df.columns else split_by_patient(source, seed=seed)


def _fresh_detector_kwargs(split: Any, manifest: str | PathLike[str], detector_classes: str, imgsz: int | None,
                           detector_options: dict[str, Any] | None) -> dict[str, Any]:
    """``train_detector`` keyword arguments of a run trained from scratch (classes chosen from the split)."""
    det_kwargs = dict(detector_options or {})
    if detector_classes not in ("auto", "levels", "single"):
        raise CervkitInputError(f"detector_classes must be auto, levels or single, not {detector_classes!r}")
    if "classes" not in det_kwargs and detector_classes != "single":
        from cervkit.training.yolo_dataset import choose_classes

        classes, names = choose_classes(split)
        if detector_classes == "levels" and classes != "levels":
            raise CervkitInputError("per-level detector classes need every train/val mask to hold the "
                                    "same number of vertebrae", manifest)
        det_kwargs.update(classes=classes, level_names=names)
    if imgsz is not None:
        det_kwargs["imgsz"] = imgsz
    return det_kwargs


def _train_anchor_stage(split: Any, run: Path, source: Any, *, seed: int, quick: bool, device: str | None,
                        overwrite: bool, options: dict[str, Any] | None = None) -> bool:
    """Train the anchor classifier (:mod:`cervkit.training.anchor`) when the data annotates C2 or L5; a
    fine-tune starts from the resumed run's classifier, or keeps it unchanged when its data annotates neither."""
    import shutil

    from cervkit.training.anchor import train_anchor

    base = None if source is None else Path(source.run) / "anchor" / "model.pt"
    base = base if base is not None and base.is_file() else None
    kwargs = {"epochs": 40, **dict(options or {})}
    trained = train_anchor(split, run, seed=seed, quick=quick, device=device, overwrite=overwrite,
                           init_checkpoint=base, **kwargs)
    if trained is None and base is not None:
        (run / "anchor").mkdir(parents=True, exist_ok=True)
        shutil.copy2(base, run / "anchor" / "model.pt")
        print("anchor: kept the resumed run's classifier (the fine-tune data annotates neither C2 nor L5)")
        return True
    return trained is not None


def train_run(manifest: str | PathLike[str] | Sequence[str | PathLike[str]], out: str | PathLike[str], *,
              model: str | None = None,
              quick: bool | None = None, seed: int = 0, imgsz: int | None = None, device: str | None = None,
              overwrite: bool = False, detector_options: dict[str, Any] | None = None,
              segmenter_options: dict[str, Any] | None = None, validate: bool = True,
              detector_classes: str = "auto", resume: str | PathLike[str] | None = None,
              max_minutes: MaxMinutes | Mapping[str, MaxMinutes] = AUTO,
              anchor_options: dict[str, Any] | None = None) -> Path:
    """Train a model end to end into a run folder, from scratch or fine-tuning a finished run.

    Parameters
    ----------
    manifest : str, PathLike or sequence of them
        Manifest CSV; split by patient (6:2:2, ``seed``) when it has no ``split`` column. Several manifests are
        several sources (:mod:`cervkit.data.sources`): merged with a ``source`` column, split by patient within
        each source, reported per source in ``run.json``; the detector then learns one ``vertebra`` class from
        the images cropped to each one's annotated levels, so a body a source left unannotated is never
        background.
    out : str or PathLike
        The run folder (must be new or empty unless ``overwrite``; never ``resume`` or inside it).
    model : str, optional
        ``yolo-unet`` (default), ``yolo-deeplab``, or a baseline: ``yolo-seg``, ``unet3plus``,
        ``deeplabv3plus`` (whole image; see :mod:`cervkit.training.yolo_seg`, :mod:`cervkit.inference.whole_image`).
        With ``resume``: the resumed run's model (a different one is an error).
    quick : bool, optional
        Quick mode (default: :func:`cervkit.core.config.quick_mode`): same code path, tiny budget.
    seed : int
        Split and training seed.
    imgsz : int, optional
        Detector (and YOLO-seg) image size, or the whole-image network input size (default: each trainer's own;
        with ``resume``: the resumed run's, and a different value is an error).
    device : str, optional
        ``cpu`` or ``cuda`` (default: CUDA when available).
    overwrite : bool
        Train into an existing non-empty folder, replacing its stages.
    detector_options, segmenter_options : dict, optional
        Extra keyword arguments for each stage's trainer (``detector_options`` also for ``yolo-seg``,
        ``segmenter_options`` also for the whole-image models); they win over the fine-tuning defaults.
    validate : bool
        Run the trained cascade on the validation split and record the metrics.
    detector_classes : {"auto", "levels", "single"}
        Cascades' detector classes. ``auto`` (default): one class per level when every training
        and validation mask covers the same levels (:func:`cervkit.training.yolo_dataset.choose_classes`),
        so the cascade keeps at most one body per level; else the paper's single ``vertebra``.
        With ``resume``: ``auto`` keeps the resumed detector's classes; ``levels`` / ``single`` may re-head it.
    resume : str or PathLike, optional
        A finished run to fine-tune (see :mod:`cervkit.training.finetune`): every stage starts from its weights,
        with its model kind, classes, sizes and architecture, and a fine-tuning budget (AdamW 2e-4, a fifth
        to a third of the epochs). ``run.json`` records ``resumed_from`` (its path, created, model, weights' SHA-256).
    max_minutes : float, "auto", None or mapping
        Wall-clock cap of each stage in minutes: one value for every stage, or stage → value (stages ``detector``
        and ``segmenter`` for the cascades, ``model`` for the baselines; a stage not named keeps ``"auto"``).
        None: no cap. ``"auto"`` (default): the stage's option or fine-tune plan if it has one, else the
        trainer's CPU cap on a CPU (detector 15, segmenter 12, baselines 15 minutes; 8 when fine-tuning, the
        segmenter 12) and no cap on CUDA. An explicit value wins over ``detector_options`` /
        ``segmenter_options``. ``run.json`` records each stage's ``limits`` (``max_minutes`` in force,
        ``stop_reason``: ``early_stop``, ``epochs_done`` or ``time_cap``, and ``epochs_run``).
    anchor_options : dict, optional
        Keyword arguments of :func:`cervkit.training.anchor.train_anchor` (the cascades' third stage, trained
        when the data annotates C2 or L5; it names the levels).

    Returns
    -------
    pathlib.Path
        The run folder, with ``run.json`` status ``done``.
    """
    from cervkit.core.config import quick_mode
    from cervkit.data.manifest import ensure_split, load_manifest, same_split
    from cervkit.data.split import summary
    from cervkit.data.table import save_manifest
    from cervkit.training import finetune

    source = finetune.load_resume_source(resume) if resume is not None else None
    plan: dict[str, Any] = {}
    if source is not None:  # every conflict with the resumed run is found before anything is written
        model = finetune.resolve_model(source, model)
        finetune.check_resume_target(source, out)
        plan = finetune.plan_stages(source, _preview_split(manifest, seed), detector_classes=detector_classes,
                                    imgsz=imgsz, detector_options=detector_options,
                                    segmenter_options=segmenter_options)
    model = model or "yolo-unet"
    if model not in MODELS:
        raise CervkitInputError(f"--model {model} is not trainable by this version; use one of {MODELS}")
    stages = ("detector", "segmenter") if model in CASCADE_MODELS else ("model",)
    for stage in stages:  # a bad --max-minutes is refused before anything is written
        stage_max_minutes(max_minutes, stage, stages)
    quick = quick_mode() if quick is None else bool(quick)
    manifests = _sources(manifest)
    arguments = {"manifest": [str(m.resolve()) for m in manifests] if len(manifests) > 1
                 else str(manifests[0].resolve()), "model": model, "quick": quick, "seed": seed,
                 "imgsz": imgsz, "device": device, "detector_options": detector_options or {},
                 "segmenter_options": segmenter_options or {},
                 "max_minutes": dict(max_minutes) if isinstance(max_minutes, Mapping) else max_minutes,
                 "resume": None if source is None else str(source.run)}
    run = start_run(out, model, arguments, overwrite=overwrite)
    split_csv = run / "split.csv"
    if len(manifests) > 1:
        split = _combined_split(manifests, run, seed)
        save_manifest(split, split_csv, overwrite=True)
        split = load_manifest(split_csv, validate=False)
    else:
        split = ensure_split(manifests[0], split_csv, seed=seed, overwrite=overwrite)
    if not split_csv.is_file() or not same_split(load_manifest(split_csv, validate=False), split):
        # the manifest came with its own split: keep a copy with the run (an older run's copy is replaced:
        # the run folder must say what this run trained on)
        save_manifest(split, split_csv, overwrite=True)
    info = read_run_info(run)
    info["split"] = {"file": "split.csv", "summary": summary(split).to_dict(orient="records")}
    if len(manifests) > 1:
        info["split"]["sources"] = {
            str(name): summary(split.with_df(part.reset_index(drop=True))).to_dict(orient="records")
            for name, part in split.df.groupby(split.df["source"].astype(str))}
    if source is not None:
        info["resumed_from"] = finetune.resumed_from_record(source)
    timings: dict[str, float] = {}

    if model not in CASCADE_MODELS:  # baselines: one stage in run/model/
        start = time.perf_counter()
        kwargs = plan["model"] if source is not None else _baseline_kwargs(model, imgsz, detector_options,
                                                                            segmenter_options)
        kwargs = _with_cap(kwargs, max_minutes, "model", stages)
        config_json = _train_baseline(model, split, run, kwargs, seed=seed, quick=quick, device=device,
                                      overwrite=overwrite)
        timings["model"] = time.perf_counter() - start
        info.update(stages={"model": "model"}, status="done", train_seconds=timings,
                    limits={"model": _stage_limits(config_json)})
    else:
        from cervkit.training.detector import train_detector
        from cervkit.training.segmenter import train_segmenter

        start = time.perf_counter()
        if source is not None:
            det_kwargs, seg_kwargs = plan["detector"], plan["segmenter"]
            info["detector_classes"] = plan["detector_classes"]
        elif len(manifests) > 1:  # several level protocols: one class, from each source's annotated span
            if detector_classes == "levels":
                raise CervkitInputError("per-level detector classes need one level protocol; several sources "
                                        "train the single 'vertebra' class", manifests[0])
            det_kwargs = {**(detector_options or {}), "classes": "single"}
            if imgsz is not None:
                det_kwargs["imgsz"] = imgsz
            info["detector_classes"] = {"classes": "single", "level_names": None,
                                        "detector_input": "images cropped to each source's annotated levels"}
            seg_kwargs = {**(segmenter_options or {}), "model": SEGMENTER_OF[model]}
        else:
            det_kwargs = _fresh_detector_kwargs(split, manifest, detector_classes, imgsz, detector_options)
            info["detector_classes"] = {"classes": det_kwargs.get("classes", "single"),
                                        "level_names": det_kwargs.get("level_names")}
            seg_kwargs = {**(segmenter_options or {}), "model": SEGMENTER_OF[model]}
        det_kwargs = _with_cap(det_kwargs, max_minutes, "detector", stages)
        seg_kwargs = _with_cap(seg_kwargs, max_minutes, "segmenter", stages)
        detector_data = split
        partial_levels = "levels" in split.df.columns and det_kwargs.get("classes", "single") == "single"
        if len(manifests) > 1 or partial_levels:  # a protocol that leaves visible levels unannotated
            from cervkit.data.sources import write_span_crops

            detector_data = write_span_crops(split, run / "detector_data")
        detector = train_detector(detector_data, run, seed=seed, quick=quick, device=device, overwrite=overwrite,
                                  **det_kwargs)
        timings["detector"] = time.perf_counter() - start
        start = time.perf_counter()
        segmenter = train_segmenter(split, run, seed=seed, quick=quick, device=device, overwrite=overwrite,
                                    **seg_kwargs)
        timings["segmenter"] = time.perf_counter() - start
        start = time.perf_counter()
        anchor = _train_anchor_stage(split, run, source, seed=seed, quick=quick, device=device, overwrite=overwrite,
                                     options=anchor_options)
        timings["anchor"] = time.perf_counter() - start
        run_stages = {"detector": "detector", "segmenter": "segmenter"} | ({"anchor": "anchor"} if anchor else {})
        info.update(stages=run_stages, status="done",
                    train_seconds=timings, limits={"detector": _stage_limits(detector.config_json),
                                                   "segmenter": _stage_limits(segmenter.config_json)})
    write_run_info(run, info)

    if validate and (split.df["split"] == "val").any():
        from cervkit.evaluation.evaluate import evaluate_predictor, write_evaluation
        from cervkit.inference.registry import load_predictor

        start = time.perf_counter()
        evaluation = evaluate_predictor(load_predictor(run, device=device), split, split="val")
        write_evaluation(evaluation, run / "validation", overwrite=True)
        info["validation"] = evaluation.summary.set_index("metric")[["mean", "ci_low", "ci_high"]].to_dict("index")
        timings["validation"] = time.perf_counter() - start
        write_run_info(run, info)
    return run
