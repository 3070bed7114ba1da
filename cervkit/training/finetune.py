"""Fine-tuning from corrections: continue a trained run on a corrected manifest (``train --resume RUN``).

:func:`cervkit.training.train.train_run` with ``resume=RUN`` writes a **new** run folder whose stages start from
RUN's trained weights; RUN itself is only read. This module reads RUN (:func:`load_resume_source`),
checks that the corrected data can be trained with RUN's settings, and turns them into keyword
arguments for each stage's trainer:

* the model kind, the detector's classes (one per level or a single ``vertebra``) and its image size,
  the crop segmenter's architecture, encoder, crop size and margin, the whole-image models' input size
  and the YOLO-seg image size are all taken from RUN; an option that contradicts them raises a
  :class:`~cervkit.core.errors.CervkitInputError` naming both values;
* a per-level detector needs every corrected train/val mask to hold RUN's number of levels. When they do
  not, the error says so and how to **re-head** the detector: ask for ``detector_classes="single"`` (or
  ``"levels"``) explicitly; ultralytics then starts the class-prediction layers afresh and everything
  else from RUN (recorded as ``reheaded`` in ``run.json``);
* weights: the detector / YOLO-seg through ``YOLO(RUN/.../best.pt)``, the U-Net3+ / DeepLabV3+ state
  dicts through :func:`load_initial_weights` (architecture checked first). Every trainer records
  ``init.state_sha256`` (:func:`state_checksum` of the weights the first epoch starts from) in its
  ``config.json``, so anyone can check that a resumed stage did start from RUN.

Fine-tuning budget (the defaults below; any explicit stage option wins). From scratch the detector
uses ultralytics' automatic AdamW learning rate (``0.01 / (4 + classes)``, about 1e-3 to 2e-3), the
segmenters AdamW at 1e-3, with 100–200 epochs. A resumed run starts near a solution, where a large
step would undo what the weights know, and usually has far fewer corrected images, so it uses a fifth
of the learning rate (AdamW at 2e-4) and a fifth to a third of the epochs (detector 40 of 200, crop
segmenter 20 of 100, whole-image 30 of 100) and shorter patience. Wall-clock caps stay explicit
(:mod:`cervkit.training.limits`): on a CPU the default (``max_minutes="auto"``) is 8 minutes per stage
(``cpu_max_minutes``; the crop segmenter keeps its 12-minute CPU cap from scratch), on CUDA there is none;
``train --max-minutes`` or a stage's ``max_minutes`` option sets one. The detector's warm-up is switched off: it exists
to tame the first steps of random weights, and its bias learning rate (0.1) would throw trained biases
far off. The learning rate still follows each trainer's schedule (ultralytics' linear decay, cosine
for the segmenters); quick mode still caps epochs and sizes as for any run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.core.errors import CervkitInputError
from cervkit.runs.folder import read_run_info

FINETUNE_DETECTOR: dict[str, Any] = {"epochs": 40, "patience": 10, "cpu_max_minutes": 8.0}
"""Detector and YOLO-seg fine-tuning budget (from scratch: 200 epochs, patience 20, 15 min on a CPU); the cap
applies on a CPU only (``max_minutes="auto"``), as from scratch."""
FINETUNE_YOLO_OVERRIDES: dict[str, Any] = {"optimizer": "AdamW", "lr0": 2e-4, "warmup_epochs": 0.0,
                                           "warmup_bias_lr": 0.0}
"""Ultralytics train arguments of a fine-tune: a fixed small AdamW rate, no warm-up."""
FINETUNE_SEGMENTER: dict[str, Any] = {"epochs": 20, "patience": 6, "lr": 2e-4}
"""Crop segmenter fine-tuning budget (from scratch: 100 epochs, patience 30, lr 1e-3)."""
FINETUNE_WHOLE_IMAGE: dict[str, Any] = {"epochs": 30, "patience": 8, "lr": 2e-4, "cpu_max_minutes": 8.0}
"""Whole-image baselines' fine-tuning budget (from scratch: 100 epochs, patience 15, lr 1e-3, 15 min on a CPU)."""

STAGE_WEIGHTS = {"detector": "weights/best.pt", "segmenter": "model.pt"}
BASELINE_WEIGHTS = {"yolo-seg": "weights/best.pt", "unet3plus": "model.pt", "deeplabv3plus": "model.pt"}


