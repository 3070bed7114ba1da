"""Mixed-precision (AMP) training steps shared by the segmenter trainers.

:func:`cervkit.training.segmenter.train_segmenter` and :func:`cervkit.training.whole_image.train_whole_image`
run every optimisation step through :class:`MixedPrecision`. With AMP on, the forward pass runs under
``torch.autocast`` in float16, the loss is computed in float32 from the float32-cast outputs, and
``torch.amp.GradScaler`` scales the loss before the backward pass, unscales the gradients, skips the
optimizer step when a gradient is inf/NaN and adapts the scale (halved after an overflow, doubled after
2000 clean steps).

AMP is on by default on CUDA and off on CPU (:func:`resolve_amp`). The autocast type follows the device
(:func:`amp_dtype`): float16 with ``torch.amp.GradScaler`` on CUDA (the usual recipe), **bfloat16 without
loss scaling on CPU**. bfloat16 is PyTorch's CPU autocast type; it has float32's exponent range, so its
gradients cannot overflow and need no scaler. float16 on CPU is still available (``dtype=torch.float16``),
but how many of its steps overflow depends on the processor's float16 arithmetic (seen: 7 of 12 steps of a
fresh network skipped on one CPU, none on another), so ``amp=True`` on CPU never picks it. The tests use an
explicit float16 on CPU to run the scaler's code (scaled backward, unscale and inf check, skipped step,
scale update) with forced overflows whose outcome does not depend on the CPU. The CUDA kernels themselves are
only exercised on a GPU. The detector and YOLOv11-seg use ultralytics' own AMP
(:func:`cervkit.core.ultralytics_env.amp_setting`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["AMP_DTYPE", "CPU_AMP_DTYPE", "MixedPrecision", "amp_dtype", "resolve_amp"]

AMP_DTYPE = torch.float16
"""Autocast dtype of the CUDA AMP path (float16 with loss scaling, the usual CUDA recipe)."""

CPU_AMP_DTYPE = torch.bfloat16
"""Autocast dtype on CPU: bfloat16 (PyTorch's CPU autocast type), which needs no loss scaling."""


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype for a device: float16 on CUDA, bfloat16 elsewhere.

    Parameters
    ----------
    device : torch.device or str

    Returns
    -------
    torch.dtype
    """
    return AMP_DTYPE if torch.device(device).type == "cuda" else CPU_AMP_DTYPE


def resolve_amp(amp: bool | None, device: torch.device | str) -> bool:
    """Whether to train with AMP.

    Parameters
    ----------
    amp : bool or None
        None: on for CUDA, off otherwise; a bool forces it (True on CPU is slow, for tests).
    device : torch.device or str
        The training device.

    Returns
    -------
    bool
    """
    if amp is None:
        return torch.device(device).type == "cuda"
    return bool(amp)


class MixedPrecision:
    """Autocast + gradient scaling for one training loop.

    Parameters
    ----------
    device : torch.device or str
        The device the model and batches live on.
    enabled : bool
        AMP on (autocast, plus GradScaler for float16) or off (plain float32 steps).
    dtype : torch.dtype, optional
        Autocast dtype; default :func:`amp_dtype` of the device (float16 on CUDA, bfloat16 on CPU). Loss
        scaling is used exactly when the dtype is float16.

    Attributes
    ----------
    steps, skipped_steps : int
        Optimizer steps asked for, and those GradScaler skipped because a gradient was inf/NaN.
    """

    def __init__(self, device: torch.device | str, enabled: bool, dtype: torch.dtype | None = None) -> None:
        self.device_type = torch.device(device).type
        self.enabled = bool(enabled)
        self.dtype = amp_dtype(device) if dtype is None else dtype
        if self.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"autocast dtype must be float16 or bfloat16, got {self.dtype}")
        self.scaled = self.enabled and self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.scaled)
        self.steps = 0
        self.skipped_steps = 0

    def forward(self, net: nn.Module, images: torch.Tensor) -> Any:
        """Run ``net`` under autocast (when enabled) and return its outputs cast to float32.

        Parameters
        ----------
        net : torch.nn.Module
        images : torch.Tensor

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            float32, the same structure as the network's output (deep supervision gives a list).
        """
        with torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled):
            outputs = net(images)
        if isinstance(outputs, (list, tuple)):
            return [o.float() for o in outputs]
        return outputs.float()

    def step(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             loss_fn: Callable[[Any, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer) -> float:
        """One training step: zero grads, forward, loss, (scaled) backward, optimizer step.

        Parameters
        ----------
        net : torch.nn.Module
            In train mode.
        images, targets : torch.Tensor
            One batch on the training device.
        loss_fn : callable
            ``loss_fn(outputs, targets)`` → scalar float32 loss.
        optimizer : torch.optim.Optimizer

        Returns
        -------
        float
            The batch loss (unscaled). A step whose gradients overflowed is skipped and counted in
            :attr:`skipped_steps`; the loss is still returned.
        """
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(self.forward(net, images), targets)
        before = self.scaler.get_scale() if self.scaled else 1.0
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        self.steps += 1
        if self.scaled and self.scaler.get_scale() < before:
            self.skipped_steps += 1
        return float(loss.detach())

    def step_scheduler(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        """``scheduler.step()``, minus one misleading PyTorch warning under AMP.

        When GradScaler skips the very first optimizer step (an overflow at the initial scale, normal with
        AMP) PyTorch warns that ``lr_scheduler.step()`` came before ``optimizer.step()``; the schedule is
        still right (it advances once per epoch), so that warning alone is silenced while AMP is on.

        Parameters
        ----------
        scheduler : torch.optim.lr_scheduler.LRScheduler
        """
        with warnings.catch_warnings():
            if self.scaled:
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            scheduler.step()

    def warn_if_unstable(self, max_fraction: float = 0.5) -> None:
        """Warn when GradScaler skipped more than ``max_fraction`` of the steps (float16 too narrow here).

        A few skipped steps at the start are normal. Many mean the gradients overflow float16 at every
        scale tried (seen with BatchNorm over 1×1 feature maps, e.g. a whole-image model on 32-pixel
        inputs), so the model barely trained: the warning says to train with ``amp=False``.

        Parameters
        ----------
        max_fraction : float
            Tolerated fraction of skipped steps.
        """
        if self.scaled and self.steps and self.skipped_steps > max_fraction * self.steps:
            warnings.warn(f"mixed precision skipped {self.skipped_steps} of {self.steps} optimizer steps "
                          "(float16 gradients overflowed); train with amp=False for this configuration",
                          RuntimeWarning, stacklevel=2)

    def summary(self) -> dict[str, Any]:
        """What a run's ``config.json`` records about precision.

        Returns
        -------
        dict
            ``enabled``, ``dtype``, ``loss_scaling``, ``steps``, ``skipped_steps`` and ``final_scale`` (None
            without loss scaling).
        """
        dtype = str(self.dtype).removeprefix("torch.") if self.enabled else "float32"
        return {"enabled": self.enabled, "dtype": dtype, "loss_scaling": self.scaled, "steps": self.steps,
                "skipped_steps": self.skipped_steps,
                "final_scale": float(self.scaler.get_scale()) if self.scaled else None}
