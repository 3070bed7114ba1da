"""Headless tests of the mask editor: tools, codec, undo/redo, autosave, exports, keys."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.editor import codec, tools
from cervkit.editor.keys import BRUSH_SIZES, SHORTCUTS
from cervkit.editor.persist import sidecar_path
from cervkit.editor.state import EditorState


# ---------------------------------------------------------------- references
def capsule_reference(shape: tuple[int, int], points: np.ndarray, radius: float) -> np.ndarray:
    """Pixels whose centre is within ``radius`` of the polyline, over the whole grid at once."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    centres = np.stack([xx + 0.5, yy + 0.5], axis=-1).reshape(-1, 1, 2)  # (P, 1, 2)
    a = pts[:-1] if len(pts) > 1 else pts
    b = pts[1:] if len(pts) > 1 else pts
    ab = b - a                                                           # (S, 2)
    ap = centres - a[None]                                               # (P, S, 2)
    denom = np.maximum((ab ** 2).sum(-1), 1e-300)
    t = np.where((ab ** 2).sum(-1) > 0, np.clip((ap * ab).sum(-1) / denom, 0, 1), 0.0)
    nearest = a[None] + t[..., None] * ab[None]
    dist = np.sqrt(((centres - nearest) ** 2).sum(-1)).min(axis=1)
    return (dist <= radius).reshape(shape)


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def seven_bodies(n: int = 1024) -> np.ndarray:
    """A label map with 7 elliptical bodies numbered top to bottom."""
    from skimage.draw import ellipse

    lab = np.zeros((n, n), np.uint8)
    for k in range(7):
        rr, cc = ellipse(n * (0.12 + 0.12 * k), n * (0.45 + 0.015 * k), n * 0.05, n * 0.09,
                         shape=lab.shape, rotation=0.2)
        lab[rr, cc] = k + 1
    return lab


def random_walk(rng: np.random.Generator, n: int, start: tuple[float, float], step: float) -> np.ndarray:
    return np.cumsum(rng.normal(0, step, (n, 2)), axis=0) + np.asarray(start)


# ---------------------------------------------------------------- tools
@pytest.mark.parametrize("seed", range(6))
def test_stroke_paints_exactly_the_capsule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (57, 73)
    labels = rng.integers(0, 4, shape).astype(np.uint8)
    n = int(rng.integers(1, 6))
    pts = rng.uniform(-10, 80, (n, 2))  # some points off the image
    radius = float(rng.uniform(0.6, 9))
    new, bbox = tools.paint_stroke(labels, pts, radius, 5)
    ref = capsule_reference(shape, pts, radius)
    expected = np.where(ref, 5, labels)
    np.testing.assert_array_equal(new, expected)
    assert bbox == tight_box(expected != labels)
    assert labels.max() < 5  # input untouched


def test_fast_move_leaves_no_gap_and_single_point_is_a_disc() -> None:
    labels = np.zeros((40, 120), np.uint8)
    new, _ = tools.paint_stroke(labels, [(5.0, 20.0), (110.0, 22.0)], 1.5, 1)
    from scipy import ndimage

    assert ndimage.label(new)[1] == 1
    assert new[20, 5:110].all() or new[21, 5:110].all()
    disc, bbox = tools.paint_stroke(labels, [(60.5, 20.5)], 3, 2)
    yy, xx = np.mgrid[0:40, 0:120]
    np.testing.assert_array_equal(disc == 2, (xx - 60) ** 2 + (yy - 20) ** 2 <= 9)
    assert bbox == (57, 17, 64, 24)


def test_eraser_only_background_and_only_label() -> None:
    labels = np.zeros((50, 50), np.uint8)
    labels[10:25, 10:40] = 1
    labels[25:40, 10:40] = 2
    pts = np.array([(25.0, 5.0), (25.0, 45.0)])
    ref = capsule_reference(labels.shape, pts, 4)
    erased, _ = tools.paint_stroke(labels, pts, 4, 0)
    np.testing.assert_array_equal(erased, np.where(ref, 0, labels))
    only1, _ = tools.paint_stroke(labels, pts, 4, 0, only_label=1)
    np.testing.assert_array_equal(only1, np.where(ref & (labels == 1), 0, labels))
    under, _ = tools.paint_stroke(labels, pts, 4, 3, only_background=True)
    np.testing.assert_array_equal(under, np.where(ref & (labels == 0), 3, labels))
    nothing, bbox = tools.paint_stroke(labels, [(200.0, 200.0)], 3, 1)
    assert bbox is None and np.array_equal(nothing, labels)


