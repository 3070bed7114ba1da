"""The two-stage YOLO-UNet cascade: image → boxes → batched crops → masks → one label map.

Stage 1 (:class:`cervkit.inference.detector.Detector`) finds the vertebral bodies, stage 2
(:class:`cervkit.inference.segmenter.Segmenter`) segments every detected crop in one
batched forward pass, and :func:`paste_by_probability` puts the crops back into
a label map of the input's size:

- each pixel goes to the crop whose probability there is highest (overlaps between
  neighbouring crops are resolved by probability, not by paste order);
- a pixel is foreground only where that probability exceeds ``threshold``;
- an instance that ends up with fewer than ``min_area`` pixels (the segmenter found
  its box empty) is dropped;
- instances are numbered 1..K from top to bottom.

With a per-level detector (one class per level, e.g. C2..C7), at most one box per level
is kept (:func:`cervkit.inference.level_boxes.select_level_boxes`: levels from the classes and the
order along the spine together): a vertebra just outside the annotated range (T1 below C7,
T10 above T11) then cannot add an extra instance by looking like its neighbour, and a body
the detector calls by its neighbour's name is not lost.

With a single ``vertebra`` class, only the boxes on the spine are kept (``chain=True``, default):
the heaviest chain of body-to-body steps (:func:`cervkit.inference.level_boxes.spine_chain`), so a
detection off the column (a bright brain or bowel region, a posterior element) is not drawn as a body,
while every body in view, however many, stays. Detections below ``conf`` but above ``recall_conf`` are
added where the chain expects a body (below its lower end or in a gap) and kept when the segmenter finds a
confident body in them (:mod:`cervkit.inference.chain_recall`): a C7 behind the shoulders, a body cut by the
image border.

The same class serves YOLO-DeepLab: the segmenter is whatever model the run trained.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cervkit.core.image import Image
from cervkit.inference.chain_recall import extend_chain, weak_body_kept
from cervkit.inference.level_boxes import merge_parts, select_level_boxes, spine_chain
from cervkit.labels.instances import relabel_top_to_bottom


@dataclass
class CascadePrediction:
    """What the cascade says about one image.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 (H, W) label map, vertebrae 1..K top to bottom.
    boxes : numpy.ndarray
        float32 (K, 4) detector box of each kept vertebra (row k-1 ↔ label k).
    scores : numpy.ndarray
        float32 (K,) detector confidence of each kept vertebra.
    mean_prob : numpy.ndarray
        float32 (K,) mean segmenter probability inside each kept vertebra (a confidence).
    classes : numpy.ndarray
        int64 (K,) detector class of each kept vertebra (level index with a per-level detector).
    n_detected : int
        Boxes from stage 1 before empty crops were dropped.
    seconds : dict
        Wall time of ``detect``, ``segment``, ``paste`` and ``total``.
    prob : numpy.ndarray or None
        float32 (H, W) foreground probability behind :attr:`labels` (the cascade: each pixel's
        highest crop probability, 0 outside every crop); None when the model has none (YOLO-seg).
        Used for the mask uncertainty of :func:`cervkit.inference.confidence.image_confidence`.
    level_names : dict of int to str
        Label → level name, filled by :func:`cervkit.segment` (anchored on C2,
        :func:`cervkit.inference.level_names.name_bodies`); empty when nothing named the bodies.
    levels_unsure : bool or None
        Whether the names are unsure (see :func:`~cervkit.inference.level_names.name_bodies`); None until named.
    anchor_scores : dict of int to dict
        Label → anchor class probabilities (L5 above the sacrum, S1, other) from the run's anchor classifier
        (:mod:`cervkit.inference.anchor`); empty without one.
    """

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    mean_prob: np.ndarray
    classes: np.ndarray
    n_detected: int
    seconds: dict[str, float] = field(default_factory=dict)
    prob: np.ndarray | None = None
    level_names: dict[int, str] = field(default_factory=dict)
    levels_unsure: bool | None = None
    anchor_scores: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def n_vertebrae(self) -> int:
        """Number of vertebrae in :attr:`labels`."""
        return int(len(self.boxes))


def paste_by_probability(shape: tuple[int, int], int_boxes: Sequence[Sequence[int]],
                         probs: Sequence[np.ndarray], *, threshold: float = 0.5,
                         min_area: int = 20) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Combine per-crop probability maps into one instance label map.

    Parameters
    ----------
    shape : tuple of int
        (H, W) of the full image.
    int_boxes : sequence of (x0, y0, x1, y1)
        Integer crop windows in image pixels (max exclusive), one per probability map.
    probs : sequence of numpy.ndarray
        float probability maps, each of its window's size (y1 - y0, x1 - x0).
    threshold : float
        Minimum winning probability for a pixel to be foreground.
    min_area : int
        Instances smaller than this (pixels) are dropped as empty.

    Returns
    -------
    labels : numpy.ndarray
        uint8 (H, W), instances numbered 1..K top to bottom.
    kept : list of int
        For label k (1-based), ``kept[k - 1]`` is the index of its crop in the input.
    mean_prob : numpy.ndarray
        float32 (K,) mean winning probability inside each kept instance.
    """
    if len(int_boxes) != len(probs):
        raise ValueError(f"{len(int_boxes)} boxes but {len(probs)} probability maps")
    best = np.zeros(shape, np.float32)
    owner = np.zeros(shape, np.int32)  # crop index + 1; 0 = nobody
    for i, ((x0, y0, x1, y1), prob) in enumerate(zip(int_boxes, probs)):
        if prob.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"crop {i}: probability map {prob.shape} does not fit box {(x0, y0, x1, y1)}")
        window = best[y0:y1, x0:x1]
        wins = prob > window
        window[wins] = prob[wins]
        owner[y0:y1, x0:x1][wins] = i + 1
    owner[best <= threshold] = 0
    if owner.max() > 255:
        raise ValueError("more than 255 instances do not fit a uint8 label map")
    areas = np.bincount(owner.ravel(), minlength=len(probs) + 1)
    keep = [i for i in range(len(probs)) if areas[i + 1] >= max(1, min_area)]
    remap = np.zeros(len(probs) + 1, np.uint8)
    remap[[i + 1 for i in keep]] = np.arange(1, len(keep) + 1, dtype=np.uint8)
    provisional = remap[owner]
    labels = relabel_top_to_bottom(provisional)
    # map final labels back to crop indices through one pixel of each instance
    kept: list[int] = []
    mean_prob = np.zeros(int(labels.max()), np.float32)
    sums = np.bincount(labels.ravel(), weights=best.ravel(), minlength=labels.max() + 1)
    counts = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    for k in range(1, int(labels.max()) + 1):
        provisional_label = int(provisional[labels == k][0])
        kept.append(keep[provisional_label - 1])
        mean_prob[k - 1] = sums[k] / max(1, counts[k])
    return labels, kept, mean_prob