@dataclass
class ResumeSource:
    """A finished run read for fine-tuning.

    Attributes
    ----------
    run : pathlib.Path
        The run folder (absolute; never written).
    info : dict
        Its ``run.json``.
    model : str
        Its model kind (``yolo-unet``, ``yolo-seg`` …).
    weights : dict
        Stage name (``detector``, ``segmenter`` or ``model``) → weights file.
    configs : dict
        Stage name → that stage's ``config.json``.
    """

    run: Path
    info: dict[str, Any]
    model: str
    weights: dict[str, Path] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_resume_source(run: str | PathLike[str]) -> ResumeSource:
    """Read a finished run folder: its ``run.json``, each stage's weights and ``config.json``.

    Parameters
    ----------
    run : str or PathLike
        The run to continue from.

    Returns
    -------
    ResumeSource
        What the fine-tune needs.

    Raises
    ------
    CervkitInputError
        Not a run, unfinished, or a stage without weights or ``config.json``.
    """
    from cervkit.zoo.store import resolve_model

    folder = resolve_model(run).path.resolve()  # a run folder, or a shipped model (train --resume mri)
    info = read_run_info(folder)
    if info.get("status") != "done":
        raise CervkitInputError(f"cannot resume from a run whose status is {info.get('status')!r}, not 'done'",
                                folder)
    model = str(info.get("model"))
    if model in ("yolo-unet", "yolo-deeplab"):
        files = {stage: (stage, marker) for stage, marker in STAGE_WEIGHTS.items()}
    elif model in BASELINE_WEIGHTS:
        files = {"model": ("model", BASELINE_WEIGHTS[model])}
    else:
        raise CervkitInputError(f"cannot resume a {model!r} run: this version fine-tunes "
                                f"yolo-unet, yolo-deeplab, {', '.join(BASELINE_WEIGHTS)}", folder)
    source = ResumeSource(folder, info, model)
    for stage, (default_dir, marker) in files.items():
        stage_dir = folder / str(info.get("stages", {}).get(stage, default_dir))
        weights, config = stage_dir / marker, stage_dir / "config.json"
        for needed in (weights, config):
            if not needed.is_file():
                raise CervkitInputError(f"cannot resume: stage {stage!r} has no {needed.relative_to(folder)}",
                                        folder)
        source.weights[stage] = weights
        source.configs[stage] = json.loads(config.read_text())
    return source


def check_resume_target(source: ResumeSource, out: str | PathLike[str]) -> None:
    """Refuse to write the fine-tuned run into RUN itself or inside it (RUN stays as it was).

    Parameters
    ----------
    source : ResumeSource
        The run being resumed (:func:`read_resume_source`).
    out : str or PathLike
        The fine-tuned run's folder.
    """
    target = Path(out).resolve()
    if target == source.run or source.run in target.parents:
        raise CervkitInputError(f"--out {target} is inside the run being resumed; a fine-tune writes a new run "
                                "folder and never changes the old one", source.run)


def resolve_model(source: ResumeSource, model: str | None) -> str:
    """The model kind of a resumed run: RUN's; an explicit different ``model`` is a conflict.

    Parameters
    ----------
    source : ResumeSource
        The run being resumed (:func:`read_resume_source`).
    model : str or None
        The model kind asked for (None: not given).

    Returns
    -------
    str
        The resumed run's model kind.
    """
    if model is not None and model != source.model:
        raise CervkitInputError(f"--model {model} conflicts with the resumed run, a {source.model} run; "
                                "a fine-tune keeps the model kind (leave --model out)", source.run)
    return source.model


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's floating-point tensors (sorted by name, as float32).

    Parameters
    ----------
    state : mapping
        Name → tensor (a ``state_dict()``); integer buffers (e.g. BatchNorm counters) are skipped.

    Returns
    -------
    str
        64 hex characters; equal for equal weights whatever their device or float precision.
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
            digest.update(name.encode())
            digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_initial_weights(net: Any, checkpoint: str | PathLike[str]) -> dict[str, Any]:
    """Load a cervkit segmentation checkpoint into ``net``, which must have the same architecture.

    Parameters
    ----------
    net : torch.nn.Module
        A model from :func:`cervkit.models.build_segmentation_model`.
    checkpoint : str or PathLike
        A ``model.pt`` written by :func:`cervkit.models.save_checkpoint`.

    Returns
    -------
    dict
        ``checkpoint`` (path) and ``state_sha256`` (:func:`state_checksum` of the loaded weights).

    Raises
    ------
    CervkitInputError
        The checkpoint's architecture differs from ``net``'s (the differing settings are named).
    """
    from cervkit.models.factory import load_checkpoint

    old, _ = load_checkpoint(checkpoint)
    mine, theirs = dict(getattr(net, "build_config", {})), dict(old.build_config)
    if mine != theirs:
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        diff = {k: (theirs.get(k), mine.get(k)) for k in keys}
        raise CervkitInputError("the checkpoint's architecture differs from the model being fine-tuned "
                                f"(setting: (checkpoint, new)): {diff}", checkpoint)
    net.load_state_dict(old.state_dict())
    return {"checkpoint": str(Path(checkpoint).resolve()), "state_sha256": state_checksum(net.state_dict())}


