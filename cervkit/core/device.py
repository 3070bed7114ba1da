"""Choosing the compute device: one rule for every stage (CUDA when visible, else CPU).

:func:`resolve_device` gives a :class:`torch.device` for the PyTorch stages; :func:`ultralytics_device`
gives the same choice in ultralytics' spelling (``"0"`` for the first GPU). torch is imported inside the
functions, so importing this module stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["cuda_available", "resolve_device", "ultralytics_device"]


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU.

    Returns
    -------
    bool
    """
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device``, or CUDA when available and CPU otherwise.

    Parameters
    ----------
    device : str or torch.device, optional
        Explicit device (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …).

    Returns
    -------
    torch.device
        The device to use.
    """
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if cuda_available() else "cpu")


def ultralytics_device(device: str | int | None = None) -> str:
    """Return ``device`` or, when None, ``"0"`` (first CUDA GPU) if available else ``"cpu"``.

    Parameters
    ----------
    device : str or int, optional
        Explicit ultralytics device (``"cpu"``, ``0``, ``"cuda:0"`` …).

    Returns
    -------
    str
        The device string for ultralytics.
    """
    if device is not None:
        return str(device)
    return "0" if cuda_available() else "cpu"
