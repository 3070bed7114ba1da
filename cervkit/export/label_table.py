"""The level names of a label map, written as an ITK-SNAP label description file.

ITK-SNAP (the paper's annotation tool) and 3D Slicer's ITK-SNAP importer read this plain-text table to show
each label value with its name and colour: ``Segmentation → Import Label Descriptions`` in ITK-SNAP. One
line per label: ``IDX R G B A VIS MSH "LABEL"``. The editor's and the batch exports write it beside the
label image, so the names (C2…C7, or the model's) travel with the mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from cervkit.core.files import atomic_path

__all__ = ["read_label_table", "write_label_table"]

_HEADER = """################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
# Written by cervkit
################################################
"""


def write_label_table(path: str | PathLike[str], labels: Sequence[int], names: Mapping[int, str],
                      colors: Sequence[Sequence[int]], *, overwrite: bool = False) -> Path:
    """Write an ITK-SNAP label description file for the given label values.

    Parameters
    ----------
    path : str or PathLike
        Destination ``.txt``.
    labels : sequence of int
        The label values present (0 is always written as "Clear Label").
    names : mapping of int to str
        Label → level name; a label without a name is written as ``vertebra K``.
    colors : sequence of (int, int, int)
        The palette: label K gets ``colors[(K - 1) % len(colors)]`` (the editor's colours).
    overwrite : bool, default False
        Replace an existing file; otherwise FileExistsError.

    Returns
    -------
    pathlib.Path
    """
    lines = [_HEADER.rstrip("\n"), f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8d} {0:2d} {0:2d}    "Clear Label"']
    for k in sorted({int(v) for v in labels if int(v) != 0}):
        r, g, b = (int(c) for c in colors[(k - 1) % len(colors)][:3])
        name = str(names.get(k, f"vertebra {k}")).replace('"', "'")
        lines.append(f'{k:5d} {r:5d} {g:4d} {b:4d} {1:8d} {1:2d} {1:2d}    "{name}"')
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def read_label_table(path: str | PathLike[str]) -> dict[int, str]:
    """Read the names of an ITK-SNAP label description file (label 0 left out).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    dict of int to str
    """
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#") or '"' not in text:
            continue
        idx = int(text.split()[0])
        if idx:
            out[idx] = text[text.index('"') + 1:text.rindex('"')]
    return out
