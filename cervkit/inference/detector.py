"""Stage 1 of YOLO-UNet at prediction time: the YOLOv11 vertebral-body detector and its input normalisation.

Training lives in :mod:`cervkit.training.detector`; this module holds inference: :class:`Detector` loads a run folder (or a ``.pt``) and predicts
:class:`Detections` for grayscale images of any size. Boxes come back in the input
image's pixel-edge coordinates ``(x_min, y_min, x_max, y_max)`` (ultralytics undoes
its letterbox), clipped to the image and sorted top to bottom.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.device import ultralytics_device
from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.core.ultralytics_env import import_ultralytics

__all__ = ["INPUT_NORMS", "Detections", "Detector", "box_iou", "detector_input", "match_boxes", "to_detections",
           "to_uint8_rgb"]



INPUT_NORMS = ("none", "equalize")
"""Detector input normalisations: as read, or per-image histogram equalisation (:func:`detector_input`)."""


def detector_input(array: np.ndarray, norm: str = "none") -> np.ndarray:
    """The detector's view of a float [0, 1] grayscale image, the same in training and at prediction.

    ``"equalize"`` maps every intensity to the fraction of the image's pixels darker than it, scaled so
    the brightest value is 1 (exact histogram equalisation), so any strictly increasing intensity remap
    (gamma, contrast, another scanner's calibration) gives the same detector input; a clipping window
    changes it only where it clips. The darkest value stays 0 however many pixels share it, so a wider
    field of view padded with black does not turn the background grey.

    Parameters
    ----------
    array : numpy.ndarray
        2D float image in [0, 1].
    norm : {"none", "equalize"}
        The normalisation.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) in [0, 1].
    """
    if norm not in INPUT_NORMS:
        raise CervkitInputError(f"detector input_norm must be one of {INPUT_NORMS}, got {norm!r}")
    values = np.asarray(array, dtype=np.float32)
    if norm == "none" or values.size == 0 or float(values.max()) <= float(values.min()):
        return values
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts  # pixels darker than each distinct value
    rank = below / below[-1]  # the darkest value (air, padding) stays 0, the brightest becomes 1
    return rank[inverse.ravel()].reshape(values.shape).astype(np.float32)


@dataclass
class Detections:
    """The detector's output for one image.

    Attributes
    ----------
    boxes : numpy.ndarray
        float32 (N, 4) pixel-edge ``(x_min, y_min, x_max, y_max)`` in the input image's pixels.
    scores : numpy.ndarray
        float32 (N,) confidences.
    classes : numpy.ndarray
        int64 (N,) class ids (0 ``vertebra``, or the level index C2=0 … C7=5).
    image_shape : tuple of int
        (H, W) of the input image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    image_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.boxes)


def to_detections(xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                  image_shape: tuple[int, int]) -> Detections:
    """Clip boxes to the image, drop empty ones and sort top to bottom (by centre row, then column).

    Parameters
    ----------
    xyxy : numpy.ndarray
        (N, 4) boxes in the image's pixel-edge coordinates.
    scores, classes : numpy.ndarray
        (N,) confidences and class ids.
    image_shape : tuple of int
        (H, W) of the image.

    Returns
    -------
    Detections
        Sorted, typed detections.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep]
    conf = np.asarray(scores, dtype=np.float32).reshape(-1)[keep]
    cls = np.asarray(classes).reshape(-1).astype(np.int64)[keep]
    order = np.lexsort(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2))
    return Detections(boxes[order], conf[order], cls[order], (height, width))


def to_uint8_rgb(image: np.ndarray | Image) -> np.ndarray:
    """Turn a float [0, 1] (or uint8) grayscale image into the (H, W, 3) uint8 array ultralytics expects.

    Parameters
    ----------
    image : numpy.ndarray or Image
        2D float image in [0, 1] (values outside are clipped) or uint8.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3), the gray channel repeated.
    """
    array = image.array if isinstance(image, Image) else np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 1:
        raise CervkitInputError(f"expected a 2D grayscale image, got shape {array.shape}")
    if array.dtype == np.uint8:
        gray = array
    else:
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise CervkitInputError("image has NaN or infinite values")
        gray = np.round(values.clip(0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _resolve_weights(path: str | PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Find best.pt (and config.json, when present) from a run folder, its detector/ folder or a .pt."""
    p = Path(path)
    candidates = [p] if p.suffix == ".pt" else [p / "detector" / "weights" / "best.pt", p / "weights" / "best.pt"]
    for weights in candidates:
        if weights.is_file():
            config_path = weights.parent.parent / "config.json"
            config = json.loads(config_path.read_text()) if config_path.is_file() else {}
            return weights, config
    raise CervkitInputError("no detector weights found (expected a .pt, RUN/detector/weights/best.pt "
                            "or RUN/weights/best.pt)", p)


