"""Level names for predicted bodies, anchored on a landmark, and the predict-time protocol filter.

The detector finds every vertebral body in view, however many; the names come from anatomy, not from the
order in a training field of view. :func:`name_bodies` anchors on **C2**: the body with a dens (a narrow peg
rising above it), or a top body clearly taller than the others, and counts outward from it, one level per
body, a gap about twice the usual spacing counting as a missing level
(:func:`cervkit.measurements.levels.assign_levels`). A count that does not fit C2…C7 (an extra T1 or C1, a
body missing) is flagged ``unsure`` with the reasons, never shifted silently.

With the run's anchor classifier (:mod:`cervkit.inference.anchor`, learnt from every training image that
annotates C2 or L5) each body is scored as C2, L5 (the sacrum under it), S1 or other; a clear learnt landmark
wins over the dens shape rule, which a sacrum can mimic. On lumbar images the anchor is thus the
**lumbosacral junction**. The most L5-like body is L5 when its score is clear; the count goes up from
it (L4, L3, …, T12, …, a long gap counting missing levels) and the body right under it is S1. A weak or
doubled L5 score is flagged ``unsure``. A landmark must also fit the bodies around it: C2 has at most C1 and the
skull base above it, L5 at most S1 and the fused sacrum below it, so a dens-shaped sacrum deep in a chain, or an
L5-like body with five more under it, does not anchor a count.

Without either landmark the bodies stay unnamed, unless the caller states the protocol
(``protocol=("L1", …, "L5")``); then the names follow the order from the top of the protocol and are flagged
``unsure``.

:func:`keep_levels` is ``predict --levels C2-C7``: only the bodies named inside the range are kept, so a
T1 taken for C7 (the paper's error) cannot be kept as C7 when C2 anchors the count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.measurements.bodies import BodyStats, body_centre, body_stats
from cervkit.measurements.levels import ANATOMICAL_LEVELS, CERVICAL_LEVELS, assign_from_stats

__all__ = ["LevelNames", "format_names", "keep_levels", "level_range", "name_bodies", "parse_names"]

_TALLEST = 1.25  # as in measurements.levels: a top body this much taller than the others' median is C2
_MISSING = 1.6   # centre gap / usual gap below C2 above which a level is missing in between
_MISSING_C2 = 2.2  # the same for the C2-C3 gap, naturally longer (C2 is tall)
_SMALL = 0.6     # area / median area below which a body is cut off (its centre is not a level's)
_FRAGMENT = 0.55  # centre gap / usual gap below which the next body is a piece of the same one (a split body)
# Where a landmark can sit in a chain of bodies: above C2 lie only C1 and the skull base, below L5 only S1 and the
# fused sacral segments (each boxed at times). Seen in the shipped mri model's chains on all real T2/Dixon images and
# its card test phantoms: at most 2 bodies above a right C2 and 3 below a right L5; a sacrum taken for a dens, or an
# L5-like body with 5 bodies below it, showed up only on a contrast the classifier had never seen.
_ABOVE_C2 = 2
_BELOW_L5 = 3


def _fragment_reason(level: str, ratio: float) -> str:
    return (f"two bodies {ratio:.1f}x the usual spacing apart: both named {level} (one body split in two?); "
            f"the count goes on")


def _usual_gap(run: list[BodyStats]) -> tuple[np.ndarray, float]:
    """Centre gaps along ``run`` (ordered away from the anchor) and the usual gap between full bodies."""
    centres = np.array([body_centre(b) for b in run])
    gaps = np.hypot(*np.diff(centres, axis=0).T)
    areas = np.array([b.area for b in run])
    full = areas >= _SMALL * float(np.median(areas))
    pool = gaps[full[:-1] & full[1:]]
    usual = float(np.median(pool)) if pool.size else 1.3 * float(np.median([b.height for b in run]))
    return gaps, usual


def _count_along(run: list[BodyStats], level: str, step: int, usual: float, *, first_limit: float = _MISSING,
                 first_offset: float = 0.0) -> tuple[dict[int, str], list[str]]:
    """Names of ``run[1:]`` counted from ``run[0]`` (named ``level``) one level per body in direction ``step``
    (+1 down, -1 up), more where a gap is clearly longer than ``usual``; a body closer than a fragment's gap
    takes its neighbour's level. The first gap has its own limit and offset (C2–C3 is naturally longer)."""
    names: dict[int, str] = {}
    reasons: list[str] = []
    gaps = np.hypot(*np.diff(np.array([body_centre(b) for b in run]), axis=0).T)
    index = ANATOMICAL_LEVELS.index(level)
    side = "below" if step > 0 else "above"
    for i, gap in enumerate(gaps):
        ratio = gap / usual if usual > 0 else 1.0
        if ratio < _FRAGMENT:
            names[run[i + 1].label] = ANATOMICAL_LEVELS[index]
            reasons.append(_fragment_reason(ANATOMICAL_LEVELS[index], ratio))
            continue
        limit, offset = (first_limit, first_offset) if i == 0 else (_MISSING, 0.0)
        missing = max(1, int(round(ratio - offset)) - 1) if ratio > limit else 0
        if missing:
            reasons.append(f"the gap {side} {ANATOMICAL_LEVELS[index]} is {ratio:.1f}x the usual spacing: "
                           f"{missing} level(s) missing")
        index += step * (1 + missing)
        if not 0 <= index < len(ANATOMICAL_LEVELS):
            reasons.append("bodies below S1 left unnamed" if step > 0 else "bodies above C1 left unnamed")
            break
        names[run[i + 1].label] = ANATOMICAL_LEVELS[index]
    return names, reasons