def test_polygon_fills_pixel_centres_inside() -> None:
    from matplotlib.path import Path as MplPath

    labels = np.zeros((60, 70), np.uint8)
    labels[0:5] = 2
    poly = np.array([(10.3, 3.7), (55.2, 12.1), (48.6, 50.9), (20.4, 41.3), (7.9, 25.6)])
    new, bbox = tools.fill_polygon(labels, poly, 4)
    yy, xx = np.mgrid[0:60, 0:70]
    inside = MplPath(poly).contains_points(np.c_[xx.ravel() + 0.5, yy.ravel() + 0.5]).reshape(60, 70)
    np.testing.assert_array_equal(new, np.where(inside, 4, labels))
    assert bbox == tight_box(new != labels)
    kept, _ = tools.fill_polygon(labels, poly, 4, only_background=True)
    np.testing.assert_array_equal(kept, np.where(inside & (labels == 0), 4, labels))
    with pytest.raises(CervkitInputError):
        tools.fill_polygon(labels, poly[:2], 1)


def test_flood_fill_fills_a_hole_only() -> None:
    labels = np.zeros((40, 40), np.uint8)
    labels[5:30, 5:30] = 2
    labels[12:20, 14:22] = 0  # hole
    labels[34:38, 34:38] = 1
    new, bbox = tools.flood_fill(labels, (17.2, 15.9), 2)
    expected = labels.copy()
    expected[12:20, 14:22] = 2
    np.testing.assert_array_equal(new, expected)
    assert bbox == (14, 12, 22, 20)
    with pytest.raises(CervkitInputError):
        tools.flood_fill(labels, (50, 3), 1)


def test_cleanups_fill_holes_remove_islands_smooth() -> None:
    labels = np.zeros((60, 60), np.uint8)
    labels[5:25, 5:25] = 1
    labels[10:15, 10:15] = 0            # hole in 1
    labels[40:55, 5:25] = 2
    labels[45:48, 40:43] = 2            # island of 2
    labels[30:34, 40:44] = 3            # a separate body
    filled = tools.fill_holes(labels)
    assert (filled[10:15, 10:15] == 1).all()
    np.testing.assert_array_equal(filled[labels != 0], labels[labels != 0])
    assert (filled != labels).sum() == 25
    cleaned = tools.remove_islands(labels)
    assert (cleaned[45:48, 40:43] == 0).all()
    assert (cleaned != labels).sum() == 9
    only3 = tools.remove_islands(labels, 3)
    np.testing.assert_array_equal(only3, labels)
    spur = np.zeros((40, 40), np.uint8)
    spur[10:30, 10:30] = 1
    spur[19, 30:36] = 1                 # 1-px spur
    spur[10:14, 20] = 0                 # 1-px wide notch, 4 deep, from the top edge
    smoothed = tools.smooth(spur, radius=2)
    assert (smoothed[19, 33:36] == 0).all()  # the spur is cut (closing may keep a 2-px stub at its root)
    assert (smoothed[11:14, 20] == 1).all()  # the notch is filled below its mouth
    from scipy import ndimage

    defects = np.zeros_like(spur, dtype=bool)
    defects[19, 30:36] = defects[10:14, 20] = True
    defects[10, 10] = defects[10, 29] = defects[29, 10] = defects[29, 29] = True  # corners get rounded
    near = ndimage.distance_transform_edt(~defects) <= 3
    assert not (smoothed != spur)[~near].any()  # the straight edges are kept
    with pytest.raises(CervkitInputError):
        tools.smooth(spur, radius=0)


def test_delete_relabel_and_next_free_label() -> None:
    labels = np.zeros((50, 20), np.uint8)
    labels[30:35, 5:10] = 1             # lowest body carries label 1
    labels[2:6, 5:10] = 7
    labels[15:20, 5:10] = 4
    ordered = tools.relabel_top_to_bottom(labels)
    assert ordered[3, 6] == 1 and ordered[17, 6] == 2 and ordered[32, 6] == 3
    assert tools.next_free_label(labels) == 2
    assert tools.next_free_label(ordered) == 4
    deleted = tools.delete_label(ordered, 2)
    assert set(np.unique(deleted)) == {0, 1, 2} and deleted[32, 6] == 2 and deleted[17, 6] == 0
    kept = tools.delete_label(ordered, 2, renumber=False)
    assert kept[32, 6] == 3
    with pytest.raises(CervkitInputError):
        tools.next_free_label(np.arange(256, dtype=np.uint8).reshape(16, 16))


