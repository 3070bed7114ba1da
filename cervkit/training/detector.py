"""Train the stage-1 YOLOv11 vertebral-body detector with ultralytics, offline, into a run folder.

:func:`train_detector` builds the YOLO dataset (:mod:`cervkit.training.yolo_dataset`), trains
``yolo11n`` from scratch (``yolo11n.yaml``) or from a given ``.pt`` with early stopping
(patience 20, as in the paper) and an explicit wall-clock cap (``max_minutes``: by default
:data:`CPU_MAX_MINUTES` on a CPU and none on CUDA, see :mod:`cervkit.training.limits`; the limits in
force are printed at the start and recorded in ``config.json`` with the stop reason), and writes,
under ``run_dir/detector/``::

    weights/best.pt   weights/last.pt   results.csv   config.json   curves.png   data/ (the YOLO dataset)

Ultralytics' project/name point there, so nothing lands in the cwd's ``runs/``.

Augmentation (ultralytics' own, on the fly): the paper's rotation (±10°), scale (±40 %, wider
than the paper's ±10 % so other fields of view are covered) and translation, horizontal flips,
brightness jitter (``hsv_v``) and, with probability ``intensity`` each, the scanner / sequence
intensity augmentations of :func:`cervkit.transforms.scanner.detector_transforms` (random
non-monotone intensity curves, inversion, gamma, contrast, Rician noise, blur / resampling;
``benchmarks/bench_robustness.py`` measures why); hue/saturation are off (grayscale input). Mosaic
stays on (it multiplies the object layouts seen from few images) and is closed for
the last epochs. See ``benchmarks/bench_detector.py`` for the measurements behind
the defaults.

Few images, few optimizer steps: ultralytics' defaults assume thousands of steps. With
48 training images, ``nbs=64`` (gradient accumulation to a nominal batch of 64) leaves
under one optimizer step per epoch, and its weight EMA (decay 0.9999, ramp time constant
2000 updates) — the weights that are validated and saved — stays near the random
initialisation for hundreds of epochs (measured: val mAP50 = 0 after 32 epochs). So
``nbs`` defaults to ``batch`` (no accumulation) and the EMA to decay 0.99 with a
50-update ramp (:data:`EMA_DECAY`, :data:`EMA_TAU`; set in an ``on_train_start`` callback).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cervkit.core.device import ultralytics_device
from cervkit.core.files import atomic_write_bytes, check_writable, sha256_file
from cervkit.core.ultralytics_env import amp_setting, import_ultralytics
from cervkit.runs.folder import versions
from cervkit.training.finetune import init_record_callback
from cervkit.training.limits import (
    AUTO,
    MaxMinutes,
    YoloStopWatch,
    announce_limits,
    limits_record,
    resolve_max_minutes,
)
from cervkit.training.yolo_dataset import build_yolo_dataset

if TYPE_CHECKING:  # pragma: no cover
    from cervkit.data.table import Manifest

DEFAULT_AUGMENT: dict[str, float] = {
    "degrees": 10.0, "translate": 0.1, "scale": 0.4, "fliplr": 0.5, "flipud": 0.0,
    "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.4, "mosaic": 1.0, "mixup": 0.0, "close_mosaic": 5,
    "intensity": 0.3,
}
EMA_DECAY, EMA_TAU = 0.99, 50.0
QUICK_EPOCHS = 2
QUICK_IMGSZ = 160
CPU_MAX_MINUTES = 15.0
"""The detector's (and YOLO-seg's) default cap on a CPU (``max_minutes="auto"``): ``cervkit train`` then fits a
30-minute CPU budget. On CUDA the default is no cap: the paper's 200 epochs with patience 20."""
RESULT_COLUMNS = {"box_loss": "train/box_loss", "val_box_loss": "val/box_loss", "precision": "metrics/precision(B)",
                  "recall": "metrics/recall(B)", "mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)"}


@dataclass
class DetectorRun:
    """What :func:`train_detector` wrote.

    Attributes
    ----------
    run_dir : pathlib.Path
        ``<run_dir>/detector``.
    weights : pathlib.Path
        ``weights/best.pt`` (load it with :meth:`cervkit.inference.detector.Detector.load`).
    results_csv, config_json, curves_png, data_yaml : pathlib.Path
        Per-epoch metrics, the run's configuration, the training curves, the dataset.
    epochs_run : int
        Epochs actually trained (early stopping may end sooner).
    best_epoch : int
        1-based epoch with the best fitness (0.1·mAP50 + 0.9·mAP50-95).
    seconds : float
        Wall time of training.
    metrics : dict
        Validation metrics of the best epoch (``precision``, ``recall``, ``mAP50``, ``mAP50-95``).
    stop_reason : str
        ``early_stop``, ``epochs_done`` or ``time_cap`` (:data:`cervkit.training.limits.STOP_REASONS`).
    max_minutes : float or None
        The wall-clock cap that was in force (None: none).
    """

    run_dir: Path
    weights: Path
    results_csv: Path
    config_json: Path
    curves_png: Path
    data_yaml: Path
    epochs_run: int
    best_epoch: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    stop_reason: str = "epochs_done"
    max_minutes: float | None = None