class Detector:
    """A trained YOLO detector; use :meth:`load` to create one.

    Parameters
    ----------
    model : ultralytics.YOLO
        The loaded model.
    weights : pathlib.Path
        Where it was loaded from.
    imgsz : int
        Letterbox size used at prediction (the training size by default).
    device : str
        Ultralytics device string.
    input_norm : {"none", "equalize"}
        Input normalisation the detector was trained with (:func:`cervkit.inference.detector.detector_input`).
    """

    def __init__(self, model: Any, weights: Path, imgsz: int, device: str, input_norm: str = "none") -> None:
        self.model = model
        self.input_norm = input_norm
        self.weights = weights
        self.imgsz = int(imgsz)
        self.device = device
        self.last_seconds: float = 0.0
        self.last_speed_ms: dict[str, float] = {}

    @classmethod
    def load(cls, path: str | PathLike[str], *, imgsz: int | None = None,
             device: str | int | None = None) -> Detector:
        """Load a detector from a run folder (``RUN`` or ``RUN/detector``) or a ``.pt`` file.

        Parameters
        ----------
        path : str or PathLike
            The run folder or weights file.
        imgsz : int, optional
            Prediction size; default the training size (config.json, else the checkpoint's args, else 384).
        device : str or int, optional
            Default CUDA GPU 0 when available, else CPU.

        Returns
        -------
        Detector
            Ready to :meth:`predict`.
        """
        weights, config = _resolve_weights(path)
        ul = import_ultralytics()
        model = ul.YOLO(str(weights), task="detect")
        if imgsz is None:
            train_size = config.get("arguments", {}).get("imgsz") or model.overrides.get("imgsz")
            imgsz = int(train_size) if train_size else 384
        input_norm = config.get("arguments", {}).get("input_norm") or "none"
        return cls(model, weights, imgsz, ultralytics_device(device), input_norm)

    def _input(self, image: np.ndarray | Image) -> np.ndarray | Image:
        """The image as the detector was trained to see it (``input_norm`` of its config)."""
        if self.input_norm == "none":
            return image
        array = image.array if isinstance(image, Image) else np.asarray(image)
        return detector_input(array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array, self.input_norm)

    @property
    def names(self) -> dict[int, str]:
        """Class id → name (``{0: "vertebra"}`` or the levels)."""
        return dict(self.model.names)

    def predict(self, images: Sequence[np.ndarray | Image], *, conf: float = 0.25, iou: float = 0.5,
                max_det: int = 20, batch: int = 16) -> list[Detections]:
        """Detect vertebral bodies in grayscale images of any size.

        Parameters
        ----------
        images : sequence of numpy.ndarray or Image
            2D float images in [0, 1] (or uint8).
        conf, iou : float
            Confidence threshold and NMS IoU threshold.
        max_det : int
            At most this many boxes per image.
        batch : int
            Images per forward pass.

        Returns
        -------
        list of Detections
            One per image, boxes in that image's pixels, sorted top to bottom. Wall time of
            the call is kept in ``last_seconds`` and ultralytics' per-image ms in ``last_speed_ms``.
        """
        if isinstance(images, (np.ndarray, Image)):
            images = [images]
        arrays = [to_uint8_rgb(self._input(im)) for im in images]
        out: list[Detections] = []
        speed = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        start = time.perf_counter()
        for first in range(0, len(arrays), max(1, int(batch))):
            chunk = arrays[first:first + max(1, int(batch))]
            results = self.model.predict(chunk, imgsz=self.imgsz, conf=conf, iou=iou, max_det=max_det,
                                         device=self.device, verbose=False, save=False, batch=len(chunk))
            for array, result in zip(chunk, results):
                b = result.boxes
                out.append(to_detections(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy(),
                                         array.shape[:2]))
                for key in speed:
                    speed[key] += float(result.speed.get(key) or 0.0) / max(1, len(arrays))
        self.last_seconds = time.perf_counter() - start
        self.last_speed_ms = speed
        return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of pixel-edge boxes (:func:`torchvision.ops.box_iou`, in float64).

    Parameters
    ----------
    a, b : numpy.ndarray
        (N, 4) and (M, 4) ``(x_min, y_min, x_max, y_max)``.

    Returns
    -------
    numpy.ndarray
        float64 (N, M); 0 for a pair whose union is empty (two zero-area boxes).
    """
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    a = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return torch.nan_to_num(tv_box_iou(a, b), nan=0.0).numpy()


def match_boxes(pred: np.ndarray, gt: np.ndarray, iou_threshold: float = 0.5) -> dict[str, int]:
    """Match predicted to ground-truth boxes one to one (Hungarian on IoU) and count hits.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        (N, 4) and (M, 4) pixel-edge boxes.
    iou_threshold : float
        A pair counts as a hit when its IoU is at least this.

    Returns
    -------
    dict
        ``tp`` (matched pairs), ``fp`` (unmatched predictions), ``fn`` (missed ground truth).
    """
    from scipy.optimize import linear_sum_assignment

    iou = box_iou(pred, gt)
    tp = 0
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        tp = int(np.sum(iou[rows, cols] >= iou_threshold))
    return {"tp": tp, "fp": int(len(iou) - tp), "fn": int(iou.shape[1] - tp)}
