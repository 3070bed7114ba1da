"""Segmentation losses: soft Dice, BCE + Dice (the paper's loss) and deep supervision.

All losses take **logits** (before the sigmoid) and a target of the same shape (N, C, H, W) with values in
[0, 1]; a target of shape (N, H, W) is read as (N, 1, H, W). Channels are independent binary problems
(sigmoid, not softmax).

The paper trains with ``alpha · BCE + (1 − alpha) · Dice``: here ``alpha`` always weighs the **BCE** term and
``1 − alpha`` the Dice term, so ``alpha=1`` is pure BCE and ``alpha=0`` pure Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def _match_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return ``target`` as a float tensor shaped like ``logits`` (adds the channel axis when missing)."""
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.to(dtype=logits.dtype)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 − (2|P∩T| + eps) / (|P| + |T| + eps)``, averaged over samples and channels.

    Parameters
    ----------
    logits : torch.Tensor
        (N, C, H, W) logits; probabilities are ``sigmoid(logits)``.
    target : torch.Tensor
        (N, C, H, W) or (N, H, W) with values in [0, 1].
    eps : float
        Smoothing added to numerator and denominator; keeps the loss 0 for an empty target predicted empty.

    Returns
    -------
    torch.Tensor
        Scalar in [0, 1].
    """
    target = _match_target(logits, target)
    probs = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    dice = (2.0 * intersection + eps) / (denominator + eps)
    return 1.0 - dice.mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5,
                  eps: float = 1.0) -> torch.Tensor:
    """The paper's loss: ``alpha · BCE + (1 − alpha) · Dice``.

    Parameters
    ----------
    logits : torch.Tensor
        (N, C, H, W) logits.
    target : torch.Tensor
        (N, C, H, W) or (N, H, W) with values in [0, 1].
    alpha : float
        Weight of the BCE term, in [0, 1]; the Dice term gets ``1 − alpha``.
    eps : float
        Dice smoothing (see :func:`dice_loss`).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    target = _match_target(logits, target)
    loss = logits.new_zeros(())
    if alpha > 0.0:
        loss = loss + alpha * F.binary_cross_entropy_with_logits(logits, target)
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * dice_loss(logits, target, eps)
    return loss


def split_model_output(output: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Normalise what a segmentation model's ``forward`` returned into (side outputs, CGM logit).

    Parameters
    ----------
    output : torch.Tensor, sequence of torch.Tensor, or (sequence, torch.Tensor)
        A single logits tensor (eval mode, DeepLabV3+), a list of side outputs (U-Net3+ training) or
        ``(side_outputs, cls_logit)`` (U-Net3+ training with the CGM).

    Returns
    -------
    side_outputs : list of torch.Tensor
        At least one logits tensor, top output first.
    cls_logit : torch.Tensor or None
        The CGM logit (N, 1), when present.
    """
    if isinstance(output, torch.Tensor):
        return [output], None
    if (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], (list, tuple))
            and isinstance(output[1], torch.Tensor)):
        return list(output[0]), output[1]
    if isinstance(output, Sequence) and output and all(isinstance(t, torch.Tensor) for t in output):
        return list(output), None
    raise TypeError(f"cannot read segmentation outputs of type {type(output).__name__}")


def deep_supervision_loss(outputs: Any, target: torch.Tensor, alpha: float = 0.5,
                          weights: Sequence[float] | None = None, cls_logit: torch.Tensor | None = None,
                          cls_weight: float = 1.0) -> torch.Tensor:
    """Weighted BCE + Dice over every side output, plus BCE of the CGM logit on "mask non-empty".

    Parameters
    ----------
    outputs : torch.Tensor, list of torch.Tensor, or (list, torch.Tensor)
        Side outputs, each (N, C, H, W) at the target's size, or anything :func:`split_model_output`
        reads (a CGM logit found there is used when ``cls_logit`` is None).
    target : torch.Tensor
        (N, C, H, W) or (N, H, W) with values in [0, 1].
    alpha : float
        BCE weight inside each :func:`bce_dice_loss` term.
    weights : sequence of float, optional
        One weight per side output; default ``1 / n_outputs`` each, so the total is on the scale of a single
        :func:`bce_dice_loss`.
    cls_logit : torch.Tensor, optional
        (N, 1) or (N,) CGM logits; adds ``cls_weight · BCE(cls_logit, target.any())``.
    cls_weight : float
        Weight of the classification term.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    side_outputs, found_cls = split_model_output(outputs)
    if cls_logit is None:
        cls_logit = found_cls
    if weights is None:
        weights = [1.0 / len(side_outputs)] * len(side_outputs)
    if len(weights) != len(side_outputs):
        raise ValueError(f"{len(weights)} weights for {len(side_outputs)} side outputs")
    loss = side_outputs[0].new_zeros(())
    for weight, logits in zip(weights, side_outputs):
        loss = loss + float(weight) * bce_dice_loss(logits, target, alpha)
    if cls_logit is not None:
        present = (target.reshape(target.shape[0], -1) > 0).any(dim=1).to(cls_logit.dtype)
        loss = loss + cls_weight * F.binary_cross_entropy_with_logits(cls_logit.reshape(-1), present)
    return loss