def _count_from_c2(stats: list[BodyStats], c2: int) -> tuple[dict[int, str], list[str]]:
    """Names counted outward from the C2 body ``stats[c2]``: one level per body below it, more where a gap
    is clearly too long; the body right above C2 is C1; bodies further up are left unnamed."""
    reasons: list[str] = []
    names = {stats[c2].label: "C2"}
    if c2 > 0:
        names[stats[c2 - 1].label] = "C1"
        if c2 > 1:
            reasons.append(f"{c2 - 1} body(ies) above C1 left unnamed")
    below = stats[c2:]
    if len(below) < 2:
        return names, reasons
    _, usual = _usual_gap(below[1:])  # the usual gap between full bodies below C2 (C2 itself is tall)
    more, why = _count_along(below, "C2", +1, usual, first_limit=_MISSING_C2, first_offset=0.4)
    return names | more, reasons + why


def _count_up_from_l5(stats: list[BodyStats], l5: int) -> tuple[dict[int, str], list[str]]:
    """Names counted up from the L5 body ``stats[l5]`` (one level per body, more across a clearly long gap);
    the body right below L5 is S1, bodies further down are left unnamed."""
    reasons: list[str] = []
    names = {stats[l5].label: "L5"}
    if l5 + 1 < len(stats):
        names[stats[l5 + 1].label] = "S1"
        if l5 + 2 < len(stats):
            reasons.append(f"{len(stats) - l5 - 2} body(ies) below S1 left unnamed")
    up = stats[:l5 + 1][::-1]
    if len(up) < 2:
        return names, reasons
    more, why = _count_along(up, "L5", -1, _usual_gap(up)[1])
    return names | more, reasons + why


_L5_SURE = 0.5    # a learnt landmark (C2 or L5) scoring below this does not anchor the count
_L5_CLEAR = 0.8   # ... below this it anchors it, flagged unsure
_L5_RIVAL = 0.3   # a second body scoring this for the same landmark flags the count
_LUMBAR_HINT = 0.2  # below _L5_SURE, an L5 score this high with no C2 score above _C2_ABSENT: the spine looks
_C2_ABSENT = 0.1    # lumbar, so the dens shape rule (which a sacrum mimics) is not used


def _may_be(level: str, index: int, count: int) -> bool:
    """Whether body ``index`` of a chain of ``count`` (top to bottom) can be ``level`` ("C2" or "L5") by the
    bodies around it: at most ``_ABOVE_C2`` above C2, ``_BELOW_L5`` below L5."""
    return index <= _ABOVE_C2 if level == "C2" else count - 1 - index <= _BELOW_L5


