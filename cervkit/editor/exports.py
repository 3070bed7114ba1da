"""The editor's exports of the current map: label PNG, overlay PNG and NIfTI (mixed into EditorState).

Each is written atomically by :mod:`cervkit.export.bundle` and never replaces a file unless asked.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

__all__ = ["ExportOps"]


class ExportOps:
    """Exports for :class:`cervkit.editor.state.EditorState` (its ``image``, ``labels`` and ``spacing_mm``)."""

    image: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float] | None

    def export_labels(self, path: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the label map as 8-bit PNG (:func:`cervkit.export.bundle.write_label_png`), atomically.

        Parameters
        ----------
        path : str or PathLike
            Destination PNG.
        overwrite : bool, default False
            Replace an existing file; otherwise an existing ``path`` raises.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        from cervkit.export.bundle import write_label_png

        return write_label_png(path, self.labels, overwrite=overwrite)

    def export_overlay(self, path: str | PathLike[str], *, alpha: float = 0.4, overwrite: bool = False) -> Path:
        """Write the image with coloured labels as RGB PNG (:func:`cervkit.export.bundle.write_overlay_png`).

        Parameters
        ----------
        path : str or PathLike
            Destination PNG.
        alpha : float, default 0.4
            Opacity of the label colours.
        overwrite : bool, default False
            Replace an existing file; otherwise an existing ``path`` raises.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        from cervkit.export.bundle import write_overlay_png

        return write_overlay_png(path, self.image, self.labels, alpha=alpha, overwrite=overwrite)

    def export_nifti(self, path: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the label map as one-slice NIfTI with the spacing (:func:`cervkit.export.bundle.write_label_nifti`).

        Parameters
        ----------
        path : str or PathLike
            Destination ``.nii`` or ``.nii.gz``.
        overwrite : bool, default False
            Replace an existing file; otherwise an existing ``path`` raises.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        from cervkit.export.bundle import write_label_nifti

        return write_label_nifti(path, self.labels, self.spacing_mm, overwrite=overwrite)
