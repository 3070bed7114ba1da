"""Segmentation models: U-Net3+ on smp encoders, DeepLabV3+, their losses and checkpoints.

Importing this package is cheap: torch and segmentation-models-pytorch load when a name is first used.

Modules
-------
``unet3plus``
    :class:`UNet3Plus` (full-scale skips, deep supervision, optional classification-guided module).
``losses``
    :func:`dice_loss`, :func:`bce_dice_loss`, :func:`deep_supervision_loss`.
``factory``
    :func:`build_segmentation_model`, :func:`model_summary`, :func:`save_checkpoint`, :func:`load_checkpoint`.
``encoders``
    :func:`build_encoder` (offline smp encoders with optional local weights), :class:`EncoderWeightsError`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UNet3Plus": "unet3plus",
    "pad_to_multiple": "unet3plus",
    "dice_loss": "losses",
    "bce_dice_loss": "losses",
    "deep_supervision_loss": "losses",
    "split_model_output": "losses",
    "build_segmentation_model": "factory",
    "model_summary": "factory",
    "save_checkpoint": "factory",
    "load_checkpoint": "factory",
    "PaddedModel": "factory",
    "MODEL_NAMES": "factory",
    "FAST_CPU_UNET3PLUS": "factory",
    "build_encoder": "encoders",
    "EncoderWeightsError": "encoders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cervkit.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cervkit.models.{module}"), name)
