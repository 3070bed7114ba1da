"""Vertebral level names (C2…C7 and beyond) for the bodies of a label map.

:func:`assign_levels` names each labelled body from per-instance class predictions
when given, else from order and anatomy: bodies are ordered top to bottom by
centroid row; a gap in centroid spacing about twice the usual one means a level is
missing in between; C2 is recognised by its dens (a narrow peg rising above the
body) or by being clearly the tallest. When the count or the anatomy does not fit
``expected``, it still decides (C2 missing, extra small body at the bottom read as
T1, …) but sets ``unsure=True`` and says why in ``reasons``, instead of silently
shifting every name.

The per-body shape summary it builds on (order, local axis, dens) is :mod:`cervkit.measurements.bodies`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.measurements.bodies import BodyStats, body_centre, body_stats

ANATOMICAL_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)), *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)), "S1",
)
CERVICAL_LEVELS: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7")

_GAP_MISSING = 1.6     # centroid gap / usual gap above which a level is missing in between
_GAP_SPLIT = 0.5       # centroid gap / usual gap below which two labels may be one body
_TALLEST = 1.25        # top body height / median of the others to read it as C2 without a dens
_SMALL = 0.6           # area / median area below which an end body counts as small (cut off, T1 …)


@dataclass
class LevelAssignment:
    """Level names of the bodies of one label map.

    Attributes
    ----------
    levels : dict of int to str
        Label value → level name (e.g. ``{1: "C2", 2: "C3"}``); bodies that could not be
        named are left out.
    unsure : bool
        True when anything did not fit the expected anatomy (see ``reasons``).
    reasons : list of str
        Why the assignment is unsure, in words; empty when ``unsure`` is False.
    """

    levels: dict[int, str]
    unsure: bool = False
    reasons: list[str] = field(default_factory=list)

def _positions(stats: list[BodyStats], reasons: list[str]) -> list[int]:
    """Level index of each body relative to the top one, counting levels missing in gaps."""
    n = len(stats)
    if n < 2:
        return [0] * n
    centres = np.array([body_centre(b) for b in stats])
    gaps = np.hypot(*np.diff(centres, axis=0).T)
    if n >= 3:
        # a body cut off by the image edge (small) has its centre pulled towards its neighbour: its gaps
        # would set a "usual" spacing that makes every full gap look like a missing level
        areas = np.array([b.area for b in stats])
        full = areas >= _SMALL * float(np.median(areas))
        pool = gaps[full[:-1] & full[1:]]
        pool = pool if pool.size >= 2 else gaps
        usual = float(np.median(pool[pool <= 1.4 * pool.min()]))
    else:
        usual = 1.3 * float(np.median([b.height for b in stats]))
    pos = [0]
    for i, g in enumerate(gaps):
        ratio = g / usual if usual > 0 else 1.0
        missing = max(1, int(round(ratio)) - 1) if ratio > _GAP_MISSING else 0
        if missing:
            reasons.append(f"gap between bodies {stats[i].label} and {stats[i + 1].label} is "
                           f"{ratio:.1f}x the usual spacing: {missing} level(s) missing in between")
        elif ratio < _GAP_SPLIT:
            reasons.append(f"bodies {stats[i].label} and {stats[i + 1].label} are unusually close "
                           f"({ratio:.1f}x the usual spacing): one body split in two?")
        pos.append(pos[-1] + 1 + missing)
    return pos


def _sequence(expected: Sequence[str]) -> tuple[tuple[str, ...], int]:
    """The name sequence to count along, and the index of ``expected[0]`` in it."""
    exp = tuple(expected)
    if exp and all(name in ANATOMICAL_LEVELS for name in exp):
        idx = [ANATOMICAL_LEVELS.index(name) for name in exp]
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return ANATOMICAL_LEVELS, idx[0]
    return exp, 0


def _offset_from_classes(stats: list[BodyStats], pos: list[int], seq: tuple[str, ...],
                         expected: Sequence[str], classes: Mapping[int, str | int],
                         reasons: list[str]) -> int | None:
    votes = []
    for i, b in enumerate(stats):
        if b.label not in classes:
            continue
        cls = classes[b.label]
        name = expected[cls] if isinstance(cls, (int, np.integer)) and 0 <= cls < len(expected) else cls
        if name not in seq:
            reasons.append(f"class {cls!r} of body {b.label} is not a known level name; ignored")
            continue
        votes.append(seq.index(str(name)) - pos[i])
    if not votes:
        return None
    tally = Counter(votes).most_common()
    if len(tally) > 1:
        reasons.append(f"class predictions disagree with the order/spacing of the bodies "
                       f"({sum(c for _, c in tally[1:])} of {len(votes)} overruled by the majority)")
    return tally[0][0]


def _offset_from_anatomy(stats: list[BodyStats], pos: list[int], seq: tuple[str, ...], base: int,
                         expected: Sequence[str], reasons: list[str]) -> int:
    span, m = pos[-1] + 1, len(expected)
    if "C2" in expected and "C2" in seq:
        c2 = seq.index("C2")
        dens = [i for i, b in enumerate(stats) if b.has_dens]
        if dens:
            if len(dens) > 1:
                reasons.append(f"{len(dens)} bodies look like C2 (dens); the top one is taken as C2")
            return c2 - pos[dens[0]]
        others = [b.full_height for b in stats[1:]]
        if others and stats[0].full_height >= _TALLEST * float(np.median(others)):
            return c2 - pos[0]
        reasons.append(f"top body {stats[0].label} has no dens and is not the tallest: C2 may be "
                       + ("missing; reading the top body as the level below C2" if span < m
                          else "unrecognisable; names follow the order"))
        return c2 - pos[0] + (1 if span < m else 0)
    if span > m and len(stats) > 1:
        areas = np.array([b.area for b in stats])
        if areas[0] < _SMALL * np.median(areas[1:]) and not areas[-1] < _SMALL * np.median(areas[:-1]):
            reasons.append(f"{span - m} more level(s) than expected; the small top body is read as extra")
            return base - (span - m)
        reasons.append(f"{span - m} more level(s) than expected; extra bodies read as below {expected[-1]}")
    elif span < m:
        reasons.append(f"{m - span} fewer level(s) than expected; the top body is read as {expected[0]}")
    return base


def assign_levels(labels: np.ndarray, *, expected: Sequence[str] = CERVICAL_LEVELS,
                  classes: Mapping[int, str | int] | None = None,
                  spacing_mm: Sequence[float] | None = None) -> LevelAssignment:
    """Name the vertebral bodies of a label map (C2…C7 by default).

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map, one body per label (a binary mask is split into components).
    expected : sequence of str
        The levels the image should show, top to bottom (default C2…C7). When they are a
        contiguous run of C1…S1, extra bodies get the neighbouring names (T1 below C7 …).
    classes : mapping of int to str or int, optional
        Per-body class predictions (label → level name, or index into ``expected``), e.g. from a
        per-level detector. A majority vote over them fixes the names; disagreements are reported.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing, used for distances (helps with anisotropic pixels).

    Returns
    -------
    LevelAssignment
        ``levels`` (label → name), ``unsure`` and ``reasons``.
    """
    return assign_from_stats(body_stats(labels, spacing_mm), expected=expected, classes=classes)


def assign_from_stats(stats: list[BodyStats], *, expected: Sequence[str] = CERVICAL_LEVELS,
                      classes: Mapping[int, str | int] | None = None) -> LevelAssignment:
    """:func:`assign_levels` on bodies already summarised by :func:`body_stats`.

    Parameters
    ----------
    stats : list of BodyStats
        Bodies top to bottom.
    expected : sequence of str
        See :func:`assign_levels`.
    classes : mapping, optional
        See :func:`assign_levels`.

    Returns
    -------
    LevelAssignment
        ``levels``, ``unsure`` and ``reasons``.
    """
    if not expected:
        raise CervkitInputError("expected must name at least one level")
    if not stats:
        return LevelAssignment({}, True, ["no vertebral body in the label map"])
    reasons: list[str] = []
    pos = _positions(stats, reasons)
    seq, base = _sequence(expected)
    offset = None
    if classes:
        offset = _offset_from_classes(stats, pos, seq, expected, classes, reasons)
    if offset is None:
        offset = _offset_from_anatomy(stats, pos, seq, base, expected, reasons)
    levels: dict[int, str] = {}
    outside = []
    for b, p in zip(stats, pos):
        k = offset + p
        if 0 <= k < len(seq):
            levels[b.label] = seq[k]
            if seq[k] not in expected:
                outside.append(f"{b.label}→{seq[k]}")
        else:
            reasons.append(f"body {b.label} falls outside the known level names; left unnamed")
    if outside:
        reasons.append("bodies outside the expected levels: " + ", ".join(outside))
    if len(stats) != len(expected):
        reasons.append(f"{len(stats)} bodies found, {len(expected)} expected "
                       f"({', '.join(expected)})")
    return LevelAssignment(levels, bool(reasons), reasons)
