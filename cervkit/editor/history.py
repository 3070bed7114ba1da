"""Undo/redo history that stores each edit as a compressed changed rectangle.

A step keeps only the box the edit changed, before and after, each compressed
with zlib (label maps are mostly runs, so a brush stroke on a 1024 x 1024 map
costs a few hundred bytes, and even a full-map replacement only kilobytes).
The history is bounded both in steps and in bytes; the oldest steps go first.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cervkit.editor.labelmap import BBox

__all__ = ["History", "Step"]

_LEVEL = 1  # zlib level: fast, and label patches compress well even at 1


@dataclass(frozen=True)
class Step:
    """One undoable edit.

    Attributes
    ----------
    reason : str
        What the edit was ("stroke", "polygon", "smooth", …).
    bbox : BBox or None
        The changed rectangle (x_min, y_min, x_max, y_max); None when no pixel changed.
    before, after : bytes
        zlib-compressed uint8 contents of ``bbox`` before and after the edit.
    active_before, active_after : int
        The active label before and after (add_vertebra changes only these).
    """

    reason: str
    bbox: BBox | None
    before: bytes
    after: bytes
    active_before: int
    active_after: int

    @classmethod
    def from_maps(cls, reason: str, old: np.ndarray, new: np.ndarray, bbox: BBox | None,
                  active_before: int, active_after: int) -> Step:
        """Build a step from the maps before and after an edit and the changed box.

        Parameters
        ----------
        reason : str
            What the edit was.
        old, new : numpy.ndarray
            uint8 (H, W) label maps before and after the edit.
        bbox : BBox or None
            The changed rectangle; None stores no pixels (only the active-label change).
        active_before, active_after : int
            The active label before and after.

        Returns
        -------
        Step
            The step, ``bbox``'s contents compressed.
        """
        if bbox is None:
            return cls(reason, None, b"", b"", int(active_before), int(active_after))
        x0, y0, x1, y1 = bbox
        before = zlib.compress(np.ascontiguousarray(old[y0:y1, x0:x1]).tobytes(), _LEVEL)
        after = zlib.compress(np.ascontiguousarray(new[y0:y1, x0:x1]).tobytes(), _LEVEL)
        return cls(reason, bbox, before, after, int(active_before), int(active_after))

    @property
    def nbytes(self) -> int:
        """Approximate memory held by this step (payload plus a fixed overhead)."""
        return len(self.before) + len(self.after) + 200

    def write(self, labels: np.ndarray, which: str) -> None:
        """Write the ``"before"`` or ``"after"`` contents into ``labels`` in place.

        Parameters
        ----------
        labels : numpy.ndarray
            uint8 (H, W) label map, changed in place.
        which : {"before", "after"}
            ``"before"`` to undo the step, ``"after"`` to redo it.
        """
        if self.bbox is None:
            return
        x0, y0, x1, y1 = self.bbox
        payload = self.before if which == "before" else self.after
        patch = np.frombuffer(zlib.decompress(payload), dtype=np.uint8)
        labels[y0:y1, x0:x1] = patch.reshape(y1 - y0, x1 - x0)


class History:
    """A bounded undo/redo stack of :class:`Step`.

    Parameters
    ----------
    max_steps : int, default 200
        Most steps kept (undo depth); at least 1.
    max_bytes : int, default 64 MiB
        Most memory the steps may hold; the oldest are dropped beyond it (the
        newest step is always kept).
    """

    def __init__(self, max_steps: int = 200, max_bytes: int = 64 * 2**20) -> None:
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self.max_bytes = int(max_bytes)
        self._steps: list[Step] = []
        self._pos = 0  # steps[:pos] are applied; steps[pos:] can be redone

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def can_undo(self) -> bool:
        """Whether a step can be undone."""
        return self._pos > 0

    @property
    def can_redo(self) -> bool:
        """Whether an undone step can be redone."""
        return self._pos < len(self._steps)

    @property
    def undo_depth(self) -> int:
        """How many steps can be undone now."""
        return self._pos

    @property
    def redo_depth(self) -> int:
        """How many steps can be redone now."""
        return len(self._steps) - self._pos

    @property
    def size_bytes(self) -> int:
        """Approximate memory held by all steps."""
        return sum(step.nbytes for step in self._steps)

    def push(self, step: Step) -> None:
        """Add a new step; this clears the redo steps and drops the oldest beyond the bounds.

        Parameters
        ----------
        step : Step
            The edit just made.
        """
        del self._steps[self._pos:]
        self._steps.append(step)
        total = self.size_bytes
        while len(self._steps) > 1 and (len(self._steps) > self.max_steps or total > self.max_bytes):
            total -= self._steps.pop(0).nbytes
        self._pos = len(self._steps)

    def undo(self) -> Step | None:
        """Move back one step and return it (to revert), or None at the start.

        Returns
        -------
        Step or None
            The step to revert.
        """
        if not self.can_undo:
            return None
        self._pos -= 1
        return self._steps[self._pos]

    def redo(self) -> Step | None:
        """Move forward one step and return it (to re-apply), or None at the end.

        Returns
        -------
        Step or None
            The step to re-apply.
        """
        if not self.can_redo:
            return None
        self._pos += 1
        return self._steps[self._pos - 1]

    def clear(self) -> None:
        """Forget every step."""
        self._steps.clear()
        self._pos = 0
