"""The correction queue (:mod:`cervkit.editor.queue`) and its notebook view (:mod:`cervkit.editor.queue_widget`).

A queue.csv like the one ``cervkit predict`` writes is made by hand: small images, draft masks
(one rectangle per vertebra) and confidences in scrambled order. Expected values come from the
fixture's own arrays and numbers, never from the code under test.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.data.manifest import load_manifest
from cervkit.editor.queue import CorrectionQueue
from cervkit.editor.tools import paint_stroke
from cervkit.io.images import read_mask, write_png

SHAPE = (40, 56)
CONFIDENCES = {"b": 0.9, "a": 0.2, "d": float("nan"), "c": 0.5}   # file order b, a, d, c
BY_CONFIDENCE = ["a", "c", "b", "d"]                               # ascending, unknown last


def _draft(k: int) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[4 + k:14, 6:30] = 1
    labels[20:30, 8 + k:34] = 2
    return labels


@pytest.fixture()
def queue_csv(tmp_path: Path) -> Path:
    images, out = tmp_path / "images", tmp_path / "pred"
    rows = []
    for k, (stem, conf) in enumerate(CONFIDENCES.items()):
        yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
        write_png(images / f"{stem}.png", ((xx + k * yy) % 50 / 50.0).astype(np.float32))
        write_png(out / f"{stem}_mask.png", _draft(k))
        rows.append({"image": f"../images/{stem}.png", "mask": f"{stem}_mask.png", "patient_id": f"P{k}",
                     "modality": "XR", "output_stem": stem, "confidence": conf, "det_score_min": conf,
                     "det_score_mean": conf, "mask_uncertainty": 0.1, "run": "runs/demo"})
    pd.DataFrame(rows).to_csv(out / "queue.csv", index=False)
    return out / "queue.csv"


def _draft_of(stem: str) -> np.ndarray:
    return _draft(list(CONFIDENCES).index(stem))


def _queue(queue_csv: Path, **kwargs) -> CorrectionQueue:
    return CorrectionQueue(queue_csv, queue_csv.parent.parent / "corrected", annotator="ann", **kwargs)


def test_order_least_confident_first(queue_csv: Path) -> None:
    assert [it.stem for it in _queue(queue_csv).items] == BY_CONFIDENCE
    q = CorrectionQueue(queue_csv, queue_csv.parent / "c2", annotator="x", order="queue")
    assert [it.stem for it in q.items] == list(CONFIDENCES)
    assert q.current.image == (queue_csv.parent.parent / "images" / "b.png").resolve()
    assert np.array_equal(read_mask(q.current.draft_mask), _draft(0))
    assert q.current.run == "runs/demo" and q.current.confidence == 0.9


def test_accept_writes_mask_and_valid_manifest(queue_csv: Path) -> None:
    q = _queue(queue_csv)
    fixed = _draft_of("a")
    fixed[32:38, 40:50] = 3
    path = q.accept(fixed, note="added one")
    assert path == q.corrected_dir / "masks" / "a.png" and np.array_equal(read_mask(path), fixed)
    m = load_manifest(q.manifest_path)                     # validated, files checked
    row = m.row(0)
    assert len(m) == 1 and row.mask == path
    assert os.path.samefile(row.image, queue_csv.parent.parent / "images" / "a.png")
    assert not Path(m.df["image"].iloc[0]).is_absolute()   # relative to the corrected folder
    assert row.extra["status"] == "accepted" and row.extra["annotator"] == "ann"
    assert row.extra["draft_run"] == "runs/demo" and row.extra["draft_confidence"] == pytest.approx(0.2)
    assert np.array_equal(read_mask(q.corrected_dir / row.extra["draft_mask"]), _draft_of("a"))
    assert row.extra["note"] == "added one" and row.extra["revision"] == 1
    assert datetime.fromisoformat(row.extra["accepted_at"]).tzinfo is not None
    assert row.patient_id == "P1" and row.modality == "XR"


def test_reaccept_keeps_every_version(queue_csv: Path) -> None:
    q = _queue(queue_csv)
    first, second, third = _draft_of("a"), _draft_of("a"), _draft_of("a")
    second[0:3, 0:3] = 1
    third[0:3, 50:56] = 2
    q.accept(first)
    q.accept(first)                                   # unchanged: nothing to keep
    assert not list((q.corrected_dir / "masks").glob("a.v*.png"))
    q.accept(second)
    q.accept(third)
    masks = q.corrected_dir / "masks"
    assert np.array_equal(read_mask(masks / "a.v1.png"), first)
    assert np.array_equal(read_mask(masks / "a.v2.png"), second)
    assert np.array_equal(read_mask(masks / "a.png"), third)
    row = load_manifest(q.manifest_path).row(0)
    assert row.extra["revision"] == 4 and row.extra["previous_mask"] == "masks/a.v2.png"


def test_user_file_in_the_way_is_kept(queue_csv: Path) -> None:
    corrected = queue_csv.parent.parent / "corrected"
    mine = np.full(SHAPE, 5, np.uint8)
    write_png(corrected / "masks" / "a.png", mine)
    q = _queue(queue_csv)
    q.accept(_draft_of("a"))
    assert np.array_equal(read_mask(corrected / "masks" / "a.v1.png"), mine)


def test_flag_and_progress(queue_csv: Path) -> None:
    q = _queue(queue_csv)
    q.flag("C7 hidden by the shoulders")
    q.next()
    q.accept(_draft_of("c"))
    p = q.progress
    assert (p.total, p.accepted, p.flagged, p.pending, p.position) == (4, 1, 1, 2, 1)
    assert str(p).startswith("2/4 · accepted 1 · flagged 1")
    m = load_manifest(q.manifest_path)
    flagged = next(r for r in m.rows() if r.extra["output_stem"] == "a")
    assert flagged.mask is None and flagged.extra["status"] == "flagged"
    assert flagged.extra["reason"] == "C7 hidden by the shoulders" and flagged.extra["flagged_at"]
    with pytest.raises(CervkitInputError, match="why"):
        q.flag("  ")


def test_navigation_skips_accepted_and_stops_at_ends(queue_csv: Path) -> None:
    q = _queue(queue_csv)
    assert q.previous() is None and q.index == 0
    q.goto("b")
    q.accept(_draft_of("b"))
    q.goto(0)
    assert q.next().stem == "c" and q.next().stem == "d"       # b accepted: skipped
    assert q.next() is None and q.current.stem == "d"
    assert q.previous().stem == "c"
    q.include_accepted = True
    assert q.next().stem == "b"
    with pytest.raises(IndexError):
        q.goto(4)
    with pytest.raises(CervkitInputError):
        q.goto("nope")


def test_resume_where_it_stopped(queue_csv: Path) -> None:
    q = _queue(queue_csv)
    q.accept(_draft_of("a"))
    q.goto("b")
    assert _queue(queue_csv).current.stem == "b"             # saved position
    state = json.loads((q.corrected_dir / "queue_state.json").read_text())
    assert state["current"] == "b"
    q.goto("a")                                              # stopped on an accepted item
    assert _queue(queue_csv, include_accepted=True).current.stem == "a"
    assert _queue(queue_csv).current.stem == "c"
    assert _queue(queue_csv).status("a") == "accepted"       # statuses come back from the manifest


def test_unaccepted_edit_survives_moving_away(queue_csv: Path) -> None:
    q = _queue(queue_csv)
    state = q.open_state()
    assert np.array_equal(state.labels, _draft_of("a")) and not q.autosave_path().exists()
    state.active_label = 3
    state.stroke([(40, 33), (50, 35)])
    expected, _ = paint_stroke(_draft_of("a"), [(40, 33), (50, 35)], state.brush_radius, 3)
    q.next()
    q.previous()
    assert q.has_edit() and np.array_equal(q.working_labels(), expected)
    assert np.array_equal(q.open_state().labels, expected)
    assert np.array_equal(_queue(queue_csv).working_labels("a"), expected)   # a new session too
    q.accept(expected)
    assert not q.autosave_path().exists() and np.array_equal(q.working_labels(), expected)


def test_bad_input(queue_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(CervkitInputError, match="annotator"):
        CorrectionQueue(queue_csv, tmp_path / "c", annotator=" ")
    with pytest.raises(CervkitInputError, match="order"):
        CorrectionQueue(queue_csv, tmp_path / "c", annotator="a", order="random")
    q = _queue(queue_csv)
    with pytest.raises(CervkitInputError, match="shape"):
        q.accept(np.ones((10, 10), np.uint8))
    with pytest.raises(CervkitInputError, match="empty"):
        q.accept(np.zeros(SHAPE, np.uint8))
    assert not q.manifest_path.exists()
    table = pd.read_csv(queue_csv)
    table.drop(columns="modality").to_csv(queue_csv.parent / "no_modality.csv", index=False)
    with pytest.raises(CervkitInputError, match="modality"):
        CorrectionQueue(queue_csv.parent / "no_modality.csv", tmp_path / "c", annotator="a")
    (queue_csv.parent / "c_mask.png").unlink()
    with pytest.raises(CervkitInputError, match="c_mask.png"):
        _queue(queue_csv)


# ------------------------------------------------------------------ the view
def test_queue_editor_buttons_and_edits(queue_csv: Path) -> None:
    from cervkit.editor.queue_widget import QueueEditor

    view = QueueEditor(_queue(queue_csv))
    assert view.editor in view.children and np.array_equal(view.labels, _draft_of("a"))
    assert view.progress_label.value == "1/4 · accepted 0 · flagged 0 · confidence 0.20"
    assert "runs/demo" in view.info.value
    view.editor.apply_stroke([(45, 34), (50, 36)])
    edited = view.labels
    assert not np.array_equal(edited, _draft_of("a"))
    view.buttons["next"].click()
    assert view.queue.current.stem == "c" and np.array_equal(view.labels, _draft_of("c"))
    view.buttons["previous"].click()
    assert np.array_equal(view.labels, edited), "the edit comes back, not the draft"
    view.buttons["flag"].click()                              # no reason: reported, nothing flagged
    assert view.message.value.startswith("error") and view.queue.status() == "pending"
    view.note.value = "fixed C3"
    view.buttons["accept"].click()
    corrected = view.queue.corrected_dir
    assert np.array_equal(read_mask(corrected / "masks" / "a.png"), edited)
    assert view.queue.current.stem == "c" and view.editor in view.children
    assert not (corrected / "autosave" / "a.png").exists()
    view.reason.value = "motion artefact"
    view.buttons["flag"].click()
    assert view.queue.status("c") == "flagged" and view.queue.current.stem == "b"
    assert not (corrected / "autosave" / "c.png").exists(), "an item left unedited keeps no autosave"
    assert view.progress_label.value.startswith("3/4 · accepted 1 · flagged 1")
    rows = {r.extra["output_stem"]: r for r in load_manifest(view.queue.manifest_path).rows()}
    assert rows["a"].extra["note"] == "fixed C3" and rows["c"].extra["reason"] == "motion artefact"