def time_cap_callback(max_seconds: float) -> Any:
    """An ``on_fit_epoch_end`` callback that stops training once ``max_seconds`` have passed.

    Kept for callers of earlier versions; the trainers use :class:`cervkit.training.limits.YoloStopWatch`,
    which also records why training stopped. Ultralytics' own ``time`` argument is not a cap: it
    re-estimates the number of epochs to *fill* the time, ignoring ``epochs``.

    Parameters
    ----------
    max_seconds : float
        Training time allowed, in seconds.

    Returns
    -------
    YoloStopWatch
        The callback.
    """
    return YoloStopWatch(float(max_seconds) / 60.0)


def read_results(results_csv: str | PathLike[str]) -> pd.DataFrame:
    """Read ultralytics' results.csv with stripped column names.

    Parameters
    ----------
    results_csv : str or PathLike
        The file.

    Returns
    -------
    pandas.DataFrame
        One row per epoch.
    """
    table = pd.read_csv(results_csv)
    table.columns = [c.strip() for c in table.columns]
    return table


def plot_curves(results_csv: str | PathLike[str], out_png: str | PathLike[str], *, overwrite: bool = False) -> Path:
    """Plot box loss, mAP50 and mAP50-95 per epoch from a results.csv (matplotlib, no pyplot state).

    Parameters
    ----------
    results_csv : str or PathLike
        Ultralytics' per-epoch results.
    out_png : str or PathLike
        Destination PNG.
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written PNG.
    """
    import io

    from matplotlib.figure import Figure

    check_writable(out_png, overwrite)
    table = read_results(results_csv)
    fig = Figure(figsize=(10, 3.4), dpi=100)
    axes = fig.subplots(1, 3)
    epochs = table["epoch"].to_numpy()
    for column, label in ((RESULT_COLUMNS["box_loss"], "train"), (RESULT_COLUMNS["val_box_loss"], "val")):
        if column in table:
            axes[0].plot(epochs, table[column], label=label)
    axes[0].set(title="box loss", xlabel="epoch")
    axes[0].legend()
    for ax, key in zip(axes[1:], ("mAP50", "mAP50-95")):
        if RESULT_COLUMNS[key] in table:
            ax.plot(epochs, table[RESULT_COLUMNS[key]], color="C2")
        ax.set(title=f"val {key}", xlabel="epoch", ylim=(0, 1))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(out_png, buf.getvalue(), overwrite=overwrite)


def _best_row(table: pd.DataFrame) -> tuple[int, dict[str, float]]:
    """The 1-based best epoch (ultralytics' fitness) and its metrics."""
    m50, m95 = table[RESULT_COLUMNS["mAP50"]], table[RESULT_COLUMNS["mAP50-95"]]
    i = int(np.argmax((0.1 * m50 + 0.9 * m95).to_numpy()))
    keys = ("precision", "recall", "mAP50", "mAP50-95")
    return int(table["epoch"].iloc[i]), {k: float(table[RESULT_COLUMNS[k]].iloc[i]) for k in keys}


def _data_summary(data_dir: Path) -> dict[str, Any]:
    """Images and boxes per split of a dataset written by build_yolo_dataset."""
    sources = pd.read_csv(data_dir / "sources.csv")
    return {str(s): {"images": int(len(g)), "boxes": int(g["n_boxes"].sum()),
                     "patients": int(g["patient_id"].nunique())} for s, g in sources.groupby("split")}


def ema_callback(decay: float, tau: float) -> Any:
    """An ``on_train_start`` callback giving the trainer's ModelEMA a shorter memory.

    Parameters
    ----------
    decay : float
        The EMA's final decay.
    tau : float
        Ramp-up length in updates: the decay at update ``x`` is ``decay * (1 - exp(-x / tau))``.

    Returns
    -------
    callable
        ``callback(trainer)``.
    """
    import math

    def callback(trainer: Any) -> None:
        if getattr(trainer, "ema", None) is not None:
            trainer.ema.decay = lambda x: decay * (1 - math.exp(-x / tau))

    return callback