def _learnt_anchor(stats: list[BodyStats], scores: dict[int, dict[str, float]]
                   ) -> tuple[str | None, int | None, list[str]]:
    """The landmark (``"C2"`` or ``"L5"``) the anchor scores find most clearly, its body's index, and reasons
    to doubt it; (None, None, []) when neither scores ``_L5_SURE``."""
    picks = []
    for level in ("C2", "L5"):
        p = [float(scores.get(b.label, {}).get(level, 0.0)) if _may_be(level, i, len(stats)) else 0.0
             for i, b in enumerate(stats)]
        best = int(np.argmax(p))
        picks.append((p[best], level, best, p))
    top, level, best, p = max(picks)
    if top < _L5_SURE:
        return None, None, []
    reasons = []
    if top < _L5_CLEAR:
        reasons.append(f"{level} scored {top:.2f} only")
    rivals = [i for i, v in enumerate(p) if i != best and v >= _L5_RIVAL]
    if rivals:
        reasons.append(f"{len(rivals) + 1} bodies look like {level}")
    return level, best, reasons


def _lumbar_hint(stats: list[BodyStats], scores: dict[int, dict[str, float]]) -> str | None:
    """Why the shape rules must not name a spine whose anchor scores look lumbar (None when they do not)."""
    l5 = max(float(scores.get(b.label, {}).get("L5", 0.0)) for b in stats)
    c2 = max(float(scores.get(b.label, {}).get("C2", 0.0)) for b in stats)
    if _LUMBAR_HINT <= l5 < _L5_SURE and c2 < _C2_ABSENT:
        return f"no clear landmark: L5 scored {l5:.2f} only and no body looks like C2 (the sacrum mimics a dens)"
    return None


def _check_protocol(names: dict[int, str], expected: Sequence[str], reasons: list[str]) -> None:
    """Add the reasons a count does not fit the expected levels."""
    outside = [n for n in names.values() if n not in expected]
    if outside:
        reasons.append(f"bodies outside {expected[0]}-{expected[-1]}: {', '.join(outside)}")
    absent = [n for n in expected if n not in names.values()]
    if absent:
        reasons.append(f"not found: {', '.join(absent)}")


@dataclass
class LevelNames:
    """The level names of one label map's bodies.

    Attributes
    ----------
    names : dict of int to str
        Label → level name; empty when no landmark anchors the count and no protocol was given.
    anchor : str or None
        What the count is anchored on (``"C2 dens"``, ``"C2 (tallest top body)"``, ``"protocol order"``), or None.
    unsure : bool
        True when something did not fit (see ``reasons``) or when there is no anatomical anchor.
    reasons : list of str
    """

    names: dict[int, str] = field(default_factory=dict)
    anchor: str | None = None
    unsure: bool = True
    reasons: list[str] = field(default_factory=list)


