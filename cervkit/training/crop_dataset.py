"""The stage-2 segmenter's training data: jittered per-vertebra crops (geometry in :mod:`cervkit.labels.crops`).

One item of :class:`CropDataset` is one vertebral body ``k`` of one image:

1. **geometric augmentation** (training only) of the whole image and its label map with the paper's
   pipeline (:func:`cervkit.transforms.augment.paper_pipeline`: flips, ±10° rotation, 90–110 % scale, ±5 px shift,
   random crop, salt-and-pepper), seeded by ``(seed, epoch, image index)`` so all crops of one image in
   one epoch share it;
   With ``edge_cut`` > 0, that share of training items first cuts the image (and label map) along a row
   through body ``k``, keeping the part above or below: the body then ends at the image border, as one
   cut by a narrow or zoomed field of view (:func:`cut_at_border`). The crop window of such a sliver is
   clipped to the image and stretched to the square input; without these examples the segmenter filled the
   whole window (mask IoU 0.2-0.4 with the true sliver at 2x zoom);
2. a **crop window** around the ground-truth box of ``k``: each box edge is shifted by up to ``jitter`` ×
   the box's size (independently, uniform), then the box grows by ``margin`` on each side
   (:func:`crop_window`). This teaches the model to tolerate detector boxes. With
   ``margin >= jitter / (1 - 2 * jitter)`` (0.15 ≥ 0.125 for the defaults) the whole vertebra always stays
   inside the window;
3. the **target** is ``labels == k`` inside the window: neighbours visible in the crop are background,
   which is what lets the cascade separate touching vertebrae;
4. image and target are resized to ``crop_size`` × ``crop_size`` (image bilinear, target nearest);
5. **intensity augmentation** (training only) of the crop: random gamma 0.7–1.5, brightness/contrast,
   Gaussian noise, Gaussian blur and, with probability :data:`INVERT_P`, inversion (T1-like contrast),
   so the model holds up on other scanners and sequences;
6. **per-crop normalisation** (:func:`normalise_crop`): zero mean, unit standard deviation. Inference
   (:meth:`cervkit.inference.segmenter.Segmenter.predict_crops`) uses the same :func:`prepare_crop`.

Every random draw of item ``i`` comes from ``item_seed(seed, epoch, i)``: the same seed and epoch give
identical items in any order and with any number of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.labels.crops import IntBox, crop_window, normalise_crop
from cervkit.labels.instances import (
    boxes_from_labels,
    crop,
    instances_from_labels,
    labels_from_instances,
    relabel_top_to_bottom,
)
from cervkit.transforms.augment import (
    albumentations_module,
    augment_sample,
    item_seed,
    paper_pipeline,
    seed_transform,
)

INVERT_P = 0.2
"""Probability of inverting a training crop's intensities (T2 ↔ T1-like contrast)."""


def intensity_pipeline(other_sequences: float = 0.0) -> Any:
    """The intensity augmentations applied to training crops (albumentations, float images in [0, 1]).

    Parameters
    ----------
    other_sequences : float
        Probability of a random, possibly non-monotone intensity curve first
        (:class:`cervkit.transforms.scanner.RandomIntensityCurve`, as the detector trains with): contrasts of
        sequences never seen in training. 0: none.

    Returns
    -------
    albumentations.Compose
        Random gamma 0.7–1.5, brightness/contrast ±20 %, Gaussian noise, Gaussian blur and
        inversion (p = :data:`INVERT_P`).
    """
    alb = albumentations_module()
    curve = []
    if other_sequences > 0:
        from cervkit.transforms.scanner import RandomIntensityCurve

        curve = [RandomIntensityCurve(p=float(other_sequences))]
    return alb.Compose(curve + [
        alb.RandomGamma(gamma_limit=(70, 150), p=0.5),
        alb.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        alb.GaussNoise(std_range=(0.01, 0.05), p=0.3),
        alb.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.0), p=0.2),
        alb.InvertImg(p=INVERT_P),
    ])


def _label_map(mask: np.ndarray) -> np.ndarray:
    """A label map 1..K top to bottom; a binary mask is split into connected components."""
    arr = np.asarray(mask)
    values = np.unique(arr[arr > 0])
    if len(values) <= 1:
        return labels_from_instances(instances_from_labels(arr, binary=True), arr.shape)
    return relabel_top_to_bottom(arr)


