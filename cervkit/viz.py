"""Pictures for the notebooks: label-map overlays, boxes, image grids.

``overlay`` returns an RGB array (also used by the exports); the ``show_*``
helpers draw onto matplotlib axes and return them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# One colour per vertebra (tab10 without grey), cycling for K > 9.
_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
], dtype=np.uint8)


def label_colors(n: int) -> np.ndarray:
    """Return ``n`` RGB colours (uint8, shape (n, 3)); label k uses row k-1.

    Parameters
    ----------
    n : int
        Number of labels.

    Returns
    -------
    numpy.ndarray
        uint8 (n, 3).
    """
    return _PALETTE[np.arange(n) % len(_PALETTE)]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grayscale float [0, 1] (H, W) → uint8 RGB (H, W, 3).

    Parameters
    ----------
    image : numpy.ndarray
        2D image in [0, 1] (values outside are clipped).

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3).
    """
    gray = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return np.repeat((gray * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def overlay(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.4, outline: bool = True) -> np.ndarray:
    """Blend a label map over a grayscale image, one colour per label.

    Parameters
    ----------
    image : numpy.ndarray
        2D float image in [0, 1].
    labels : numpy.ndarray
        uint8 label map of the same shape (0 = background).
    alpha : float
        Opacity of the fill.
    outline : bool
        Draw each region's boundary at full opacity.

    Returns
    -------
    numpy.ndarray
        uint8 RGB (H, W, 3).
    """
    labels = np.asarray(labels)
    if labels.shape != np.asarray(image).shape:
        raise ValueError(f"image {np.asarray(image).shape} and labels {labels.shape} differ in shape")
    rgb = to_rgb(image).astype(np.float32)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return rgb.astype(np.uint8)
    colors = np.vstack([np.zeros((1, 3), np.uint8), label_colors(n)]).astype(np.float32)
    fg = labels > 0
    rgb[fg] = (1.0 - alpha) * rgb[fg] + alpha * colors[labels[fg]]
    if outline:
        from skimage.segmentation import find_boundaries

        edge = find_boundaries(labels, mode="inner") & fg
        rgb[edge] = colors[labels[edge]]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def show_overlay(ax, image: np.ndarray, labels: np.ndarray | None = None, *, boxes: np.ndarray | None = None,
                 title: str | None = None, alpha: float = 0.4):
    """Draw an image, optionally with a label overlay and boxes, on a matplotlib axis.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Target axis.
    image : numpy.ndarray
        2D float image in [0, 1].
    labels : numpy.ndarray, optional
        Label map to overlay.
    boxes : numpy.ndarray, optional
        (N, 4) boxes (x_min, y_min, x_max, y_max), pixel-edge coordinates.
    title : str, optional
        Axis title.
    alpha : float
        Overlay opacity.

    Returns
    -------
    matplotlib.axes.Axes
        The same axis.
    """
    from matplotlib.patches import Rectangle

    shown = overlay(image, labels, alpha=alpha) if labels is not None else image
    ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if boxes is not None:
        colors = label_colors(len(boxes)) / 255.0
        for (x0, y0, x1, y1), color in zip(np.asarray(boxes, dtype=float), colors):
            # pixel-edge boxes: pixel centres sit at integers, so edges are at -0.5 offsets
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.2, ec=color))
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def image_grid(images: Sequence[np.ndarray], labels: Sequence[np.ndarray | None] | None = None, *,
               titles: Sequence[str] | None = None, ncols: int = 4, size: float = 2.6,
               boxes: Sequence[np.ndarray | None] | None = None):
    """Plot images (with optional overlays) in a grid.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2D images in [0, 1].
    labels : sequence of numpy.ndarray or None, optional
        Label maps, one per image (None for none).
    titles : sequence of str, optional
        One title per image.
    ncols : int
        Columns.
    size : float
        Inches per panel.
    boxes : sequence of numpy.ndarray or None, optional
        Boxes per image.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_axis_off()
            continue
        show_overlay(ax, images[i], labels[i] if labels is not None else None,
                     boxes=boxes[i] if boxes is not None else None,
                     title=titles[i] if titles is not None else None)
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, folder: Path | None = None, *, dpi: int = 110) -> Path:
    """Save a figure as PNG under ``outputs/figures`` (or ``folder``) and return its path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    name : str
        File stem (``.png`` added).
    folder : pathlib.Path, optional
        Default: ``outputs_dir()/figures``.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from cervkit.core.config import outputs_dir

    folder = folder or outputs_dir() / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def record_result(notebook: str, metric: str, value: float | int | str, *, unit: str = "", note: str = "",
                  folder: Path | None = None) -> Path:
    """Record a headline number for ``outputs/index.html`` (``outputs/results/<notebook>.json``).

    Parameters
    ----------
    notebook : str
        The notebook's stem, e.g. ``"00_quickstart"``.
    metric : str
        What the number is, e.g. ``"xray phantom Dice"``.
    value : float, int or str
    unit : str
    note : str
        On what it was measured.
    folder : pathlib.Path, optional
        Default: ``outputs_dir()/results``.

    Returns
    -------
    pathlib.Path
        The JSON file (one entry per metric, replaced when recorded again).
    """
    import json

    from cervkit.core.config import outputs_dir

    folder = folder or outputs_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebook}.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[metric] = {"value": value.item() if hasattr(value, "item") else value, "unit": unit, "note": note}
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return path

