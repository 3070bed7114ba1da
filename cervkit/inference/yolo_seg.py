"""The YOLOv11-seg baseline at prediction time: instance masks straight from ultralytics, as one label map.

Training lives in :mod:`cervkit.training.yolo_seg`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.device import ultralytics_device
from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.core.ultralytics_env import import_ultralytics
from cervkit.inference.cascade import CascadePrediction
from cervkit.labels.instances import labels_from_instances, relabel_top_to_bottom

STAGE_DIR = "model"


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
        return cls(model, imgsz=imgsz, device=ultralytics_device(device), **options)

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
        from cervkit.inference.detector import to_uint8_rgb

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
