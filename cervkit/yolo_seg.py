"""The YOLO-seg baseline: ultralytics YOLOv11n-seg, one stage, instance masks straight from the detector.

Training (:func:`train_yolo_seg`) mirrors :func:`cervkit.detector.train_detector` — scratch
``yolo11n-seg.yaml`` (nothing downloaded), offline ultralytics (:func:`cervkit.yolo_env.import_ultralytics`),
``nbs = batch``, the short-memory weight EMA and the wall-clock cap of :mod:`cervkit.detector_train`
(imported, see that module's docstring for why) — on polygon labels
(:func:`cervkit.yolo_labels.write_yolo_seg_labels`: the outer contour of each vertebral body). It writes
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

from cervkit.cascade import CascadePrediction
from cervkit.detector_train import (DEFAULT_AUGMENT, EMA_DECAY, EMA_TAU, QUICK_EPOCHS, QUICK_IMGSZ, _ema_callback,
                                    _time_cap_callback, auto_device, init_record, read_results)
from cervkit.errors import CervkitInputError
from cervkit.fileutil import atomic_write_bytes, check_writable
from cervkit.finetune import init_record_callback
from cervkit.image import Image
from cervkit.instances import labels_from_instances, relabel_top_to_bottom
from cervkit.yolo_env import amp_setting, import_ultralytics

STAGE_DIR = "model"
MODEL_YAML = "yolo11n-seg.yaml"
METRIC_COLUMNS = {"mask_mAP50": "metrics/mAP50(M)", "mask_mAP50-95": "metrics/mAP50-95(M)",
                  "box_mAP50": "metrics/mAP50(B)", "box_mAP50-95": "metrics/mAP50-95(B)"}


@dataclass
class YoloSegRun:
    """What :func:`train_yolo_seg` wrote: ``run_dir`` (``<run>/model``), ``weights`` (best.pt),
    ``results_csv``, ``config_json``, ``curves_png``, ``epochs_run``, ``best_epoch``, ``seconds``, ``metrics``."""

    run_dir: Path
    weights: Path
    results_csv: Path
    config_json: Path
    curves_png: Path
    epochs_run: int
    best_epoch: int
    seconds: float
    metrics: dict[str, float]


def masks_to_labels(masks: Sequence[np.ndarray] | np.ndarray, scores: Sequence[float] | np.ndarray, *,
                    min_area: int = 20) -> tuple[np.ndarray, list[int]]:
    """Combine instance masks into one label map; overlaps go to the higher score.

    Parameters
    ----------
    masks : array (N, H, W) or sequence of (H, W) arrays
        Binary instance masks (non-zero = inside), all of one size.
    scores : sequence of float
        One confidence per mask.
    min_area : int
        Instances with fewer pixels after overlaps are resolved are dropped.

    Returns
    -------
    labels : numpy.ndarray
        uint8 (H, W), instances numbered 1..K top to bottom.
    kept : list of int
        ``kept[k - 1]`` is the index in ``masks`` of label ``k``.
    """
    arrays = [np.asarray(m) != 0 for m in masks]
    if not arrays:
        raise CervkitInputError("masks_to_labels needs at least one mask (or use an empty label map)")
    painted = labels_from_instances(arrays, arrays[0].shape, scores, relabel=False)
    areas = np.bincount(painted.ravel(), minlength=len(arrays) + 1)
    painted[areas[painted] < max(1, int(min_area))] = 0
    labels = relabel_top_to_bottom(painted)
    kept = [int(painted[labels == k][0]) - 1 for k in range(1, int(labels.max()) + 1)]
    return labels, kept


def _label_map(mask: np.ndarray) -> np.ndarray:
    """Instance label map of a mask; a binary mask is split into connected components."""
    from cervkit.instances import instances_from_labels

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
        Destination folder (layout of :func:`cervkit.yolo_dataset.build_yolo_dataset`).
    splits : sequence of str
        Splits to write.
    overwrite : bool
        Replace an existing dataset; otherwise FileExistsError.

    Returns
    -------
    pathlib.Path
        The ``data.yaml`` file.
    """
    from cervkit.io import read_mask
    from cervkit.yolo_dataset import build_yolo_dataset
    from cervkit.yolo_labels import write_yolo_seg_labels

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
    """Plot box/mask losses and box/mask mAP50 per epoch (matplotlib, no pyplot state)."""
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
                   imgsz: int = 320, batch: int = 8, max_minutes: float | None = 15.0, seed: int = 0,
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
    epochs, patience, imgsz, batch, max_minutes, seed, device, workers, augment, overrides, ema, verbose
        As in :func:`cervkit.detector.train_detector` (same defaults).
    weights : str or PathLike, optional
        A YOLO-seg ``.pt`` to fine-tune (see :mod:`cervkit.finetune`); default None: ``yolo11n-seg.yaml``.
    quick : bool, optional
        Quick mode (default :func:`cervkit.config.quick_mode`): the detector's quick epochs and image size.
    overwrite : bool
        Replace an existing ``run_dir/model``; otherwise FileExistsError.

    Returns
    -------
    YoloSegRun
        Paths and summary.
    """
    from cervkit.config import quick_mode
    from cervkit.runs import versions

    quick = quick_mode() if quick is None else bool(quick)
    if quick:
        epochs, imgsz = min(epochs, QUICK_EPOCHS), min(imgsz, QUICK_IMGSZ)
    out = Path(run_dir).resolve() / STAGE_DIR
    check_writable(out / "config.json", overwrite)
    data_yaml = build_yolo_seg_dataset(manifest, out / "data", overwrite=overwrite)
    ul = import_ultralytics()
    dev = auto_device(device)
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
    model.add_callback("on_train_start", _ema_callback(ema[0], ema[1]))
    init = init_record(weights)
    model.add_callback("on_train_start", init_record_callback(init))
    if max_minutes:
        model.add_callback("on_fit_epoch_end", _time_cap_callback(float(max_minutes) * 60.0))
    start = time.perf_counter()
    try:
        model.train(**args)
    finally:
        LOGGER.setLevel(level)
    seconds = time.perf_counter() - start
    results_csv = out / "results.csv"
    table = read_results(results_csv)
    best = int(np.argmax(_fitness(table)))
    metrics = {k: float(table[c].iloc[best]) for k, c in METRIC_COLUMNS.items()}
    best_epoch = int(table["epoch"].iloc[best])
    curves = plot_seg_curves(table, out / "curves.png")
    config = {"arguments": {"manifest": str(getattr(manifest, "path", manifest)), "run_dir": str(run_dir),
                            "epochs": epochs, "patience": patience, "imgsz": imgsz, "batch": batch,
                            "max_minutes": max_minutes, "seed": seed, "device": dev, "workers": workers,
                            "weights": None if weights is None else str(weights), "quick": quick, "augment": aug,
                            "overrides": dict(overrides or {}), "ema": list(ema)},
              "model": MODEL_YAML, "init": init,
              "ultralytics_args": {k: v for k, v in args.items() if k != "verbose"},
              "versions": versions(), "result": {"epochs_run": int(len(table)), "best_epoch": best_epoch,
                                                 "seconds": round(seconds, 2), "metrics": metrics}}
    config_json = atomic_write_bytes(out / "config.json", json.dumps(config, indent=2, default=str).encode(),
                                     overwrite=True)
    return YoloSegRun(out, out / "weights" / "best.pt", results_csv, config_json, curves, int(len(table)),
                      best_epoch, seconds, metrics)


class YoloSeg:
    """A trained YOLO-seg model behind ``predict(image) -> CascadePrediction``; create it with :meth:`load`.

    Parameters
    ----------
    model : ultralytics.YOLO
        The loaded segmentation model.
    imgsz : int
        Letterbox size at prediction.
    device : str
        Ultralytics device string.
    conf, iou : float
        Confidence and NMS IoU thresholds.
    min_area : int
        Smallest instance kept, in pixels.
    """

    def __init__(self, model: Any, *, imgsz: int, device: str, conf: float = 0.25, iou: float = 0.5,
                 min_area: int = 20) -> None:
        self.model = model
        self.imgsz = int(imgsz)
        self.device = device
        self.conf = float(conf)
        self.iou = float(iou)
        self.min_area = int(min_area)

    @classmethod
    def load(cls, path: str | PathLike[str], *, imgsz: int | None = None, device: str | int | None = None,
             **options: Any) -> YoloSeg:
        """Load from a run folder, its ``model/`` folder or a ``.pt`` file.

        Parameters
        ----------
        path : str or PathLike
            Where the weights are.
        imgsz : int, optional
            Prediction size (default: the training size).
        device : str or int, optional
            Default CUDA GPU 0 when available, else CPU.
        **options
            ``conf``, ``iou``, ``min_area``.

        Returns
        -------
        YoloSeg
            Ready to :meth:`predict`.
        """
        p = Path(path)
        candidates = [p] if p.suffix == ".pt" else [p / STAGE_DIR / "weights" / "best.pt", p / "weights" / "best.pt"]
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise CervkitInputError("no YOLO-seg weights found (expected RUN/model/weights/best.pt or a .pt)", p)
        config_path = weights.parent.parent / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        model = import_ultralytics().YOLO(str(weights), task="segment")
        if imgsz is None:
            imgsz = int(config.get("arguments", {}).get("imgsz") or model.overrides.get("imgsz") or 320)
        return cls(model, imgsz=imgsz, device=auto_device(device), **options)

    def predict(self, image: np.ndarray | Image) -> CascadePrediction:
        """Segment every vertebral body of one image.

        Parameters
        ----------
        image : numpy.ndarray or Image
            2D float image in [0, 1].

        Returns
        -------
        CascadePrediction
            Label map of the input's size; YOLO boxes, confidences and classes of the kept instances.
        """
        from cervkit.detector import to_uint8_rgb

        rgb = to_uint8_rgb(image)
        shape = rgb.shape[:2]
        t0 = time.perf_counter()
        result = self.model.predict(rgb, imgsz=self.imgsz, conf=self.conf, iou=self.iou, max_det=50,
                                    device=self.device, retina_masks=True, verbose=False, save=False)[0]
        t1 = time.perf_counter()
        n = len(result.boxes)
        if n and result.masks is not None:
            masks = result.masks.data.cpu().numpy() > 0.5
            scores = result.boxes.conf.cpu().numpy().astype(np.float32)
            labels, kept = masks_to_labels(masks, scores, min_area=self.min_area)
        else:
            labels, kept, scores = np.zeros(shape, np.uint8), [], np.zeros(0, np.float32)
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)[kept] if n else np.zeros((0, 4),
                                                                                                            np.float32)
        classes = result.boxes.cls.cpu().numpy().astype(np.int64)[kept] if n else np.zeros(0, np.int64)
        t2 = time.perf_counter()
        return CascadePrediction(labels=labels, boxes=boxes, scores=scores[kept], mean_prob=scores[kept].copy(),
                                 classes=classes, n_detected=n,
                                 seconds={"detect": t1 - t0, "segment": 0.0, "paste": t2 - t1, "total": t2 - t0})