def load_samples(manifest_or_samples: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode a manifest (or accept in-memory pairs) into (image, label map) arrays, kept in memory.

    Parameters
    ----------
    manifest_or_samples : Manifest, str, PathLike or sequence of (image, labels)
        A :class:`cervkit.data.table.Manifest` (every row is used: pass ``m.subset(split=...)``), a manifest
        CSV path, or pairs of (float image in [0, 1] or :class:`Image`, label map).

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        float32 (H, W) images and uint8 label maps numbered 1..K top to bottom.
    """
    from cervkit.data.table import Manifest

    if isinstance(manifest_or_samples, (str, PathLike)):
        from cervkit.data.manifest import load_manifest

        manifest_or_samples = load_manifest(manifest_or_samples, check_files=False)
    if isinstance(manifest_or_samples, Manifest):
        from cervkit.io.images import read_image, read_mask

        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for row in manifest_or_samples.rows():
            if row.mask is None:
                raise CervkitInputError(f"row {row.index + 1} has no mask to train on", row.image)
            pairs.append((read_image(row.image).array, _label_map(read_mask(row.mask))))
        return pairs
    out = []
    for image, labels in manifest_or_samples:
        arr = image.array if isinstance(image, Image) else np.asarray(image, np.float32)
        lab = _label_map(np.asarray(labels))
        if arr.shape != lab.shape:
            raise CervkitInputError(f"image {arr.shape} and label map {lab.shape} differ in shape")
        out.append((arr.astype(np.float32, copy=False), lab))
    return out


@dataclass
class CropSample:
    """One training crop, in NumPy (see :meth:`CropDataset.sample`).

    Attributes
    ----------
    image : numpy.ndarray
        float32 (S, S), normalised.
    target : numpy.ndarray
        float32 (S, S), 1 inside vertebra ``label``, 0 elsewhere (neighbours included).
    int_box : tuple of int
        The window in the (augmented) image it was cut from.
    image_index, label : int
        Which image and which vertebra (1-based, top to bottom).
    """

    image: np.ndarray
    target: np.ndarray
    int_box: IntBox
    image_index: int
    label: int


def cut_at_border(image: np.ndarray, labels: np.ndarray, label: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image and label map cut along a row through body ``label``: the part above or below (equal odds).

    Parameters
    ----------
    image, labels : numpy.ndarray
        (H, W) image and label map.
    label : int
        The body to cut; the row lies between 20 % and 80 % of its height.
    rng : numpy.random.Generator

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Views of ``image`` and ``labels``: the body now touches the top or bottom border.
    """
    rows = np.flatnonzero((labels == label).any(axis=1))
    if rows.size < 5:
        return image, labels
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    row = int(round(top + rng.uniform(0.2, 0.8) * (bottom - top)))
    if rng.random() < 0.5:
        return image[:row], labels[:row]
    return image[row:], labels[row:]


class CropDataset(Dataset):
    """One item per (image, vertebra): a jittered, augmented, normalised crop and its binary target.

    Parameters
    ----------
    manifest_or_samples : Manifest, path or sequence of (image, labels)
        See :func:`load_samples`; decoded once and cached in memory.
    crop_size : int
        Side of the square crops.
    margin : float
        Window margin (fraction of the box size per side).
    jitter : float
        Largest edge shift (fraction of the box size); the same rule in training and validation.
    augment : bool
        Geometric (paper) and intensity augmentation; False for validation.
    seed : int
        Base seed; items depend only on ``(seed, epoch, index)``.
    edge_cut : float
        Share of training items whose body the image border cuts (:func:`cut_at_border`); only with
        ``augment``.
    other_sequences : float
        Probability of a random intensity curve on a training crop (:func:`intensity_pipeline`).
    """

    def __init__(self, manifest_or_samples: Any, *, crop_size: int = 128, margin: float = 0.15,
                 jitter: float = 0.1, augment: bool = True, seed: int = 0, edge_cut: float = 0.0,
                 other_sequences: float = 0.0) -> None:
        self.samples = load_samples(manifest_or_samples)
        self.crop_size = int(crop_size)
        self.margin = float(margin)
        self.jitter = float(jitter)
        self.augment = bool(augment)
        self.edge_cut = float(edge_cut) if self.augment else 0.0
        self.seed = int(seed)
        self.epoch = 0
        self.items = [(i, k) for i, (_, lab) in enumerate(self.samples) for k in range(1, int(lab.max()) + 1)]
        if not self.items:
            raise CervkitInputError("no vertebrae to crop: every label map is empty")
        self._geometric = paper_pipeline() if self.augment else None
        self._intensity = intensity_pipeline(other_sequences) if self.augment else None
        self._cache: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations and jitter the following items use.

        Parameters
        ----------
        epoch : int
            The epoch number (0-based).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _augmented(self, image_index: int, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        """The image and label map of ``image_index`` after this epoch's geometric augmentation."""
        image, labels = self.samples[image_index]
        if self._geometric is None:
            return image, labels
        cached = self._cache.get(image_index)
        if cached is not None and cached[0] == self.epoch:
            return cached[1], cached[2]
        out = augment_sample(image, labels, transform=self._geometric,
                             seed=item_seed(self.seed, self.epoch, len(self.items) + image_index))
        # ±10° rotations keep the top-to-bottom order; when a vertebra left the image the numbering
        # would shift, so that image is used unaugmented in this epoch
        pair = (out.image, out.labels) if int(out.labels.max()) == n_labels else (image, labels)
        self._cache[image_index] = (self.epoch, *pair)
        return pair

    def sample(self, index: int) -> CropSample:
        """Item ``index`` as NumPy arrays with its window (for inspection and tests).

        Parameters
        ----------
        index : int
            The crop's position, in ``0 .. len(self) - 1``.

        Returns
        -------
        CropSample
            The crop, its target and where it was cut from.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        image_index, label = self.items[index]
        n_labels = int(self.samples[image_index][1].max())
        image, labels = self._augmented(image_index, n_labels)
        rng = np.random.default_rng(item_seed(self.seed, self.epoch, index))
        if self.edge_cut > 0 and rng.random() < self.edge_cut:
            image, labels = cut_at_border(image, labels, label, rng)
        box = boxes_from_labels((labels == label).astype(np.uint8))[0]
        window = crop_window(box, image.shape, self.margin, jitter=self.jitter, rng=rng)
        size = (self.crop_size, self.crop_size)
        pixels = crop(image, window, size, nearest=False)
        target = crop((labels == label).astype(np.uint8), window, size, nearest=True).astype(np.float32)
        if self._intensity is not None:
            seed_transform(self._intensity, int(rng.integers(2**31)))
            pixels = np.asarray(self._intensity(image=np.clip(pixels, 0.0, 1.0))["image"], np.float32)
            pixels = pixels.reshape(size)
        return CropSample(normalise_crop(pixels), target, window, image_index, label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sample(index)
        return torch.from_numpy(s.image[None].copy()), torch.from_numpy(s.target[None].copy())
