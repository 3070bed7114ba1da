"""The mask editor's notebook view: an anywidget over :class:`~cervkit.editor.EditorState`.

:class:`MaskEditor` is thin: every edit, from the browser or from Python, goes
through :meth:`MaskEditor.handle_message` and then the :class:`EditorState`,
so a notebook can script edits along exactly the path the mouse takes.

Link protocol (text only: Colab's widget manager mishandles large binary buffers).
Kernel → view, synced traits: ``image_png`` (8-bit PNG, once per image; the view
applies ``window`` itself), ``labels_png`` (whole map, for big changes),
``patch`` (changed rectangle, :func:`~cervkit.editor.codec.encode_patch` plus
``version``), ``shape``, ``active_label``, ``brush_radius``, ``tool``,
``opacity``, ``window``, ``level_names``, ``show_names``, ``model_name``, ``model_choices``,
``n_labels``, ``colors``, ``can_undo``, ``can_redo``, ``status``, ``version``. View → kernel, custom
messages: ``{"type": "stroke", "points": [[x, y], ...], "erase": bool}``
(pixel-edge image coordinates, on mouse-up), ``polygon``, ``flood``, ``key``,
``undo``, ``redo``, ``add``, ``delete``, ``clean``, ``select``, ``sync``.
Kernel → view custom message ``{"type": "labels", "png": ...}``: the whole map after an undo or
redo key that changed nothing here, since the view may already have applied it.

Undo at once: the view mirrors the kernel's last 64 steps from the patches (``reason``,
the pixels before and after), so ``z`` / ``y`` redraw before the kernel answers; the kernel's
own undo patch follows and overwrites the same pixels, so the kernel stays the authority.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image
from cervkit.editor.codec import encode_labels
from cervkit.editor.state import EditorState
from cervkit.editor.viewlink import (
    PATCH_MAX_CHARS,
    ViewFirstState,
    image_png,
    label_summary,
    palette,
    patch_for,
)

__all__ = ["MaskEditor", "PATCH_MAX_CHARS"]

_HERE = Path(__file__).resolve().parent
ImageLike = np.ndarray | Image | str | PathLike[str]


class MaskEditor(anywidget.AnyWidget):
    """Edit a vertebral-body label map in a notebook (brush, eraser, polygon, fill, undo, clean-ups).

    Parameters
    ----------
    image : numpy.ndarray, Image, str or PathLike
        float (H, W) in [0, 1], an :class:`~cervkit.core.image.Image`, or a file
        :func:`cervkit.io.images.read_image` reads.
    labels : numpy.ndarray, str or PathLike, optional
        uint8 (H, W) label map or a mask file; default: empty, or the ``run``'s prediction.
    spacing_mm : (float, float), optional
        (row, col) mm; default the image's.
    level_names : mapping of int to str, optional
        Label → level name shown in the vertebra selector and on the canvas, e.g. ``{1: "C2", …}``; given,
        they are kept as they are. Otherwise Auto-segment and box prompts name the bodies from anatomy
        (:meth:`EditorState.name_levels`: C2 or L5 above the sacrum anchors the count), else in the order of
        ``levels``.
    levels : str or sequence of str, optional
        The protocol, e.g. ``"C2-C7"``: flags a count that does not fit it, and names the bodies in its order
        when no landmark anchors the count (flagged unsure). Default none: without C2 in view, no names.
    autosave_path : str or PathLike, optional
        Autosave PNG written after every change (see :class:`EditorState`).
    run : str, PathLike or predictor, optional
        A shipped model's name (``"mri"``, ``"xray"``), a run folder or any object with ``predict(image)``;
        used by :meth:`auto_segment` and the box prompts (and at once when ``labels`` is None). The
        toolbar's model chooser switches between the shipped models and this one.
    overwrite_autosave : bool, default False
        Start over an existing autosave instead of raising FileExistsError.
    height : int, default 560
        Height of the drawing area in CSS pixels.

    Examples
    --------
    >>> import numpy as np
    >>> editor = MaskEditor(np.zeros((32, 32), np.float32))
    >>> editor.apply_stroke([(8, 8), (20, 8)])
    >>> int(editor.labels.max()), editor.can_undo
    (1, True)
    """

    _css = t.Unicode().tag(sync=True)
    _esm = t.Unicode().tag(sync=True)

    image_png = t.Unicode("").tag(sync=True)
    labels_png = t.Unicode("").tag(sync=True)
    labels_version = t.Int(0).tag(sync=True)
    patch = t.Dict().tag(sync=True)
    shape = t.List(t.Int(), [0, 0]).tag(sync=True)
    active_label = t.Int(1).tag(sync=True)
    brush_radius = t.Float(8.0).tag(sync=True)
    tool = t.Unicode("brush").tag(sync=True)
    opacity = t.Float(0.45).tag(sync=True)
    window = t.List(t.Float(), [0.0, 1.0]).tag(sync=True)
    level_names = t.Dict().tag(sync=True)
    show_names = t.Bool(True).tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    model_choices = t.List(t.Unicode()).tag(sync=True)
    n_labels = t.Int(0).tag(sync=True)
    colors = t.List().tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    can_redo = t.Bool(False).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    version = t.Int(0).tag(sync=True)
    view_height = t.Int(560).tag(sync=True)

    @t.default("_esm")
    def _default_esm(self) -> str:
        return (_HERE / "widget.js").read_text(encoding="utf-8")

    @t.default("_css")
    def _default_css(self) -> str:
        return (_HERE / "widget.css").read_text(encoding="utf-8")

    def __init__(self, image: ImageLike, labels: np.ndarray | str | PathLike[str] | None = None, *,
                 spacing_mm: tuple[float, float] | None = None,
                 level_names: Mapping[int, str] | None = None, levels: str | Sequence[str] | None = None,
                 autosave_path: str | PathLike[str] | None = None, run: Any = None,
                 overwrite_autosave: bool = False, height: int = 560) -> None:
        super().__init__(colors=palette(), view_height=int(height))
        self.run = None
        self._run_label: str | None = None
        self.levels = levels
        self._fixed_names = level_names is not None
        self._set_model(run)
        self._autosave_path = autosave_path
        self._overwrite_autosave = overwrite_autosave
        self._level_names = dict(level_names or {})
        self._syncing = False
        self.state: EditorState
        self.on_msg(self._on_custom_msg)
        self._open(image, labels, spacing_mm)
        if labels is None and run is not None:
            self.auto_segment()

    # ------------------------------------------------------------ opening
    def _open(self, image: ImageLike, labels: np.ndarray | str | PathLike[str] | None,
              spacing_mm: tuple[float, float] | None) -> None:
        """Replace the state with a new image (+ labels) and send everything to the view."""
        state = ViewFirstState.from_image(image, labels, spacing_mm=spacing_mm, level_names=self._level_names,
                                       autosave_path=self._autosave_path,
                                       overwrite_autosave=self._overwrite_autosave)
        self._overwrite_autosave = True  # later loads replace our own autosave
        self._modality = getattr(image, "meta", {}).get("modality") if hasattr(image, "meta") else None
        state.add_listener(self._on_state_change)
        self.state = state
        with self.hold_sync():
            self.shape = list(state.shape)
            self.image_png = image_png(state.image)
            self.level_names = {str(k): v for k, v in state.level_names.items()}
            self._send_full()
            self._sync_traits("opened")
        if state.autosave_path is not None:
            state.autosave()

    def load(self, source: Any, labels: np.ndarray | str | PathLike[str] | None = None, *,
             spacing_mm: tuple[float, float] | None = None) -> None:
        """Open another image: an array, :class:`Image`, file path, or manifest row.

        A manifest row (:class:`cervkit.data.table.ManifestRow` or anything with
        ``image`` and ``mask`` attributes) brings its mask and spacing along.
        The undo history starts afresh.

        Parameters
        ----------
        source : array, Image, str, PathLike or manifest row
            The image to open.
        labels : numpy.ndarray, str or PathLike, optional
            Label map or mask file; default the row's mask, else all background.
        spacing_mm : (float, float), optional
            (row, col) pixel spacing in mm; default the image's or the row's.
        """
        if hasattr(source, "image") and hasattr(source, "mask") and not isinstance(source, Image):
            if labels is None and source.mask is not None:
                labels = source.mask
            spacing_mm = spacing_mm or getattr(source, "pixel_spacing_mm", None)
            source = source.image
        self._open(source, labels, spacing_mm)

    # ------------------------------------------------------------ properties
    @property
    def labels(self) -> np.ndarray:
        """The current label map (uint8 (H, W); a copy)."""
        return self.state.labels.copy()

    @property
    def image(self) -> np.ndarray:
        """The image being edited (float32 (H, W) in [0, 1])."""
        return self.state.image

    # ---------------------------------------------------------- kernel → view
    def _send_full(self) -> None:
        """Send the whole label map."""
        self.labels_png = encode_labels(self.state.labels, compress_level=1)
        self.labels_version = self.state.version

    def _on_state_change(self, bbox: tuple[int, int, int, int] | None, reason: str) -> None:
        """EditorState listener: send the changed rectangle (or the map) and the new facts."""
        with self.hold_sync():
            if bbox is not None:
                patch = patch_for(self.state.labels, bbox)
                if patch is None:
                    self._send_full()
                else:
                    patch["version"] = self.state.version
                    patch["reason"] = reason
                    self.patch = patch
            self._sync_traits(reason)

    def _sync_traits(self, reason: str) -> None:
        """Copy the state's settings and facts into the synced traits."""
        state = self.state
        self._syncing = True
        try:
            self.active_label = state.active_label
            self.brush_radius = state.brush_radius
            self.tool = state.tool
            self.n_labels, n_present = label_summary(state.labels)
            self.can_undo = state.can_undo
            self.can_redo = state.can_redo
            self.status = self._status_line(reason, n_present)
            self.version = state.version
        finally:
            self._syncing = False

    def _status_line(self, reason: str, n_present: int) -> str:
        """One line for the view: last action, active vertebra, counts, version."""
        active = self.state.active_label
        name = self.state.level_names.get(active)
        level = f"{active} ({name})" if name else str(active)
        return (f"{reason} · vertebra {level} · {n_present} vertebrae · "
                f"{self.state.tool} r={self.state.brush_radius:g} · undo {self.state.history.undo_depth} · "
                f"v{self.state.version}")

    # ---------------------------------------------------------- view → kernel
    @t.observe("model_name")
    def _model_from_view(self, change: dict[str, Any]) -> None:
        """The view's model chooser: a shipped model's name or a run folder."""
        if self._syncing or not change["new"] or change["new"] == self._model_label():
            return
        self._set_model(change["new"])
        self.status = f"model: {change['new']} (Auto-segment and box prompts use it)"

    @t.observe("active_label", "brush_radius", "tool")
    def _settings_from_view(self, change: dict[str, Any]) -> None:
        """A setting changed in the view: apply it to the state."""
        if self._syncing or not hasattr(self, "state"):
            return
        try:
            if change["name"] == "tool":
                self.state.tool = change["new"]
            elif change["name"] == "brush_radius":
                self.state.brush_radius = max(float(change["new"]), 0.5)
            else:
                self.state.active_label = min(max(int(change["new"]), 1), 255)
        except CervkitInputError as exc:
            self.status = f"error: {exc}"

    def _on_custom_msg(self, _widget: Any, content: dict[str, Any], _buffers: list[Any]) -> None:
        """``on_msg`` callback: errors go to the status line, never kill the comm."""
        try:
            self.handle_message(content)
        except (CervkitInputError, KeyError, TypeError, ValueError) as exc:
            self.status = f"error: {exc}"

    def handle_message(self, content: Mapping[str, Any]) -> str:
        """Apply one message from the view (the dicts ``widget.js`` sends); return the action done.

        Parameters
        ----------
        content : mapping
            ``{"type": ..., ...}`` (module docstring); ``stroke`` may also carry the
            view's ``label`` and ``radius``. An unknown type raises CervkitInputError.

        Returns
        -------
        str
            The message type, or the key's action for ``key``.
        """
        kind = str(content.get("type", ""))
        state = self.state
        action, version = kind, state.version
        if kind == "stroke":
            if "label" in content:
                state.active_label = int(content["label"])
            if "radius" in content:
                state.brush_radius = float(content["radius"])
            state.stroke(content["points"], erase=bool(content.get("erase", False)))
        elif kind == "polygon":
            state.polygon(content["points"])
        elif kind == "flood":
            state.flood(float(content["x"]), float(content["y"]))
        elif kind == "key":
            action = state.handle_key(str(content["key"]))
            if action == "auto":  # key a: the view's Auto-segment button
                self.auto_segment()
            elif action == "names":  # key n: names on the canvas on / off
                self.show_names = not self.show_names
        elif kind == "undo":
            state.undo()
        elif kind == "redo":
            state.redo()
        elif kind == "add":
            state.add_vertebra()
        elif kind == "delete":
            state.delete_vertebra(content.get("label"))
        elif kind == "clean":
            state.clean(str(content["op"]), content.get("label"))
        elif kind == "select":
            state.active_label = min(max(int(content["label"]), 1), 255)
        elif kind == "box":
            self.box_prompt(float(content["x0"]), float(content["y0"]), float(content["x1"]), float(content["y1"]))
        elif kind == "refine":
            label = state.body_at(float(content["x"]), float(content["y"]))
            if label:
                state.refine_body(label, self._model())
        elif kind == "auto":
            self.auto_segment(mode=str(content.get("mode", "replace")))
        elif kind == "sync":
            if self.labels_version != state.version:
                self._send_full()
        else:
            raise CervkitInputError(f"unknown editor message type {kind!r}")
        if state.version == version:  # otherwise the state listener has just synced everything
            if action in ("undo", "redo"):  # the view may have undone locally (widget.js): resend the truth
                self.send({"type": "labels", "png": encode_labels(state.labels, compress_level=1)})
            self._sync_traits(action or kind)
        return action

    # ------------------------------------------------------ scripted editing
    def apply_stroke(self, points: Sequence[Sequence[float]], erase: bool = False) -> None:
        """Paint (or erase) a stroke through the same path as the browser (pixel-edge (x, y) points).

        Parameters
        ----------
        points : sequence of (x, y)
            Pointer positions in pixel-edge coordinates.
        erase : bool, default False
            Erase instead of paint.
        """
        self.handle_message({"type": "stroke", "points": [list(map(float, p)) for p in points],
                             "erase": bool(erase)})

    def apply_polygon(self, points: Sequence[Sequence[float]]) -> None:
        """Fill a polygon with the active label.

        Parameters
        ----------
        points : sequence of (x, y)
            The polygon's vertices in pixel-edge coordinates.
        """
        self.handle_message({"type": "polygon", "points": [list(map(float, p)) for p in points]})

    def apply_flood(self, x: float, y: float) -> None:
        """Flood-fill the region under (x, y) with the active label.

        Parameters
        ----------
        x, y : float
            The seed point in pixel-edge coordinates.
        """
        self.handle_message({"type": "flood", "x": float(x), "y": float(y)})

    def press(self, key: str) -> str:
        """Press a keyboard shortcut (e.g. ``"z"``); return its action.

        Parameters
        ----------
        key : str
            The key as the browser names it (see :func:`cervkit.editor.keys.normalize_key`).

        Returns
        -------
        str
            The action's name, ``""`` for an unknown key.
        """
        return self.handle_message({"type": "key", "key": key})

    def undo(self) -> None:
        """Undo the last edit."""
        self.handle_message({"type": "undo"})

    def redo(self) -> None:
        """Redo the last undone edit."""
        self.handle_message({"type": "redo"})

    def add_vertebra(self) -> int:
        """Make the next free label active (one undoable step); return it.

        Returns
        -------
        int
            The new active label.
        """
        self.handle_message({"type": "add"})
        return self.state.active_label

    def delete_vertebra(self, label: int | None = None) -> None:
        """Delete a vertebra (default the active one) and renumber the rest.

        Parameters
        ----------
        label : int, optional
            The label to delete; default the active one.
        """
        self.handle_message({"type": "delete", "label": label})

    def clean(self, op: str, label: int | None = None) -> None:
        """Run a clean-up: ``fill_holes``, ``remove_islands``, ``smooth`` or ``relabel``.

        Parameters
        ----------
        op : {"fill_holes", "remove_islands", "smooth", "relabel"}
            The clean-up (see :meth:`cervkit.editor.state.EditorState.clean`).
        label : int, optional
            Only this label (ignored by ``relabel``); default all.
        """
        self.handle_message({"type": "clean", "op": op, "label": label})

    def set_labels(self, labels: np.ndarray, reason: str = "set labels") -> None:
        """Replace the whole map as one undoable step.

        Parameters
        ----------
        labels : numpy.ndarray
            uint8 (H, W) label map of the image's shape.
        reason : str
            Name of the step.
        """
        self.state.set_labels(labels, reason)
        self._sync_traits(reason)

    def _model_label(self) -> str:
        """What the model chooser shows for the current model."""
        run = self.run
        if run is None:
            return ""
        if isinstance(run, (str, PathLike)):
            return str(run)
        return self._run_label or type(run).__name__

    def _set_model(self, run: Any, label: str | None = None) -> None:
        """Use ``run`` for Auto-segment and box prompts, and list it (or ``label``) in the toolbar's chooser."""
        from cervkit.zoo.store import available

        self.run = run
        self._run_label = label
        label = self._model_label()
        choices = list(available())
        if label and label not in choices:
            choices.append(label)
        with self.hold_sync():
            self._syncing = True
            try:
                self.model_choices = choices
                self.model_name = label
            finally:
                self._syncing = False

    def _model(self) -> Any:
        """The model for Auto-segment and box prompts: the one chosen, else the shipped model for the image."""
        if self.run is None:
            from cervkit.zoo.store import MODEL_FOR_MODALITY

            modality = str(getattr(self, "_modality", "") or "").upper()
            self._set_model(MODEL_FOR_MODALITY.get(modality, "mri"))
        return self.run

    def name_levels(self) -> Any:
        """Name the bodies again (anatomy, else the protocol) and show the names; see :meth:`EditorState.name_levels`.

        Returns
        -------
        cervkit.inference.level_names.LevelNames
        """
        named = self.state.name_levels(self.levels, model=self.run)  # a model with an anchor classifier is used
        self.level_names = {str(k): v for k, v in self.state.level_names.items()}
        if named.unsure:
            self.status = f"{self.status} · levels unsure: " + ("; ".join(named.reasons) or "?")
        return named

    def _renamed(self) -> None:
        if not self._fixed_names:
            self.name_levels()

    def box_prompt(self, x0: float, y0: float, x1: float, y1: float, model: Any = None) -> int:
        """Segment the body inside a box with the model's crop segmenter (the ``box`` tool, key ``x``).

        Parameters
        ----------
        x0, y0, x1, y1 : float
            The box in image pixels.
        model : str, PathLike or object, optional
            A shipped model's name, a run folder or a cascade; default the editor's model.

        Returns
        -------
        int
            The body drawn (0 when nothing was found in the box).
        """
        if model is not None:
            self._set_model(model)
        label = self.state.box_prompt(x0, y0, x1, y1, self._model()).label
        if label:
            self._renamed()
        return label

    def auto_segment(self, run: Any = None, *, mode: str = "replace") -> np.ndarray:
        """Segment the image with a model and make the result one undoable step.

        Parameters
        ----------
        run : str, PathLike or predictor, optional
            A shipped model's name, a run folder (:func:`cervkit.inference.registry.load_predictor`) or any
            object with ``predict(image)`` returning something with ``.labels`` (or a label array); default
            the ``run`` given to the constructor, else the shipped model for the image's modality (``mri``
            unless the image says X-ray).
        mode : {"replace", "merge"}
            ``replace``: the prediction becomes the map (one undoable step, so the user's edits come back with
            undo); ``merge``: the user's pixels stay and predicted bodies fill only empty regions (a predicted
            body mostly on the user's bodies is left out).

        Returns
        -------
        numpy.ndarray
            The predicted label map (now the current map).
        """
        run = self._model() if run is None else run
        if mode not in ("replace", "merge"):
            raise CervkitInputError(f"auto-segment mode must be 'replace' or 'merge', not {mode!r}")
        if isinstance(run, (str, PathLike)):
            from cervkit.inference.registry import load_predictor

            name = str(run)
            run = load_predictor(run)
            self._set_model(run, label=name)
        elif run is not self.run:
            self._set_model(run)
        result = run.predict(self.state.image)
        labels = np.asarray(getattr(result, "labels", result)).astype(np.uint8)
        if mode == "merge":  # keep every pixel the user drew; new bodies only where the map is empty
            current = self.labels
            free = [k for k in range(1, 256) if k not in set(np.unique(current))]
            merged = current.copy()
            for k in [int(v) for v in np.unique(labels) if v]:
                body = (labels == k) & (current == 0)
                if body.any() and not (current[labels == k] > 0).mean() > 0.5 and free:
                    merged[body] = free.pop(0)
            labels = merged
        self.set_labels(labels, "auto-segment" if mode == "replace" else "auto-segment (merged into empty regions)")
        self._renamed()
        return self.labels

    # ----------------------------------------------------------------- export
    def export(self, folder: str | PathLike[str], stem: str, *, overwrite: bool = False) -> dict[str, Path]:
        """Write ``<stem>_mask.png``, ``<stem>_overlay.png``, ``<stem>_mask.nii.gz`` and ``<stem>_labels.txt``.

        ``_labels.txt`` is an ITK-SNAP label description file (:mod:`cervkit.export.label_table`): each label
        with its level name and colour. Each file is written atomically; nothing is written when any of them
        exists and ``overwrite`` is False (FileExistsError names them).

        Parameters
        ----------
        folder : str or PathLike
            Destination folder (created).
        stem : str
            File name prefix.
        overwrite : bool, default False
            Replace existing files.

        Returns
        -------
        dict of str to pathlib.Path
            ``{"labels": path, "overlay": path, "nifti": path, "label_table": path}``.
        """
        from cervkit.export.label_table import write_label_table

        out = Path(folder)
        paths = {"labels": out / f"{stem}_mask.png", "overlay": out / f"{stem}_overlay.png",
                 "nifti": out / f"{stem}_mask.nii.gz", "label_table": out / f"{stem}_labels.txt"}
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (pass overwrite=True)")
        out.mkdir(parents=True, exist_ok=True)
        self.state.export_labels(paths["labels"], overwrite=overwrite)
        self.state.export_overlay(paths["overlay"], overwrite=overwrite)
        self.state.export_nifti(paths["nifti"], overwrite=overwrite)
        write_label_table(paths["label_table"], self.state.present_labels(), self.state.level_names, self.colors,
                          overwrite=overwrite)
        return paths
