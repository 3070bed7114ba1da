"""The YOLO-seg baseline: ultralytics YOLOv11n-seg, one stage, instance masks straight from the detector.

Training (:func:`train_yolo_seg`) mirrors :func:`cervkit.training.detector.train_detector` — scratch
``yolo11n-seg.yaml`` (nothing downloaded), offline ultralytics (:func:`cervkit.core.ultralytics_env.import_ultralytics`),
``nbs = batch``, the short-memory weight EMA of :mod:`cervkit.training.detector` (imported, see that module's
docstring for why) and the same explicit wall-clock cap (:mod:`cervkit.training.limits`: by default 15 minutes on
a CPU, none on CUDA; printed at the start, recorded in ``config.json`` with the stop reason) — on polygon labels
(:func:`cervkit.labels.yolo.write_yolo_seg_labels`: the outer contour of each vertebral body). It writes
``run_dir/model/`` (``weights/best.pt``, ``results.csv``, ``config.json``, ``curves.png``, ``data/``).

Prediction (:class:`YoloSeg`) asks ultralytics for masks at the input's full resolution
(``retina_masks=True``) and turns them into one label map with :func:`masks_to_labels`: a pixel claimed by
several masks goes to the most confident one, instances left with fewer than ``min_area`` pixels are
dropped, the rest are numbered top to bottom. The mask is binary, so ``mean_prob`` repeats the confidence.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.device import ultralytics_device
from cervkit.core.files import atomic_write_bytes, check_writable
from cervkit.core.ultralytics_env import amp_setting, import_ultralytics
from cervkit.inference.yolo_seg import STAGE_DIR
from cervkit.labels.instances import labels_from_instances, relabel_top_to_bottom
from cervkit.training.detector import (
    CPU_MAX_MINUTES,
    DEFAULT_AUGMENT,
    EMA_DECAY,
    EMA_TAU,
    QUICK_EPOCHS,
    QUICK_IMGSZ,
    ema_callback,
    init_record,
    read_results,
)
from cervkit.training.finetune import init_record_callback
from cervkit.training.limits import (
    AUTO,
    MaxMinutes,
    YoloStopWatch,
    announce_limits,
    limits_record,
    resolve_max_minutes,
)

MODEL_YAML = "yolo11n-seg.yaml"
METRIC_COLUMNS = {"mask_mAP50": "metrics/mAP50(M)", "mask_mAP50-95": "metrics/mAP50-95(M)",
                  "box_mAP50": "metrics/mAP50(B)", "box_mAP50-95": "metrics/mAP50-95(B)"}


@dataclass
class YoloSegRun:
    """What :func:`train_yolo_seg` wrote: ``run_dir`` (``<run>/model``), ``weights`` (best.pt),
    ``results_csv``, ``config_json``, ``curves_png``, ``epochs_run``, ``best_epoch``, ``seconds``, ``metrics``,
    ``stop_reason`` (``early_stop``, ``epochs_done`` or ``time_cap``) and ``max_minutes`` (the cap in force)."""

    run_dir: Path
    weights: Path
    results_csv: Path
    config_json: Path
    curves_png: Path
    epochs_run: int
    best_epoch: int
    seconds: float
    metrics: dict[str, float]
    stop_reason: str = "epochs_done"
    max_minutes: float | None = None


def _label_map(mask: np.ndarray) -> np.ndarray:
    """Instance label map of a mask; a binary mask is split into connected components."""
    from cervkit.labels.instances import instances_from_labels

    values = np.unique(mask[mask > 0])
    if len(values) == 1:
        return labels_from_instances(instances_from_labels(mask, binary=True), mask.shape)
    return relabel_top_to_bottom(mask)


def build_yolo_seg_dataset(manifest: Any, out_dir: str | PathLike[str], *, splits: Sequence[str] = ("train", "val"),
                           overwrite: bool = False) -> Path:
    """Write an ultralytics segmentation dataset: the detection dataset's images, polygon labels.

    Parameters
    ----------
    manifest : Manifest or path
        With ``split`` and ``mask`` columns.
    out_dir : str or PathLike
        Destination folder (layout of :func:`cervkit.training.yolo_dataset.build_yolo_dataset`).
    splits : sequence of str
        Splits to write.
    overwrite : bool
        Replace an existing dataset; otherwise FileExistsError.

    Returns
    -------
    pathlib.Path
        The ``data.yaml`` file.
    """
    from cervkit.io.images import read_mask
    from cervkit.labels.yolo import write_yolo_seg_labels
    from cervkit.training.yolo_dataset import build_yolo_dataset

    data_yaml = build_yolo_dataset(manifest, out_dir, classes="single", splits=splits, overwrite=overwrite)
    root = data_yaml.parent
    for _, row in pd.read_csv(root / "sources.csv").iterrows():  # replace each box file by its polygons
        write_yolo_seg_labels(root / "labels" / str(row["split"]) / f"{row['name']}.txt",
                              _label_map(read_mask(row["mask"])), overwrite=True)
    return data_yaml


def _fitness(table: pd.DataFrame) -> np.ndarray:
    """Ultralytics' segmentation fitness per epoch: box + mask (0.1·mAP50 + 0.9·mAP50-95)."""
    total = np.zeros(len(table))
    for kind in ("box", "mask"):
        total += 0.1 * table[METRIC_COLUMNS[f"{kind}_mAP50"]].to_numpy() \
            + 0.9 * table[METRIC_COLUMNS[f"{kind}_mAP50-95"]].to_numpy()
    return total


