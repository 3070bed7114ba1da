"""Build segmentation models by name, summarise them, and save / load self-describing checkpoints.

Models: ``"unet3plus"`` (:class:`cervkit.models.unet3plus.UNet3Plus`, ours) and ``"deeplabv3plus"``
(``smp.DeepLabV3Plus`` wrapped in :class:`PaddedModel`, so any input size works). Every model built here has
a ``build_config`` dict (``name`` + constructor keywords, weights excluded) that a checkpoint stores, so
:func:`load_checkpoint` rebuilds the architecture without outside knowledge.
"""

from __future__ import annotations

import copy
import json
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cervkit.core.errors import CervkitInputError
from cervkit.models.encoders import EncoderWeights, build_encoder
from cervkit.models.unet3plus import UNet3Plus, pad_to_multiple

MODEL_NAMES = ("unet3plus", "deeplabv3plus")
CHECKPOINT_FORMAT = "cervkit-segmentation-checkpoint"
CHECKPOINT_VERSION = 1

FAST_CPU_UNET3PLUS: dict[str, Any] = {"encoder_name": "mobilenet_v2", "cat_channels": 16, "fast_upsample": True}
"""U-Net3+ settings that fit the CPU budget (7 crops of 128×128 in well under 0.1 s on 2 cores)."""