def _take(det: Any, index: Sequence[int] | np.ndarray) -> Any:
    """The detections ``index`` of ``det`` (boxes, scores and classes; other fields kept)."""
    index = np.asarray(index, np.int64)
    return type(det)(**{**det.__dict__, "boxes": det.boxes[index], "scores": det.scores[index],
                        "classes": det.classes[index]})


class Cascade:
    """YOLO boxes + crop segmenter behind one :meth:`predict`.

    Parameters
    ----------
    detector : cervkit.inference.detector.Detector
        Stage 1.
    segmenter : cervkit.inference.segmenter.Segmenter
        Stage 2 (U-Net3+ for YOLO-UNet, DeepLabV3+ for YOLO-DeepLab).
    conf : float
        Detector confidence threshold.
    threshold : float
        Segmenter probability threshold.
    min_area : int
        Smallest instance kept, in pixels.
    one_per_class : bool, optional
        Keep at most one box per level (:func:`~cervkit.inference.level_boxes.select_level_boxes`). Default:
        on when the detector has more than one class (a per-level detector), off for a single
        ``vertebra`` class.
    chain : bool
        With a single-class detector, keep only the boxes on the spine chain
        (:func:`~cervkit.inference.level_boxes.spine_chain`), a body boxed in two overlapping parts as one
        (:func:`~cervkit.inference.level_boxes.merge_parts`); default True.
    recall_conf : float, optional
        With the chain: weaker detections down to this confidence continue it where it expects a body
        (:func:`~cervkit.inference.chain_recall.extend_chain`); None: off.
    anchor : cervkit.inference.anchor.AnchorClassifier, optional
        Scores each found body as L5 above the sacrum, S1 or other (``CascadePrediction.anchor_scores``), for
        lumbar level names.
    """

    def __init__(self, detector, segmenter, *, conf: float = 0.25, threshold: float = 0.5,
                 min_area: int = 20, one_per_class: bool | None = None, anchor: Any = None,
                 chain: bool = True, recall_conf: float | None = 0.05) -> None:
        self.detector = detector
        self.recall_conf = recall_conf
        self.segmenter = segmenter
        self.anchor = anchor
        self.chain = bool(chain)
        self.conf = conf
        self.threshold = threshold
        self.min_area = min_area
        self.n_levels = len(getattr(detector, "names", {0: "vertebra"}))
        self.one_per_class = self.n_levels > 1 if one_per_class is None else one_per_class

    def predict(self, image: np.ndarray | Image) -> CascadePrediction:
        """Segment every vertebral body in one image.

        Parameters
        ----------
        image : numpy.ndarray or Image
            2D float image in [0, 1].

        Returns
        -------
        CascadePrediction
            Label map of the input's size and per-vertebra boxes and scores.
        """
        array = image.array if isinstance(image, Image) else np.asarray(image, np.float32)
        if array.ndim != 2:
            raise ValueError(f"the cascade needs a 2D image, got shape {array.shape}")
        t0 = time.perf_counter()
        recall = self.chain and not self.one_per_class and self.recall_conf is not None
        det = self.detector.predict([array], conf=min(self.conf, self.recall_conf) if recall else self.conf)[0]
        strong = np.flatnonzero(det.scores >= self.conf)
        keep = strong
        if self.one_per_class and len(strong):
            keep = strong[select_level_boxes(det.boxes[strong], det.scores[strong], det.classes[strong],
                                             self.n_levels)]
        elif self.chain and len(strong) > 1:
            keep = strong[spine_chain(det.boxes[strong], det.scores[strong])]  # top to bottom
            keep = extend_chain(det.boxes, det.scores, keep) if recall else np.sort(keep)
        det = _take(det, keep)
        if self.chain and not self.one_per_class and len(det) > 1:  # a body boxed in two parts: one box
            parts, merged = merge_parts(det.boxes, det.scores)
            det = _take(det, parts)
            det.boxes = merged.astype(np.float32)
        t1 = time.perf_counter()
        crops = self.segmenter.predict_crops(array, det.boxes) if len(det) else []
        if crops and recall:  # a weak box stays only where the segmenter finds a confident body
            ok = [i for i, c in enumerate(crops) if det.scores[i] >= self.conf
                  or weak_body_kept(c.prob, self.threshold, self.min_area)]
            if len(ok) < len(crops):
                crops = [crops[i] for i in ok]
                det = _take(det, ok)
        t2 = time.perf_counter()
        labels, kept, mean_prob = paste_by_probability(
            array.shape, [c.int_box for c in crops], [c.prob for c in crops],
            threshold=self.threshold, min_area=self.min_area)
        prob = np.zeros(array.shape, np.float32)
        for crop in crops:  # the winning probability of paste_by_probability
            x0, y0, x1, y1 = crop.int_box
            np.maximum(prob[y0:y1, x0:x1], crop.prob, out=prob[y0:y1, x0:x1])
        anchor_scores = self.anchor.score(array, labels) if self.anchor is not None else {}
        t3 = time.perf_counter()
        return CascadePrediction(
            labels=labels, boxes=det.boxes[kept].astype(np.float32).reshape(-1, 4),
            scores=det.scores[kept].astype(np.float32), mean_prob=mean_prob,
            classes=det.classes[kept].astype(np.int64), n_detected=len(det),
            seconds={"detect": t1 - t0, "segment": t2 - t1, "paste": t3 - t2, "total": t3 - t0}, prob=prob,
            anchor_scores=anchor_scores)
