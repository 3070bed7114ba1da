"""Tests of cervkit.measurements.spine and cervkit.measurements.levels against shapes of known geometry.

Test columns are drawn here with skimage.draw.polygon from chosen corners (pixel centres
at integer coordinates, so the expected pixel-edge coordinates are corners + 0.5); expected
angles are computed from those corners with the phantom contract's formula, never taken
from the code under test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.draw import polygon
from skimage.io import imread
from skimage.segmentation import find_boundaries

from cervkit.core.errors import CervkitInputError
from cervkit.data.synth.phantom import make_phantom
from cervkit.measurements.bodies import body_stats, dens_offset
from cervkit.measurements.endplates import CORNERS
from cervkit.measurements.levels import CERVICAL_LEVELS, LevelAssignment, assign_levels
from cervkit.measurements.spine import cobb_angle_deg, measure_spine, measure_vertebrae

LUMBAR = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")


def _column(side: str = "right", *, total_deg: float = 34.0, kyphotic: bool = False,
            spacing: tuple[float, float] = (1.0, 1.0), step: float = 38.0, width: float = 44.0,
            ha: float = 30.0, hp: float = 27.0, dens: bool = True,
            shape: tuple[int, int] = (480, 400)) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Six trapezoid bodies on a circular arc (mm), C2 with a dens; returns labels and px corners.

    The arc is convex toward anterior (lordosis) unless ``kyphotic``. Bodies are wedged
    (anterior height ``ha`` > posterior ``hp``). Corners are returned in pixel-edge coordinates.
    """
    a = np.radians(total_deg)
    phis = np.linspace(-a / 2, a / 2, 6)
    radius = step * 5 / a
    sign = -1.0 if kyphotic else 1.0
    row_sp, col_sp = spacing
    x0, y0 = shape[1] * col_sp / 2, shape[0] * row_sp / 2
    labels = np.zeros(shape, np.uint8)
    corners = []

    def to_px(p: np.ndarray) -> np.ndarray:
        x, y = p[0] / col_sp, p[1] / row_sp
        return np.array([(shape[1] - 1) - x if side == "left" else x, y])

    for i, phi in enumerate(phis):
        ant = np.array([np.cos(phi), sign * np.sin(phi)])
        caud = np.array([-sign * np.sin(phi), np.cos(phi)])
        c = np.array([x0 + sign * (radius * np.cos(phi) - radius), y0 + radius * np.sin(phi)])
        cs = {"anterior_superior": c + width / 2 * ant - ha / 2 * caud,
              "posterior_superior": c - width / 2 * ant - hp / 2 * caud,
              "anterior_inferior": c + width / 2 * ant + ha / 2 * caud,
              "posterior_inferior": c - width / 2 * ant + hp / 2 * caud}
        polys = [[cs["anterior_superior"], cs["anterior_inferior"], cs["posterior_inferior"],
                  cs["posterior_superior"]]]
        if i == 0 and dens:  # a peg standing on C2's superior endplate, slightly posterior
            def sup(s: float) -> np.ndarray:
                f = (s + width / 2) / width
                return c + s * ant - (hp / 2 * (1 - f) + ha / 2 * f) * caud
            h = (ha + hp) / 2
            polys.append([sup(-0.22 * width) + 2 * caud, sup(0.12 * width) + 2 * caud,
                          sup(0.05 * width) - 0.8 * h * caud, sup(-0.15 * width) - 0.8 * h * caud])
        for poly in polys:
            pts = np.array([to_px(p) for p in poly])
            rr, cc = polygon(pts[:, 1], pts[:, 0], shape)
            labels[rr, cc] = i + 1
        corners.append({k: to_px(v) + 0.5 for k, v in cs.items()})
    return labels, corners


