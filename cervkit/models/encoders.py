"""Offline construction of segmentation-models-pytorch encoders, with optional local weights.

cervkit never downloads at run time. ``weights`` may be

* ``None``: random initialisation (train from scratch; always works offline);
* a path to a local ``.pt`` / ``.pth`` / ``.safetensors`` state dict of the encoder (3-channel RGB weights are
  adapted to ``in_channels`` the way smp does: summed over colours for 1 channel); a whole smp model's state
  dict (keys ``encoder.…``) or a ``{"state_dict": …}`` checkpoint are accepted too;
* the name of an smp pretrained set (``"imagenet"``, ``"ssl"`` …), used **only** when its file is already in
  the local Hugging Face hub cache, where smp 0.6 keeps encoder weights (it no longer uses the torch hub
  cache). When it is not there, :class:`EncoderWeightsError` says to pass ``None`` or a local file, before
  anything touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cervkit.core.errors import CervkitInputError

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")

EncoderWeights = str | PathLike[str] | None


class EncoderWeightsError(CervkitInputError):
    """Encoder weights were asked for that cannot be had offline, or do not fit the encoder."""


def _hub_cache_dir() -> str:
    """Return the Hugging Face hub cache folder, read when called (so tests may point it elsewhere)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _pretrained_file(encoder_name: str, weights: str) -> Path:
    """Locate the cached smp pretrained file for ``(encoder_name, weights)`` without any network access.

    Parameters
    ----------
    encoder_name : str
        smp encoder name, e.g. ``"resnet18"``.
    weights : str
        Name of an smp pretrained set, e.g. ``"imagenet"``.

    Returns
    -------
    pathlib.Path
        The cached ``model.safetensors``.

    Raises
    ------
    EncoderWeightsError
        When the set is unknown for this encoder or its file is not in the local cache.
    """
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    advice = ("cervkit never downloads weights: pass encoder_weights=None to train from scratch, "
              "or the path of a local .pt/.pth/.safetensors state dict")
    if encoder_name.startswith("tu-"):
        raise EncoderWeightsError(
            f"named pretrained weights ({weights!r}) for timm encoder {encoder_name!r} would need a download; "
            + advice)
    settings = smp_encoders.get(encoder_name, {}).get("pretrained_settings", {}).get(weights)
    if settings is None:
        known = sorted(smp_encoders.get(encoder_name, {}).get("pretrained_settings", {}))
        raise EncoderWeightsError(
            f"encoder_weights={weights!r} is neither an existing file nor a pretrained set of encoder "
            f"{encoder_name!r} (sets: {known}); " + advice)
    cache = _hub_cache_dir()
    cached = try_to_load_from_cache(settings["repo_id"], "model.safetensors", cache_dir=cache,
                                    revision=settings["revision"])
    if not isinstance(cached, str) or not Path(cached).is_file():
        raise EncoderWeightsError(
            f"encoder_weights={weights!r} for {encoder_name!r} are not in the local Hugging Face cache "
            f"({cache}, repo {settings['repo_id']}) and " + advice)
    return Path(cached)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (torch pickle with ``weights_only=True``, or safetensors)."""
    if not path.is_file():
        raise EncoderWeightsError(
            "encoder weights file not found; pass encoder_weights=None to train from scratch", path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which one
        raise EncoderWeightsError(f"cannot read encoder weights ({type(exc).__name__}: {exc})", path) from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise EncoderWeightsError("encoder weights file does not hold a state dict of tensors", path)
    state = {str(k): v for k, v in loaded.items()}
    if any(k.startswith("encoder.") for k in state):  # a whole smp / cervkit model: keep its encoder
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return state


def build_encoder(encoder_name: str, *, in_channels: int = 1, depth: int = 5,
                  weights: EncoderWeights = None) -> nn.Module:
    """Build an smp encoder, optionally with local or already-cached pretrained weights.

    Parameters
    ----------
    encoder_name : str
        Any name ``segmentation_models_pytorch.encoders.get_encoder`` accepts (``"resnet18"``,
        ``"mobilenet_v2"``, ``"efficientnet-b0"``, ``"tu-…"`` …).
    in_channels : int
        Input channels (1 for grey X-ray / MRI).
    depth : int
        Number of downsampling stages (3 to 5); features come out at strides 2 … 2**depth.
    weights : str, PathLike or None
        See the module docstring: None, a local state-dict file, or a cached smp pretrained set name.

    Returns
    -------
    torch.nn.Module
        The encoder; ``encoder(x)`` returns ``depth + 1`` feature maps (the first is ``x`` itself).

    Raises
    ------
    EncoderWeightsError
        Weights that need a download, a missing or unreadable file, or weights that do not fit.
    """
    from segmentation_models_pytorch.encoders import get_encoder

    if weights is None:
        return get_encoder(encoder_name, in_channels=in_channels, depth=depth, weights=None)
    candidate = Path(weights).expanduser()
    is_file_like = isinstance(weights, PathLike) or candidate.suffix.lower() in WEIGHT_SUFFIXES \
        or candidate.exists() or "/" in str(weights)
    if is_file_like:
        path = candidate
        state = _read_state_dict(path)
    else:
        path = _pretrained_file(encoder_name, str(weights))
        state = _read_state_dict(path)
    last_error: Exception | None = None
    # RGB weights (smp / torchvision) load into a 3-channel encoder, then adapt; a saved 1-channel
    # encoder loads directly.
    for build_channels in dict.fromkeys((3, in_channels)):
        encoder = get_encoder(encoder_name, in_channels=build_channels, depth=depth, weights=None)
        try:
            encoder.load_state_dict(dict(state))
        except RuntimeError as exc:
            last_error = exc
            continue
        if build_channels != in_channels:
            encoder.set_in_channels(in_channels, pretrained=True)
        return encoder
    raise EncoderWeightsError(f"weights do not fit encoder {encoder_name!r}: {last_error}", path)
