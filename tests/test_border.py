"""Bodies cut by the image border: whole-body windows mirrored across the border (cervkit.inference.border)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cervkit.inference.border import cut_sides, uncut_boxes, whole_aspect
from cervkit.inference.segmenter import Segmenter
from cervkit.labels.crops import crop_window, cut_window


class _Bright(torch.nn.Module):
    """Logits that follow the normalised intensity: bright pixels are body."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * x


def test_cut_sides_marks_the_sides_on_the_border() -> None:
    boxes = np.array([[0, 10, 20, 30], [10, 0, 30, 20], [40, 40, 64, 50], [30, 50, 40, 64], [10, 10, 20, 20]], float)
    sides = cut_sides(boxes, (64, 64))
    assert sides.tolist() == [[True, False, False, False], [False, True, False, False],
                              [False, False, True, False], [False, False, False, True],
                              [False, False, False, False]]


def test_uncut_boxes_grow_a_sliver_to_the_others_shape_and_at_most_its_mirror() -> None:
    shape = (100, 100)
    clear = [[30, 20, 70, 50], [30, 55, 70, 85]]  # 40 wide, 30 high: aspect 0.75
    assert whole_aspect(np.array(clear, float), shape) == pytest.approx(0.75)
    sliver = [32, 90, 72, 100]  # 40 wide, 10 high, on the bottom border
    top = [30, 0, 70, 25]  # 25 high on the top border: grows 5 upwards to 30
    out = uncut_boxes(np.array(clear + [sliver, top], float), shape)
    np.testing.assert_allclose(out[:2], clear)
    np.testing.assert_allclose(out[2], [32, 90, 72, 110])  # wants 30 high, the mirror holds 10 more
    np.testing.assert_allclose(out[3], [30, -5, 70, 25])
    free = uncut_boxes(np.array([sliver], float), shape, height=30.0, width=40.0, mirror_cap=False)
    np.testing.assert_allclose(free[0], [32, 90, 72, 120])


def test_cut_window_mirrors_the_image_at_the_border() -> None:
    image = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    np.testing.assert_array_equal(cut_window(image, (5, 3, 15, 12)), image[3:12, 5:15])
    out = cut_window(image, (5, 14, 15, 26))  # six rows below the last one
    assert out.shape == (12, 10)
    np.testing.assert_array_equal(out[:6], image[14:20, 5:15])
    np.testing.assert_array_equal(out[6:], image[18:12:-1, 5:15])  # mirrored about the edge row
    corner = cut_window(image, (-3, -2, 4, 5))
    np.testing.assert_array_equal(corner, np.pad(image, ((2, 0), (3, 0)), mode="reflect")[:7, :7])


def test_the_segmenter_sees_a_cut_body_whole_and_returns_only_the_part_in_view() -> None:
    image = np.full((96, 80), 0.1, np.float32)
    image[10:40, 20:60] = 0.9  # a whole body, 40 x 30
    image[86:96, 22:62] = 0.9  # the top of a body cut by the bottom border, 10 high
    boxes = np.array([[20, 10, 60, 40], [22, 86, 62, 96]], np.float32)
    seg = Segmenter(_Bright(), crop_size=32, margin=0.15, device="cpu")
    windows, batch = seg.prepare(image, boxes)
    assert windows[0] == crop_window(boxes[0], image.shape, 0.15)  # clear of the border: as in training
    x0, y0, x1, y1 = windows[1]
    assert y1 > image.shape[0] and y1 - y0 > 2 * (image.shape[0] - y0) - 4  # reaches across the border
    crop = batch[1, 0].numpy()  # the sliver and its mirror: bright on both sides of the border
    border = round((image.shape[0] - y0) / (y1 - y0) * 32)
    assert (crop[border - 6:border, 10:22] > 0).all() and (crop[border:border + 6, 10:22] > 0).all()
    clipped_crop = Segmenter(_Bright(), crop_size=32, margin=0.15, device="cpu", uncut=False).prepare(image, boxes)[1]
    assert (clipped_crop[1, 0, -4:, 10:22] > 0).all()  # clipped: the sliver fills the bottom of the crop
    clipped, _ = Segmenter(_Bright(), crop_size=32, margin=0.15, device="cpu", uncut=False).prepare(image, boxes)
    assert clipped[1] == crop_window(boxes[1], image.shape, 0.15)
    preds = seg.predict_crops(image, boxes)
    ix0, iy0, ix1, iy1 = preds[1].int_box
    assert (iy1, ix0 >= 0, iy0 >= 0) == (96, True, True) and preds[1].prob.shape == (iy1 - iy0, ix1 - ix0)
    mask = np.zeros(image.shape, bool)
    mask[iy0:iy1, ix0:ix1] = preds[1].prob > 0.5
    truth = np.zeros(image.shape, bool)
    truth[86:96, 22:62] = True
    assert (mask & truth).sum() / (mask | truth).sum() > 0.8


@pytest.mark.realdata
def test_a_body_cut_by_a_zoomed_in_field_of_view_is_found(real_manifest_path: Path) -> None:
    """Real T2 test patient 12 at 2x zoom: the bottom body, cut by the border, is found only when seen whole."""
    from cervkit.evaluation.matching import drop_unannotated, image_metrics
    from cervkit.inference.registry import load_predictor
    from cervkit.io.images import read_image, read_mask
    from cervkit.transforms.shift import apply_shift
    from cervkit.zoo.catalog import test_manifest

    row = next(r for r in test_manifest("mri", sources=["mri_lumbar_t2"]).rows() if Path(r.image).stem ==
               "zukic2014_12_s33")
    shifted = apply_shift("zoom", read_image(row.image).array, read_mask(row.mask), 2.0, seed=0)
    predictor = load_predictor("mri", device="cpu")
    found = {}
    for uncut in (True, False):
        predictor.segmenter.uncut = uncut
        labels = drop_unannotated(predictor.predict(shifted.image).labels, shifted.labels)
        found[uncut] = image_metrics(labels, shifted.labels)["tp"]
    n_gt = int(shifted.labels.max())
    assert found == {True: n_gt, False: n_gt - 1}
