"""``python -m cervkit train``: split, train every stage of a model, validate, write the run folder.

For the cascades (``yolo-unet``, the paper's model, and ``yolo-deeplab``) this trains the
YOLOv11 detector (:func:`cervkit.detector.train_detector`) and the crop segmenter
(:func:`cervkit.segmenter.train_segmenter`) on the same patient-level split, then runs
the whole cascade on the validation split and records its metrics. The paper's one-stage
baselines (``yolo-seg``, whole-image ``unet3plus`` and ``deeplabv3plus``) train one stage into
``RUN/model/`` and are validated the same way. The run folder
(see :mod:`cervkit.runs`) is what ``predict``, ``evaluate`` and the editor load.
"""

from __future__ import annotations

import time
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.errors import CervkitInputError
from cervkit.runs import CASCADE_MODELS, MODELS, read_run_info, start_run, write_run_info

SEGMENTER_OF = {"yolo-unet": "unet3plus", "yolo-deeplab": "deeplabv3plus"}


def _train_baseline(model: str, split: Any, run: Path, *, seed: int, quick: bool, imgsz: int | None,
                    device: str | None, overwrite: bool, detector_options: dict[str, Any] | None,
                    segmenter_options: dict[str, Any] | None) -> None:
    """Train a one-stage baseline into ``run/model/``: ``yolo-seg`` (detector_options, imgsz) or a
    whole-image ``unet3plus`` / ``deeplabv3plus`` (segmenter_options; imgsz is the network input size)."""
    if model == "yolo-seg":
        from cervkit.yolo_seg import train_yolo_seg

        kwargs = dict(detector_options or {}) | ({"imgsz": imgsz} if imgsz is not None else {})
        train_yolo_seg(split, run, seed=seed, quick=quick, device=device, overwrite=overwrite, **kwargs)
    else:
        from cervkit.whole_image_train import train_whole_image

        kwargs = dict(segmenter_options or {}) | ({"size": imgsz} if imgsz is not None else {})
        train_whole_image(split, run, model=model, seed=seed, quick=quick, device=device, overwrite=overwrite,
                          **kwargs)


def train_run(manifest: str | PathLike[str], out: str | PathLike[str], *, model: str = "yolo-unet",
              quick: bool | None = None, seed: int = 0, imgsz: int | None = None, device: str | None = None,
              overwrite: bool = False, detector_options: dict[str, Any] | None = None,
              segmenter_options: dict[str, Any] | None = None, validate: bool = True,
              detector_classes: str = "auto") -> Path:
    """Train a model end to end into a run folder.

    Parameters
    ----------
    manifest : str or PathLike
        Manifest CSV; split by patient (6:2:2, ``seed``) when it has no ``split`` column.
    out : str or PathLike
        The run folder (must be new or empty unless ``overwrite``).
    model : str
        ``yolo-unet`` (default), ``yolo-deeplab``, or a baseline: ``yolo-seg``, ``unet3plus``,
        ``deeplabv3plus`` (whole image; see :mod:`cervkit.yolo_seg`, :mod:`cervkit.whole_image`).
    quick : bool, optional
        Quick mode (default: :func:`cervkit.config.quick_mode`): same code path, tiny budget.
    seed : int
        Split and training seed.
    imgsz : int, optional
        Detector (and YOLO-seg) image size, or the whole-image network input size (default: each trainer's own).
    device : str, optional
        ``cpu`` or ``cuda`` (default: CUDA when available).
    overwrite : bool
        Train into an existing non-empty folder, replacing its stages.
    detector_options, segmenter_options : dict, optional
        Extra keyword arguments for each stage's trainer (``detector_options`` also for ``yolo-seg``,
        ``segmenter_options`` also for the whole-image models).
    validate : bool
        Run the trained cascade on the validation split and record the metrics.
    detector_classes : {"auto", "levels", "single"}
        Cascades' detector classes. ``auto`` (default): one class per level when every training
        and validation mask covers the same levels (:func:`cervkit.yolo_dataset.choose_classes`),
        so the cascade keeps at most one body per level; else the paper's single ``vertebra``.

    Returns
    -------
    pathlib.Path
        The run folder, with ``run.json`` status ``done``.
    """
    from cervkit.config import quick_mode
    from cervkit.manifest import ensure_split, save_manifest, summary

    if model not in MODELS:
        raise CervkitInputError(f"--model {model} is not trainable by this version; use one of {MODELS}")
    quick = quick_mode() if quick is None else bool(quick)
    arguments = {"manifest": str(Path(manifest).resolve()), "model": model, "quick": quick, "seed": seed,
                 "imgsz": imgsz, "device": device, "detector_options": detector_options or {},
                 "segmenter_options": segmenter_options or {}}
    run = start_run(out, model, arguments, overwrite=overwrite)
    split_csv = run / "split.csv"
    split = ensure_split(manifest, split_csv, seed=seed, overwrite=overwrite)
    if not split_csv.is_file():  # the manifest came with its own split: keep a copy with the run
        save_manifest(split, split_csv, overwrite=overwrite)
    info = read_run_info(run)
    info["split"] = {"file": "split.csv", "summary": summary(split).to_dict(orient="records")}
    timings: dict[str, float] = {}

    if model not in CASCADE_MODELS:  # baselines: one stage in run/model/
        start = time.perf_counter()
        _train_baseline(model, split, run, seed=seed, quick=quick, imgsz=imgsz, device=device,
                        overwrite=overwrite, detector_options=detector_options, segmenter_options=segmenter_options)
        timings["model"] = time.perf_counter() - start
        info.update(stages={"model": "model"}, status="done", train_seconds=timings)
    else:
        from cervkit.detector import train_detector
        from cervkit.segmenter import train_segmenter

        start = time.perf_counter()
        det_kwargs = dict(detector_options or {})
        if detector_classes not in ("auto", "levels", "single"):
            raise CervkitInputError(f"detector_classes must be auto, levels or single, not {detector_classes!r}")
        if "classes" not in det_kwargs and detector_classes != "single":
            from cervkit.yolo_dataset import choose_classes

            classes, names = choose_classes(split)
            if detector_classes == "levels" and classes != "levels":
                raise CervkitInputError("per-level detector classes need every train/val mask to hold the "
                                        "same number of vertebrae", manifest)
            det_kwargs.update(classes=classes, level_names=names)
        info["detector_classes"] = {"classes": det_kwargs.get("classes", "single"),
                                    "level_names": det_kwargs.get("level_names")}
        if imgsz is not None:
            det_kwargs["imgsz"] = imgsz
        train_detector(split, run, seed=seed, quick=quick, device=device, overwrite=overwrite, **det_kwargs)
        timings["detector"] = time.perf_counter() - start
        start = time.perf_counter()
        train_segmenter(split, run, model=SEGMENTER_OF[model], seed=seed, quick=quick, device=device,
                        overwrite=overwrite, **(segmenter_options or {}))
        timings["segmenter"] = time.perf_counter() - start
        info.update(stages={"detector": "detector", "segmenter": "segmenter"}, status="done",
                    train_seconds=timings)
    write_run_info(run, info)

    if validate and (split.df["split"] == "val").any():
        from cervkit.evaluate import evaluate_predictor, write_evaluation
        from cervkit.runs import load_predictor

        start = time.perf_counter()
        evaluation = evaluate_predictor(load_predictor(run, device=device), split, split="val")
        write_evaluation(evaluation, run / "validation", overwrite=True)
        info["validation"] = evaluation.summary.set_index("metric")[["mean", "ci_low", "ci_high"]].to_dict("index")
        timings["validation"] = time.perf_counter() - start
        write_run_info(run, info)
    return run