# ---------------------------------------------------------------- codec
@pytest.mark.parametrize("shape", [(1, 1), (3, 257), (64, 48), (101, 7)])
def test_codec_round_trips(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    maps = [rng.integers(0, 256, shape).astype(np.uint8), np.zeros(shape, np.uint8),
            np.ones(shape, np.uint8), np.full(shape, 255, np.uint8)]
    for lab in maps:
        text = codec.encode_labels(lab)
        assert text.isascii()
        np.testing.assert_array_equal(codec.decode_labels(text, shape), lab)
        np.testing.assert_array_equal(codec.decode_labels(codec.encode_labels(lab, data_url=True)), lab)
        rle = codec.rle_encode(lab)
        np.testing.assert_array_equal(codec.rle_decode(rle, shape), lab)
    assert codec.rle_encode(np.ones((4, 5), np.uint8)) == "1:20"
    with pytest.raises(CervkitInputError):
        codec.decode_labels(codec.encode_labels(maps[0]), (shape[0] + 1, shape[1]))
    with pytest.raises(CervkitInputError):
        codec.rle_decode("1:5", shape if shape != (1, 5) else (2, 5))
    with pytest.raises(CervkitInputError):
        codec.decode_labels("not base64 !")


@pytest.mark.parametrize("encoding", ["png", "rle"])
def test_patches_carry_a_stroke(encoding: str) -> None:
    old = seven_bodies(256)
    new, bbox = tools.paint_stroke(old, [(40, 40), (120, 90), (200, 60)], 6, 3)
    patch = codec.encode_patch(new, bbox, encoding=encoding)
    assert patch["bbox"] == list(bbox) and patch["shape"] == [256, 256]
    np.testing.assert_array_equal(codec.apply_patch(old, patch), new)
    target = old.copy()
    assert codec.apply_patch(target, patch, inplace=True) is target
    np.testing.assert_array_equal(target, new)
    with pytest.raises(CervkitInputError):
        codec.apply_patch(np.zeros((10, 10), np.uint8), patch)
    with pytest.raises(CervkitInputError):
        codec.encode_patch(new, (5, 5, 5, 9))


# ---------------------------------------------------------------- state: undo/redo
def _random_op(state: EditorState, rng: np.random.Generator, i: int) -> None:
    h, w = state.shape
    kind = i % 6
    if kind in (0, 1):
        state.active_label = int(rng.integers(1, 6))
        state.brush_radius = float(rng.integers(1, 6))
        state.stroke(random_walk(rng, 8, (w / 2, h / 2), 6), erase=kind == 1)
    elif kind == 2:
        state.polygon(rng.uniform(0, [w, h], (5, 2)))
    elif kind == 3:
        state.flood(*rng.uniform(0, [w, h]))
    elif kind == 4:
        state.clean(["fill_holes", "remove_islands", "smooth", "relabel"][i % 4])
    else:
        state.add_vertebra()


def test_sixty_ops_then_fifty_undos_restore_step_ten_and_redo_replays() -> None:
    rng = np.random.default_rng(1)
    state = EditorState(np.zeros((80, 90), np.float32), seven_bodies(90)[:80])
    snapshots = [(state.labels.copy(), state.active_label)]
    i = 0
    while len(snapshots) < 61:  # 60 recorded steps (ops that change nothing record none)
        before = state.history.undo_depth
        _random_op(state, rng, i)
        i += 1
        if state.history.undo_depth > before:
            snapshots.append((state.labels.copy(), state.active_label))
    for _ in range(50):
        state.undo()
    np.testing.assert_array_equal(state.labels, snapshots[10][0])
    assert state.history.undo_depth == 10 and state.can_redo
    for _ in range(50):
        state.redo()
    np.testing.assert_array_equal(state.labels, snapshots[60][0])
    assert state.active_label == snapshots[60][1]
    assert not state.can_redo and state.redo() is None


def test_new_edit_after_undo_clears_redo_and_add_vertebra_is_undoable() -> None:
    state = EditorState(np.zeros((40, 40), np.float32))
    state.stroke([(10, 10)])
    label = state.add_vertebra()
    assert label == 2 and state.active_label == 2
    state.stroke([(30, 30)])
    state.undo()
    state.undo()
    assert state.active_label == 1 and state.can_redo
    state.stroke([(20, 30)])
    assert not state.can_redo
    assert state.present_labels() == [1]
    assert state.stroke([(500, 500)]) is None  # nothing changed: no step
    assert state.history.undo_depth == 2


def test_delete_and_relabel_in_state_follow_the_active_vertebra() -> None:
    state = EditorState(np.zeros((100, 100), np.float32), seven_bodies(100))
    state.active_label = 5
    state.delete_vertebra(3)
    assert state.present_labels() == list(range(1, 7))
    assert state.active_label == 4  # body formerly 5 is now 4
    state.undo()
    assert state.active_label == 5 and state.present_labels() == list(range(1, 8))
    state.set_labels(np.where(state.labels == 1, 0, state.labels), reason="auto-segment")
    assert state.present_labels() == list(range(2, 8))
    state.clean("relabel")
    assert state.present_labels() == list(range(1, 7)) and state.active_label == 4
    with pytest.raises(CervkitInputError):
        state.set_labels(np.zeros((5, 5), np.uint8))
    with pytest.raises(CervkitInputError):
        state.clean("sharpen")


def test_history_memory_for_fifty_strokes_on_1024_is_small_and_bounded() -> None:
    rng = np.random.default_rng(2)
    state = EditorState(np.zeros((1024, 1024), np.float32), seven_bodies(), max_history=60)
    for k in range(50):
        state.active_label = k % 7 + 1
        state.stroke(random_walk(rng, 30, (512, 512), 12))
    assert state.history.undo_depth == 50
    assert state.history_size_bytes < 5 * 2**20
    state.set_labels(np.zeros((1024, 1024), np.uint8))
    for _ in range(20):
        state.stroke(random_walk(rng, 30, (512, 512), 12))
    assert len(state.history) == 60


def test_stroke_and_undo_timing_on_1024() -> None:
    rng = np.random.default_rng(3)
    state = EditorState(np.zeros((1024, 1024), np.float32), seven_bodies())
    state.brush_radius = 8
    stroke_ms, undo_ms = [], []
    for _ in range(10):
        pts = random_walk(rng, 30, (512, 512), 6)
        t0 = time.perf_counter()
        bbox = state.stroke(pts)
        codec.encode_patch(state.labels, bbox)
        stroke_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        state.undo()
        undo_ms.append((time.perf_counter() - t0) * 1e3)
    print(f"stroke+patch median {np.median(stroke_ms):.2f} ms, undo median {np.median(undo_ms):.2f} ms")
    assert np.median(stroke_ms) < 100  # target 20 ms; loose on a shared machine
    assert np.median(undo_ms) < 25     # target 5 ms


# ---------------------------------------------------------------- keys
def test_handle_key_applies_kernel_actions() -> None:
    state = EditorState(np.zeros((30, 30), np.float32))
    state.stroke([(5, 5)])
    assert state.handle_key("z") == "undo" and not state.labels.any()
    assert state.handle_key("y") == "redo" and state.labels.any()
    assert state.handle_key("ctrl+z") == "undo" and not state.labels.any()
    assert state.handle_key("Ctrl+Shift+Z") == "redo" and state.labels.any()
    assert state.handle_key("e") == "eraser" and state.tool == "eraser"
    state.stroke([(5, 5)])
    assert not state.labels.any()
    assert state.handle_key("b") == "brush" and state.tool == "brush"
    state.brush_radius = 8
    assert state.handle_key("]") == "larger" and state.brush_radius > 8
    state.handle_key("[")
    assert state.handle_key("[") == "smaller" and state.brush_radius < 8
    state.brush_radius = BRUSH_SIZES[0]
    state.handle_key("[")
    assert state.brush_radius == BRUSH_SIZES[0]
    assert state.handle_key("4") == "select" and state.active_label == 4
    version = state.version
    assert state.handle_key("f") == "fit" and state.version == version
    assert state.handle_key("q") == "" and state.active_label == 4
    assert {"z", "y", "b", "e", "[", "]", "f", *map(str, range(1, 10))} <= set(SHORTCUTS)


# ---------------------------------------------------------------- autosave, recover
def test_autosave_after_every_change_and_recover(tmp_path: Path) -> None:
    from cervkit.io.images import read_mask, write_png

    rng = np.random.default_rng(4)
    image = rng.random((64, 48)).astype(np.float32)
    src = write_png(tmp_path / "slice.png", image)
    save = tmp_path / "autosave" / "edit.png"
    state = EditorState(image, spacing_mm=(0.5, 0.7), source=str(src), autosave_path=save,
                        level_names={1: "C2"})
    assert not save.exists()
    for k in range(4):
        state.stroke(random_walk(rng, 5, (24, 32), 4))
        np.testing.assert_array_equal(read_mask(save), state.labels)
    state.undo()
    np.testing.assert_array_equal(read_mask(save), state.labels)
    import json

    info = json.loads(sidecar_path(save).read_text())
    assert info["steps"] == state.version == 5 and info["source"] == str(src)
    with pytest.raises(FileExistsError):
        EditorState(image, autosave_path=save)
    back = EditorState.recover(save)
    np.testing.assert_array_equal(back.labels, state.labels)
    assert back.spacing_mm == (0.5, 0.7) and back.level_names == {1: "C2"}
    np.testing.assert_allclose(back.image, np.rint(image * 255) / 255, atol=1e-6)
    back.stroke([(1, 1)])
    np.testing.assert_array_equal(read_mask(save), back.labels)
    src.unlink()
    with pytest.raises(CervkitInputError):
        EditorState.recover(save)
    assert EditorState.recover(save, image=image).labels[0, 0] == 1


# ---------------------------------------------------------------- exports
def test_exports_never_overwrite_and_read_back_equal(tmp_path: Path) -> None:
    from cervkit.io.images import read_mask
    from cervkit.io.nifti import read_nifti_spacing
    from cervkit.viz import overlay

    rng = np.random.default_rng(5)
    image = rng.random((40, 56)).astype(np.float32)
    state = EditorState(image, seven_bodies(56)[:40], spacing_mm=(0.8, 0.6))
    png, nii, ovl = tmp_path / "m.png", tmp_path / "m.nii.gz", tmp_path / "o.png"
    state.export_labels(png)
    state.export_nifti(nii)
    state.export_overlay(ovl, alpha=0.5)
    np.testing.assert_array_equal(read_mask(png), state.labels)
    np.testing.assert_array_equal(read_mask(nii), state.labels)
    assert read_nifti_spacing(nii) == pytest.approx((0.8, 0.6))
    from PIL import Image as PILImage

    np.testing.assert_array_equal(np.array(PILImage.open(ovl)), overlay(image, state.labels, alpha=0.5))
    state.stroke([(10, 10)])
    for export, path in ((state.export_labels, png), (state.export_nifti, nii), (state.export_overlay, ovl)):
        before = path.read_bytes()
        with pytest.raises(FileExistsError):
            export(path)
        assert path.read_bytes() == before
        export(path, overwrite=True)
        assert path.read_bytes() != before
    np.testing.assert_array_equal(read_mask(png), state.labels)


def test_failing_export_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel
    from PIL import Image as PILImage

    state = EditorState(np.zeros((20, 20), np.float32), spacing_mm=(1.0, 1.0))
    state.stroke([(5, 5)])
    png, nii = tmp_path / "m.png", tmp_path / "m.nii"
    state.export_labels(png)
    state.export_nifti(nii)
    old_png, old_nii = png.read_bytes(), nii.read_bytes()
    state.stroke([(15, 15)])

    def broken_save(self, fp, *args, **kwargs):  # writes half a file, then fails
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    def broken_nib_save(img, filename, *args, **kwargs):
        Path(filename).write_bytes(b"garbage")
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", broken_save)
    monkeypatch.setattr(nibabel, "save", broken_nib_save)
    with pytest.raises(OSError):
        state.export_labels(png, overwrite=True)
    with pytest.raises(OSError):
        state.export_nifti(nii, overwrite=True)
    assert png.read_bytes() == old_png and nii.read_bytes() == old_nii
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii", "m.png"]  # no temp files left


# ---------------------------------------------------------------- loading
@pytest.mark.realdata
def test_from_image_array_image_and_real_files(real_manifest_path: Path) -> None:
    import pandas as pd

    from cervkit.io.images import read_image, read_mask

    row = pd.read_csv(real_manifest_path).iloc[0]
    img_path = real_manifest_path.parent / row["image"]
    mask_path = real_manifest_path.parent / row["mask"]
    state = EditorState.from_image(img_path, mask_path)
    truth = read_mask(mask_path)
    np.testing.assert_array_equal(state.labels, truth)
    assert state.source == str(img_path) and state.shape == (int(row["height"]), int(row["width"]))
    assert state.present_labels() == list(range(1, int(row["n_vertebrae"]) + 1))
    state.active_label = 2
    state.clean("smooth", 2)
    state.delete_vertebra(4)
    state.undo()
    state.undo()
    np.testing.assert_array_equal(state.labels, truth)
    via_image = EditorState.from_image(Image(read_image(img_path).array, (0.9, 0.8), {"source": "x"}))
    assert via_image.spacing_mm == (0.9, 0.8) and via_image.source == "x" and not via_image.labels.any()