def plot_seg_curves(table: pd.DataFrame, out_png: Path) -> Path:
    """Plot box/mask losses and box/mask mAP50 per epoch (matplotlib, no pyplot state).

    Parameters
    ----------
    table : pandas.DataFrame
        Ultralytics' ``results.csv`` (``epoch`` and its loss and metric columns; missing ones are left out).
    out_png : pathlib.Path
        Destination PNG (replaced if it exists).

    Returns
    -------
    pathlib.Path
        The written PNG.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100)
    ax_loss, ax_map = fig.subplots(1, 2)
    for column in ("train/box_loss", "train/seg_loss", "val/box_loss", "val/seg_loss"):
        if column in table:
            ax_loss.plot(table["epoch"], table[column], label=column)
    ax_loss.set(title="YOLO-seg losses", xlabel="epoch")
    ax_loss.legend(fontsize=7)
    for key in ("box_mAP50", "mask_mAP50", "mask_mAP50-95"):
        if METRIC_COLUMNS[key] in table:
            ax_map.plot(table["epoch"], table[METRIC_COLUMNS[key]], label=key)
    ax_map.set(title="validation", xlabel="epoch", ylim=(0, 1))
    ax_map.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(out_png, buf.getvalue(), overwrite=True)


def train_yolo_seg(manifest: Any, run_dir: str | PathLike[str], *, epochs: int = 200, patience: int = 20,
                   imgsz: int = 320, batch: int = 8, max_minutes: MaxMinutes = AUTO,
                   cpu_max_minutes: float | None = CPU_MAX_MINUTES, seed: int = 0,
                   weights: str | PathLike[str] | None = None,
                   device: str | int | None = None, workers: int = 0, augment: Mapping[str, float] | None = None,
                   overrides: Mapping[str, Any] | None = None, ema: tuple[float, float] = (EMA_DECAY, EMA_TAU),
                   quick: bool | None = None, verbose: bool = False, overwrite: bool = False) -> YoloSegRun:
    """Train YOLOv11n-seg (from scratch or ``weights``) on ``train``, validating (and early stopping) on ``val``.

    Parameters
    ----------
    manifest : Manifest or path
        Manifest with a ``split`` column.
    run_dir : str or PathLike
        The run folder; this writes ``run_dir/model/``.
    epochs, patience, imgsz, batch, seed, device, workers, augment, overrides, ema, verbose
        As in :func:`cervkit.training.detector.train_detector` (same defaults).
    max_minutes, cpu_max_minutes
        As in :func:`cervkit.training.detector.train_detector`: ``"auto"`` (default) is a 15-minute cap on a CPU
        and none on CUDA; the limits in force are printed at the start and recorded under ``limits``.
    weights : str or PathLike, optional
        A YOLO-seg ``.pt`` to fine-tune (see :mod:`cervkit.training.finetune`); default None: ``yolo11n-seg.yaml``.
    quick : bool, optional
        Quick mode (default :func:`cervkit.core.config.quick_mode`): the detector's quick epochs and image size.
    overwrite : bool
        Replace an existing ``run_dir/model``; otherwise FileExistsError.

    Returns
    -------
    YoloSegRun
        Paths and summary.
    """
    from cervkit.core.config import quick_mode
    from cervkit.runs.folder import versions

    quick = quick_mode() if quick is None else bool(quick)
    if quick:
        epochs, imgsz = min(epochs, QUICK_EPOCHS), min(imgsz, QUICK_IMGSZ)
    out = Path(run_dir).resolve() / STAGE_DIR
    check_writable(out / "config.json", overwrite)
    data_yaml = build_yolo_seg_dataset(manifest, out / "data", overwrite=overwrite)
    ul = import_ultralytics()
    dev = ultralytics_device(device)
    cap, cap_source = resolve_max_minutes(max_minutes, cpu_max_minutes, dev)
    announce_limits("yolo-seg", epochs, patience, cap, cap_source)
    aug = {**DEFAULT_AUGMENT, **dict(augment or {})}
    args: dict[str, Any] = {
        "data": str(data_yaml), "epochs": int(epochs), "patience": int(patience), "imgsz": int(imgsz),
        "batch": int(batch), "seed": int(seed), "deterministic": True, "device": dev, "workers": int(workers),
        "project": str(out.parent), "name": "yolo-seg", "save_dir": str(out), "exist_ok": True, "plots": False, "val": True,
        "amp": amp_setting("cpu" if dev == "cpu" else "cuda"), "verbose": verbose, "cache": "ram",
        "nbs": int(batch), **{k: v for k, v in aug.items() if k != "intensity"},  # not an ultralytics argument
        **dict(overrides or {})}
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if not verbose:
        LOGGER.setLevel(40)
    # save_dir above: ultralytics renames a run called "model" after the yaml
    model = ul.YOLO(str(weights) if weights is not None else MODEL_YAML)
    model.add_callback("on_train_start", ema_callback(ema[0], ema[1]))
    init = init_record(weights)
    model.add_callback("on_train_start", init_record_callback(init))
    watch = YoloStopWatch(cap)
    model.add_callback("on_fit_epoch_end", watch)
    start = time.perf_counter()
    try:
        model.train(**args)
    finally:
        LOGGER.setLevel(level)
    seconds = time.perf_counter() - start
    results_csv = out / "results.csv"
    table = read_results(results_csv)
    stop_reason = watch.reason(len(table), epochs)
    best = int(np.argmax(_fitness(table)))
    metrics = {k: float(table[c].iloc[best]) for k, c in METRIC_COLUMNS.items()}
    best_epoch = int(table["epoch"].iloc[best])
    curves = plot_seg_curves(table, out / "curves.png")
    config = {"arguments": {"manifest": str(getattr(manifest, "path", manifest)), "run_dir": str(run_dir),
                            "epochs": epochs, "patience": patience, "imgsz": imgsz, "batch": batch,
                            "max_minutes": max_minutes, "cpu_max_minutes": cpu_max_minutes,
                            "seed": seed, "device": dev, "workers": workers,
                            "weights": None if weights is None else str(weights), "quick": quick, "augment": aug,
                            "overrides": dict(overrides or {}), "ema": list(ema)},
              "model": MODEL_YAML, "init": init,
              "limits": limits_record(epochs, patience, cap, cap_source, stop_reason, len(table)),
              "ultralytics_args": {k: v for k, v in args.items() if k != "verbose"},
              "versions": versions(), "result": {"epochs_run": int(len(table)), "best_epoch": best_epoch,
                                                 "seconds": round(seconds, 2), "metrics": metrics}}
    config_json = atomic_write_bytes(out / "config.json", json.dumps(config, indent=2, default=str).encode(),
                                     overwrite=True)
    return YoloSegRun(out, out / "weights" / "best.pt", results_csv, config_json, curves, int(len(table)),
                      best_epoch, seconds, metrics, stop_reason, cap)


