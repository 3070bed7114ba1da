"""The paper's data augmentation, as albumentations transforms that keep image, mask and boxes in sync.

Wang et al. (2025) augment with rotation (±10°), translation (±5 px), scaling
(90–110 %), flips, random cropping and salt-and-pepper noise. Each is one named
albumentations transform (:func:`paper_transforms`, usable alone, e.g. for a grid
in a notebook); :func:`paper_pipeline` chains them with ``pascal_voc`` box handling.

* Masks (label maps) always use nearest-neighbour interpolation and a 0 fill, so
  label values are never blended or invented.
* The random crop keeps 85–100 % of each side (sampled per side) and resizes back
  to the input size, so at most 7.5 % of a side is cut: vertebrae touching the
  border can be clipped, but the crop cannot remove one lying further inside.
* Horizontal flip mirrors the anterior side (left/right), which the paper uses.
  Vertical flip is off by default: it reverses top-bottom order (and turns the
  spine upside down); :func:`augment_sample` relabels top to bottom after any
  transform, so labels stay ordered either way.

:func:`augment_sample` applies a transform to one (image, label map) pair with a
seed; :class:`AugmentedDataset` does it on the fly for training, with a
deterministic seed per (seed, epoch, index). Offline expansion of a manifest
(training split only) is :func:`cervkit.transforms.offline.expand_dataset`, also
reachable as ``cervkit.transforms.offline.expand_dataset``.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.labels.instances import boxes_from_labels, relabel_top_to_bottom

if TYPE_CHECKING:  # pragma: no cover
    import albumentations as A

#: The paper's ranges.
ROTATION_DEG = 10.0
TRANSLATION_PX = 5
SCALE_RANGE = (0.9, 1.1)
#: Fraction of each side kept by the random crop (the rest is cut, up to half of it per border).
CROP_KEEP = (0.85, 1.0)
#: Fraction of pixels set to white/black by salt-and-pepper noise (the paper gives no amount).
SALT_PEPPER_AMOUNT = (0.01, 0.05)
#: Name of the label field that carries each box's instance label through albumentations.
BOX_LABELS = "box_labels"


def albumentations_module() -> ModuleType:
    """Import albumentations without its online version check (no network at run time).

    The environment variable ``NO_ALBUMENTATIONS_UPDATE`` is set only for the
    duration of the first import and restored afterwards.

    Returns
    -------
    module
        ``albumentations``.
    """
    if "albumentations" in sys.modules:
        return sys.modules["albumentations"]
    old = os.environ.get("NO_ALBUMENTATIONS_UPDATE")
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    try:
        return importlib.import_module("albumentations")
    finally:
        if old is None:
            os.environ.pop("NO_ALBUMENTATIONS_UPDATE", None)
        else:
            os.environ["NO_ALBUMENTATIONS_UPDATE"] = old


def bbox_params(min_area: float = 1.0) -> A.BboxParams:
    """Return the box settings every cervkit pipeline uses.

    Parameters
    ----------
    min_area : float, default 1.0
        Boxes smaller than this (pixels², after clipping to the image) are dropped.

    Returns
    -------
    albumentations.BboxParams
        ``pascal_voc`` boxes clipped to the image, labels in the ``box_labels`` field.
    """
    alb = albumentations_module()
    return alb.BboxParams(format="pascal_voc", label_fields=[BOX_LABELS], min_area=min_area,
                          clip=True, filter_invalid_bboxes=True)


def paper_transforms(size: tuple[int, int] | None = None, *, p: float = 0.5,
                     vertical_flip: bool = False) -> dict[str, A.BasicTransform]:
    """One albumentations transform per augmentation of the paper, by name.

    Parameters
    ----------
    size : tuple of int, optional
        (height, width) of the network input. When given, a final ``"resize"``
        entry (``A.Resize``, p=1, nearest for masks) is added; it is not an augmentation.
    p : float, default 0.5
        Probability of each augmentation.
    vertical_flip : bool, default False
        Add ``"vflip"`` (reverses top-bottom order; labels are renumbered after it).

    Returns
    -------
    dict of str to albumentations.BasicTransform
        In pipeline order: ``hflip``, [``vflip``], ``rotate``, ``scale``,
        ``translate``, ``crop``, ``salt_pepper``, [``resize``].
    """
    alb = albumentations_module()
    nearest_exact = cv2.INTER_NEAREST_EXACT  # pixel-centre aligned, like the image's linear resize
    affine = {"mask_interpolation": cv2.INTER_NEAREST, "border_mode": cv2.BORDER_CONSTANT,
              "fill": 0, "fill_mask": 0, "p": p}
    cut = (1.0 - CROP_KEEP[0]) / 2  # per border, so each side keeps CROP_KEEP of its length
    out: dict[str, Any] = {"hflip": alb.HorizontalFlip(p=p)}
    if vertical_flip:
        out["vflip"] = alb.VerticalFlip(p=p)
    out["rotate"] = alb.Affine(rotate=(-ROTATION_DEG, ROTATION_DEG), **affine)
    out["scale"] = alb.Affine(scale=SCALE_RANGE, keep_ratio=True, **affine)
    out["translate"] = alb.Affine(translate_px=(-TRANSLATION_PX, TRANSLATION_PX), **affine)
    out["crop"] = alb.CropAndPad(percent=(-cut, 0.0), keep_size=True, sample_independently=True,
                                 mask_interpolation=nearest_exact, p=p)
    out["salt_pepper"] = alb.SaltAndPepper(amount=SALT_PEPPER_AMOUNT, p=p)
    if size is not None:
        out["resize"] = alb.Resize(int(size[0]), int(size[1]), mask_interpolation=nearest_exact, p=1.0)
    return out


def paper_pipeline(size: tuple[int, int] | None = None, *, p: float = 0.5, vertical_flip: bool = False,
                   seed: int | None = None) -> A.Compose:
    """Chain :func:`paper_transforms` into one ``A.Compose`` with box handling.

    Parameters
    ----------
    size, p, vertical_flip
        As in :func:`paper_transforms`.
    seed : int, optional
        Seed of the pipeline's random state (see also :func:`augment_sample`).

    Returns
    -------
    albumentations.Compose
        Call it as ``pipe(image=..., mask=..., bboxes=..., box_labels=...)``.
    """
    alb = albumentations_module()
    steps = list(paper_transforms(size, p=p, vertical_flip=vertical_flip).values())
    pipe = alb.Compose(steps, bbox_params=bbox_params())
    if seed is not None:
        seed_transform(pipe, seed)
    return pipe


def seed_transform(transform: A.BasicTransform | A.BaseCompose, seed: int) -> None:
    """Seed a transform or Compose so that its children draw from ONE random stream.

    albumentations 2.0.8's ``Compose.set_random_seed`` (and ``Compose(seed=...)``)
    gives every child its own generator seeded with the same number, so all
    children draw identical numbers: with p = 0.5 either every augmentation runs or
    none does, and their parameters are correlated. Sharing one generator (what
    ``set_random_state`` propagates) makes the draws independent and still reproducible.

    Parameters
    ----------
    transform : albumentations transform or Compose
        Modified in place.
    seed : int
        The seed.
    """
    transform.set_random_state(np.random.default_rng(int(seed)), random.Random(int(seed)))


def as_compose(transform: A.BasicTransform | A.BaseCompose) -> A.Compose:
    """Wrap a transform (or a Compose without box settings) into a Compose that carries boxes.

    Parameters
    ----------
    transform : albumentations transform or Compose
        The augmentation.

    Returns
    -------
    albumentations.Compose
        ``transform`` itself when it already carries boxes, else a Compose wrapping it with
        :func:`bbox_params`.
    """
    alb = albumentations_module()
    if isinstance(transform, alb.Compose) and "bboxes" in getattr(transform, "processors", {}):
        return transform
    with warnings.catch_warnings():  # an image-only transform (noise) has no boxes to move: fine
        warnings.filterwarnings("ignore", message="Got processor for bboxes", category=UserWarning)
        return alb.Compose([transform], bbox_params=bbox_params())


@dataclass
class AugmentedSample:
    """One augmented (image, label map) pair.

    Attributes
    ----------
    image : numpy.ndarray
        float32 (H, W) in [0, 1].
    labels : numpy.ndarray
        uint8 (H, W), renumbered 1..K top to bottom; instances that left the image
        (or fell under ``min_area``) are gone.
    boxes : numpy.ndarray
        float32 (K, 4), the exact box of label ``i + 1`` in row ``i`` (from ``labels``).
    album_boxes : numpy.ndarray
        float32 (M, 4), the input's boxes as albumentations moved them (clipped).
    album_box_labels : numpy.ndarray
        int64 (M,), the label in ``labels`` each of ``album_boxes`` belongs to
        (0 when that instance is no longer in ``labels``).
    """

    image: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    album_boxes: np.ndarray
    album_box_labels: np.ndarray


def _as_array(image: np.ndarray | Image) -> np.ndarray:
    """Return a float32 (H, W) array from an Image or an array."""
    arr = image.array if isinstance(image, Image) else np.asarray(image)
    if arr.ndim != 2:
        raise CervkitInputError(f"expected a 2D grayscale image, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def augment_sample(image: np.ndarray | Image, labels: np.ndarray, *,
                   transform: A.BasicTransform | A.BaseCompose, seed: int | None = None,
                   min_area: int = 0) -> AugmentedSample:
    """Augment one image and its label map together.

    Parameters
    ----------
    image : numpy.ndarray or Image
        float32 (H, W) in [0, 1].
    labels : numpy.ndarray
        Integer (H, W) label map, same shape.
    transform : albumentations transform or Compose
        E.g. one entry of :func:`paper_transforms` or :func:`paper_pipeline`.
    seed : int, optional
        Makes the result reproducible (sets the transform's random state).
    min_area : int, default 0
        Instances with fewer pixels after augmentation are erased from the labels.

    Returns
    -------
    AugmentedSample
        The augmented image, relabelled label map, exact boxes and albumentations' boxes.
    """
    img = _as_array(image)
    lab = np.asarray(labels)
    if lab.shape != img.shape:
        raise CervkitInputError(f"image {img.shape} and label map {lab.shape} differ in shape")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise CervkitInputError("label values must lie in 0..255 (a uint8 label map)")
    lab = lab.astype(np.uint8, copy=False)
    values = np.unique(lab)
    values = values[values != 0]
    in_boxes = boxes_from_labels(lab)
    pipe = as_compose(transform)
    if seed is not None:
        seed_transform(pipe, seed)
    out = pipe(image=img, mask=lab, bboxes=in_boxes, **{BOX_LABELS: values.astype(np.int64)})
    new_img = np.clip(np.asarray(out["image"], dtype=np.float32).reshape(out["mask"].shape[:2]), 0.0, 1.0)
    mask = np.asarray(out["mask"]).reshape(new_img.shape)
    if min_area > 0:
        sizes = np.bincount(mask.ravel(), minlength=256)
        mask = np.where(sizes[mask] < min_area, 0, mask).astype(np.uint8)
    new_labels = relabel_top_to_bottom(mask)
    old_to_new = np.zeros(256, dtype=np.int64)
    old_to_new[mask[new_labels > 0]] = new_labels[new_labels > 0]
    album_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    album_labels = old_to_new[np.asarray(out[BOX_LABELS], dtype=np.int64)]
    return AugmentedSample(new_img, new_labels, boxes_from_labels(new_labels), album_boxes, album_labels)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """Deterministic seed of item ``index`` in ``epoch``, from ``numpy.random.SeedSequence``.

    Mixing (seed, epoch, index) through SeedSequence rather than adding them keeps
    item ``i`` of epoch ``e + 1`` from repeating item ``i + 1`` of epoch ``e``.

    Parameters
    ----------
    seed : int
        The dataset's base seed.
    epoch : int
        The epoch.
    index : int
        The item's position.

    Returns
    -------
    int
        A 32-bit seed.
    """
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


class AugmentedDataset(Dataset):
    """On-the-fly augmentation as a ``torch.utils.data.Dataset`` (map-style).

    Item ``i`` is ``(image, labels, boxes)``: image float32 tensor (1, H, W),
    labels int64 tensor (H, W) numbered top to bottom, boxes float32 tensor (K, 4)
    of those labels. The augmentation of item ``i`` depends only on
    ``(seed, epoch, i)``: call :meth:`set_epoch` at the start of each epoch
    for fresh, reproducible augmentations (also across DataLoader workers).

    Parameters
    ----------
    images : sequence of numpy.ndarray or Image
        float32 (H, W) images in [0, 1].
    labels : sequence of numpy.ndarray
        Label maps, one per image.
    transform : albumentations transform or Compose, optional
        None returns the samples unchanged (validation).
    seed : int, default 0
        Base seed.
    min_area : int, default 0
        Passed to :func:`augment_sample`.
    """

    def __init__(self, images: Sequence[np.ndarray | Image], labels: Sequence[np.ndarray],
                 transform: A.BasicTransform | A.BaseCompose | None = None, seed: int = 0,
                 *, min_area: int = 0) -> None:
        if len(images) != len(labels):
            raise CervkitInputError(f"{len(images)} images but {len(labels)} label maps")
        self.images = images
        self.labels = labels
        self.transform = as_compose(transform) if transform is not None else None
        self.seed = int(seed)
        self.epoch = 0
        self.min_area = int(min_area)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the following items use.

        Parameters
        ----------
        epoch : int
            The epoch number (0-based).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> AugmentedSample:
        """Return item ``index`` as an :class:`AugmentedSample` (NumPy arrays).

        Parameters
        ----------
        index : int
            The item's position (negative counts from the end).

        Returns
        -------
        AugmentedSample
            The augmented image, label map (numbered top to bottom) and boxes.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        image, labels = self.images[index], self.labels[index]
        if self.transform is None:
            lab = relabel_top_to_bottom(labels)
            boxes = boxes_from_labels(lab)
            return AugmentedSample(_as_array(image).copy(), lab, boxes, boxes.copy(),
                                   np.arange(1, len(boxes) + 1, dtype=np.int64))
        return augment_sample(image, labels, transform=self.transform,
                              seed=item_seed(self.seed, self.epoch, index), min_area=self.min_area)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.sample(index)
        return (torch.from_numpy(np.ascontiguousarray(s.image)[None]),
                torch.from_numpy(s.labels.astype(np.int64)),
                torch.from_numpy(s.boxes))

    @staticmethod
    def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """DataLoader ``collate_fn``: stack images and labels, keep boxes as a list (counts differ).

        Parameters
        ----------
        batch : sequence of (image, labels, boxes)
            Items as returned by ``dataset[i]``.

        Returns
        -------
        (torch.Tensor, torch.Tensor, list of torch.Tensor)
            Images (B, 1, H, W), labels (B, H, W) and one (K, 4) box tensor per item.
        """
        images, labels, boxes = zip(*batch)
        return torch.stack(images), torch.stack(labels), list(boxes)