def init_record(weights: str | PathLike[str] | None) -> dict[str, Any]:
    """What a YOLO stage starts from: ``weights`` (path or None) and its ``weights_sha256``.

    Parameters
    ----------
    weights : str or PathLike, optional
        The ``.pt`` fine-tuned from, or None (from scratch).

    Returns
    -------
    dict
        To be completed with ``state_sha256`` by :func:`cervkit.training.finetune.init_record_callback`.
    """
    if weights is None:
        return {"weights": None, "weights_sha256": None}
    return {"weights": str(Path(weights).resolve()), "weights_sha256": sha256_file(weights)}


def train_detector(manifest: Manifest | str | PathLike[str], run_dir: str | PathLike[str], *,
                   epochs: int = 200, patience: int = 20, imgsz: int = 320, batch: int = 8,
                   max_minutes: MaxMinutes = AUTO, cpu_max_minutes: float | None = CPU_MAX_MINUTES,
                   weights: str | PathLike[str] | None = None, classes: str = "single",
                   level_names: Sequence[str] | None = None, seed: int = 0,
                   device: str | int | None = None, workers: int = 0, augment: Mapping[str, float] | None = None,
                   overrides: Mapping[str, Any] | None = None, ema: tuple[float, float] = (EMA_DECAY, EMA_TAU),
                   quick: bool | None = None, input_norm: str = "none", zoom_copies: Sequence[float] = (),
                   verbose: bool = False, overwrite: bool = False) -> DetectorRun:
    """Train YOLOv11n on a manifest's ``train`` split, validating (and early stopping) on ``val``.

    Parameters
    ----------
    manifest : Manifest or path
        Manifest with a ``split`` column (see :func:`cervkit.data.manifest.ensure_split`).
    run_dir : str or PathLike
        The run folder; this stage writes into ``run_dir/detector/``.
    epochs, patience : int
        Maximum epochs; stop after ``patience`` epochs without improvement (paper: 20).
    imgsz, batch : int
        Letterboxed training size and batch size (320 and 8: on the real MRI set this reached 99 % test
        recall after ~40 epochs, ~5 min on 2 CPU cores).
    max_minutes : float, "auto" or None
        Wall-clock cap in minutes: training stops after the epoch in which it passes (best weights kept;
        :class:`cervkit.training.limits.YoloStopWatch`, not ultralytics' ``time``); None: no cap. ``"auto"``
        (default): ``cpu_max_minutes`` on a CPU, no cap on CUDA. The limits in force are printed at the start and
        recorded in ``config.json`` (``limits``: ``max_minutes``, ``stop_reason``, ``epochs_run``).
    cpu_max_minutes : float, optional
        The cap ``"auto"`` means on a CPU (default :data:`CPU_MAX_MINUTES`; fine-tuning passes its own).
    weights : str or PathLike, optional
        A ``.pt`` to fine-tune; default None trains from scratch (``yolo11n.yaml``, no download).
        ``config.json`` records ``init`` (this file's SHA-256 and ``state_sha256``, the checksum of the
        weights the first epoch starts from; see :mod:`cervkit.training.finetune`).
    classes : {"single", "levels"}
        One ``vertebra`` class or C2..C7 classes (see :mod:`cervkit.training.yolo_dataset`).
    level_names : sequence of str, optional
        Class names for ``classes="levels"`` (default C2..C7; e.g. T11..L5 for the lumbar set).
    seed : int
        Seed for ultralytics (deterministic mode on).
    device : str or int, optional
        Default CUDA GPU 0 when available, else CPU.
    workers : int
        Data-loader workers (0: load in the main process).
    augment : mapping, optional
        Overrides of :data:`DEFAULT_AUGMENT` (ultralytics augmentation hyper-parameters).
    overrides : mapping, optional
        Any other ultralytics train argument (``lr0``, ``optimizer``, ``cache``, ``nbs`` …).
    ema : tuple of float, default (0.99, 50)
        Weight-EMA maximum decay and ramp time constant in updates (ultralytics: 0.9999, 2000).
    quick : bool, optional
        Quick mode (default :func:`cervkit.core.config.quick_mode`): at most 2 epochs, imgsz at most 160 (a
        fine-tune from ``weights`` keeps its image size).
    input_norm : {"none", "equalize"}
        Per-image normalisation of the detector's input (:func:`cervkit.inference.detector.detector_input`),
        recorded in ``config.json`` so :class:`cervkit.inference.detector.Detector` applies it at prediction.
        Default ``"none"``: at the full default budget on the real MRI, ``"equalize"`` scored lower unshifted
        (test Dice 0.951 vs 0.957) and under noise and zoom, and the scanner augmentation alone already held
        T1-like, inverted, gamma and window shifts (``benchmarks/bench_robustness.py``).
    zoom_copies : sequence of float, optional
        Field-of-view augmentation: every training image is also learnt zoomed by each factor (e.g. ``(0.5, 2.0)``;
        :func:`cervkit.training.yolo_dataset.build_yolo_dataset`), recorded in ``config.json``.
    verbose : bool
        Let ultralytics print its progress.
    overwrite : bool
        Replace an existing ``run_dir/detector``; otherwise FileExistsError.

    Returns
    -------
    DetectorRun
        Paths and summary of the run.
    """
    from cervkit.core.config import quick_mode

    quick = quick_mode() if quick is None else bool(quick)
    if quick:  # a fine-tune keeps its weights' image size: at 160 a detector learnt at 320 loses its scale
        epochs = min(epochs, QUICK_EPOCHS)
        imgsz = imgsz if weights is not None else min(imgsz, QUICK_IMGSZ)
    out = Path(run_dir).resolve() / "detector"
    check_writable(out / "config.json", overwrite)
    data_yaml = build_yolo_dataset(manifest, out / "data", imgsz=imgsz, classes=classes, level_names=level_names,
                                   input_norm=input_norm, zoom_copies=tuple(zoom_copies), overwrite=overwrite)
    ul = import_ultralytics()
    dev = ultralytics_device(device)
    cap, cap_source = resolve_max_minutes(max_minutes, cpu_max_minutes, dev)
    announce_limits("detector", epochs, patience, cap, cap_source)
    aug = {**DEFAULT_AUGMENT, **dict(augment or {})}
    args: dict[str, Any] = {
        "data": str(data_yaml), "epochs": int(epochs), "patience": int(patience), "imgsz": int(imgsz),
        "batch": int(batch), "seed": int(seed), "deterministic": True, "device": dev, "workers": int(workers),
        "project": str(out.parent), "name": out.name, "exist_ok": True, "plots": False, "val": True,
        "amp": amp_setting("cpu" if dev == "cpu" else "cuda"), "verbose": verbose, "cache": "ram",
        "nbs": int(batch),
        **{k: v for k, v in aug.items() if k != "intensity"}, **dict(overrides or {}),
    }
    if aug.get("intensity", 0) > 0 and "augmentations" not in args:
        from cervkit.transforms.scanner import detector_transforms

        args["augmentations"] = detector_transforms(float(aug["intensity"]))
    if not verbose:
        from ultralytics.utils import LOGGER

        level = LOGGER.level
        LOGGER.setLevel(40)
    model = ul.YOLO(str(weights) if weights is not None else "yolo11n.yaml")
    model.add_callback("on_train_start", ema_callback(ema[0], ema[1]))
    init = init_record(weights)
    model.add_callback("on_train_start", init_record_callback(init))
    watch = YoloStopWatch(cap)
    model.add_callback("on_fit_epoch_end", watch)
    start = time.perf_counter()
    try:
        model.train(**args)
    finally:
        if not verbose:
            LOGGER.setLevel(level)
    seconds = time.perf_counter() - start
    results_csv = out / "results.csv"
    table = read_results(results_csv)
    stop_reason = watch.reason(len(table), epochs)
    best_epoch, metrics = _best_row(table)
    curves = plot_curves(results_csv, out / "curves.png", overwrite=True)
    config = {"arguments": {"manifest": str(getattr(manifest, "path", manifest)), "run_dir": str(run_dir),
                            "epochs": epochs, "patience": patience, "imgsz": imgsz, "batch": batch,
                            "max_minutes": max_minutes, "cpu_max_minutes": cpu_max_minutes,
                            "weights": None if weights is None else str(weights), "classes": classes,
                            "level_names": None if level_names is None else list(level_names),
                            "seed": seed, "device": dev, "workers": workers, "quick": quick,
                            "input_norm": input_norm, "zoom_copies": [float(f) for f in zoom_copies],
                            "augment": aug, "overrides": dict(overrides or {}), "ema": list(ema)},
              "ultralytics_args": {k: v for k, v in args.items() if k != "verbose"},
              "init": init, "versions": versions(), "data": _data_summary(out / "data"),
              "limits": limits_record(epochs, patience, cap, cap_source, stop_reason, len(table)),
              "result": {"epochs_run": int(len(table)), "best_epoch": best_epoch, "seconds": round(seconds, 2),
                         "metrics": metrics}}
    config_json = atomic_write_bytes(out / "config.json", json.dumps(config, indent=2, default=str).encode(),
                                     overwrite=True)
    return DetectorRun(out, out / "weights" / "best.pt", results_csv, config_json, curves, data_yaml,
                       int(len(table)), best_epoch, seconds, metrics, stop_reason, cap)
