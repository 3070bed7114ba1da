"""Headless tests of the mask editor's notebook view (:class:`cervkit.editor.widget.MaskEditor`).

The front end is simulated by calling the widget's message handler with the same dicts ``widget.js``
sends; every edit must equal the direct :class:`EditorState` call, and the synced traits must carry
it (small patches, whole map only for big changes).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.editor.codec import apply_patch, decode_labels
from cervkit.editor.keys import resize_brush
from cervkit.editor.state import EditorState
from cervkit.editor.tools import paint_stroke
from cervkit.editor.widget import MaskEditor

REPO = Path(__file__).resolve().parents[1]


def _scene(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    image = ((xx + yy) / (2.0 * size)).astype(np.float32)
    labels = np.zeros((size, size), np.uint8)
    labels[10:30, 10:40] = 1
    labels[40:60, 12:44] = 2
    labels[45:50, 20:25] = 0  # a hole in label 2
    labels[70:72, 70:72] = 2  # an island of label 2
    return image, labels


@pytest.fixture()
def pair() -> tuple[MaskEditor, EditorState]:
    image, labels = _scene()
    return MaskEditor(image, labels), EditorState(image, labels)


STROKE = {"type": "stroke", "points": [[50.5, 20.0], [80.2, 33.7], [85.0, 60.0]], "erase": False}
MESSAGES = [
    (STROKE, lambda s: s.stroke(STROKE["points"], erase=False)),
    ({"type": "stroke", "points": [[5.0, 5.0], [60.0, 55.0]], "erase": True},
     lambda s: s.stroke([[5.0, 5.0], [60.0, 55.0]], erase=True)),
    ({"type": "polygon", "points": [[50, 70], [90, 70], [70, 94]]}, lambda s: s.polygon([[50, 70], [90, 70], [70, 94]])),
    ({"type": "flood", "x": 22.5, "y": 47.5}, lambda s: s.flood(22.5, 47.5)),
    ({"type": "clean", "op": "fill_holes"}, lambda s: s.clean("fill_holes")),
    ({"type": "clean", "op": "remove_islands"}, lambda s: s.clean("remove_islands")),
    ({"type": "clean", "op": "smooth"}, lambda s: s.clean("smooth")),
    ({"type": "add"}, lambda s: s.add_vertebra()),
    ({"type": "delete"}, lambda s: s.delete_vertebra()),
]


@pytest.mark.parametrize(("message", "direct"), MESSAGES, ids=[m["type"] + str(i) for i, (m, _) in enumerate(MESSAGES)])
def test_message_equals_direct_state_call(pair, message, direct) -> None:
    editor, state = pair
    before = editor.labels
    editor.handle_message(message)
    direct(state)
    np.testing.assert_array_equal(editor.labels, state.labels)
    assert editor.active_label == state.active_label
    assert editor.version == state.version == 1
    assert editor.can_undo and not editor.can_redo
    # whatever was sent (patch or whole map) rebuilds the kernel's map from the previous one
    view = decode_labels(editor.labels_png, editor.shape) if editor.labels_version == 1 else before
    if editor.patch.get("version") == 1:
        view = apply_patch(before, editor.patch)
    np.testing.assert_array_equal(view, editor.labels)


def test_stroke_sends_a_small_patch_matching_paint_stroke(pair) -> None:
    editor, _ = pair
    image, labels = _scene()
    sent_png = editor.labels_png
    editor.handle_message(dict(STROKE, label=3, radius=4))
    expected, bbox = paint_stroke(labels, STROKE["points"], 4, 3)
    np.testing.assert_array_equal(editor.labels, expected)
    assert editor.patch["bbox"] == list(bbox) and editor.patch["version"] == editor.version == 1
    assert editor.labels_png == sent_png  # the whole map is not resent for a stroke
    np.testing.assert_array_equal(apply_patch(labels, editor.patch), expected)
    assert editor.active_label == 3 and editor.brush_radius == 4
    assert "stroke" in editor.status and "v1" in editor.status


def test_keys_through_messages(pair) -> None:
    editor, _ = pair
    assert editor.handle_message({"type": "key", "key": "e"}) == "eraser"
    assert editor.tool == editor.state.tool == "eraser"
    r = editor.brush_radius
    editor.press("]")
    assert editor.brush_radius == editor.state.brush_radius == resize_brush(r, "larger")
    editor.press("3")
    assert editor.active_label == editor.state.active_label == 3
    editor.press("b")
    editor.apply_stroke([(60, 80), (90, 80)])
    after = editor.labels
    assert (after == 3).sum() > 0
    editor.press("z")
    np.testing.assert_array_equal(editor.labels, _scene()[1])
    assert editor.can_redo and not editor.can_undo and editor.version == 2
    editor.press("ctrl+shift+z")  # redo
    np.testing.assert_array_equal(editor.labels, after)
    assert editor.press("f") == "fit" and editor.version == 3  # view-only: nothing changes


def test_settings_from_the_view_reach_the_state(pair) -> None:
    editor, _ = pair
    editor.tool = "polygon"  # what model.set("tool", ...) + save_changes does on the kernel side
    editor.brush_radius = 20
    editor.active_label = 5
    assert (editor.state.tool, editor.state.brush_radius, editor.state.active_label) == ("polygon", 20.0, 5)
    editor.tool = "lasso"
    assert editor.state.tool == "polygon" and editor.status.startswith("error")


def test_undo_redo_buttons_and_bad_messages(pair) -> None:
    editor, _ = pair
    editor.apply_stroke([(50, 50)], erase=False)
    editor.handle_message({"type": "undo"})
    assert not editor.can_undo and editor.can_redo
    editor.handle_message({"type": "redo"})
    assert editor.can_undo and not editor.can_redo
    with pytest.raises(CervkitInputError, match="unknown editor message"):
        editor.handle_message({"type": "explode"})
    editor._on_custom_msg(editor, {"type": "flood", "x": -5, "y": 3}, [])  # what the comm callback does
    assert editor.status.startswith("error") and "outside" in editor.status
    editor.handle_message({"type": "select", "label": 4})
    assert editor.active_label == editor.state.active_label == 4


def test_big_change_resends_whole_map_and_sync(pair) -> None:
    editor, _ = pair
    new = np.zeros(editor.state.shape, np.uint8)
    new[5:90, 5:90] = 1
    editor.set_labels(new)
    assert editor.labels_version == editor.version == 1
    np.testing.assert_array_equal(decode_labels(editor.labels_png, editor.shape), new)
    editor.apply_stroke([(2, 2)])  # small: a patch only, labels_png now stale
    stale = editor.labels_png
    editor.handle_message({"type": "sync"})  # a new view asks for the map
    assert editor.labels_png != stale and editor.labels_version == editor.version
    np.testing.assert_array_equal(decode_labels(editor.labels_png, editor.shape), editor.labels)


def test_trait_payloads_stay_small() -> None:
    from ipywidgets.widgets.widget import _remove_buffers

    size = 1024
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint8)
    for k in range(7):
        labels[100 + 120 * k:200 + 120 * k, 300:700] = k + 1
    editor = MaskEditor(((xx + yy) / (2 * size)).astype(np.float32), labels)
    editor.brush_radius = 8
    editor.apply_stroke([[300 + 2 * i, 150 + i] for i in range(100)])
    patch_text = json.dumps(editor.patch)
    assert len(patch_text) < 5000, len(patch_text)
    editor.press("z")
    assert len(json.dumps(editor.patch)) < 5000
    state = editor.get_state()
    _, _, buffers = _remove_buffers(state)
    assert buffers == []  # text only: no binary buffers for Colab's widget manager
    assert len(editor.labels_png) < 50_000
    assert len(json.dumps(editor.colors)) < 4000


def test_export_writes_four_files_and_refuses_overwrite(pair, tmp_path: Path) -> None:
    from cervkit.export.label_table import read_label_table
    from cervkit.io.images import read_mask

    editor, _ = pair
    editor.apply_stroke([(70, 20)])
    editor.state.level_names = {1: "C2"}
    paths = editor.export(tmp_path / "out", "case1")
    assert sorted(p.name for p in paths.values()) == ["case1_labels.txt", "case1_mask.nii.gz", "case1_mask.png",
                                                      "case1_overlay.png"]
    np.testing.assert_array_equal(read_mask(paths["labels"]), editor.labels)
    present = [int(v) for v in np.unique(editor.labels) if v]
    assert read_label_table(paths["label_table"]) == {k: "C2" if k == 1 else f"vertebra {k}" for k in present}
    line = next(x for x in paths["label_table"].read_text().splitlines() if x.strip().startswith("1 "))
    assert [int(v) for v in line.split()[1:4]] == editor.colors[0], "ITK-SNAP gets the editor's colour"
    stamp = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    with pytest.raises(FileExistsError):
        editor.export(tmp_path / "out", "case1")
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == stamp
    paths["overlay"].unlink()  # others left: still refuses, and writes none of them
    with pytest.raises(FileExistsError):
        editor.export(tmp_path / "out", "case1")
    assert not paths["overlay"].exists()
    editor.export(tmp_path / "out", "case1", overwrite=True)
    assert paths["overlay"].exists()


class _Prediction:
    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels


class _StandIn:
    """A predictor stand-in: labels every pixel brighter than 0.5 as vertebra 1."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def predict(self, image: np.ndarray) -> _Prediction:
        self.seen.append(image)
        return _Prediction((image > 0.5).astype(np.uint8))


