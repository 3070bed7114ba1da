"""The mask editor's state and operations, headless (the widget is a thin view over it).

:class:`EditorState` holds the image, the label map and the tool settings; every
edit (stroke, polygon, flood fill, clean-up, add/delete vertebra, replacing the
map) is one undoable step stored as a compressed changed rectangle
(:mod:`cervkit.editor.history`). With ``autosave_path`` the label map is
written atomically after every change and :meth:`EditorState.recover` reloads
it. Exports never replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.editor import tools
from cervkit.editor.exports import ExportOps
from cervkit.editor.history import History, Step
from cervkit.editor.keys import SHORTCUTS, TOOLS, normalize_key, resize_brush
from cervkit.editor.model_ops import ModelOps
from cervkit.editor.persist import read_autosave, write_autosave

__all__ = ["CLEAN_OPS", "EditorState", "SHORTCUTS"]

CLEAN_OPS = ("fill_holes", "remove_islands", "smooth", "relabel")
Points = Sequence[Sequence[float]] | np.ndarray
Listener = Callable[[tools.BBox | None, str], None]


class EditorState(ModelOps, ExportOps):
    """Image + label map + tools + undo/redo + autosave, without any UI.

    Parameters
    ----------
    image : numpy.ndarray or Image
        float (H, W) in [0, 1] (values are clipped), or an :class:`~cervkit.core.image.Image`
        (its spacing and ``meta["source"]`` are used unless given).
    labels : numpy.ndarray, optional
        uint8 (H, W) label map; default all background.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing in mm; None when unknown.
    source : str, optional
        Where the image came from (a path or a description), kept in autosaves.
    level_names : mapping of int to str, optional
        Label → level name, e.g. ``{1: "C2", 2: "C3"}``.
    active_label, brush_radius, tool
        Initial tool settings (tool one of ``brush``, ``eraser``, ``polygon``, ``fill``, ``pan``).
    autosave_path : str or PathLike, optional
        Write the label map here (PNG + ``.json`` sidecar) after every change.
    overwrite_autosave : bool, default False
        Allow starting over an existing autosave; otherwise FileExistsError (so a
        crashed session's work is not lost: use :meth:`recover`).
    max_history, max_history_bytes : int
        Bounds of the undo history (steps, bytes).

    Attributes
    ----------
    protect_others : bool
        When True, the brush paints only background and the eraser erases only the active label.
    version : int
        Incremented by every change (including undo and redo).
    """

    def __init__(self, image: np.ndarray | Image, labels: np.ndarray | None = None, *,
                 spacing_mm: tuple[float, float] | None = None, source: str = "",
                 level_names: Mapping[int, str] | None = None, active_label: int = 1,
                 brush_radius: float = 8, tool: str = "brush",
                 autosave_path: str | PathLike[str] | None = None, overwrite_autosave: bool = False,
                 max_history: int = 200, max_history_bytes: int = 64 * 2**20) -> None:
        if isinstance(image, Image):
            spacing_mm = image.spacing_mm if spacing_mm is None else spacing_mm
            source = source or str(image.meta.get("source", ""))
            image = image.array
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 2 or arr.size == 0:
            raise CervkitInputError(f"the editor needs a non-empty 2D image, got shape {arr.shape}")
        self.image = np.clip(np.nan_to_num(arr), 0.0, 1.0)
        if labels is None:
            self.labels = np.zeros(arr.shape, dtype=np.uint8)
        else:
            self.labels = self._checked(labels)
        self.spacing_mm = None if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
        self.source = str(source)
        self.level_names: dict[int, str] = dict(level_names or {})
        self.active_label = int(active_label)
        self.brush_radius = float(brush_radius)
        self.tool = tool
        self.protect_others = False
        self.version = 0
        self.last_bbox: tools.BBox | None = None
        self.history = History(max_history, max_history_bytes)
        self._prompt_models: dict[Any, Any] = {}
        self._listeners: list[Listener] = []
        self.autosave_path = None if autosave_path is None else Path(autosave_path)
        if self.autosave_path is not None and self.autosave_path.exists() and not overwrite_autosave:
            raise FileExistsError(
                f"{self.autosave_path}: an autosave already exists; recover it with "
                "EditorState.recover(path), or pass overwrite_autosave=True to start over")

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image and label map."""
        return (int(self.labels.shape[0]), int(self.labels.shape[1]))

    @property
    def tool(self) -> str:
        """The current tool: one of ``brush``, ``eraser``, ``polygon``, ``fill``, ``pan``."""
        return self._tool

    @tool.setter
    def tool(self, value: str) -> None:
        if value not in TOOLS:
            raise CervkitInputError(f"unknown tool {value!r}; use one of {TOOLS}")
        self._tool = value

    @property
    def can_undo(self) -> bool:
        """Whether there is an edit to undo."""
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        """Whether there is an undone edit to redo."""
        return self.history.can_redo

    @property
    def history_size_bytes(self) -> int:
        """Approximate memory held by the undo history."""
        return self.history.size_bytes

    def present_labels(self) -> list[int]:
        """Return the labels (vertebrae) present in the map, ascending.

        Returns
        -------
        list of int
            Non-zero labels in the map.
        """
        return [int(v) for v in np.unique(self.labels) if v != 0]

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(bbox, reason)`` after every change (bbox None: nothing to redraw).

        Parameters
        ----------
        callback : callable
            ``callback(bbox, reason)``: the changed rectangle (or None) and the change's name (``"stroke"``,
            ``"undo"``, ...).
        """
        self._listeners.append(callback)

    def _checked(self, labels: np.ndarray) -> np.ndarray:
        """Return ``labels`` as a uint8 copy with the image's shape, or raise."""
        arr = tools.check_labels(labels)
        if arr.shape != self.image.shape:
            raise CervkitInputError(f"labels {arr.shape} and image {self.image.shape} differ in shape")
        return arr.copy()

    # ------------------------------------------------------------ committing
    def _commit(self, new: np.ndarray, bbox: tools.BBox | None, reason: str,
                active_after: int | None = None) -> tools.BBox | None:
        """Record the edit ``labels → new`` as one step; return the changed box."""
        active_after = self.active_label if active_after is None else int(active_after)
        if bbox is None and active_after == self.active_label:
            return None
        self.history.push(Step.from_maps(reason, self.labels, new, bbox, self.active_label, active_after))
        self.labels = new
        self.active_label = active_after
        self._changed(bbox, reason)
        return bbox

    def _changed(self, bbox: tools.BBox | None, reason: str) -> None:
        """Bump the version, autosave and tell the listeners."""
        self.version += 1
        self.last_bbox = bbox
        if self.autosave_path is not None:
            self.autosave()
        for callback in self._listeners:
            callback(bbox, reason)

    # ------------------------------------------------------------ operations
    def stroke(self, points: Points, *, erase: bool | None = None) -> tools.BBox | None:
        """Paint (or erase) a brush stroke with the active label and the current radius.

        Parameters
        ----------
        points : sequence of (x, y)
            Pointer positions in pixel-edge coordinates (see :mod:`cervkit.editor.tools`).
        erase : bool, optional
            Erase instead of paint; default: erase when the tool is ``"eraser"``.

        Returns
        -------
        BBox or None
            The changed rectangle, None when nothing changed (no step recorded).
        """
        erase = self.tool == "eraser" if erase is None else erase
        if erase:
            only = self.active_label if self.protect_others else None
            new, bbox = tools.paint_stroke(self.labels, points, self.brush_radius, 0, only_label=only)
        else:
            new, bbox = tools.paint_stroke(self.labels, points, self.brush_radius, self.active_label,
                                           only_background=self.protect_others)
        return self._commit(new, bbox, "erase" if erase else "stroke")

    def polygon(self, points: Points) -> tools.BBox | None:
        """Fill a lasso polygon with the active label; return the changed rectangle.

        Parameters
        ----------
        points : sequence of (x, y)
            The polygon's vertices in pixel-edge coordinates.

        Returns
        -------
        BBox or None
            The changed rectangle, None when nothing changed (no step recorded).
        """
        new, bbox = tools.fill_polygon(self.labels, points, self.active_label,
                                       only_background=self.protect_others)
        return self._commit(new, bbox, "polygon")

    def flood(self, x: float, y: float) -> tools.BBox | None:
        """Flood-fill the region under (x, y) with the active label; return the changed rectangle.

        Parameters
        ----------
        x, y : float
            The seed point in pixel-edge coordinates.

        Returns
        -------
        BBox or None
            The changed rectangle, None when nothing changed (no step recorded).
        """
        new, bbox = tools.flood_fill(self.labels, (x, y), self.active_label)
        return self._commit(new, bbox, "fill")

    def clean(self, op: str, label: int | None = None, *, radius: int = 2) -> tools.BBox | None:
        """Apply a clean-up to one label or all and record it as one step.

        Parameters
        ----------
        op : {"fill_holes", "remove_islands", "smooth", "relabel"}
            ``relabel`` renumbers 1..K top to bottom (the active label follows its vertebra).
        label : int, optional
            Only this label (ignored by ``relabel``); default all.
        radius : int, default 2
            Disc radius for ``smooth``.

        Returns
        -------
        BBox or None
            The changed rectangle.
        """
        active = None
        if op == "fill_holes":
            new = tools.fill_holes(self.labels, label)
        elif op == "remove_islands":
            new = tools.remove_islands(self.labels, label)
        elif op == "smooth":
            new = tools.smooth(self.labels, label, radius)
        elif op == "relabel":
            new = tools.relabel_top_to_bottom(self.labels)
            active = self._follow(self.labels, new)
        else:
            raise CervkitInputError(f"unknown clean-up {op!r}; use one of {CLEAN_OPS}")
        return self._commit(new, tools.changed_bbox(self.labels, new), op, active)

    def _follow(self, old: np.ndarray, new: np.ndarray) -> int:
        """Return what the active label of ``old`` is called in ``new`` (its renumbered form)."""
        where = np.flatnonzero(old.ravel() == self.active_label)
        if where.size and new.ravel()[where[0]] != 0:
            return int(new.ravel()[where[0]])
        top = int(new.max())
        return min(self.active_label, top) if top else 1

    def add_vertebra(self) -> int:
        """Make the smallest unused label active (one undoable step) and return it.

        Returns
        -------
        int
            The new active label.
        """
        label = tools.next_free_label(self.labels)
        self._commit(self.labels, None, "add vertebra", active_after=label)
        return label

    def delete_vertebra(self, label: int | None = None, *, renumber: bool = True) -> tools.BBox | None:
        """Delete a vertebra (default the active one) and renumber the rest top to bottom.

        Parameters
        ----------
        label : int, optional
            The label to delete; default the active one.
        renumber : bool, default True
            Renumber the remaining labels 1..K top to bottom (the active label follows its vertebra).

        Returns
        -------
        BBox or None
            The changed rectangle, None when nothing changed (no step recorded).
        """
        label = self.active_label if label is None else int(label)
        cleared = tools.delete_label(self.labels, label, renumber=False)
        new = tools.relabel_top_to_bottom(cleared) if renumber else cleared
        active = self._follow(cleared, new) if renumber else self.active_label
        return self._commit(new, tools.changed_bbox(self.labels, new), "delete vertebra", active)

    def set_labels(self, labels: np.ndarray, reason: str = "set labels") -> tools.BBox | None:
        """Replace the whole label map (e.g. with an auto-segmentation) as one undoable step.

        Parameters
        ----------
        labels : numpy.ndarray
            uint8 (H, W) label map of the image's shape (copied).
        reason : str
            Name of the step (passed to listeners).

        Returns
        -------
        BBox or None
            The changed rectangle, None when nothing changed (no step recorded).
        """
        new = self._checked(labels)
        return self._commit(new, tools.changed_bbox(self.labels, new), reason)

    def undo(self) -> tools.BBox | None:
        """Revert the last step; return its changed rectangle (None if nothing to undo).

        Returns
        -------
        BBox or None
            The undone step's rectangle; None when there was nothing to undo.
        """
        step = self.history.undo()
        if step is None:
            return None
        labels = self.labels.copy()
        step.write(labels, "before")
        self.labels = labels
        if step.active_before != step.active_after:
            self.active_label = step.active_before
        self._changed(step.bbox, "undo")
        return step.bbox

    def redo(self) -> tools.BBox | None:
        """Re-apply the last undone step; return its changed rectangle (None if none).

        Returns
        -------
        BBox or None
            The redone step's rectangle; None when there was nothing to redo.
        """
        step = self.history.redo()
        if step is None:
            return None
        labels = self.labels.copy()
        step.write(labels, "after")
        self.labels = labels
        if step.active_before != step.active_after:
            self.active_label = step.active_after
        self._changed(step.bbox, "redo")
        return step.bbox

    # -------------------------------------------------------------- keyboard
    def handle_key(self, key: str) -> str:
        """Apply a keyboard shortcut (:data:`SHORTCUTS`) and return its action name.

        Kernel-side actions (undo, redo, tools, brush size, selecting vertebra
        1..9) are applied here; view-side ones ("fit") are only named. An
        unknown key returns ``""`` and changes nothing.

        Parameters
        ----------
        key : str
            The key as the browser names it (e.g. ``"z"``, ``"Ctrl+Z"``, ``"]"``, ``"3"``).

        Returns
        -------
        str
            The action's name, ``""`` for an unknown key.
        """
        name = normalize_key(key)
        action = SHORTCUTS.get(name, "")
        if action == "undo":
            self.undo()
        elif action == "redo":
            self.redo()
        elif action in TOOLS:
            self.tool = action
        elif action in ("smaller", "larger"):
            self.brush_radius = float(resize_brush(self.brush_radius, action))
        elif action == "select":
            self.active_label = int(name)
        return action

    # ------------------------------------------------------- saving, loading
    def _info(self) -> dict[str, Any]:
        """Facts written next to autosaves."""
        return {"source": self.source, "steps": self.version, "undo_depth": self.history.undo_depth,
                "active_label": self.active_label, "spacing_mm": self.spacing_mm,
                "level_names": {str(k): v for k, v in self.level_names.items()}}

    def autosave(self) -> Path | None:
        """Write the autosave now (done automatically after every change); return its path.

        Returns
        -------
        pathlib.Path or None
            The autosave PNG; None without ``autosave_path``.
        """
        if self.autosave_path is None:
            return None
        return write_autosave(self.autosave_path, self.labels, self._info())

    @classmethod
    def recover(cls, autosave_path: str | PathLike[str], image: np.ndarray | Image | None = None,
                **kwargs: Any) -> EditorState:
        """Reload an autosave; editing continues to autosave to the same path.

        Parameters
        ----------
        autosave_path : str or PathLike
            The autosave PNG.
        image : numpy.ndarray or Image, optional
            The image; default: read the sidecar's ``source`` file.
        **kwargs
            Passed to :class:`EditorState`.

        Returns
        -------
        EditorState
            The recovered state, autosaving to ``autosave_path``.
        """
        labels, info = read_autosave(autosave_path)
        source = str(info.get("source", ""))
        if image is None:
            if not source or not Path(source).exists():
                raise CervkitInputError(
                    f"the autosave's source image {source!r} cannot be found; pass image=...", autosave_path)
            from cervkit.io.images import read_image

            image = read_image(source)
        spacing = info.get("spacing_mm")
        names = {int(k): str(v) for k, v in (info.get("level_names") or {}).items()}
        kwargs.setdefault("spacing_mm", None if spacing is None else tuple(spacing))
        kwargs.setdefault("source", source)
        kwargs.setdefault("level_names", names)
        kwargs.setdefault("active_label", int(info.get("active_label", 1)))
        return cls(image, labels, autosave_path=autosave_path, overwrite_autosave=True, **kwargs)

    @classmethod
    def from_image(cls, image: np.ndarray | Image | str | PathLike[str],
                   labels: np.ndarray | str | PathLike[str] | None = None, **kwargs: Any) -> EditorState:
        """Open an image (array, Image, or any file :func:`cervkit.io.images.read_image` reads) for editing.

        ``labels`` may be an array or a mask file (:func:`cervkit.io.images.read_mask`).

        Parameters
        ----------
        image : numpy.ndarray, Image, str or PathLike
            The image, or its file (then ``source`` defaults to the path).
        labels : numpy.ndarray, str or PathLike, optional
            Label map or mask file; default all background.
        **kwargs
            Passed to :class:`EditorState`.

        Returns
        -------
        EditorState
            The new state.
        """
        if isinstance(image, (str, PathLike)):
            from cervkit.io.images import read_image

            kwargs.setdefault("source", str(image))
            image = read_image(image)
        if isinstance(labels, (str, PathLike)):
            from cervkit.io.images import read_mask

            labels = read_mask(labels)
        return cls(image, labels, **kwargs)
