"""The mask editor: headless state and tools (this package) and a notebook view (``widget``).

:class:`EditorState` holds an image and its label map (uint8, 0 background,
1..K one vertebral body each), applies the tools (brush, eraser, polygon,
flood fill, clean-ups, add/delete vertebra) as undoable steps, autosaves
crash-safely and exports PNG / overlay / NIfTI without silent overwrites.
:mod:`cervkit.editor.tools` has the array operations as pure functions and
:mod:`cervkit.editor.codec` the compact text encodings the view uses.
:class:`~cervkit.editor.widget.MaskEditor` (:mod:`cervkit.editor.widget`) is the anywidget view;
:class:`~cervkit.editor.queue.CorrectionQueue` (:mod:`cervkit.editor.queue`) walks predicted drafts,
accepting or flagging each into a corrected dataset, and :mod:`cervkit.editor.queue_widget` is its view.
This ``__init__`` imports nothing, so importing the package never loads widgets.

Examples
--------
>>> import numpy as np
>>> from cervkit.editor.state import EditorState
>>> state = EditorState(np.zeros((64, 64), np.float32))
>>> state.stroke([(10, 10), (40, 12)])
(2, 2, 48, 20)
>>> state.undo()
(2, 2, 48, 20)
>>> int(state.labels.max())
0
"""