def init_record_callback(record: dict[str, Any]) -> Any:
    """An ultralytics ``on_train_start`` callback writing the starting weights' checksum into ``record``.

    Parameters
    ----------
    record : dict
        Filled with ``state_sha256`` when training starts.

    Returns
    -------
    callable
        ``callback(trainer)``.
    """

    def callback(trainer: Any) -> None:
        model = getattr(trainer.model, "module", trainer.model)
        record["state_sha256"] = state_checksum(model.state_dict())

    return callback


def _merge(defaults: Mapping[str, Any], fixed: Mapping[str, Any], options: Mapping[str, Any] | None,
           source: ResumeSource, stage: str) -> dict[str, Any]:
    """Fine-tune defaults < user options; ``fixed`` (RUN's settings) must not be contradicted."""
    given = dict(options or {})
    for key, value in fixed.items():
        if key in given and given[key] != value:
            raise CervkitInputError(f"{stage} option {key}={given[key]!r} conflicts with the resumed run's "
                                    f"{key}={value!r}; a fine-tune keeps the run's settings", source.run)
    return {**defaults, **given, **fixed}


def _yolo_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """Fine-tuning ultralytics overrides under the user's own ``overrides``."""
    return {**FINETUNE_YOLO_OVERRIDES, **dict(options.get("overrides") or {})}