def level_range(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse a level range (``"C2-C7"``, ``"T11-L5"``) or a list of names into names top to bottom.

    Parameters
    ----------
    text : str or sequence of str
        ``"C2-C7"``, ``"C2,C3,C4"`` or a sequence of names.

    Returns
    -------
    tuple of str

    Raises
    ------
    CervkitInputError
        An unknown name or a range that runs upwards.
    """
    if not isinstance(text, str):
        items = [str(v).strip().upper() for v in text]
    elif "-" in text:
        first, _, last = (v.strip().upper() for v in text.partition("-"))
        for name in (first, last):
            if name not in ANATOMICAL_LEVELS:
                raise CervkitInputError(f"unknown level {name!r} in {text!r} (known: C1…C7, T1…T12, L1…L5, S1)")
        i, j = ANATOMICAL_LEVELS.index(first), ANATOMICAL_LEVELS.index(last)
        if j < i:
            raise CervkitInputError(f"level range {text!r} runs upwards; write it top to bottom, e.g. C2-C7")
        return ANATOMICAL_LEVELS[i:j + 1]
    else:
        items = [v.strip().upper() for v in text.split(",") if v.strip()]
    unknown = [v for v in items if v not in ANATOMICAL_LEVELS]
    if unknown or not items:
        raise CervkitInputError(f"unknown level name(s) {unknown or text!r} (known: C1…C7, T1…T12, L1…L5, S1)")
    return tuple(items)


def name_bodies(labels: np.ndarray, *, spacing_mm: Sequence[float] | None = None,
                protocol: str | Sequence[str] | None = None,
                anchor_scores: dict[int, dict[str, float]] | None = None) -> LevelNames:
    """Name each body of a label map from an anatomical landmark (C2, or L5 above the sacrum), else from a
    stated protocol.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map, one body per label.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing.
    protocol : str or sequence of str, optional
        The levels the image should show (e.g. ``"C2-C7"``); used for the unsure flag when C2 anchors the
        count, and for the names when nothing does.
    anchor_scores : dict, optional
        Label → {``"L5"``: probability, …} from the run's anchor classifier
        (:meth:`cervkit.inference.anchor.AnchorClassifier.score`); used when no C2 anchors the count.

    Returns
    -------
    LevelNames
    """
    stats = body_stats(np.asarray(labels), spacing_mm)
    if not stats:
        return LevelNames({}, None, True, ["no vertebral body"])
    expected = level_range(protocol) if protocol is not None else CERVICAL_LEVELS
    level, at, doubts = _learnt_anchor(stats, anchor_scores) if anchor_scores else (None, None, [])
    if level is not None and at is not None:  # a learnt landmark wins over the dens shape rule (a sacrum mimics it)
        names, reasons = _count_up_from_l5(stats, at) if level == "L5" else _count_from_c2(stats, at)
        reasons = doubts + reasons
        if protocol is not None or level == "C2":
            _check_protocol(names, expected, reasons)
        return LevelNames(names, "L5 (sacrum below)" if level == "L5" else "C2 (learnt)", bool(reasons), reasons)
    anchor = None
    dens = [i for i, b in enumerate(stats) if b.has_dens and _may_be("C2", i, len(stats))]
    lumbar_hint = _lumbar_hint(stats, anchor_scores) if anchor_scores else None
    if lumbar_hint is not None:
        if protocol is None:
            return LevelNames({}, None, True, [lumbar_hint + "; bodies left unnamed (give the protocol, e.g. "
                                               "levels='L1-L5', to name them in order)"])
    elif dens:
        anchor = "C2 dens"
    elif len(stats) > 1 and stats[0].full_height >= _TALLEST * float(np.median([b.full_height for b in stats[1:]])):
        anchor = "C2 (tallest top body)"
    if anchor is not None:
        dens = dens or [0]  # the tallest top body
        names, reasons = _count_from_c2(stats, dens[0])
        if len(dens) > 1:
            reasons.append(f"{len(dens)} bodies look like C2 (a dens); the top one is taken")
        _check_protocol(names, expected, reasons)
        return LevelNames(names, anchor, bool(reasons), reasons)
    if protocol is None:
        return LevelNames({}, None, True, ["no landmark in view (C2 dens, or L5 above the sacrum): bodies left "
                                           "unnamed; give the protocol (e.g. levels='L1-L5') to name them in order"])
    assignment = assign_from_stats(stats, expected=expected)
    reasons = ["no C2 landmark: names follow the protocol's order from the top", *assignment.reasons]
    return LevelNames(assignment.levels, "protocol order", True, reasons)


def keep_levels(labels: np.ndarray, names: dict[int, str], wanted: str | Sequence[str]) -> np.ndarray:
    """Keep only the bodies whose name is in ``wanted`` (``predict --levels``).

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map.
    names : dict of int to str
        From :func:`name_bodies`; an unnamed body is dropped.
    wanted : str or sequence of str
        A range (``"C2-C7"``) or names.

    Returns
    -------
    numpy.ndarray
        A copy with the other bodies set to 0 (labels not renumbered).
    """
    keep = set(level_range(wanted))
    out = np.array(labels, copy=True)
    for k in np.unique(out):
        if k and names.get(int(k)) not in keep:
            out[out == k] = 0
    return out


def format_names(names: dict[int, str]) -> str:
    """Label → name as one CSV cell, ``"1:C2;2:C3"`` (``predictions.csv``, ``queue.csv``).

    Parameters
    ----------
    names : dict of int to str

    Returns
    -------
    str
    """
    return ";".join(f"{int(k)}:{v}" for k, v in sorted(names.items()))


def parse_names(text: str | None) -> dict[int, str]:
    """The inverse of :func:`format_names` (blank → empty).

    Parameters
    ----------
    text : str or None

    Returns
    -------
    dict of int to str

    Raises
    ------
    CervkitInputError
        A cell that is not ``label:name`` pairs.
    """
    out: dict[int, str] = {}
    for part in str(text or "").split(";"):
        if not part.strip():
            continue
        label, sep, name = part.partition(":")
        if not sep or not label.strip().isdigit():
            raise CervkitInputError(f"level names cell {text!r} is not 'label:name;...'")
        out[int(label)] = name.strip()
    return out
