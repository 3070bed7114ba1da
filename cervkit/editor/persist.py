"""The editor's crash-safe autosave: a label PNG plus a small JSON sidecar.

Both files are written to a temporary name and moved into place with
``os.replace`` (:func:`cervkit.core.files.atomic_path`), so a crash mid-write
leaves the previous autosave intact, never a half-written one.
"""

from __future__ import annotations

import json
import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path, atomic_write_bytes

__all__ = ["read_autosave", "sidecar_path", "write_autosave"]


def sidecar_path(path: str | PathLike[str]) -> Path:
    """Return the JSON sidecar of an autosave PNG: ``edit.png`` → ``edit.png.json``.

    Parameters
    ----------
    path : str or PathLike
        The autosave PNG.

    Returns
    -------
    pathlib.Path
        The sidecar's path.
    """
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_autosave(path: str | PathLike[str], labels: np.ndarray, info: dict[str, Any]) -> Path:
    """Write the label map (PNG, fast compression) and its sidecar, each atomically.

    Parameters
    ----------
    path : str or PathLike
        The autosave PNG (replaced if it exists: it is the editor's own file).
    labels : numpy.ndarray
        uint8 (H, W) label map.
    info : dict
        JSON-serialisable facts (source, step count …); ``time`` (ISO 8601) and
        ``shape`` are added.

    Returns
    -------
    pathlib.Path
        The PNG written.
    """
    from PIL import Image as PILImage

    path = Path(path)
    arr = np.ascontiguousarray(labels, dtype=np.uint8)
    with atomic_path(path, overwrite=True) as tmp:
        PILImage.fromarray(arr).save(tmp, format="PNG", compress_level=1)
    record = dict(info)
    record["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["shape"] = [int(arr.shape[0]), int(arr.shape[1])]
    record["labels_file"] = path.name
    atomic_write_bytes(sidecar_path(path), json.dumps(record, indent=1).encode("utf-8"), overwrite=True)
    return path


def read_autosave(path: str | PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an autosave written by :func:`write_autosave`.

    Parameters
    ----------
    path : str or PathLike
        The autosave PNG.

    Returns
    -------
    labels : numpy.ndarray
        uint8 (H, W).
    info : dict
        The sidecar's content ({} when the sidecar is missing or unreadable).

    Raises
    ------
    CervkitInputError
        The PNG is missing or not a label map.
    """
    from cervkit.io.images import read_mask

    path = Path(path)
    labels = read_mask(path)
    info: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            info = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
    if "shape" in info and tuple(info["shape"]) != labels.shape:
        raise CervkitInputError(
            f"autosave holds a {labels.shape} map but its sidecar says {tuple(info['shape'])}", path)
    return labels, info
