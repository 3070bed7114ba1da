"""The editor's keyboard map, as data shared by the kernel and the browser view.

The view sends the pressed key; :meth:`cervkit.editor.EditorState.handle_key`
applies the kernel-side actions (undo/redo, tool, brush size, vertebra
selection) and returns the action name so the view can do the rest ("fit").
"""

from __future__ import annotations

__all__ = ["BRUSH_SIZES", "KERNEL_ACTIONS", "SHORTCUTS", "TOOLS", "VIEW_ACTIONS", "normalize_key",
           "resize_brush"]

TOOLS = ("brush", "eraser", "polygon", "fill", "box", "pan")

SHORTCUTS: dict[str, str] = {
    "z": "undo",
    "y": "redo",
    "b": "brush",
    "e": "eraser",
    "p": "polygon",
    "g": "fill",
    "x": "box",
    "h": "pan",
    "a": "auto",
    "[": "smaller",
    "]": "larger",
    "f": "fit",
    "n": "names",
    **{str(k): "select" for k in range(1, 10)},
}
"""Key → action. ``"1"``..``"9"`` select that vertebra (label) as the active one."""

VIEW_ACTIONS = frozenset({"fit", "auto", "names"})
"""Actions only the view performs (the kernel returns the name and changes nothing)."""

KERNEL_ACTIONS = frozenset(SHORTCUTS.values()) - VIEW_ACTIONS

BRUSH_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
"""Brush radii (pixels) that ``[`` and ``]`` step through."""

_MODIFIERS = ("ctrl+", "control+", "cmd+", "meta+", "alt+")


def normalize_key(key: str) -> str:
    """Map a key description to a :data:`SHORTCUTS` key.

    Modifier prefixes (``ctrl+``, ``cmd+``, ``meta+``, ``alt+``) are dropped, so
    Ctrl+Z is undo; ``shift+z`` / ``Z`` become ``"y"`` (redo, as in most editors).

    Parameters
    ----------
    key : str
        E.g. ``"z"``, ``"Ctrl+Z"``, ``"Meta+Shift+z"``, ``"]"``.

    Returns
    -------
    str
        The normalised key ("" for an empty input).
    """
    text = key.strip()
    lowered = text.lower()
    changed = True
    while changed:
        changed = False
        for prefix in _MODIFIERS:
            if lowered.startswith(prefix) and len(lowered) > len(prefix):
                text, lowered, changed = text[len(prefix):], lowered[len(prefix):], True
    shift = lowered.startswith("shift+") and len(lowered) > len("shift+")
    if shift:
        text, lowered = text[len("shift+"):], lowered[len("shift+"):]
    if lowered == "z" and (shift or text == "Z"):
        return "y"
    return lowered


def resize_brush(radius: float, action: str) -> int:
    """Return the next smaller or larger radius of :data:`BRUSH_SIZES`.

    Parameters
    ----------
    radius : float
        Current brush radius.
    action : {"smaller", "larger"}
        Direction.

    Returns
    -------
    int
        The neighbouring ladder size (clamped at the ends).
    """
    if action == "larger":
        bigger = [s for s in BRUSH_SIZES if s > radius]
        return bigger[0] if bigger else BRUSH_SIZES[-1]
    smaller = [s for s in BRUSH_SIZES if s < radius]
    return smaller[-1] if smaller else BRUSH_SIZES[0]
