"""Label map ↔ instances ↔ boxes, YOLO label files and crops, checked against known geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from skimage.draw import ellipse

from cervkit.core.errors import CervkitInputError
from cervkit.labels import instances as inst
from cervkit.labels import yolo as yolo_labels

# (row0, row1, col0, col1) of well-separated rectangles, top to bottom
RECTS = [(5, 20, 10, 40), (30, 50, 15, 45), (60, 72, 8, 30)]


def rect_labels(values: list[int], shape: tuple[int, int] = (80, 60)) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    for v, (r0, r1, c0, c1) in zip(values, RECTS):
        out[r0:r1, c0:c1] = v
    return out


def ellipse_labels(shape: tuple[int, int] = (150, 120)) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    for k, (r, c) in enumerate([(25, 60), (70, 55), (115, 65)], start=1):
        rr, cc = ellipse(r, c, 14, 30, rotation=0.25 * k, shape=shape)
        out[rr, cc] = k
    return out


def test_relabel_orders_by_centroid_row_and_drops_gaps() -> None:
    scrambled = rect_labels([9, 2, 5])
    out = inst.relabel_top_to_bottom(scrambled)
    assert out.dtype == np.uint8
    assert np.array_equal(out, rect_labels([1, 2, 3]))


def test_relabel_breaks_row_ties_by_column() -> None:
    lab = np.zeros((20, 40), np.uint8)
    lab[5:10, 25:30] = 1  # right
    lab[5:10, 5:10] = 2  # left, same rows
    out = inst.relabel_top_to_bottom(lab)
    assert out[7, 7] == 1 and out[7, 27] == 2


def test_instances_geometry_matches_the_rectangles() -> None:
    found = inst.instances_from_labels(rect_labels([1, 2, 3]))
    assert [i.label for i in found] == [1, 2, 3]
    for i, (r0, r1, c0, c1) in zip(found, RECTS):
        assert i.box == (c0, r0, c1, r1)
        assert i.area == (r1 - r0) * (c1 - c0)
        assert i.centroid == pytest.approx(((r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2))
        assert i.mask.dtype == bool and i.mask.shape == (80, 60)


def test_binary_mask_is_split_into_components_top_to_bottom() -> None:
    binary = rect_labels([1, 1, 1]).astype(bool)
    found = inst.instances_from_labels(binary)
    assert [i.label for i in found] == [1, 2, 3]
    assert [i.box[1] for i in found] == [r0 for r0, *_ in RECTS]
    # binary=False keeps the single label as one instance
    assert len(inst.instances_from_labels(binary, binary=False)) == 1


def test_label_with_two_parts_stays_one_unless_asked() -> None:
    lab = rect_labels([1, 2, 2])
    assert [i.area for i in inst.instances_from_labels(lab)] == [
        (RECTS[0][1] - RECTS[0][0]) * (RECTS[0][3] - RECTS[0][2]),
        sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in RECTS[1:]),
    ]
    split = inst.instances_from_labels(lab, split_components=True)
    assert [i.label for i in split] == [1, 2, 3]


def test_min_area_drops_small_instances() -> None:
    lab = rect_labels([1, 2, 3])
    lab[76:78, 50:52] = 4  # 4 pixels
    assert len(inst.instances_from_labels(lab)) == 4
    assert [i.label for i in inst.instances_from_labels(lab, min_area=5)] == [1, 2, 3]
    assert len(inst.instances_from_labels(lab > 0, min_area=5)) == 3


def test_label_map_instances_label_map_round_trip() -> None:
    lab = ellipse_labels()
    back = inst.labels_from_instances(inst.instances_from_labels(lab), lab.shape)
    assert np.array_equal(back, lab)


def test_overlaps_go_to_the_higher_score() -> None:
    a = np.zeros((30, 30), bool)
    b = np.zeros((30, 30), bool)
    a[5:15, 5:15] = True
    b[10:20, 10:20] = True
    hi_b = inst.labels_from_instances([a, b], a.shape, scores=[0.2, 0.9])
    assert np.all(hi_b[10:15, 10:15] == 2) and hi_b[6, 6] == 1
    hi_a = inst.labels_from_instances([a, b], a.shape, scores=[0.9, 0.2])
    assert np.all(hi_a[10:15, 10:15] == 1)
    tie = inst.labels_from_instances([a, b], a.shape)
    assert np.all(tie[10:15, 10:15] == 1)  # earlier mask wins ties
    with pytest.raises(CervkitInputError):
        inst.labels_from_instances([a], (10, 10))


def test_boxes_use_pixel_edges_and_label_order() -> None:
    lab = np.zeros((10, 12), np.uint8)
    lab[3, 7] = 2
    lab[8, 1] = 5
    boxes = inst.boxes_from_labels(lab)
    assert boxes.dtype == np.float32
    assert boxes.tolist() == [[7, 3, 8, 4], [1, 8, 2, 9]]
    assert inst.boxes_from_labels(np.zeros((4, 4), np.uint8)).shape == (0, 4)


def test_yolo_detection_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(3)
    shape = (381, 500)
    xy0 = rng.uniform(0, 300, size=(6, 2))
    boxes = np.hstack([xy0, xy0 + rng.uniform(1, 80, size=(6, 2))]).astype(np.float32)
    classes = rng.integers(0, 3, size=6)
    path = yolo_labels.write_yolo_labels(tmp_path / "a.txt", boxes, shape, classes)
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and all(len(line.split()) == 5 for line in lines)
    assert all(len(v.split(".")[1]) == 6 for v in lines[0].split()[1:])
    cx = (boxes[0, 0] + boxes[0, 2]) / 2 / shape[1]
    assert float(lines[0].split()[1]) == pytest.approx(cx, abs=1e-6)
    back, back_cls = yolo_labels.read_yolo_labels(path, shape)
    assert np.allclose(back, boxes, rtol=0, atol=1e-5 * max(shape))
    assert back_cls.tolist() == classes.tolist()


def test_yolo_writers_never_overwrite_silently(tmp_path) -> None:
    path = tmp_path / "a.txt"
    yolo_labels.write_yolo_labels(path, np.zeros((0, 4)), (10, 10))
    assert path.read_text() == ""
    assert yolo_labels.read_yolo_labels(path, (10, 10))[0].shape == (0, 4)
    with pytest.raises(FileExistsError):
        yolo_labels.write_yolo_labels(path, np.array([[1, 1, 3, 3]]), (10, 10))
    yolo_labels.write_yolo_labels(path, np.array([[1, 1, 3, 3]]), (10, 10), overwrite=True)
    assert len(path.read_text().splitlines()) == 1
    with pytest.raises(FileExistsError):
        yolo_labels.write_yolo_seg_labels(path, ellipse_labels())


def test_bad_yolo_file_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n0 0.5 oops 0.1 0.1\n")
    with pytest.raises(CervkitInputError, match=r"bad\.txt.*line 2"):
        yolo_labels.read_yolo_labels(path, (10, 10))


def test_yolo_seg_round_trip_and_ultralytics_agrees(tmp_path) -> None:
    lab = ellipse_labels()
    path = yolo_labels.write_yolo_seg_labels(tmp_path / "s.txt", lab, classes=[0, 1, 0])
    back, classes = yolo_labels.read_yolo_seg_labels(path, lab.shape)
    assert np.array_equal(back, lab)
    assert classes.tolist() == [0, 1, 0]
    coords = [np.array(line.split()[1:], float) for line in path.read_text().splitlines()]
    assert all(0 < c.min() and c.max() < 1 for c in coords)
    from ultralytics.data import utils

    for k, c in enumerate(coords, start=1):
        xy = (c.reshape(-1, 2) * (lab.shape[1], lab.shape[0])).ravel()
        raster = utils.polygon2mask(lab.shape, [xy]).astype(bool)
        assert np.array_equal(raster, lab == k)


def test_crop_box_with_margin_geometry() -> None:
    assert inst.crop_box_with_margin((10, 20, 30, 60), (100, 100), margin=0.25) == (5, 10, 35, 70)
    # clipped at the image border
    assert inst.crop_box_with_margin((0, 0, 20, 10), (50, 50), margin=0.5) == (0, 0, 30, 15)
    x0, y0, x1, y1 = inst.crop_box_with_margin((2, 40, 12, 80), (100, 60), margin=0.1, square=True)
    assert x1 - x0 == y1 - y0 == 48 and x0 == 0  # shifted inside, not clipped
    with pytest.raises(CervkitInputError):
        inst.crop_box_with_margin((200, 200, 210, 210), (100, 100))


def test_crop_jitter_is_bounded_and_reproducible() -> None:
    box = (40.0, 40.0, 60.0, 80.0)
    base = inst.crop_box_with_margin(box, (200, 200), margin=0.0)
    draws = [inst.crop_box_with_margin(box, (200, 200), margin=0.0, jitter=0.1, rng=np.random.default_rng(s))
             for s in range(30)]
    assert draws[3] == inst.crop_box_with_margin(box, (200, 200), margin=0.0, jitter=0.1,
                                                  rng=np.random.default_rng(3))
    dx = [d[0] - base[0] for d in draws]
    dy = [d[1] - base[1] for d in draws]
    assert max(map(abs, dx)) <= 0.1 * 20 + 1 and max(map(abs, dy)) <= 0.1 * 40 + 1
    assert len(set(draws)) > 1


def test_crop_then_paste_reproduces_the_mask() -> None:
    lab = ellipse_labels()
    box = inst.crop_box_with_margin(inst.boxes_from_labels(lab)[1], lab.shape, margin=0.15)
    x0, y0, x1, y1 = box
    mask = lab == 2
    exact = inst.paste_crop(inst.crop(mask, box), box, lab.shape)
    assert np.array_equal(exact, mask & _window(lab.shape, box))
    # nearest-neighbour at an integer zoom is exactly invertible
    big = inst.crop(lab, box, out_size=(2 * (y1 - y0), 2 * (x1 - x0)))
    assert set(np.unique(big)) <= set(np.unique(lab))
    assert np.array_equal(inst.paste_crop(big, box, lab.shape)[y0:y1, x0:x1], lab[y0:y1, x0:x1])
    # a probability map through a non-integer resize and back: Dice against the mask
    prob = inst.crop(mask.astype(np.float32), box, out_size=(64, 64))
    back = inst.paste_crop(prob, box, lab.shape) > 0.5
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.97


def _window(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[box[1]:box[3], box[0]:box[2]] = True
    return out


@pytest.mark.realdata
def test_real_masks_are_ordered_and_counted(real_manifest_path) -> None:
    table = pd.read_csv(real_manifest_path).head(2)
    for _, row in table.iterrows():
        lab = np.asarray(PILImage.open(real_manifest_path.parent / row["mask"]))
        found = inst.instances_from_labels(lab)
        assert len(found) == row["n_vertebrae"]
        rows = [i.centroid[0] for i in found]
        assert rows == sorted(rows)  # the data follows the top-to-bottom convention
        assert np.array_equal(inst.relabel_top_to_bottom(lab), lab)
        boxes = inst.boxes_from_labels(lab)
        assert np.array_equal(boxes, np.array([i.box for i in found], np.float32))
