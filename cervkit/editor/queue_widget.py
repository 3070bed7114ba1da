"""The correction queue's notebook view: a :class:`MaskEditor` per item plus Previous / Next / Accept / Flag.

:class:`QueueEditor` is a thin ipywidgets ``VBox`` over a :class:`~cervkit.editor.queue.CorrectionQueue`:
every button calls the Python method of the same name (:meth:`QueueEditor.next`,
:meth:`QueueEditor.accept` …), so a notebook scripts the queue along the path the clicks take.
Each item gets a fresh :class:`MaskEditor` that opens the item's working labels (an edit
in progress, else the accepted mask, else the draft) and autosaves to the item's own
autosave file, so moving away and back never loses an edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w
import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.editor.queue import CorrectionQueue, QueueItem
from cervkit.editor.widget import MaskEditor

__all__ = ["QueueEditor"]


class QueueEditor(w.VBox):
    """Walk a correction queue in the notebook: edit each draft, then accept or flag it.

    Parameters
    ----------
    queue : CorrectionQueue
        The queue (its position is where the view starts).
    run : str, PathLike or predictor, optional
        Passed to each :class:`MaskEditor` for :meth:`MaskEditor.auto_segment`
        (re-segmenting an item with another model); the drafts are loaded as they are.
    height : int, default 480
        Height of the drawing area in CSS pixels.

    Attributes
    ----------
    editor : MaskEditor
        The current item's editor (replaced on every move).
    buttons : dict of str to ipywidgets.Button
        ``previous``, ``next``, ``accept``, ``flag``.
    reason, note : ipywidgets.Text
        The flag reason and the accept note.
    info, progress_label, message : ipywidgets.HTML / Label
        The item (stem, patient, draft run), the progress line, and the last action or error.
    """

    def __init__(self, queue: CorrectionQueue, run: Any = None, *, height: int = 480) -> None:
        self.queue = queue
        self.run = run
        self._height = int(height)
        self.info = w.HTML()
        self.progress_label = w.Label()
        self.message = w.Label()
        self.reason = w.Text(placeholder="why flag it (e.g. C7 hidden)", description="Reason")
        self.note = w.Text(placeholder="optional note", description="Note")
        self.buttons = {name: w.Button(description=name.capitalize(), icon=icon, button_style=style)
                        for name, icon, style in (("previous", "arrow-left", ""), ("next", "arrow-right", ""),
                                                  ("accept", "check", "success"), ("flag", "flag", "warning"))}
        actions: dict[str, Callable[[], Any]] = {"previous": self.previous, "next": self.next,
                                                 "accept": self.accept, "flag": self.flag}
        for name, button in self.buttons.items():
            button.on_click(self._clicked(actions[name]))
        self.editor = self._open()
        controls = w.HBox([self.buttons["previous"], self.buttons["next"], self.buttons["accept"], self.note,
                           self.buttons["flag"], self.reason])
        super().__init__([self.info, self.editor, controls, self.progress_label, self.message])
        self._refresh()

    # ------------------------------------------------------------------ view
    def _open(self) -> MaskEditor:
        """A MaskEditor on the current item's working labels, autosaving to its own file."""
        from cervkit.inference.level_names import parse_names

        item = self.queue.current
        names = parse_names(item.row.get("level_names"))
        return MaskEditor(item.image, self.queue.working_labels(item), autosave_path=self.queue.autosave_path(item),
                          overwrite_autosave=True, run=self.run, height=self._height, level_names=names or None)

    def _show(self, item: QueueItem | None) -> QueueItem | None:
        """After a move: swap in the new item's editor (nothing changes at either end)."""
        if item is None:
            self.message.value = "no more items that way"
            return None
        old, self.editor = self.editor, self._open()
        self.children = (self.info, self.editor, *self.children[2:])
        old.close()
        self.message.value = f"opened {item.stem}" + (" (edit in progress restored)" if self.queue.has_edit()
                                                       else "")
        self._refresh()
        return item

    def _refresh(self) -> None:
        """Update the item line and the progress label."""
        item, progress = self.queue.current, self.queue.progress
        conf = "unknown" if item.confidence is None else f"{item.confidence:.2f}"
        self.progress_label.value = (f"{progress.position + 1}/{progress.total} · accepted {progress.accepted}"
                                     f" · flagged {progress.flagged} · confidence {conf}")
        self.info.value = (f"<b>{item.stem}</b> · patient {item.patient_id} · {item.modality} · "
                           f"status {self.queue.status()} · draft from <code>{item.run or 'unknown run'}</code>")

    def _clicked(self, action: Callable[[], Any]) -> Callable[[w.Button], None]:
        """A button callback: run ``action``, errors go to the message line, never to the kernel."""
        def callback(_button: w.Button) -> None:
            try:
                action()
            except (CervkitInputError, OSError) as exc:
                self.message.value = f"error: {exc}"
        return callback

    # --------------------------------------------------------------- actions
    @property
    def labels(self) -> np.ndarray:
        """The current editor's label map (a copy)."""
        return self.editor.labels

    def next(self) -> QueueItem | None:
        """Go to the next open item (its edit in progress, accepted mask or draft); None at the end.

        Returns
        -------
        QueueItem or None
            The new current item.
        """
        return self._show(self.queue.next())

    def previous(self) -> QueueItem | None:
        """Go to the previous open item; None at the start.

        Returns
        -------
        QueueItem or None
            The new current item.
        """
        return self._show(self.queue.previous())

    def goto(self, target: int | str) -> QueueItem:
        """Go to a queue position or ``output_stem`` (accepted items too).

        Parameters
        ----------
        target : int or str
            A position in the queue's order, or an item's ``output_stem``.

        Returns
        -------
        QueueItem
            The new current item.
        """
        item = self.queue.goto(target)
        self._show(item)
        return item

    def accept(self, note: str | None = None, *, advance: bool = True) -> None:
        """Accept the editor's labels for the current item (note: the Note box unless given), then move on.

        Parameters
        ----------
        note : str, optional
            Free text kept in the row; default the Note box's text.
        advance : bool, default True
            Move to the next open item afterwards.
        """
        path = self.queue.accept(self.editor.labels, note=self.note.value if note is None else note)
        self.note.value = ""
        stem = self.queue.current.stem
        if not (advance and self.next()):
            self._refresh()
        self.message.value = f"accepted {stem} → {path.name}"

    def flag(self, reason: str | None = None, *, advance: bool = True) -> None:
        """Flag the current item (reason: the Reason box unless given), then move on.

        Parameters
        ----------
        reason : str, optional
            Why the item needs another look; default the Reason box's text.
        advance : bool, default True
            Move to the next open item afterwards.
        """
        self.queue.flag(self.reason.value if reason is None else reason)
        self.reason.value = ""
        stem = self.queue.current.stem
        if not (advance and self.next()):
            self._refresh()
        self.message.value = f"flagged {stem}"
