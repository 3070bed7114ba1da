"""The anchor classifier's network: a small CNN on one body's context window, and its checkpoint file.

About 0.1 M parameters: the task (is the sacrum under this body? is this the sacrum?) needs the coarse shape of a
48-pixel window, not a segmentation network's capacity; it trains in about a minute on two CPU cores and adds
well under 1 MiB to a shipped model. See :mod:`cervkit.labels.context` for the classes and the window.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ANCHOR_FORMAT", "AnchorNet", "load_anchor", "save_anchor"]

ANCHOR_FORMAT = "cervkit-anchor"
"""The ``format`` field of an anchor checkpoint."""


class AnchorNet(nn.Module):
    """Four conv-BN-ReLU blocks with max pooling, global average pooling, one linear layer.

    Parameters
    ----------
    n_classes : int
        Outputs (logits).
    width : int
        Channels of the first block (doubled by the next two, kept by the last).
    """

    def __init__(self, n_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.n_classes, self.width = int(n_classes), int(width)
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(chans[-1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 1, S, S)`` normalised context windows.

        Returns
        -------
        torch.Tensor
            ``(N, n_classes)`` logits.
        """
        return self.head(self.features(x))


def save_anchor(path: str | PathLike[str], net: AnchorNet, config: dict[str, Any]) -> Path:
    """Write weights, architecture and settings in one file (replacing it atomically).

    Parameters
    ----------
    path : str or PathLike
    net : AnchorNet
    config : dict
        JSON values (classes, window settings, validation result).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": ANCHOR_FORMAT, "version": 1, "n_classes": net.n_classes, "width": net.width,
               "config": dict(config), "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_anchor(path: str | PathLike[str], map_location: str | torch.device = "cpu") -> tuple[AnchorNet, dict]:
    """Read a file written by :func:`save_anchor` (``weights_only``: no code is unpickled).

    Parameters
    ----------
    path : str or PathLike
    map_location : str or torch.device

    Returns
    -------
    net : AnchorNet
        In eval mode.
    config : dict

    Raises
    ------
    CervkitInputError
        A missing, unreadable or foreign file.
    """
    from cervkit.models.factory import read_payload

    payload = read_payload(Path(path), ANCHOR_FORMAT, "anchor classifier", map_location)
    net = AnchorNet(int(payload["n_classes"]), int(payload["width"]))
    net.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    return net.to(map_location).eval(), dict(payload["config"])
