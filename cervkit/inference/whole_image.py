"""Whole-image baselines of the paper: U-Net3+ and DeepLabV3+ on the full image, no detector.

The paper compares YOLO-UNet with single-stage semantic segmenters. Here they are run the same way:

* **input**: the whole grayscale image, **plainly resized** to ``size`` × ``size`` (no letterbox: the
  network sees the anatomy stretched when the image is not square, in training and inference alike, and
  the probability map is resized back to the input's own size, so nothing is lost to padding); then
  normalised per image to zero mean and unit standard deviation (:func:`prepare_image`, with the
  crop segmenter's :func:`~cervkit.labels.crops.normalise_crop` and intensity augmentation);
* **target** (training, :class:`WholeImageDataset`): one binary mask, "any vertebral body";
* **output** (:class:`WholeImageModel`): the probability map at the input size is thresholded and split into
  instances by connected components (:func:`prob_to_instances`: 4-connectivity, tiny islands dropped,
  numbered top to bottom). Touching vertebrae merge into one instance: that is the weakness of
  semantic segmentation the cascade avoids, and the reason these are baselines.

Training lives in :mod:`cervkit.training.whole_image` (:func:`train_whole_image`), which writes
``run_dir/model/`` (``model.pt``, ``config.json``, ``history.csv``, ``curves.png``).
"""

from __future__ import annotations

import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.inference.cascade import CascadePrediction
from cervkit.io.resize import resize
from cervkit.labels.crops import normalise_crop
from cervkit.labels.instances import boxes_from_labels, relabel_top_to_bottom

WHOLE_IMAGE_MODELS = ("unet3plus", "deeplabv3plus")
STAGE_DIR = "model"
MODEL_FILE = "model.pt"
NORMALISATION = "zscore-image"
"""Name of the per-image normalisation stored in checkpoints."""


def prepare_image(image: np.ndarray | Image, size: int) -> np.ndarray:
    """Resize a whole image to ``size`` × ``size`` and normalise it, as the network sees it.

    Parameters
    ----------
    image : numpy.ndarray or Image
        2D float image in [0, 1].
    size : int
        Side of the square network input.

    Returns
    -------
    numpy.ndarray
        float32 (size, size).
    """
    arr = image.array if isinstance(image, Image) else np.asarray(image, np.float32)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise CervkitInputError(f"expected a 2D grayscale image, got shape {arr.shape}")
    return normalise_crop(resize(arr.astype(np.float32, copy=False), (int(size), int(size)), nearest=False))


