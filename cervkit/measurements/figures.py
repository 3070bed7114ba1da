"""Drawing measurements on an image: endplate lines, corners, centroids, level names, Cobb angle.

:func:`draw_measurements` takes the table of :func:`cervkit.measurements.spine.measure_vertebrae` or the
dict of :func:`cervkit.measurements.spine.measure_spine` (its ``vertebrae`` rows are used). Coordinates in
the table are pixel-edge (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``); matplotlib's
``imshow`` puts pixel centres at integers, so 0.5 is subtracted before drawing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cervkit.measurements.endplates import CORNERS

_MARKERS = {"anterior_superior": "^", "posterior_superior": "v", "anterior_inferior": "s",
            "posterior_inferior": "D"}


def _rows(table_or_result: pd.DataFrame | Mapping[str, Any]) -> tuple[pd.DataFrame, float | None]:
    if isinstance(table_or_result, pd.DataFrame):
        from cervkit.measurements.spine import cobb_angle_deg

        table = table_or_result
        cobb = cobb_angle_deg(table, "C2", "C7") if len(table) else None
        return table, cobb
    return pd.DataFrame(table_or_result.get("vertebrae", [])), table_or_result.get("c2c7_cobb_deg")


def draw_measurements(ax: Any, image: Any, labels: np.ndarray | None,
                      table_or_result: pd.DataFrame | Mapping[str, Any], *, alpha: float = 0.25,
                      show_legend: bool = True) -> Any:
    """Draw endplates, corners, centroids, level names and the C2–C7 Cobb angle on an axis.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    image : numpy.ndarray or cervkit.core.image.Image
        The (H, W) image in [0, 1] (an ``Image``'s ``array`` is used).
    labels : numpy.ndarray, optional
        The label map, drawn as a translucent overlay when given.
    table_or_result : pandas.DataFrame or dict
        :func:`cervkit.measurements.spine.measure_vertebrae` table or :func:`cervkit.measurements.spine.measure_spine` result.
    alpha : float
        Overlay opacity.
    show_legend : bool
        Add a legend for the corner markers.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.
    """
    from cervkit.viz import overlay

    arr = np.asarray(getattr(image, "array", image), dtype=np.float32)
    if labels is not None:
        ax.imshow(overlay(arr, labels, alpha=alpha, outline=True))
    else:
        ax.imshow(arr, cmap="gray", vmin=0.0, vmax=1.0)
    table, cobb = _rows(table_or_result)
    for _, row in table.iterrows():
        pt = {k: np.array([row[f"{k}_x_px"], row[f"{k}_y_px"]]) - 0.5 for k in CORNERS}
        for a, b, colour in (("anterior_superior", "posterior_superior", "#00e5ff"),
                             ("anterior_inferior", "posterior_inferior", "#ffd400")):
            if np.isfinite(pt[a]).all() and np.isfinite(pt[b]).all():
                ax.plot([pt[a][0], pt[b][0]], [pt[a][1], pt[b][1]], color=colour, lw=1.4)
        for k in CORNERS:
            ax.plot(*pt[k], marker=_MARKERS[k], ms=4, color="#ff4081", ls="none",
                    label=k.replace("_", " ") if show_legend and row.name == table.index[0] else None)
        cx, cy = row["centroid_x_px"] - 0.5, row["centroid_y_px"] - 0.5
        ax.plot(cx, cy, marker="+", ms=7, color="white", ls="none")
        name = row["level"] if isinstance(row["level"], str) else f"#{int(row['label'])}"
        ax.annotate(name, (cx, cy), xytext=(4, -4), textcoords="offset points", color="white", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.5, "lw": 0})
    text = "C2–C7 Cobb: " + ("n/a (C2 or C7 not identified)" if cobb is None else f"{cobb:+.1f}°")
    ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", ha="left", color="white", fontsize=9,
            bbox={"boxstyle": "round,pad=0.3", "fc": "black", "alpha": 0.6, "lw": 0})
    if show_legend and len(table):
        ax.legend(loc="lower right", fontsize=6, framealpha=0.6)
    ax.set_axis_off()
    return ax
