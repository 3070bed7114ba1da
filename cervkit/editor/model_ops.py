"""The editor's model-driven operations: box prompts, click-to-refine and level names (mixed into EditorState).

They use the crop segmenter of a shipped model or a run (:mod:`cervkit.editor.prompts`) and the anchored level
names of :mod:`cervkit.inference.level_names`; every edit is one undoable step through the state's ``_commit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np

from cervkit.editor import tools
from cervkit.editor.prompts import (
    PromptResult,
    box_prompt_labels,
    crop_segmenter,
    grown_box,
)

__all__ = ["ModelOps"]


class ModelOps:
    """Box prompts, refine and level naming for :class:`cervkit.editor.state.EditorState` (its ``image``,
    ``labels``, ``spacing_mm``, ``level_names``, ``shape`` and ``_commit``)."""

    image: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float] | None
    level_names: dict[int, str]
    _prompt_models: dict[Any, Any]

    def box_prompt(self, x0: float, y0: float, x1: float, y1: float, model: Any, *,
                   replace: int | None = None) -> PromptResult:
        """Segment the body inside a box with the model's crop segmenter, as one undoable step.

        Parameters
        ----------
        x0, y0, x1, y1 : float
            The box in image pixels (any corner order).
        model : str, PathLike or object
            A shipped model's name, a run folder, a cascade or a crop segmenter
            (:func:`cervkit.editor.prompts.crop_segmenter`; loaded once and kept).
        replace : int, optional
            Redraw this body; default the body the box mostly covers, else a new body.

        Returns
        -------
        cervkit.editor.prompts.PromptResult
            The edit; ``label`` 0 (and no step) when nothing was found in the box.
        """
        segmenter = self._prompt_segmenter(model)
        result = box_prompt_labels(self.image, self.labels, (x0, y0, x1, y1), segmenter, replace=replace)
        if result.label:
            self._commit(result.labels, tools.changed_bbox(self.labels, result.labels),
                         "box prompt" if not result.replaced else "box prompt (redraw)", active_after=result.label)
        return result

    def refine_body(self, label: int, model: Any, *, margin: float = 0.15) -> PromptResult:
        """Re-segment one body from its box grown by ``margin`` (a body cut too tight is fixed in one click).

        Parameters
        ----------
        label : int
            The body to redraw.
        model : str, PathLike or object
            As in :meth:`box_prompt`.
        margin : float
            Fraction of the body's size added on every side.

        Returns
        -------
        cervkit.editor.prompts.PromptResult
        """
        return self.box_prompt(*grown_box(self.labels, label, margin), model, replace=int(label))

    def body_at(self, x: float, y: float) -> int:
        """The body under an image point (0 for background).

        Parameters
        ----------
        x, y : float
            Image pixel coordinates (column, row).

        Returns
        -------
        int
        """
        row, col = int(np.clip(y, 0, self.shape[0] - 1)), int(np.clip(x, 0, self.shape[1] - 1))
        return int(self.labels[row, col])

    def name_levels(self, protocol: str | Sequence[str] | None = None, model: Any = None) -> Any:
        """Name the bodies from anatomy (C2's dens, or a landmark the model's anchor classifier finds: C2, L5
        above the sacrum), else in the order of ``protocol``.

        Sets :attr:`level_names` (the selector, the canvas and the exports show them); no undo step, since
        the label map is unchanged.

        Parameters
        ----------
        protocol : str or sequence of str, optional
            The levels the image shows (``"C2-C7"``); see :func:`cervkit.inference.level_names.name_bodies`.
        model : object, optional
            A loaded cascade; when it has an anchor classifier (``model.anchor``), the current bodies (the
            user's edits included) are scored on this image to anchor the count.

        Returns
        -------
        cervkit.inference.level_names.LevelNames
            The names, their anchor and whether they are unsure (with reasons).
        """
        from cervkit.inference.level_names import name_bodies

        anchor = getattr(model, "anchor", None)
        scores = anchor.score(self.image, self.labels) if anchor is not None else None
        named = name_bodies(self.labels, spacing_mm=self.spacing_mm, protocol=protocol, anchor_scores=scores)
        self.level_names = dict(named.names)
        return named

    def _prompt_segmenter(self, model: Any) -> Any:
        key = model if isinstance(model, (str, PathLike)) else id(model)
        if key not in self._prompt_models:
            self._prompt_models[key] = crop_segmenter(model)
        return self._prompt_models[key]