def prob_to_instances(prob: np.ndarray, *, threshold: float = 0.5, min_area: int = 20,
                      min_fraction: float = 0.0, connectivity: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Threshold a foreground probability map and split it into instances numbered top to bottom.

    Parameters
    ----------
    prob : numpy.ndarray
        float (H, W) probabilities.
    threshold : float
        A pixel is foreground when its probability is strictly above this.
    min_area : int
        Components with fewer pixels are dropped (islands).
    min_fraction : float
        Components smaller than this fraction of the largest component are dropped too.
    connectivity : int
        1 for 4-neighbours (default: diagonal contacts do not merge vertebrae), 2 for 8-neighbours.

    Returns
    -------
    labels : numpy.ndarray
        uint8 (H, W) label map 1..K top to bottom.
    mean_prob : numpy.ndarray
        float32 (K,) mean probability inside each instance (row k-1 ↔ label k).
    n_components : int
        Components found before the small ones were dropped.
    """
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim != 2:
        raise CervkitInputError(f"expected a 2D probability map, got shape {p.shape}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    comp, n = ndimage.label(p > threshold, structure=structure)
    if n:
        areas = np.bincount(comp.ravel(), minlength=n + 1)
        limit = max(int(min_area), float(min_fraction) * float(areas[1:].max()))
        comp[areas[comp] < limit] = 0
    if len(np.unique(comp)) - 1 > 255:
        raise CervkitInputError("more than 255 instances do not fit a uint8 label map")
    labels = relabel_top_to_bottom(comp)
    k = int(labels.max())
    sums = np.bincount(labels.ravel(), weights=p.ravel(), minlength=k + 1)
    counts = np.bincount(labels.ravel(), minlength=k + 1)
    mean_prob = (sums[1:] / np.maximum(counts[1:], 1)).astype(np.float32)
    return labels, mean_prob, int(n)


def _model_file(path: str | PathLike[str]) -> Path:
    """``model.pt`` from a file, a ``model/`` folder or a run folder."""
    path = Path(path)
    for candidate in (path, path / MODEL_FILE, path / STAGE_DIR / MODEL_FILE):
        if candidate.is_file():
            return candidate
    raise CervkitInputError(f"no whole-image model here (looked for {MODEL_FILE} and {STAGE_DIR}/{MODEL_FILE})",
                            path)


class WholeImageModel:
    """A trained whole-image segmenter behind ``predict(image) -> CascadePrediction``.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits (N, 1, S, S) in eval mode.
    size : int
        Side of the network input.
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    threshold, min_area, min_fraction : float, int, float
        See :func:`prob_to_instances`; by default a component is kept when its probability is above 0.5 on at
        least 20 pixels and 5 % of the largest component's area.
    config : dict, optional
        The training config stored with the checkpoint.
    """

    def __init__(self, model: torch.nn.Module, *, size: int, device: str | torch.device | None = None,
                 threshold: float = 0.5, min_area: int = 20, min_fraction: float = 0.05,
                 config: dict[str, Any] | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.size = int(size)
        self.threshold = float(threshold)
        self.min_area = int(min_area)
        self.min_fraction = float(min_fraction)
        self.config = dict(config or {})

    @classmethod
    def load(cls, path: str | PathLike[str], *, device: str | torch.device | None = None,
             **options: Any) -> WholeImageModel:
        """Load a model written by :func:`cervkit.training.whole_image.train_whole_image`.

        Parameters
        ----------
        path : str or PathLike
            A run folder, its ``model/`` folder or the ``model.pt`` file.
        device : str or torch.device, optional
            Default CUDA when available, else CPU.
        **options
            ``threshold``, ``min_area``, ``min_fraction``.

        Returns
        -------
        WholeImageModel
            Ready to :meth:`predict`.
        """
        from cervkit.models.factory import load_checkpoint

        file = _model_file(path)
        dev = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        model, config = load_checkpoint(file, map_location=dev)
        if config.get("normalisation") != NORMALISATION or "size" not in config:
            raise CervkitInputError("not a whole-image checkpoint (no size / normalisation "
                                    f"{NORMALISATION!r} in its config)", file)
        return cls(model, size=int(config["size"]), device=dev, config=config, **options)

    def predict_prob(self, image: np.ndarray | Image) -> np.ndarray:
        """Foreground probability at the input's size (the network output resized back, bilinear).

        Parameters
        ----------
        image : numpy.ndarray or Image
            2D float image in [0, 1].

        Returns
        -------
        numpy.ndarray
            float32 (H, W) in [0, 1].
        """
        arr = image.array if isinstance(image, Image) else np.asarray(image, np.float32)
        x = torch.from_numpy(prepare_image(arr, self.size)[None, None]).to(self.device)
        with torch.inference_mode():
            prob = torch.sigmoid(self.model(x).float())[0, 0].cpu().numpy()
        return np.clip(resize(prob, arr.shape, nearest=False), 0.0, 1.0).astype(np.float32)

    def predict(self, image: np.ndarray | Image) -> CascadePrediction:
        """Segment every vertebral body of one image.

        Parameters
        ----------
        image : numpy.ndarray or Image
            2D float image in [0, 1].

        Returns
        -------
        CascadePrediction
            Label map of the input's size; boxes of the instances; scores = mean_prob = mean probability
            inside each instance; classes 0; ``n_detected`` = components before dropping islands.
        """
        t0 = time.perf_counter()
        prob = self.predict_prob(image)
        t1 = time.perf_counter()
        labels, mean_prob, n = prob_to_instances(prob, threshold=self.threshold, min_area=self.min_area,
                                                 min_fraction=self.min_fraction)
        t2 = time.perf_counter()
        k = len(mean_prob)
        return CascadePrediction(labels=labels, boxes=boxes_from_labels(labels).reshape(-1, 4).astype(np.float32),
                                 scores=mean_prob.copy(), mean_prob=mean_prob, classes=np.zeros(k, np.int64),
                                 n_detected=n, seconds={"detect": 0.0, "segment": t1 - t0, "paste": t2 - t1,
                                                        "total": t2 - t0}, prob=prob)
