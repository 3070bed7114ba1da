"""The mask editor: headless state and tools (this package) and a notebook view (``widget``).

:class:`EditorState` holds an image and its label map (uint8, 0 background,
1..K one vertebral body each), applies the tools (brush, eraser, polygon,
flood fill, clean-ups, add/delete vertebra) as undoable steps, autosaves
crash-safely and exports PNG / overlay / NIfTI without silent overwrites.
:mod:`cervkit.editor.tools` has the array operations as pure functions and
:mod:`cervkit.editor.codec` the compact text encodings the view uses.
:class:`MaskEditor` (the anywidget view, :mod:`cervkit.editor.widget`) is loaded on
first use, so importing this package never imports ipywidgets or anywidget; so are
:class:`CorrectionQueue` (:mod:`cervkit.editor.queue`: walk predicted drafts, accept or
flag each into a corrected dataset) and its view :class:`QueueEditor`.

Examples
--------
>>> import numpy as np
>>> from cervkit.editor import EditorState
>>> state = EditorState(np.zeros((64, 64), np.float32))
>>> state.stroke([(10, 10), (40, 12)])
(2, 2, 48, 20)
>>> state.undo()
(2, 2, 48, 20)
>>> int(state.labels.max())
0
"""

from __future__ import annotations

from cervkit.editor.codec import (
    apply_patch,
    decode_labels,
    encode_labels,
    encode_patch,
    rle_decode,
    rle_encode,
)
from cervkit.editor.keys import BRUSH_SIZES, SHORTCUTS, TOOLS
from cervkit.editor.state import CLEAN_OPS, EditorState

__all__ = [
    "BRUSH_SIZES", "CLEAN_OPS", "SHORTCUTS", "TOOLS", "EditorState", "apply_patch", "decode_labels",
    "encode_labels", "encode_patch", "rle_decode", "rle_encode", "MaskEditor",
    "CorrectionQueue", "QueueEditor",
]


def __getattr__(name: str):
    if name == "MaskEditor":
        from cervkit.editor.widget import MaskEditor

        return MaskEditor
    if name == "CorrectionQueue":
        from cervkit.editor.queue import CorrectionQueue

        return CorrectionQueue
    if name == "QueueEditor":
        from cervkit.editor.queue_widget import QueueEditor

        return QueueEditor
    raise AttributeError(f"module 'cervkit.editor' has no attribute {name!r}")