def detector_kwargs(source: ResumeSource, split: Any, *, detector_classes: str = "auto", imgsz: int | None = None,
                    options: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments of :func:`cervkit.training.detector.train_detector` for a resumed cascade.

    Parameters
    ----------
    source : ResumeSource
        The run resumed from.
    split : Manifest
        The corrected manifest with its ``split``.
    detector_classes : {"auto", "levels", "single"}
        ``auto`` keeps RUN's classes (a conflict raises); ``levels`` / ``single`` may re-head RUN's detector.
    imgsz : int, optional
        Must equal RUN's detector image size when given.
    options : mapping, optional
        Further ``train_detector`` options (they win over the fine-tune defaults).

    Returns
    -------
    kwargs : dict
        For ``train_detector``: RUN's ``weights``, ``classes``, ``level_names``, ``imgsz``, ``input_norm`` and
        the budget.
    classes : dict
        ``classes``, ``level_names`` and ``reheaded`` (the class layers restart), for ``run.json``.
    """
    from cervkit.training.yolo_dataset import choose_classes

    old = source.configs["detector"].get("arguments", {})
    old_classes, old_names = str(old.get("classes", "single")), old.get("level_names")
    found, names = choose_classes(split)
    count = len(old_names) if old_names else None
    fits = old_classes == "single" or (found == "levels" and names is not None and len(names) == count)
    if detector_classes == "auto":
        if not fits:
            have = f"{len(names)} vertebrae each" if found == "levels" and names else "different numbers of vertebrae"
            raise CervkitInputError(
                f"the resumed run's detector has one class per level ({count}: {', '.join(old_names or [])}) but the "
                f"corrected train/val masks hold {have}; pass detector_classes='single' (--detector-classes "
                "single) or 'levels' to re-head it: its class layers restart, the rest starts from the run",
                source.run)
        classes, level_names = old_classes, (old_names if old_classes == "levels" else None)
    elif detector_classes == "levels":
        if found != "levels":
            raise CervkitInputError("per-level detector classes need every train/val mask to hold the same number "
                                    "of vertebrae", getattr(split, "path", None))
        same = old_classes == "levels" and len(names or []) == count
        classes, level_names = "levels", (old_names if same else names)
    elif detector_classes == "single":
        classes, level_names = "single", None
    else:
        raise CervkitInputError(f"detector_classes must be auto, levels or single, not {detector_classes!r}")
    reheaded = not (classes == old_classes and (classes == "single" or len(level_names or []) == count))
    fixed: dict[str, Any] = {"weights": str(source.weights["detector"]), "classes": classes,
                             "level_names": level_names, "imgsz": int(old.get("imgsz", 320)),
                             "input_norm": str(old.get("input_norm") or "none")}
    if imgsz is not None and int(imgsz) != fixed["imgsz"]:
        raise CervkitInputError(f"--imgsz {imgsz} conflicts with the resumed run's detector imgsz={fixed['imgsz']}",
                                source.run)
    given = {k: v for k, v in dict(options or {}).items() if k not in ("classes", "level_names")}
    kwargs = _merge(FINETUNE_DETECTOR, fixed, given, source, "detector")
    kwargs["overrides"] = _yolo_overrides(given)
    return kwargs, {"classes": classes, "level_names": level_names, "reheaded": reheaded}


def segmenter_kwargs(source: ResumeSource, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`cervkit.training.segmenter.train_segmenter` for a resumed cascade.

    Parameters
    ----------
    source : ResumeSource
        The run resumed from.
    options : mapping, optional
        Further ``train_segmenter`` options (architecture ones must match RUN's).

    Returns
    -------
    dict
        RUN's ``model``, ``encoder_name``, ``cat_channels``, ``crop_size``, ``margin``, ``model_options``,
        ``init_checkpoint`` and the fine-tuning budget.
    """
    config = source.configs["segmenter"]
    old = config.get("arguments", {})
    fixed = {key: old[key] for key in ("model", "encoder_name", "cat_channels", "crop_size", "margin") if key in old}
    fixed["model_options"] = dict(config.get("model_options") or {})
    fixed["init_checkpoint"] = str(source.weights["segmenter"])
    return _merge(FINETUNE_SEGMENTER, fixed, options, source, "segmenter")


def baseline_kwargs(source: ResumeSource, *, imgsz: int | None = None,
                    options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of the one-stage trainer of a resumed baseline.

    Parameters
    ----------
    source : ResumeSource
        A ``yolo-seg``, ``unet3plus`` or ``deeplabv3plus`` run.
    imgsz : int, optional
        Must equal RUN's image size (YOLO-seg) or network input size (whole-image) when given.
    options : mapping, optional
        The run's ``detector_options`` (YOLO-seg) or ``segmenter_options`` (whole-image).

    Returns
    -------
    dict
        For :func:`cervkit.training.yolo_seg.train_yolo_seg` (``weights``, ``imgsz``) or
        :func:`cervkit.training.whole_image.train_whole_image` (``encoder_name``, ``size``, ``model_options``,
        ``init_checkpoint``), with the fine-tuning budget.
    """
    config = source.configs["model"]
    old = config.get("arguments", {})
    size_key = "imgsz" if source.model == "yolo-seg" else "size"
    fixed: dict[str, Any] = {size_key: int(old[size_key])} if size_key in old else {}
    if imgsz is not None and size_key in fixed and int(imgsz) != fixed[size_key]:
        raise CervkitInputError(f"--imgsz {imgsz} conflicts with the resumed run's {size_key}={fixed[size_key]}",
                                source.run)
    if source.model == "yolo-seg":
        fixed["weights"] = str(source.weights["model"])
        kwargs = _merge(FINETUNE_DETECTOR, fixed, options, source, "yolo-seg")
        kwargs["overrides"] = _yolo_overrides(dict(options or {}))
        return kwargs
    if "encoder_name" in old:
        fixed["encoder_name"] = old["encoder_name"]
    fixed["model_options"] = dict(config.get("model_options") or {})
    fixed["init_checkpoint"] = str(source.weights["model"])
    return _merge(FINETUNE_WHOLE_IMAGE, fixed, options, source, source.model)


def plan_stages(source: ResumeSource, split: Any, *, detector_classes: str = "auto", imgsz: int | None = None,
                detector_options: Mapping[str, Any] | None = None,
                segmenter_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every stage's trainer keyword arguments for a fine-tune of ``source`` on ``split``; raises on conflicts.

    Parameters
    ----------
    source : ResumeSource
        The run resumed from.
    split : Manifest
        The corrected manifest with the split the fine-tune will use.
    detector_classes, imgsz
        As in :func:`cervkit.training.train.train_run`.
    detector_options, segmenter_options : mapping, optional
        As in :func:`cervkit.training.train.train_run`.

    Returns
    -------
    dict
        Cascades: ``detector``, ``segmenter`` (kwargs) and ``detector_classes`` (for ``run.json``);
        baselines: ``model`` (kwargs).
    """
    if "model" in source.weights:
        options = detector_options if source.model == "yolo-seg" else segmenter_options
        return {"model": baseline_kwargs(source, imgsz=imgsz, options=options)}
    detector, classes = detector_kwargs(source, split, detector_classes=detector_classes, imgsz=imgsz,
                                        options=detector_options)
    return {"detector": detector, "segmenter": segmenter_kwargs(source, segmenter_options),
            "detector_classes": classes}


def resumed_from_record(source: ResumeSource) -> dict[str, Any]:
    """What ``run.json`` records under ``resumed_from``: RUN's path, created, model and weights' SHA-256.

    Parameters
    ----------
    source : ResumeSource
        The run being resumed (:func:`read_resume_source`).

    Returns
    -------
    dict
        ``path``, ``created``, ``model`` and ``weights`` (stage → ``file``, ``sha256``).
    """
    from cervkit.core.files import sha256_file

    return {"path": str(source.run), "created": source.info.get("created"), "model": source.model,
            "weights": {stage: {"file": str(path.relative_to(source.run)), "sha256": sha256_file(path)}
                        for stage, path in source.weights.items()}}
