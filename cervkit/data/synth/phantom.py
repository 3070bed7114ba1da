"""Synthetic lateral cervical spine phantoms (X-ray-like and T2-MRI-like) with exact C2–C7 geometry.

These phantoms are the project's embedded default data: nothing is downloaded.
Each phantom has an image, a label map (1..6 = C2..C7, top to bottom; T1 is drawn
in the image but not labelled) and a geometry dict (corners, endplate angles,
C2–C7 Cobb angle, occlusion) in the project's phantom geometry contract.

Coordinates are pixel-edge (x = column, y = row): pixel ``(r, c)`` covers
``[c, c + 1) x [r, r + 1)``. Endplate angles are
``degrees(atan2(y_post - y_ant, s * (x_post - x_ant)))`` with ``s = +1`` when the
anterior side faces left and ``-1`` when it faces right, so a horizontal endplate is
0° either way and the angle is positive when the posterior end is lower in the
image. The C2–C7 Cobb angle is ``inferior(C2) - inferior(C7)``, positive for lordosis.

The dataset writer :func:`write_phantom_dataset` lives in :mod:`cervkit.data.synth.dataset`
and is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from cervkit.core.image import Image
from cervkit.data.synth.draw import poly_index
from cervkit.data.synth.geometry import (
    ALL_LEVELS,
    CORNER_NAMES,
    LEVELS,
    layout_column,
    perturb_anatomy,
    sample_anatomy,
)

__all__ = ["ANGLE_CONVENTION", "COORDINATES", "MODALITY", "STYLES", "Phantom", "PhantomSpec", "endplate_angle",
           "make_phantom", "phantom_from_spec"]

STYLES = ("xray", "mri")
MODALITY = {"xray": "XR", "mri": "MRI"}
COORDINATES = "pixel-edge: pixel (r, c) covers x in [c, c+1), y in [r, r+1); centre (c+0.5, r+0.5)"
ANGLE_CONVENTION = ("degrees(atan2(y_post - y_ant, s * (x_post - x_ant))), s = +1 if anterior_side == 'left' "
                    "else -1; 0 = horizontal, positive = posterior end lower; Cobb = inferior(C2) - inferior(C7)")


@dataclass
class PhantomSpec:
    """Every parameter of one phantom.

    Attributes
    ----------
    style : str
        ``"xray"`` or ``"mri"``.
    size : tuple of int
        (H, W) in pixels.
    seed : int
        Image seed: pose, posture and rendering (and the anatomy when ``patient_seed`` is None).
    patient_seed : int or None
        Anatomy seed shared by the phantoms of one synthetic patient.
    anatomy_jitter : float
        Within-patient posture/positioning variation (used with ``patient_seed``).
    p_occlusion : float
        Probability that the shoulders hide C7 (X-ray only).
    occlude : bool or None
        Force (True) or forbid (False) the occlusion; None draws it with ``p_occlusion``.
    cobb_deg : float or None
        Exact C2–C7 Cobb angle (lordosis positive, -30…60); None uses the patient's.
    cobb_range_deg : tuple of float
        Range the patient Cobb angle is drawn from.
    tilt_deg : float or None
        Global tilt added to every endplate; None draws from ``tilt_range_deg``.
    tilt_range_deg : tuple of float
        Range of the global tilt.
    anterior_side : str or None
        ``"left"``, ``"right"`` or None (random).
    column_fraction_range : tuple of float
        Fraction of H spanned from the dens tip to C7's inferior endplate (sets the pixel spacing).
    """

    style: str = "xray"
    size: tuple[int, int] = (512, 512)
    seed: int = 0
    patient_seed: int | None = None
    anatomy_jitter: float = 1.0
    p_occlusion: float = 0.3
    occlude: bool | None = None
    cobb_deg: float | None = None
    cobb_range_deg: tuple[float, float] = (-5.0, 40.0)
    tilt_deg: float | None = None
    tilt_range_deg: tuple[float, float] = (-10.0, 10.0)
    anterior_side: str | None = None
    column_fraction_range: tuple[float, float] = (0.6, 0.74)

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        h, w = (int(v) for v in self.size)
        if h < 64 or w < 64:
            raise ValueError(f"size must be at least 64 x 64, got {self.size}")
        self.size = (h, w)
        if self.anterior_side not in (None, "left", "right"):
            raise ValueError(f"anterior_side must be 'left', 'right' or None, got {self.anterior_side!r}")
        if self.cobb_deg is not None and not -30.0 <= self.cobb_deg <= 60.0:
            raise ValueError(f"cobb_deg must lie in [-30, 60], got {self.cobb_deg}")
        if not 0.0 <= self.p_occlusion <= 1.0:
            raise ValueError(f"p_occlusion must lie in [0, 1], got {self.p_occlusion}")
        lo, hi = self.column_fraction_range
        if not 0.2 <= lo <= hi <= 0.85:
            raise ValueError(f"column_fraction_range must lie within [0.2, 0.85], got {self.column_fraction_range}")


@dataclass
class Phantom:
    """One generated phantom.

    Attributes
    ----------
    image : numpy.ndarray
        float32 (H, W) in [0, 1].
    labels : numpy.ndarray
        uint8 (H, W); 1..6 = C2..C7 top to bottom, 0 elsewhere (T1 is not labelled).
    geometry : dict
        The phantom geometry contract (JSON-serialisable).
    spacing_mm : tuple of float
        (row, col) pixel spacing in mm.
    spec : PhantomSpec
        The parameters it was made from.
    """

    image: np.ndarray
    labels: np.ndarray
    geometry: dict[str, Any]
    spacing_mm: tuple[float, float]
    spec: PhantomSpec = field(repr=False, default_factory=PhantomSpec)

    def as_image(self) -> Image:
        """Return the image as a :class:`cervkit.core.image.Image` with spacing and provenance.

        Returns
        -------
        Image
            The float image with ``spacing_mm`` and ``meta`` (source, modality, spacing kind, seed).
        """
        return Image(self.image, self.spacing_mm, {"source": "cervkit.data.synth.phantom", "modality": MODALITY[self.spec.style],
                                                   "spacing_kind": "patient", "seed": self.spec.seed})


def endplate_angle(anterior: np.ndarray, posterior: np.ndarray, anterior_side: str) -> float:
    """Endplate line angle in degrees (see the module docstring for the convention).

    Parameters
    ----------
    anterior, posterior : numpy.ndarray
        (x, y) corners in pixels.
    anterior_side : str
        ``"left"`` or ``"right"``.

    Returns
    -------
    float
        0 for a horizontal endplate, positive when the posterior end is lower.
    """
    sign = 1.0 if anterior_side == "left" else -1.0
    return float(np.degrees(np.arctan2(posterior[1] - anterior[1], sign * (posterior[0] - anterior[0]))))


def _geometry(spec: PhantomSpec, corners: dict[str, np.ndarray], labels: np.ndarray, side: str,
              spacing: float, extras: dict[str, Any]) -> dict[str, Any]:
    """Assemble the contract dict from final (possibly mirrored) corners and labels."""
    verts: dict[str, Any] = {}
    for k, lv in enumerate(LEVELS, start=1):
        c = corners[lv]
        rr, cc = np.nonzero(labels == k)
        verts[lv] = {
            "label": k,
            "corners": {name: [round(float(v), 4) for v in c[j]] for j, name in enumerate(CORNER_NAMES)},
            "centroid": [float(cc.mean() + 0.5), float(rr.mean() + 0.5)] if rr.size else [float("nan")] * 2,
            "anterior_height_px": float(np.hypot(*(c[0] - c[2]))),
            "posterior_height_px": float(np.hypot(*(c[1] - c[3]))),
            "width_px": float((np.hypot(*(c[1] - c[0])) + np.hypot(*(c[3] - c[2]))) / 2),
            "superior_endplate_deg": endplate_angle(c[0], c[1], side),
            "inferior_endplate_deg": endplate_angle(c[2], c[3], side),
        }
    adjacent = {f"{u}-{lo}": verts[u]["inferior_endplate_deg"] - verts[lo]["superior_endplate_deg"]
                for u, lo in zip(LEVELS[:-1], LEVELS[1:])}
    return {
        "id": extras.pop("id", f"{spec.style}_{spec.seed}"), "style": spec.style, "seed": int(spec.seed),
        "image_size": [spec.size[0], spec.size[1]], "spacing_mm": [spacing, spacing], "anterior_side": side,
        "levels": list(LEVELS), "label_of_level": {lv: k for k, lv in enumerate(LEVELS, start=1)},
        "label_convention": "instance", "occluded_levels": list(extras.get("occluded_levels", [])),
        "c2c7_cobb_deg": verts["C2"]["inferior_endplate_deg"] - verts["C7"]["inferior_endplate_deg"],
        "vertebrae": verts, "adjacent_endplate_angles_deg": adjacent, "extras": extras,
    }


def phantom_from_spec(spec: PhantomSpec, phantom_id: str | None = None) -> Phantom:
    """Generate the phantom a :class:`PhantomSpec` describes (deterministic).

    Parameters
    ----------
    spec : PhantomSpec
        All parameters.
    phantom_id : str, optional
        The ``id`` written into the geometry (default ``"<style>_<seed>"``).

    Returns
    -------
    Phantom
        Image, label map, geometry and spacing.
    """
    rng_patient = np.random.default_rng([int(spec.seed if spec.patient_seed is None else spec.patient_seed), 7])
    rng_pose = np.random.default_rng([int(spec.seed), 11])
    rng_render = np.random.default_rng([int(spec.seed), 13])
    anat = sample_anatomy(rng_patient, spec.cobb_range_deg)
    anat = perturb_anatomy(anat, rng_pose, spec.anatomy_jitter if spec.patient_seed is not None else 0.0)
    tilt_draw = rng_pose.uniform(*spec.tilt_range_deg)
    tilt = float(spec.tilt_deg if spec.tilt_deg is not None else tilt_draw)
    frac = rng_pose.uniform(*spec.column_fraction_range)
    top = rng_pose.uniform(0.10, max(0.10, 1.0 - frac - 0.13))
    ant_x, lean = rng_pose.uniform(0.24, 0.40), rng_pose.uniform(0.0, 8.0)
    side_draw, occ_draw = rng_pose.uniform(), rng_pose.uniform()
    side = spec.anterior_side or ("left" if side_draw < 0.5 else "right")
    occlude = spec.occlude if spec.occlude is not None else bool(occ_draw < spec.p_occlusion)
    cobb = float(spec.cobb_deg if spec.cobb_deg is not None else anat.cobb_deg)
    col = layout_column(anat, cobb, size=spec.size, c7_angle_deg=tilt - 0.55 * cobb - lean,
                        column_fraction=frac, top_fraction=top, anterior_x_fraction=ant_x)
    labels = np.zeros(spec.size, np.uint8)
    for k, lv in enumerate(LEVELS, start=1):
        labels[poly_index(col.outlines[lv], spec.size)] = k
    if spec.style == "xray":
        from cervkit.data.synth.xray import render_xray

        image, info = render_xray(col, rng_render, labels, occlude=occlude and spec.style == "xray")
    else:
        from cervkit.data.synth.mri import render_mri

        image, info = render_mri(col, rng_render, spec.size)
    width = spec.size[1]
    corners = {lv: c.copy() for lv, c in col.corners.items()}
    tip = col.dens_tip.copy()
    if side == "right":
        image, labels = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(labels[:, ::-1])
        for c in (*corners.values(), tip[None]):
            c[..., 0] = width - c[..., 0]
    visible = [lv for lv in ALL_LEVELS[6:] if poly_index(col.outlines[lv], spec.size)[0].size >= 20]
    extras = {
        "id": phantom_id or f"{spec.style}_{spec.seed}",
        **info, "patient_seed": None if spec.patient_seed is None else int(spec.patient_seed),
        "tilt_deg": tilt, "requested_cobb_deg": cobb, "occlusion_requested": bool(occlude and spec.style == "xray"),
        "t1_visible": "T1" in visible, "unlabelled_visible_levels": visible,
        "t1_corners": {n: [round(float(v), 4) for v in corners["T1"][j]] for j, n in enumerate(CORNER_NAMES)},
        "dens_tip": [float(tip[0]), float(tip[1])], "coordinates": COORDINATES,
        "endplate_angle_convention": ANGLE_CONVENTION, "modality": MODALITY[spec.style],
    }
    geometry = _geometry(spec, corners, labels, side, col.spacing_mm, extras)
    return Phantom(image=image, labels=labels, geometry=geometry,
                   spacing_mm=(col.spacing_mm, col.spacing_mm), spec=spec)


def make_phantom(style: str = "xray", *, seed: int = 0, size: tuple[int, int] = (512, 512),
                 **overrides: Any) -> Phantom:
    """Make one phantom; the same arguments always give identical arrays.

    Parameters
    ----------
    style : str
        ``"xray"`` (lateral radiograph) or ``"mri"`` (mid-sagittal T2).
    seed : int
        Image seed (different seeds give different phantoms).
    size : tuple of int
        (H, W).
    **overrides
        Any other :class:`PhantomSpec` field (``cobb_deg``, ``occlude``, ``anterior_side``, ``patient_seed`` …).

    Returns
    -------
    Phantom
        Image, labels (1..6 = C2..C7), geometry dict and spacing.
    """
    known = {f.name for f in fields(PhantomSpec)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown phantom parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    return phantom_from_spec(PhantomSpec(style=style, seed=seed, size=size, **overrides))
