"""Batch measurements of label maps: ``python -m cervkit measure --out CSV MASK...``.

Each input is a label map (PNG, TIFF or NIfTI, read with :func:`cervkit.io.images.read_mask`;
0 background, one label per vertebral body, or a binary mask split into components).
:func:`measure_files` writes two CSV files:

- ``CSV``: one row per input: ``file``, ``status`` (``ok``/``failed``), ``error``,
  ``n_vertebrae``, ``levels`` (names top to bottom), ``levels_unsure``, ``c2c7_cobb_deg``,
  ``c2c7_harrison_deg``, ``anterior_side`` and its source, the spacing used and where it came
  from, ``unit`` (``mm`` or ``px``) and ``reasons``;
- ``<stem>_vertebrae.csv`` beside it: one row per body (the table of
  :func:`cervkit.measurements.spine.measure_vertebrae` with ``file`` and ``levels_unsure`` in front).

Levels: the bodies are named by :func:`cervkit.measurements.levels.assign_levels` (C2…C7 expected by
default), so a label map of six evenly spaced bodies is read as C2…C7 top to bottom.
**The C2–C7 angles are left empty unless C2 and C7 are identified with certainty**: the
assignment is sure, or the map holds exactly six bodies whose names come out as C2…C7 in order
with no body suspected to be split in two (a six-body column whose top body has no visible
dens is still read as C2…C7). A missing level (an occluded C7, a cut-off C2) makes the row
``levels_unsure`` with the reason; the other bodies keep their true names and their angles
are in the per-vertebra table, but no C2–C7 angle is guessed.

Spacing: a NIfTI file's own pixel spacing wins; otherwise ``spacing_mm`` (the
``--spacing-mm ROW COL`` option) is used; otherwise lengths are in pixels. One bad file is
reported (``status`` ``failed`` with the error) and skipped; existing outputs are never
replaced without ``overwrite=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path, check_writable
from cervkit.measurements.levels import CERVICAL_LEVELS, assign_levels
from cervkit.measurements.spine import cobb_angle_deg, measure_vertebrae

SUMMARY_COLUMNS = ("file", "status", "error", "n_vertebrae", "levels", "levels_unsure", "c2c7_cobb_deg",
                   "c2c7_harrison_deg", "anterior_side", "anterior_side_source", "spacing_row_mm",
                   "spacing_col_mm", "spacing_source", "unit", "reasons")


@dataclass
class MeasureBatch:
    """What :func:`measure_files` wrote.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per input (columns :data:`SUMMARY_COLUMNS`).
    vertebrae : pandas.DataFrame
        One row per body of every image measured.
    summary_path, vertebrae_path : pathlib.Path
        The two CSV files.
    """

    summary: pd.DataFrame
    vertebrae: pd.DataFrame
    summary_path: Path
    vertebrae_path: Path

    @property
    def n_failed(self) -> int:
        """Number of inputs that could not be measured."""
        return int((self.summary["status"] != "ok").sum())


def vertebrae_csv_path(summary_csv: str | PathLike[str]) -> Path:
    """The per-vertebra CSV written beside a summary CSV: ``<stem>_vertebrae.csv``.

    Parameters
    ----------
    summary_csv : str or PathLike
        The summary CSV path.

    Returns
    -------
    pathlib.Path
        Same folder, ``<stem>_vertebrae.csv``.
    """
    path = Path(summary_csv)
    return path.with_name(f"{path.stem}_vertebrae.csv")


def c2_c7_certain(levels: dict[int, str], unsure: bool, reasons: Sequence[str], n_bodies: int) -> bool:
    """Whether C2 and C7 are identified with certainty (see the module docstring).

    Parameters
    ----------
    levels : dict of int to str
        Label → level name, labels numbered top to bottom.
    unsure : bool
        The assignment's flag.
    reasons : sequence of str
        The assignment's reasons.
    n_bodies : int
        Number of bodies in the label map.

    Returns
    -------
    bool
        True when both C2 and C7 are named and the names can be trusted.
    """
    names = set(levels.values())
    if not {"C2", "C7"} <= names:
        return False
    if not unsure:
        return True
    in_order = [levels.get(k) for k in sorted(levels)] == list(CERVICAL_LEVELS)
    split = any("unusually close" in r for r in reasons)
    return n_bodies == len(CERVICAL_LEVELS) and len(levels) == n_bodies and in_order and not split


def measure_labels(labels: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                   expected: Sequence[str] = CERVICAL_LEVELS,
                   anterior_side: str | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Measure one label map: the summary row (without file fields) and the per-vertebra table.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map.
    spacing_mm : (float, float), optional
        (row, col) spacing; lengths in px without it.
    expected : sequence of str
        The levels the image should show (default C2…C7).
    anterior_side : {"left", "right"}, optional
        Which image side is anterior (default: from the curve of the centroids).

    Returns
    -------
    (dict, pandas.DataFrame)
        Summary fields (``n_vertebrae``, ``levels``, ``levels_unsure``, ``c2c7_cobb_deg``,
        ``c2c7_harrison_deg``, ``anterior_side``, ``anterior_side_source``, ``unit``,
        ``reasons``) and the :func:`cervkit.measurements.spine.measure_vertebrae` table.
    """
    assignment = assign_levels(labels, expected=expected, spacing_mm=spacing_mm)
    table = measure_vertebrae(labels, spacing_mm, levels=assignment, anterior_side=anterior_side)
    info = table.attrs
    reasons = list(info["reasons"])
    cobb = harrison = None
    if c2_c7_certain(assignment.levels, assignment.unsure, assignment.reasons, len(table)):
        by_level = table.set_index("level")
        cobb = cobb_angle_deg(table, "C2", "C7")
        harrison = float(by_level.at["C7", "posterior_wall_deg"] - by_level.at["C2", "posterior_wall_deg"])
        harrison = None if np.isnan(harrison) else harrison
        if cobb is None:
            reasons.append("C2–C7 Cobb angle not measured: an endplate of C2 or C7 could not be fitted")
    elif "C2" in expected or "C7" in expected:
        reasons.append("C2–C7 angles not reported: C2 or C7 not identified with certainty")
    row = {"n_vertebrae": int(len(table)),
           "levels": " ".join(str(v) if v is not None else "?" for v in table["level"]),
           "levels_unsure": bool(assignment.unsure), "c2c7_cobb_deg": cobb, "c2c7_harrison_deg": harrison,
           "anterior_side": info["anterior_side"], "anterior_side_source": info["anterior_side_source"],
           "unit": info["unit"], "reasons": "; ".join(reasons)}
    return row, table