def _tilt(anterior: np.ndarray, posterior: np.ndarray, side: str,
          spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Phantom-contract endplate angle (posterior end lower = positive), in physical space."""
    s = 1.0 if side == "left" else -1.0
    d = (posterior - anterior) * np.array([spacing[1], spacing[0]])
    return float(np.degrees(np.arctan2(d[1], s * d[0])))


def _corner_errors(table: pd.DataFrame, corners: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.array([[np.hypot(row[f"{k}_x_px"] - cs[k][0], row[f"{k}_y_px"] - cs[k][1]) for k in CORNERS]
                     for (_, row), cs in zip(table.iterrows(), corners)])


@pytest.mark.parametrize("side", ["left", "right"])
def test_drawn_column_corners_cobb_and_side(side: str) -> None:
    labels, corners = _column(side)
    table = measure_vertebrae(labels)
    spine = measure_spine(labels)
    assert list(table["level"]) == list(CERVICAL_LEVELS)
    assert not spine["levels_unsure"]
    assert spine["anterior_side"] == side and spine["anterior_side_source"] == "dens"
    assert not any("kyphotic" in r for r in spine["reasons"])  # the curve agrees with the dens
    no_dens = measure_spine(_column(side, dens=False)[0])
    assert no_dens["anterior_side"] == side and no_dens["anterior_side_source"] == "curve"
    assert _corner_errors(table, corners).max() <= 1.0  # spec: ~1.5 px; measured 0.67
    expected = (_tilt(corners[0]["anterior_inferior"], corners[0]["posterior_inferior"], side)
                - _tilt(corners[5]["anterior_inferior"], corners[5]["posterior_inferior"], side))
    assert expected > 20  # the drawn column is lordotic
    assert spine["c2c7_cobb_deg"] == pytest.approx(expected, abs=1.0)
    assert bool(table.loc[0, "dens_removed"]) and not table["dens_removed"][1:].any()
    for i, key in enumerate(["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7"]):
        want = (_tilt(corners[i]["anterior_inferior"], corners[i]["posterior_inferior"], side)
                - _tilt(corners[i + 1]["anterior_superior"], corners[i + 1]["posterior_superior"], side))
        assert spine["adjacent_endplate_angles_deg"][key] == pytest.approx(want, abs=1.5)
    heights = np.hypot(*(corners[3]["anterior_superior"] - corners[3]["anterior_inferior"]))
    assert table.loc[3, "anterior_height_px"] == pytest.approx(heights, abs=1.5)
    assert table.loc[3, "height_ratio"] == pytest.approx(30.0 / 27.0, abs=0.08)


def test_harrison_posterior_tangent_angle() -> None:
    labels, corners = _column("right", total_deg=28.0)

    def wall(cs: dict[str, np.ndarray]) -> float:  # tilt of the posterior wall, top toward anterior > 0
        d = cs["posterior_superior"] - cs["posterior_inferior"]
        return float(np.degrees(np.arctan2(d[0], -d[1])))

    spine = measure_spine(labels)
    assert spine["c2c7_harrison_deg"] == pytest.approx(wall(corners[5]) - wall(corners[0]), abs=1.5)
    assert spine["c2c7_harrison_deg"] > 15


def test_lengths_in_mm_with_anisotropic_pixels() -> None:
    spacing = (0.5, 0.25)  # mm per row, per column: geometry is drawn in mm
    labels, corners = _column("left", spacing=spacing, step=19.0, width=22.0, ha=15.0, hp=13.5,
                              shape=(480, 400))
    table = measure_vertebrae(labels, spacing)
    assert "anterior_height_mm" in table and "anterior_height_px" not in table
    assert table["anterior_height_mm"].iloc[1:].to_numpy() == pytest.approx(15.0, abs=0.6)
    assert table["posterior_height_mm"].iloc[1:].to_numpy() == pytest.approx(13.5, abs=0.6)
    assert table["width_mm"].to_numpy() == pytest.approx(22.0, abs=0.6)
    assert table["area_mm2"].iloc[3] == pytest.approx(22.0 * (15.0 + 13.5) / 2, rel=0.05)
    expected = (_tilt(corners[0]["anterior_inferior"], corners[0]["posterior_inferior"], "left", spacing)
                - _tilt(corners[5]["anterior_inferior"], corners[5]["posterior_inferior"], "left", spacing))
    assert cobb_angle_deg(table, "C2", "C7") == pytest.approx(expected, abs=1.0)


def test_kyphotic_column_with_given_anterior_side() -> None:
    labels, corners = _column("right", kyphotic=True, total_deg=20.0)
    expected = (_tilt(corners[0]["anterior_inferior"], corners[0]["posterior_inferior"], "right")
                - _tilt(corners[5]["anterior_inferior"], corners[5]["posterior_inferior"], "right"))
    assert expected < -5
    spine = measure_spine(labels, anterior_side="right")
    assert spine["anterior_side_source"] == "argument"
    assert spine["c2c7_cobb_deg"] == pytest.approx(expected, abs=1.0)
    assert any("kyphotic" in r for r in spine["reasons"])
    # without the argument, C2's dens (leaning posterior) tells the side against the curve
    auto = measure_spine(labels)
    assert auto["anterior_side"] == "right" and auto["anterior_side_source"] == "dens"
    assert auto["c2c7_cobb_deg"] == pytest.approx(expected, abs=1.0)
    assert any("kyphotic" in r for r in auto["reasons"])
    # from the curve alone (no dens) a kyphotic column is read as a lordotic one facing the other way
    no_dens, _ = _column("right", kyphotic=True, total_deg=20.0, dens=False)
    assert measure_spine(no_dens)["anterior_side"] == "left"


@pytest.mark.parametrize("side", ["left", "right"])
def test_straight_column_side_from_the_dens(side: str) -> None:
    labels, _ = _column(side, total_deg=0.5)
    offset = dens_offset(body_stats(labels)[0])
    assert offset is not None and (offset > 0) == (side == "left")  # the peg is drawn posterior
    assert abs(offset) >= 0.02
    spine = measure_spine(labels)
    assert spine["anterior_side"] == side and spine["anterior_side_source"] == "dens"
    assert dens_offset(body_stats(labels)[1]) is None  # C3 has no dens


def test_straight_column_without_dens_falls_back_to_left_and_says_so() -> None:
    labels, _ = _column("right", total_deg=0.5, dens=False)
    spine = measure_spine(labels)
    assert spine["anterior_side"] == "left" and spine["anterior_side_source"] == "default"
    assert any("anterior side" in r for r in spine["reasons"])


def test_levels_complete_column_and_binary_mask() -> None:
    labels, _ = _column("right")
    full = assign_levels(labels)
    assert full.levels == dict(zip(range(1, 7), CERVICAL_LEVELS)) and not full.unsure
    assert full.reasons == []
    assert assign_levels(labels > 0).levels == full.levels  # binary mask split into components


def test_levels_missing_middle_level_is_skipped_not_shifted() -> None:
    labels, _ = _column("right")
    labels[labels == 3] = 0  # C4 missing
    got = assign_levels(labels)
    assert got.levels == {1: "C2", 2: "C3", 4: "C5", 5: "C6", 6: "C7"}
    assert got.unsure and any("gap" in r for r in got.reasons)


def test_levels_missing_c2_and_extra_t1() -> None:
    labels, _ = _column("right")
    no_c2 = np.where(labels == 1, 0, labels).astype(np.uint8)
    got = assign_levels(no_c2)
    assert got.levels == {2: "C3", 3: "C4", 4: "C5", 5: "C6", 6: "C7"}
    assert got.unsure and any("C2" in r for r in got.reasons)
    extra = labels.copy()
    rr, cc = np.nonzero(labels == 6)
    upper = rr < rr.min() + 0.5 * (rr.max() - rr.min())  # a half-visible body one level below C7
    extra[rr[upper] + 38, cc[upper] - 4] = 7
    got = assign_levels(extra)
    assert got.levels[7] == "T1" and got.levels[6] == "C7" and got.unsure


def test_levels_from_class_predictions() -> None:
    labels, _ = _column("right")
    names = dict(zip(range(1, 7), CERVICAL_LEVELS))
    assert assign_levels(labels, classes=names) == LevelAssignment(names, False, [])
    wrong = {**names, 3: "C3"}  # one prediction contradicts the order
    got = assign_levels(labels, classes=wrong)
    assert got.levels == names and got.unsure
    labels[labels == 3] = 0
    got = assign_levels(labels, classes={1: 0, 2: 1, 4: 3})  # indices into expected
    assert got.levels == {1: "C2", 2: "C3", 4: "C5", 5: "C6", 6: "C7"}


def test_unnamed_levels_and_bad_input() -> None:
    labels, _ = _column("right")
    spine = measure_spine(labels, levels={})
    assert spine["c2c7_cobb_deg"] is None and "1-2" in spine["adjacent_endplate_angles_deg"]
    with pytest.raises(CervkitInputError):
        measure_vertebrae(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(CervkitInputError):
        assign_levels(np.full((8, 8), 0.5))
    with pytest.raises(CervkitInputError):
        assign_levels(np.full((8, 8), -1))
    empty = measure_spine(np.zeros((32, 32), np.uint8))
    assert empty["n_vertebrae"] == 0 and empty["c2c7_cobb_deg"] is None and empty["levels_unsure"]
    with pytest.raises(ValueError):
        measure_vertebrae(labels, anterior_side="front")


def test_synthetic_phantoms_cobb_and_levels() -> None:
    cobb_err, level_hits, side_hits, corner_err = [], 0, 0, []
    # both styles; spacing ~0.3 mm, endplates ~45 px long. Seeds 36 and 175 are nearly straight
    # columns facing right, which the centroid curve alone read as facing left (Cobb sign flipped).
    # Seed 351's Cobb error was 1.40° with the middle 84 % of each endplate refined (too few
    # pixels pin a concave endplate's tilt); seed 102's C7 has corner pixels in the middle 94 %,
    # where refining that span alone fails (1.38°) unless the 84 % span is tried next.
    seeds = [*range(24), 36, 175, 102, 351]
    n = len(seeds)
    for seed in seeds:
        ph = make_phantom("xray" if seed % 2 else "mri", seed=seed, size=(512, 512))
        geo = ph.geometry
        truth = {v: k for k, v in geo["label_of_level"].items()}
        level_hits += assign_levels(ph.labels, spacing_mm=ph.spacing_mm).levels == truth
        spine = measure_spine(ph.labels, ph.spacing_mm)  # anterior side decided, not given
        side_hits += spine["anterior_side"] == geo["anterior_side"]
        cobb_err.append(spine["c2c7_cobb_deg"] - geo["c2c7_cobb_deg"])
        for row in spine["vertebrae"]:
            want = geo["vertebrae"][row["level"]]["corners"]
            corner_err += [np.hypot(row[f"{k}_x_px"] - want[k][0], row[f"{k}_y_px"] - want[k][1])
                           for k in CORNERS]
    err = np.abs(cobb_err)
    print(f"phantoms: |cobb error| mean {err.mean():.2f} max {err.max():.2f} deg; levels "
          f"{level_hits}/{n}; anterior side {side_hits}/{n}; corners mean "
          f"{np.mean(corner_err):.2f} p95 {np.percentile(corner_err, 95):.2f} px")
    assert err.mean() <= 0.4 and err.max() <= 1.0  # the accuracy requirement
    assert level_hits == n and side_hits == n
    assert np.percentile(corner_err, 95) <= 2.0


@pytest.mark.realdata
def test_real_lumbar_masks(real_manifest_path) -> None:
    manifest = pd.read_csv(real_manifest_path)
    rows = manifest.groupby("patient_id").head(1)  # one slice per patient
    dists = []
    for _, item in rows.iterrows():
        labels = imread(real_manifest_path.parent / item["mask"])
        spacing = (float(item["pixel_spacing_mm"]),) * 2
        levels = assign_levels(labels, expected=LUMBAR, spacing_mm=spacing)
        assert sorted(levels.levels.values()) == sorted(LUMBAR) and not levels.unsure
        table = measure_vertebrae(labels, spacing, levels=levels)
        assert len(table) == int(item["n_vertebrae"])
        assert table.attrs["anterior_side"] == "left"  # these slices face left (abdomen left)
        assert (table[["anterior_height_mm", "posterior_height_mm", "width_mm"]] > 0).all().all()
        for _, row in table.iterrows():
            edge = ndimage.distance_transform_edt(~find_boundaries(labels == row["label"], mode="inner"))
            for k in CORNERS:  # pixel-edge coordinates → pixel index
                r, c = int(round(row[f"{k}_y_px"] - 0.5)), int(round(row[f"{k}_x_px"] - 0.5))
                dists.append(edge[r, c])
    assert max(dists) <= 10 and np.mean(dists) <= 3


def test_phantom_levels_with_c7_missing_are_flagged_not_shifted() -> None:
    for seed, style in [(1, "xray"), (2, "mri"), (5, "xray")]:
        ph = make_phantom(style, seed=seed, size=(512, 512), occlude=True if style == "xray" else None)
        c7 = ph.geometry["label_of_level"]["C7"]
        labels = np.where(ph.labels == c7, 0, ph.labels).astype(np.uint8)  # what a detector misses
        got = assign_levels(labels, spacing_mm=ph.spacing_mm)
        truth = {k: lv for lv, k in ph.geometry["label_of_level"].items() if lv != "C7"}
        assert got.levels == truth and got.unsure
        assert any("5 bodies found, 6 expected" in r for r in got.reasons)
        spine = measure_spine(labels, ph.spacing_mm)
        assert spine["c2c7_cobb_deg"] is None and spine["levels_unsure"]
