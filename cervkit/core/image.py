"""The :class:`Image` every reader returns: pixels, spacing and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Image:
    """A 2D grayscale image in the project's convention.

    Attributes
    ----------
    array : numpy.ndarray
        float32 (H, W), values in [0, 1], row-major.
    spacing_mm : tuple of float or None
        (row, col) pixel spacing in mm, or None when unknown. Never a made-up 1.0.
    meta : dict
        Provenance: ``source`` (file), ``modality``, ``photometric``,
        ``spacing_kind`` (``"patient"`` for PixelSpacing, ``"detector"`` for
        ImagerPixelSpacing, None when unknown) and reader-specific keys.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 2:
            raise ValueError(f"Image.array must be 2D, got shape {arr.shape}")
        self.array = arr.astype(np.float32, copy=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the pixel array."""
        return (int(self.array.shape[0]), int(self.array.shape[1]))
