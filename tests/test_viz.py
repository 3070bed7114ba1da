"""Overlays colour each label, keep the background gray, and figures are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cervkit import viz


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((40, 50), 0.5, np.float32)
    labels = np.zeros((40, 50), np.uint8)
    labels[5:15, 5:20] = 1
    labels[20:35, 25:45] = 2
    return image, labels


def test_overlay_colours_labels_and_keeps_background() -> None:
    image, labels = _scene()
    rgb = viz.overlay(image, labels, alpha=1.0, outline=False)
    assert rgb.dtype == np.uint8 and rgb.shape == (40, 50, 3)
    colors = viz.label_colors(2)
    assert (rgb[labels == 1] == colors[0]).all() and (rgb[labels == 2] == colors[1]).all()
    assert (rgb[labels == 0] == 128).all()  # 0.5 gray, untouched


def test_overlay_half_alpha_blends() -> None:
    image, labels = _scene()
    rgb = viz.overlay(image, labels, alpha=0.5, outline=False).astype(int)
    expected = np.round(0.5 * 128 + 0.5 * viz.label_colors(1)[0].astype(float)).astype(int)
    assert np.abs(rgb[10, 10] - expected).max() <= 1


def test_overlay_outline_marks_boundary_only() -> None:
    image, labels = _scene()
    rgb = viz.overlay(image, labels, alpha=0.0, outline=True)
    assert (rgb[5, 10] == viz.label_colors(1)[0]).all()  # top edge of label 1
    assert (rgb[10, 10] == 128).all()  # interior stays the image at alpha 0


def test_overlay_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        viz.overlay(np.zeros((4, 4)), np.zeros((4, 5), np.uint8))


def test_grid_and_save(tmp_path: Path) -> None:
    image, labels = _scene()
    boxes = np.array([[5, 5, 20, 15], [25, 20, 45, 35]], np.float32)
    fig = viz.image_grid([image, image, image], [labels, None, labels], titles=["a", "b", "c"], ncols=2,
                         boxes=[boxes, None, None])
    path = viz.save_figure(fig, "grid", tmp_path)
    assert path.is_file() and path.stat().st_size > 1000
    assert len(fig.axes) == 4 and len(fig.axes[0].patches) == 2