def _spacing_for(path: Path, spacing_mm: Sequence[float] | None) -> tuple[tuple[float, float] | None, str]:
    from cervkit.io.nifti import is_nifti_path, read_nifti_spacing

    if is_nifti_path(path):
        found = read_nifti_spacing(path)
        if found is not None:
            return (float(found[0]), float(found[1])), "nifti"
    if spacing_mm is not None:
        return (float(spacing_mm[0]), float(spacing_mm[1])), "argument"
    return None, "none"


def measure_files(inputs: Sequence[str | PathLike[str]], out_csv: str | PathLike[str], *,
                  spacing_mm: Sequence[float] | None = None, expected: Sequence[str] = CERVICAL_LEVELS,
                  anterior_side: str | None = None, overwrite: bool = False) -> MeasureBatch:
    """Measure label-map files and write the summary and per-vertebra CSV files.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Label-map files (PNG, TIFF, NIfTI).
    out_csv : str or PathLike
        The summary CSV; the per-vertebra CSV is :func:`vertebrae_csv_path` of it.
    spacing_mm : (float, float), optional
        (row, col) spacing for files that carry none (NIfTI spacing wins).
    expected : sequence of str
        Levels the images should show (default C2…C7).
    anterior_side : {"left", "right"}, optional
        Which image side is anterior, for every file (default: decided per image).
    overwrite : bool
        Replace existing CSV files.

    Returns
    -------
    MeasureBatch
        Both tables and paths; check ``n_failed``.

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is False (checked before any work).
    CervkitInputError
        A non-positive spacing or an unknown ``anterior_side`` (checked before any work).
    """
    summary_path = check_writable(out_csv, overwrite)
    vert_path = check_writable(vertebrae_csv_path(summary_path), overwrite)
    if spacing_mm is not None and (len(spacing_mm) != 2 or min(float(v) for v in spacing_mm) <= 0):
        raise CervkitInputError(f"spacing_mm must be two positive numbers (row, col), got {spacing_mm}")
    if anterior_side not in (None, "left", "right"):
        raise CervkitInputError(f"anterior_side must be 'left', 'right' or None, got {anterior_side!r}")
    rows, tables = [], []
    for item in map(Path, inputs):
        base: dict[str, Any] = {"file": str(item), "status": "ok", "error": ""}
        try:
            from cervkit.io.images import read_mask

            labels = read_mask(item)
            spacing, source = _spacing_for(item, spacing_mm)
            fields, table = measure_labels(labels, spacing, expected=expected, anterior_side=anterior_side)
        except (CervkitInputError, OSError, ValueError) as exc:
            rows.append({**base, "status": "failed", "error": str(exc)})
            continue
        rows.append({**base, **fields, "spacing_row_mm": None if spacing is None else spacing[0],
                     "spacing_col_mm": None if spacing is None else spacing[1], "spacing_source": source})
        table.insert(0, "levels_unsure", fields["levels_unsure"])
        table.insert(0, "file", str(item))
        tables.append(table)
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    vertebrae = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["file"])
    with atomic_path(vert_path, overwrite=overwrite) as tmp:
        vertebrae.to_csv(tmp, index=False)
    with atomic_path(summary_path, overwrite=overwrite) as tmp:
        summary.to_csv(tmp, index=False)
    return MeasureBatch(summary, vertebrae, summary_path, vert_path)
