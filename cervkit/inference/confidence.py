"""How sure a prediction is about one image: the number that orders the correction queue.

:func:`image_confidence` turns a :class:`cervkit.inference.cascade.CascadePrediction` into four numbers:

``det_score_min``, ``det_score_mean``
    The lowest and the mean detector confidence of the kept vertebrae. NaN when the model
    has no detector (the whole-image baselines U-Net3+ / DeepLabV3+, whose ``scores`` only
    repeat ``mean_prob``) or when nothing was found.
``mask_uncertainty``
    In [0, 1]. With a probability map (``prediction.prob``: the cascade and the whole-image
    models): the mean binary entropy, in bits, of the foreground probability over the
    *foreground-ish* pixels (probability >= :data:`FOREGROUND_ISH`, i.e. the predicted bodies
    and their uncertain rims). Without one (YOLO-seg): ``2 * (1 - mean(mean_prob))`` clipped
    to [0, 1], which, like the entropy, is 0 for probability 1 and 1 for probability 0.5.
    NaN when there is nothing to measure it on.
``confidence``
    In [0, 1], higher is surer::

        confidence = 0                                     if no vertebra was found
                   = det_score_min * (1 - mask_uncertainty) with a detector
                   = 1 - mask_uncertainty                  without one

    (a NaN factor counts as 1, so a missing measurement neither helps nor hurts). The
    *minimum* detector score is used because one doubtful vertebra is enough to send the
    image to an annotator. The number ranks images; it is not a calibrated probability.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["CONFIDENCE_KEYS", "FOREGROUND_ISH", "binary_entropy", "has_detector", "image_confidence"]

FOREGROUND_ISH = 0.1
CONFIDENCE_KEYS = ("confidence", "det_score_min", "det_score_mean", "mask_uncertainty")


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits of probabilities ``p`` (0 at 0 and 1, 1 at 0.5).

    Parameters
    ----------
    p : numpy.ndarray
        Probabilities in [0, 1].

    Returns
    -------
    numpy.ndarray
        float64 entropies, same shape.
    """
    q = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))
    return np.nan_to_num(h, nan=0.0)


def has_detector(predictor: Any) -> bool:
    """Whether ``predictor``'s scores come from a detector (False for the whole-image baselines).

    Parameters
    ----------
    predictor : object
        What :func:`cervkit.inference.registry.load_predictor` returned; a ``has_detector`` attribute wins.

    Returns
    -------
    bool
        False for :class:`cervkit.inference.whole_image.WholeImageModel`, True otherwise.
    """
    flag = getattr(predictor, "has_detector", None)
    if isinstance(flag, bool):
        return flag
    whole_image = sys.modules.get("cervkit.inference.whole_image")  # not imported: cannot be one (and torch stays unloaded)
    return not (whole_image is not None and isinstance(predictor, whole_image.WholeImageModel))


def _mask_uncertainty(prediction: Any) -> float:
    prob = getattr(prediction, "prob", None)
    if prob is not None:
        p = np.asarray(prob, np.float32)
        region = p >= FOREGROUND_ISH
        return float(binary_entropy(p[region]).mean()) if region.any() else math.nan
    mean_prob = np.asarray(getattr(prediction, "mean_prob", []), np.float64)
    if mean_prob.size == 0:
        return math.nan
    return float(np.clip(2.0 * (1.0 - mean_prob.mean()), 0.0, 1.0))


def image_confidence(prediction: Any, *, detector: bool = True) -> dict[str, float]:
    """Per-image confidence of a prediction (see the module docstring for the formula).

    Parameters
    ----------
    prediction : CascadePrediction
        Has ``scores``, ``mean_prob``, ``n_vertebrae`` and optionally ``prob``.
    detector : bool, default True
        Whether ``scores`` are detector confidences (see :func:`has_detector`).

    Returns
    -------
    dict
        ``confidence``, ``det_score_min``, ``det_score_mean`` and ``mask_uncertainty`` as floats
        (NaN where undefined; ``confidence`` is always a number in [0, 1]).
    """
    scores = np.asarray(prediction.scores, np.float64).ravel()
    n = int(prediction.n_vertebrae)
    use_scores = detector and scores.size > 0
    det_min = float(scores.min()) if use_scores else math.nan
    det_mean = float(scores.mean()) if use_scores else math.nan
    uncertainty = _mask_uncertainty(prediction) if n > 0 else math.nan
    if n == 0:
        confidence = 0.0
    else:
        det_factor = 1.0 if math.isnan(det_min) else det_min
        mask_factor = 1.0 if math.isnan(uncertainty) else 1.0 - uncertainty
        confidence = float(np.clip(det_factor * mask_factor, 0.0, 1.0))
    return {"confidence": confidence, "det_score_min": det_min, "det_score_mean": det_mean,
            "mask_uncertainty": uncertainty}