def test_auto_segment_is_one_undo_step(pair) -> None:
    editor, _ = pair
    before = editor.labels
    model = _StandIn()
    out = editor.auto_segment(model)
    np.testing.assert_array_equal(out, editor.image > 0.5)
    np.testing.assert_array_equal(model.seen[0], editor.image)
    assert editor.state.history.undo_depth == 1 and "auto-segment" in editor.status
    editor.undo()
    np.testing.assert_array_equal(editor.labels, before)
    assert not editor.can_undo
    plain = MaskEditor(_scene()[0])  # no run given: the shipped model for the image (mri unless it says X-ray)
    plain.auto_segment()
    assert plain.run.model_source.name == "mri" and plain.can_undo == bool(plain.labels.any())
    with pytest.raises(CervkitInputError, match="not a run folder"):
        MaskEditor(_scene()[0], run="no_such_model").auto_segment()


def test_run_at_construction_and_plain_array_predictor() -> None:
    image, _ = _scene()

    class ArrayPredictor:
        def predict(self, img: np.ndarray) -> np.ndarray:
            return (img < 0.25).astype(np.uint8)

    editor = MaskEditor(image, run=ArrayPredictor())
    np.testing.assert_array_equal(editor.labels, image < 0.25)
    assert editor.can_undo


def test_load_array_path_and_autosave(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from cervkit.editor.persist import read_autosave

    image, labels = _scene()
    autosave = tmp_path / "auto.png"
    editor = MaskEditor(image, labels, autosave_path=autosave)
    editor.handle_message(STROKE)
    np.testing.assert_array_equal(read_autosave(autosave)[0], editor.labels)
    img_path, mask_path = tmp_path / "img.png", tmp_path / "mask.png"
    PILImage.fromarray((image[:80, :64] * 255).astype(np.uint8)).save(img_path)
    PILImage.fromarray(labels[:80, :64]).save(mask_path)
    editor.load(img_path, mask_path)
    assert editor.shape == [80, 64] and not editor.can_undo
    np.testing.assert_array_equal(editor.labels, labels[:80, :64])
    np.testing.assert_array_equal(decode_labels(editor.image_png, (80, 64)), (image[:80, :64] * 255).astype(np.uint8))
    np.testing.assert_array_equal(read_autosave(autosave)[0], labels[:80, :64])
    with pytest.raises(FileExistsError):
        MaskEditor(image, autosave_path=autosave)


@pytest.mark.realdata
def test_load_manifest_row(real_manifest_path: Path) -> None:
    from cervkit.data.manifest import load_manifest
    from cervkit.io.images import read_mask

    row = load_manifest(real_manifest_path, check_files=False).row(0)
    editor = MaskEditor(np.zeros((8, 8), np.float32), level_names={1: "L1"})
    editor.load(row)
    mask = read_mask(row.mask)
    assert tuple(editor.shape) == mask.shape
    np.testing.assert_array_equal(editor.labels, mask)
    assert editor.n_labels == int(mask.max())
    assert editor.state.spacing_mm == row.pixel_spacing_mm


def test_front_end_is_shipped_and_speaks_the_protocol() -> None:
    js = resources.files("cervkit.editor").joinpath("widget.js").read_text(encoding="utf-8")
    css = resources.files("cervkit.editor").joinpath("widget.css").read_text(encoding="utf-8")
    editor = MaskEditor(np.zeros((16, 16), np.float32))
    assert editor._esm == js and editor._css == css
    assert "export default" in js and "render" in js
    assert re.search(r'"cervkit\.editor"\s*=\s*\[[^\]]*"\*\.js"[^\]]*"\*\.css"', (REPO / "pyproject.toml").read_text())
    assert not re.search(r"https?://", js)  # nothing fetched from a CDN
    sent = set(re.findall(r'send\(\{\s*type: "(\w+)"', js))
    assert {"stroke", "polygon", "flood", "key", "undo", "redo", "add", "delete", "clean", "sync", "box", "refine",
            "auto"} <= sent

    class StandIn:  # a model for auto-segment and box prompts
        class segmenter:  # noqa: N801
            @staticmethod
            def predict_crops(image, boxes):
                from cervkit.inference.segmenter import CropPrediction

                return [CropPrediction((int(b[0]), int(b[1]), int(b[2]), int(b[3])),
                                       np.ones((int(b[3]) - int(b[1]), int(b[2]) - int(b[0])), np.float32))
                        for b in boxes]

        @staticmethod
        def predict(image):
            out = np.zeros(image.shape, np.uint8)
            out[2:8, 2:8] = 1
            return out

    editor.run = StandIn()
    for kind in sent:  # every message the view sends is understood by the kernel
        message = {"stroke": STROKE, "polygon": MESSAGES[2][0], "flood": {"type": "flood", "x": 1, "y": 1},
                   "key": {"type": "key", "key": "b"}, "clean": {"type": "clean", "op": "smooth"},
                   "box": {"type": "box", "x0": 8, "y0": 8, "x1": 15, "y1": 15},
                   "refine": {"type": "refine", "x": 4, "y": 4},
                   "auto": {"type": "auto", "mode": "merge"}}.get(kind, {"type": kind})
        editor.handle_message(message)
    synced = {name for name in editor.keys}
    for name in re.findall(r'model\.get\("(\w+)"\)', js):
        assert name in synced, name
    from cervkit.viz import label_colors

    n = len(editor.colors)
    cycled = [editor.colors[(k - 1) % n] for k in range(1, 256)]  # how widget.js picks label k's colour
    assert cycled == label_colors(255).tolist()


def test_level_names_follow_auto_segment_and_box_prompts_and_n_toggles_them() -> None:
    from cervkit.data.synth.phantom import make_phantom

    ph = make_phantom("xray", seed=6, size=(384, 384))  # C2 drawn with its dens by the model: the anchor
    editor = MaskEditor(ph.image)
    assert editor.model_name == "mri" or editor.model_name == "", "no model is loaded before it is needed"
    editor.auto_segment("xray")
    assert editor.model_name == "xray" and "xray" in editor.model_choices and "mri" in editor.model_choices
    names = [editor.level_names[str(k)] for k in sorted(int(v) for v in np.unique(editor.labels) if v)]
    assert names[:5] == ["C2", "C3", "C4", "C5", "C6"], names  # C2's dens anchors the count
    missed = int(np.unique(editor.labels)[3])
    rows, cols = np.nonzero(editor.labels == missed)
    editor.set_labels(np.where(editor.labels == missed, 0, editor.labels).astype(np.uint8))
    new = editor.box_prompt(cols.min() - 2, rows.min() - 2, cols.max() + 3, rows.max() + 3)
    assert editor.level_names[str(new)] == names[2], "the body drawn with a box gets its level's name"
    shown = editor.show_names
    assert editor.press("n") == "names" and editor.show_names is (not shown)


def test_given_level_names_are_kept_and_the_view_chooses_the_model() -> None:
    image, labels = _scene()
    editor = MaskEditor(image, labels, level_names={1: "mine"}, run=_StandIn())
    editor.auto_segment()
    assert editor.level_names == {"1": "mine"}, "names the user gave are never replaced"
    editor.model_name = "xray"  # what the toolbar's chooser does
    assert editor.run == "xray" and "model: xray" in editor.status