class PaddedModel(nn.Module):
    """Wrap a model needing sizes divisible by ``multiple``: pad the input, crop the logits back.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits (N, C, H', W') for input (N, in_channels, H', W').
    multiple : int
        Required divisor of the height and width.
    build_config : dict
        What :func:`build_segmentation_model` needs to rebuild it.
    """

    def __init__(self, model: nn.Module, multiple: int, build_config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.multiple = multiple
        self.build_config = dict(build_config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` (N, C, H, W) to the multiple, run the model, return logits (N, classes, H, W).

        Parameters
        ----------
        x : torch.Tensor
            Input (N, C, H, W).

        Returns
        -------
        torch.Tensor
            Logits (N, classes, H, W).
        """
        if x.ndim != 4:
            raise CervkitInputError(f"expected a tensor of shape (N, C, H, W), got {tuple(x.shape)}")
        height, width = int(x.shape[-2]), int(x.shape[-1])
        padded, (top, left) = pad_to_multiple(x, self.multiple)
        return self.model(padded)[..., top:top + height, left:left + width]


def build_segmentation_model(name: str, *, encoder_name: str = "resnet18", encoder_weights: EncoderWeights = None,
                             in_channels: int = 1, classes: int = 1, **kw: Any) -> nn.Module:
    """Build a segmentation model; never downloads.

    Parameters
    ----------
    name : {"unet3plus", "deeplabv3plus"}
        Architecture.
    encoder_name : str
        smp encoder name.
    encoder_weights : str, PathLike or None
        None, a local state-dict file, or an smp pretrained set already cached
        (:func:`cervkit.models.encoders.build_encoder`).
    in_channels, classes : int
        Input channels and output logit channels.
    **kw
        Further constructor keywords (``cat_channels``, ``deep_supervision``, ``cgm``, ``encoder_depth``,
        ``fast_upsample`` for U-Net3+; e.g. ``encoder_output_stride``, ``decoder_channels`` for DeepLabV3+).
        They must be JSON values so checkpoints can store them.

    Returns
    -------
    torch.nn.Module
        The model, with a ``build_config`` dict attribute.
    """
    key = name.lower().replace("-", "").replace("_", "")
    try:
        json.dumps(kw)
    except TypeError as exc:
        raise ValueError(f"model keywords must be JSON values: {exc}") from exc
    if key == "unet3plus":
        return UNet3Plus(encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
                         classes=classes, **kw)
    if key == "deeplabv3plus":
        import segmentation_models_pytorch as smp

        model = smp.DeepLabV3Plus(encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels,
                                  classes=classes, **kw)
        if encoder_weights is not None:
            depth = int(kw.get("encoder_depth", 5))
            loaded = build_encoder(encoder_name, in_channels=in_channels, depth=depth, weights=encoder_weights)
            model.encoder.load_state_dict(loaded.state_dict())
        multiple = 2 ** int(kw.get("encoder_depth", 5))
        config = {"name": "deeplabv3plus", "encoder_name": encoder_name, "in_channels": in_channels,
                  "classes": classes, **kw}
        return PaddedModel(model, multiple, config)
    raise ValueError(f"unknown segmentation model {name!r}; choose one of {MODEL_NAMES}")


def _build_config(model: nn.Module) -> dict[str, Any]:
    """Return the model's ``build_config`` or raise a clear error."""
    config = getattr(model, "build_config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError("model has no build_config: build it with cervkit.models.build_segmentation_model")
    return dict(config)


def model_summary(model: nn.Module) -> dict[str, Any]:
    """Count a model's parameters.

    Parameters
    ----------
    model : torch.nn.Module
        Any module; ``build_config`` is reported when present.

    Returns
    -------
    dict
        ``params``, ``trainable_params``, ``encoder_params`` (0 without an ``encoder``), ``decoder_params``
        (the rest), ``size_mb`` (float32 parameters), ``config`` (``build_config`` or None).
    """
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inner = getattr(model, "model", model)
    encoder = getattr(inner, "encoder", None)
    encoder_params = sum(p.numel() for p in encoder.parameters()) if isinstance(encoder, nn.Module) else 0
    return {"params": params, "trainable_params": trainable, "encoder_params": encoder_params,
            "decoder_params": params - encoder_params, "size_mb": params * 4 / 1e6,
            "config": copy.deepcopy(getattr(model, "build_config", None))}


def save_checkpoint(path: str | PathLike[str], model: nn.Module, config: dict[str, Any] | None = None, *,
                    overwrite: bool = False) -> Path:
    """Save weights, the architecture and a run config in one file.

    Parameters
    ----------
    path : str or PathLike
        Target file (parent folders are created).
    model : torch.nn.Module
        A model from :func:`build_segmentation_model` (or a :class:`UNet3Plus`).
    config : dict, optional
        The run's settings (JSON values only), returned unchanged by :func:`load_checkpoint`.
    overwrite : bool
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    user_config = dict(config or {})
    try:
        json.dumps(user_config)
    except TypeError as exc:
        raise ValueError(f"checkpoint config must hold JSON values only: {exc}") from exc
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": _build_config(model),
               "config": user_config,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_payload(path: Path, fmt: str, what: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cervkit weights file with ``weights_only=True`` (no code unpickled) and check its ``format``.

    Parameters
    ----------
    path : pathlib.Path
    fmt : str
        The ``format`` field expected.
    what : str
        What the file is, for the messages (``"segmentation checkpoint"``).
    map_location : str or torch.device

    Returns
    -------
    dict
        The payload.

    Raises
    ------
    CervkitInputError
        A missing, unreadable or foreign file.
    """
    if not path.is_file():
        raise CervkitInputError(f"{what} file not found", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CervkitInputError(f"cannot read {what} ({type(exc).__name__}: {exc})", path) from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CervkitInputError(f"not a cervkit {what}", path)
    return payload


def load_checkpoint(path: str | PathLike[str], map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or PathLike
        The checkpoint file.
    map_location : str or torch.device
        Where to put the weights.

    Returns
    -------
    model : torch.nn.Module
        The rebuilt model in eval mode, on ``map_location``.
    config : dict
        The run config stored with it.

    Raises
    ------
    CervkitInputError
        Missing, unreadable or foreign files, and weights that do not fit the stored architecture.
    """
    path = Path(path)
    payload = read_payload(path, CHECKPOINT_FORMAT, "segmentation checkpoint", map_location)
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise CervkitInputError(f"checkpoint version {payload['version']} is newer than this cervkit reads", path)
    model_config = dict(payload["model_config"])
    name = model_config.pop("name")
    try:
        model = build_segmentation_model(name, encoder_weights=None, **model_config)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CervkitInputError(f"checkpoint does not rebuild its model: {exc}", path) from exc
    model.to(map_location).eval()
    return model, dict(payload["config"])
