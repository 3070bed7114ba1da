"""The correction queue: walk predicted drafts least-certain-first, accept or flag each, never lose an edit.

``python -m cervkit predict`` writes ``queue.csv`` (a manifest of the drafts sorted by
ascending confidence). :class:`CorrectionQueue` walks it and builds a *corrected
dataset* in ``corrected_dir``::

    corrected_dir/manifest.csv          one row per accepted or flagged item (a cervkit manifest)
    corrected_dir/masks/<stem>.png      the accepted label maps; re-accepting keeps <stem>.v1.png, .v2 ...
    corrected_dir/autosave/<stem>.png   unaccepted edits, one per item (editor autosave + .json sidecar)
    corrected_dir/queue_state.json      where the walk stopped, so the next session resumes there

Images are **not copied**: the corrected manifest's ``image`` cells point at the original
files, relative to ``corrected_dir`` (``os.path.relpath``; absolute on another drive), so
moving ``corrected_dir`` without the images breaks them. Besides the manifest columns
(``image``, ``mask``, ``patient_id``, ``modality``) each row has ``output_stem``,
``status`` (``accepted`` | ``flagged``), ``annotator``, ``accepted_at`` / ``flagged_at``
(ISO 8601), ``draft_run``, ``draft_mask``, ``draft_confidence``, ``revision``,
``previous_mask``, ``reason`` and ``note``. A flagged item that was never accepted has
a blank ``mask`` (an unlabelled image), so the manifest stays valid.

What an item opens with: its autosave (an edit in progress) if there is one, else its
accepted mask, else the draft. An autosave equal to that base is removed when the
walk moves on (it holds no edit); one that differs is kept until the item is accepted
with exactly those labels.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, replace
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes
from cervkit.data.manifest import load_manifest
from cervkit.data.table import Manifest, read_manifest, relative_path, save_manifest
from cervkit.editor.labelmap import check_labels
from cervkit.editor.persist import sidecar_path
from cervkit.editor.state import EditorState

__all__ = ["CorrectionQueue", "ORDERS", "QueueItem", "QueueProgress"]

ORDERS = ("confidence", "queue")
MANIFEST_NAME = "manifest.csv"
STATE_NAME = "queue_state.json"
COLUMNS = ("image", "mask", "patient_id", "modality", "output_stem", "status", "annotator", "accepted_at",
           "flagged_at", "draft_run", "draft_mask", "draft_confidence", "revision", "previous_mask",
           "reason", "note")


@dataclass(frozen=True)
class QueueItem:
    """One draft of the queue (paths absolute).

    Attributes
    ----------
    position : int
        0-based place in the queue order.
    stem : str
        ``output_stem``: names the corrected mask and the autosave.
    image, draft_mask : pathlib.Path
        The original image and the predicted draft label map.
    patient_id, modality, run : str
        From the queue row (``run``: the run folder that produced the draft, "" if unknown).
    confidence : float or None
        The draft's confidence (lower first), None when unknown.
    row : dict
        Every cell of the queue row, blank cells as None.
    """

    position: int
    stem: str
    image: Path
    draft_mask: Path
    patient_id: str
    modality: str
    run: str
    confidence: float | None
    row: dict[str, Any]


ItemRef = QueueItem | int | str | None
"""An item argument: None (the current item), a queue position, an ``output_stem`` or a :class:`QueueItem`."""


@dataclass(frozen=True)
class QueueProgress:
    """Counts over the queue; ``str()`` gives ``"3/20 · accepted 2 · flagged 1 · pending 17"``."""

    position: int
    total: int
    accepted: int
    flagged: int
    pending: int

    def __str__(self) -> str:
        return (f"{self.position + 1}/{self.total} · accepted {self.accepted} · flagged {self.flagged}"
                f" · pending {self.pending}")


def _now() -> str:
    """Local time with offset, ISO 8601 to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _confidence(value: Any) -> float | None:
    """A confidence cell as a finite float, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _items(queue: Manifest, order: str) -> list[QueueItem]:
    """The queue's rows as items, in ``order``; raise on missing files or duplicate stems."""
    items: list[QueueItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i in range(len(queue)):
        row = queue.row(i)
        stem = str(row.extra.get("output_stem") or row.image.stem)
        if stem in seen:
            problems.append(f"{queue.line(i)}: output_stem {stem!r} appears twice")
        seen.add(stem)
        if row.mask is None:
            problems.append(f"{queue.line(i)}: no draft mask")
        missing = [str(p) for p in (row.image, row.mask) if p is not None and not p.is_file()]
        if missing:
            problems.append(f"{queue.line(i)}: missing {', '.join(missing)}")
        cells = {**row.extra, "image": row.image, "mask": row.mask, "patient_id": row.patient_id,
                 "modality": row.modality}
        items.append(QueueItem(i, stem, row.image, row.mask or row.image, row.patient_id, row.modality,
                               str(row.extra.get("run") or ""), _confidence(row.extra.get("confidence")),
                               cells))
    if problems:
        raise CervkitInputError("bad queue: " + "; ".join(problems), queue.path)
    if order == "confidence":
        items.sort(key=lambda it: (it.confidence is None, it.confidence or 0.0, it.position))
    return [replace(it, position=k) for k, it in enumerate(items)]


class CorrectionQueue:
    """Walk a ``queue.csv`` of drafts, accept corrected masks and flag problems into ``corrected_dir``.

    Parameters
    ----------
    queue_csv : str or PathLike
        A queue written by ``cervkit predict`` (a manifest with ``output_stem``,
        ``confidence`` and ``run`` columns; ``mask`` is the draft).
    corrected_dir : str or PathLike
        The corrected dataset's folder (created); a second session on it resumes.
    annotator : str
        Who corrects (written in every row).
    order : {"confidence", "queue"}, default "confidence"
        Least confident first, or the order of the CSV.
    include_accepted : bool, default False
        Let :meth:`next`, :meth:`previous` and resuming stop at accepted items too
        (:meth:`goto` always can).

    Raises
    ------
    CervkitInputError
        Empty annotator, unknown order, unreadable or invalid queue (:class:`ManifestError`),
        missing files, duplicate stems.
    """

    def __init__(self, queue_csv: str | PathLike[str], corrected_dir: str | PathLike[str], *,
                 annotator: str, order: str = "confidence", include_accepted: bool = False) -> None:
        if not str(annotator).strip():
            raise CervkitInputError("annotator must name who corrects the masks")
        if order not in ORDERS:
            raise CervkitInputError(f"unknown queue order {order!r}; use one of {ORDERS}")
        self.queue_csv = Path(queue_csv).resolve()
        self.items = tuple(_items(load_manifest(self.queue_csv, check_files=False), order))
        if not self.items:
            raise CervkitInputError("the queue is empty: no draft to correct", self.queue_csv)
        self.corrected_dir = Path(corrected_dir).resolve()
        self.manifest_path = self.corrected_dir / MANIFEST_NAME
        self.annotator = str(annotator).strip()
        self.order = order
        self.include_accepted = include_accepted
        self._rows: dict[str, dict[str, Any]] = {}
        self._others: list[dict[str, Any]] = []  # rows of the manifest that are not ours: kept as they are
        if self.manifest_path.is_file():
            for record in read_manifest(self.manifest_path).df.to_dict("records"):
                clean = {k: (None if pd.isna(v) else v) for k, v in record.items()}
                if clean.get("output_stem"):
                    self._rows[str(clean["output_stem"])] = clean
                else:
                    self._others.append(clean)
        self.index = self._resume()
        self._save_position()

    # ------------------------------------------------------------- where we are
    def __len__(self) -> int:
        return len(self.items)

    @property
    def current(self) -> QueueItem:
        """The item being corrected."""
        return self.items[self.index]

    def status(self, item: ItemRef = None) -> str:
        """``"accepted"``, ``"flagged"`` or ``"pending"`` for an item (default the current one).

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        str
            The item's status in the corrected manifest.
        """
        row = self._rows.get(self._item(item).stem)
        return str(row.get("status")) if row and row.get("status") else "pending"

    @property
    def progress(self) -> QueueProgress:
        """Position and accepted / flagged / pending counts."""
        states = [self.status(it) for it in self.items]
        return QueueProgress(self.index, len(self.items), states.count("accepted"), states.count("flagged"),
                             states.count("pending"))

    def _item(self, item: ItemRef) -> QueueItem:
        """An item from a reference: None (the current one), a position, an ``output_stem`` or an item."""
        if item is None:
            return self.current
        if isinstance(item, str):
            return self.items[self._position(item)]
        return self.items[item] if isinstance(item, int) else item

    def _position(self, stem: str) -> int:
        for it in self.items:
            if it.stem == stem:
                return it.position
        raise CervkitInputError(f"no item {stem!r} in the queue", self.queue_csv)

    def _stops_at(self, i: int) -> bool:
        return self.include_accepted or self.status(i) != "accepted"

    def _resume(self) -> int:
        """The saved position (same queue file), moved past accepted items; else the first open item."""
        start, state = 0, dict[str, Any]()
        state_file = self.corrected_dir / STATE_NAME
        if state_file.is_file():
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_file.read_text(encoding="utf-8"))
            if isinstance(state, dict) and state.get("queue_csv") == str(self.queue_csv):
                start = next((it.position for it in self.items if it.stem == state.get("current")), 0)
        n = len(self.items)
        return next((i % n for i in range(start, start + n) if self._stops_at(i % n)), start)

    def _save_position(self) -> None:
        state = {"queue_csv": str(self.queue_csv), "current": self.current.stem, "index": self.index,
                 "annotator": self.annotator, "order": self.order, "updated_at": _now()}
        atomic_write_bytes(self.corrected_dir / STATE_NAME, json.dumps(state, indent=1).encode(), overwrite=True)

    # ---------------------------------------------------------------- moving
    def goto(self, target: int | str) -> QueueItem:
        """Move to a position (negative counts from the end) or an ``output_stem``; return the item.

        Parameters
        ----------
        target : int or str
            A position in the queue's order, or an item's ``output_stem``.

        Returns
        -------
        QueueItem
            The new current item.
        """
        if isinstance(target, str):
            target = self._position(target)
        if not -len(self.items) <= target < len(self.items):
            raise IndexError(f"position {target} out of range for a queue of {len(self.items)}")
        self._leave()
        self.index = target % len(self.items)
        self._save_position()
        return self.current

    def _step(self, step: int) -> QueueItem | None:
        i = self.index + step
        while 0 <= i < len(self.items):
            if self._stops_at(i):
                return self.goto(i)
            i += step
        return None

    def next(self) -> QueueItem | None:
        """Move to the next item (skipping accepted ones unless ``include_accepted``); None at the end.

        Returns
        -------
        QueueItem or None
            The new current item; None (and no move) when no later item qualifies.
        """
        return self._step(1)

    def previous(self) -> QueueItem | None:
        """Move to the previous item (same skipping); None at the start.

        Returns
        -------
        QueueItem or None
            The new current item; None (and no move) when no earlier item qualifies.
        """
        return self._step(-1)

    # ----------------------------------------------------- labels and autosave
    def autosave_path(self, item: ItemRef = None) -> Path:
        """The item's autosave PNG: ``corrected_dir/autosave/<stem>.png``.

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        pathlib.Path
            The path (the file may not exist).
        """
        return self.corrected_dir / "autosave" / f"{self._item(item).stem}.png"

    def corrected_mask_path(self, item: ItemRef = None) -> Path:
        """Where the item's accepted mask is written: ``corrected_dir/masks/<stem>.png``.

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        pathlib.Path
            The path (the file exists once the item is accepted).
        """
        return self.corrected_dir / "masks" / f"{self._item(item).stem}.png"

    def base_labels(self, item: ItemRef = None) -> np.ndarray:
        """The item's accepted mask if it has one, else its draft.

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        numpy.ndarray
            uint8 (H, W) label map.
        """
        from cervkit.io.images import read_mask

        item = self._item(item)
        mask = self.corrected_mask_path(item)
        accepted = self._rows.get(item.stem, {}).get("mask")
        return read_mask(mask if accepted and mask.is_file() else item.draft_mask)

    def working_labels(self, item: ItemRef = None) -> np.ndarray:
        """What the item opens with: its autosave (edit in progress), else :meth:`base_labels`.

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        numpy.ndarray
            uint8 (H, W) label map.
        """
        from cervkit.io.images import read_mask

        path = self.autosave_path(item)
        return read_mask(path) if path.is_file() else self.base_labels(item)

    def has_edit(self, item: ItemRef = None) -> bool:
        """Whether the item has an unaccepted edit (an autosave that differs from its base).

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        bool
            True when the autosave exists and differs from :meth:`base_labels`.
        """
        path = self.autosave_path(item)
        return path.is_file() and not np.array_equal(self.working_labels(item), self.base_labels(item))

    def open_state(self, item: ItemRef = None) -> EditorState:
        """An :class:`EditorState` for the item, with its working labels, autosaving to :meth:`autosave_path`.

        Parameters
        ----------
        item : int, str or QueueItem, optional
            A position, an ``output_stem`` or an item; default the current one.

        Returns
        -------
        EditorState
            The item's image and working labels, ready for the editor.
        """
        from cervkit.inference.level_names import parse_names

        item = self._item(item)
        return EditorState.from_image(item.image, self.working_labels(item), autosave_path=self.autosave_path(item),
                                      overwrite_autosave=True, level_names=parse_names(item.row.get("level_names")))

    def _drop_autosave(self, item: QueueItem) -> None:
        for path in (self.autosave_path(item), sidecar_path(self.autosave_path(item))):
            path.unlink(missing_ok=True)

    def _leave(self) -> None:
        """Remove the current item's autosave when it holds no edit (equals the base)."""
        if self.autosave_path().is_file() and not self.has_edit():
            self._drop_autosave(self.current)

    # -------------------------------------------------------- accept and flag
    def accept(self, labels: np.ndarray, *, note: str = "") -> Path:
        """Save ``labels`` as the current item's corrected mask and record it in the manifest.

        An existing corrected mask with other content is first kept as ``<stem>.vN.png``
        (N = 1, 2, …); the item's autosave is removed when it equals ``labels``.

        Parameters
        ----------
        labels : numpy.ndarray
            uint8 (H, W) label map, the draft's shape, at least one vertebra.
        note : str
            Free text kept in the row.

        Returns
        -------
        pathlib.Path
            The corrected mask file.
        """
        from PIL import Image as PILImage

        from cervkit.io.images import read_mask, write_png

        item, arr = self.current, check_labels(labels)
        with PILImage.open(item.draft_mask) as draft:
            shape = (draft.height, draft.width)
        if arr.shape != shape:
            raise CervkitInputError(f"labels {arr.shape} differ from the draft's shape {shape}", item.draft_mask)
        if not arr.any():
            raise CervkitInputError("an empty label map cannot be accepted; flag the item instead",
                                    item.image)
        target = self.corrected_mask_path(item)
        row = dict(self._rows.get(item.stem) or {})
        previous = row.get("previous_mask")
        if target.is_file() and not np.array_equal(read_mask(target), arr):
            n = 1
            while target.with_name(f"{item.stem}.v{n}.png").exists():
                n += 1
            kept = atomic_write_bytes(target.with_name(f"{item.stem}.v{n}.png"), target.read_bytes())
            previous = f"masks/{kept.name}"
        write_png(target, arr, overwrite=True)
        row.update(status="accepted", accepted_at=_now(), mask=f"masks/{target.name}", note=note or None,
                   previous_mask=previous, revision=int(row.get("revision") or 0) + 1, reason=None)
        self._record(item, row)
        if self.autosave_path(item).is_file() and np.array_equal(read_mask(self.autosave_path(item)), arr):
            self._drop_autosave(item)
        return target

    def flag(self, reason: str) -> None:
        """Flag the current item (e.g. "C7 hidden by shoulders") to revisit; its mask, if any, is kept.

        Parameters
        ----------
        reason : str
            Why the item needs another look (non-empty), kept in the row.
        """
        if not str(reason).strip():
            raise CervkitInputError("say why the item is flagged (reason=...)", self.current.image)
        row = dict(self._rows.get(self.current.stem) or {})
        row.update(status="flagged", flagged_at=_now(), reason=str(reason).strip())
        self._record(self.current, row)

    def _record(self, item: QueueItem, row: dict[str, Any]) -> None:
        """Fill the row's queue facts, store it and rewrite the manifest atomically."""
        row.update(image=relative_path(item.image, self.corrected_dir), patient_id=item.patient_id,
                   modality=item.modality, output_stem=item.stem, annotator=self.annotator,
                   draft_run=item.run or None, draft_mask=relative_path(item.draft_mask, self.corrected_dir),
                   draft_confidence=item.confidence)
        self._rows[item.stem] = row
        records = [*self._others, *self._rows.values()]
        extra = [c for r in records for c in r if c not in COLUMNS]
        df = pd.DataFrame(records, columns=[*COLUMNS, *dict.fromkeys(extra)])
        df["revision"] = pd.to_numeric(df["revision"], errors="coerce").astype("Int64")
        save_manifest(Manifest(df, None, self.corrected_dir), self.manifest_path, overwrite=True)
        self._save_position()
