"""Tests of the synthetic cervical phantoms (cervkit.data.synth.phantom) and their dataset writer."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage
from skimage.draw import polygon as sk_polygon

from cervkit.data.synth.dataset import write_phantom_dataset
from cervkit.data.synth.phantom import PhantomSpec, make_phantom

LEVELS = ["C2", "C3", "C4", "C5", "C6", "C7"]
CASES = [("xray", 0), ("xray", 3), ("mri", 1), ("mri", 4)]


def _angle(ant: list[float], post: list[float], side: str) -> float:
    """Endplate angle from the contract, computed independently of cervkit."""
    sign = 1.0 if side == "left" else -1.0
    return math.degrees(math.atan2(post[1] - ant[1], sign * (post[0] - ant[0])))


@pytest.fixture(scope="module")
def phantoms() -> dict[tuple[str, int], object]:
    return {case: make_phantom(case[0], seed=case[1]) for case in CASES}


def test_deterministic_and_seed_dependent() -> None:
    for style in ("xray", "mri"):
        a, b = make_phantom(style, seed=7), make_phantom(style, seed=7)
        c = make_phantom(style, seed=8)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
        assert json.dumps(a.geometry) == json.dumps(b.geometry)
        assert not np.array_equal(a.image, c.image)
        assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("case", CASES)
def test_image_and_labels_contract(phantoms: dict, case: tuple[str, int]) -> None:
    ph = phantoms[case]
    assert ph.image.dtype == np.float32 and ph.image.shape == (512, 512)
    assert 0.0 <= ph.image.min() and ph.image.max() <= 1.0 and ph.image.std() > 0.05
    assert ph.labels.dtype == np.uint8
    assert set(np.unique(ph.labels)) == set(range(7))  # 1..6 = C2..C7, T1 not labelled
    rows = [np.nonzero(ph.labels == k)[0].mean() for k in range(1, 7)]
    assert all(r0 < r1 for r0, r1 in zip(rows, rows[1:]))
    for k in range(1, 7):
        assert ndimage.label(ph.labels == k)[1] == 1
    g = ph.geometry
    assert g["levels"] == LEVELS and g["label_of_level"] == {lv: i for i, lv in enumerate(LEVELS, 1)}
    assert g["image_size"] == [512, 512] and g["label_convention"] == "instance"
    assert g["spacing_mm"] == [ph.spacing_mm[0], ph.spacing_mm[1]]
    assert g["extras"]["t1_visible"]
    json.dumps(g)  # serialisable


@pytest.mark.parametrize("case", CASES)
def test_corners_on_region_boundary(phantoms: dict, case: tuple[str, int]) -> None:
    ph = phantoms[case]
    for lv, v in ph.geometry["vertebrae"].items():
        region = ph.labels == v["label"]
        edge = np.argwhere(region & ~ndimage.binary_erosion(region))  # (row, col) of boundary pixels
        for name, (x, y) in v["corners"].items():
            d = np.hypot(edge[:, 0] + 0.5 - y, edge[:, 1] + 0.5 - x).min()
            assert d < 2.0, (case, lv, name, d)
        rr, cc = np.nonzero(region)
        assert np.allclose(v["centroid"], [cc.mean() + 0.5, rr.mean() + 0.5], atol=1e-6)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("cobb", [-5.0, 25.0, 40.0])
def test_cobb_angle_from_corners(side: str, cobb: float) -> None:
    ph = make_phantom("xray", seed=11, cobb_deg=cobb, anterior_side=side, tilt_deg=6.0)
    g = ph.geometry
    assert g["anterior_side"] == side
    v = g["vertebrae"]
    inf = {lv: _angle(v[lv]["corners"]["anterior_inferior"], v[lv]["corners"]["posterior_inferior"], side)
           for lv in LEVELS}
    sup = {lv: _angle(v[lv]["corners"]["anterior_superior"], v[lv]["corners"]["posterior_superior"], side)
           for lv in LEVELS}
    assert inf["C2"] - inf["C7"] == pytest.approx(g["c2c7_cobb_deg"], abs=0.01)
    assert g["c2c7_cobb_deg"] == pytest.approx(cobb, abs=0.01)
    for lv in LEVELS:
        assert v[lv]["inferior_endplate_deg"] == pytest.approx(inf[lv], abs=0.01)
    # the Cobb angle is the sum of the disc angles and the C3..C7 body wedges
    discs = sum(g["adjacent_endplate_angles_deg"].values())
    wedges = sum(sup[lv] - inf[lv] for lv in LEVELS[1:])
    assert discs + wedges == pytest.approx(cobb, abs=0.02)


@pytest.mark.parametrize("cobb,convex_anterior", [(35.0, True), (-5.0, False)])
def test_lordosis_sign_is_geometric(cobb: float, convex_anterior: bool) -> None:
    """Positive Cobb = curve convex toward anterior: mid-column anterior corners lie anterior to the C2–C7 chord."""
    for side in ("left", "right"):
        g = make_phantom("xray", seed=5, cobb_deg=cobb, anterior_side=side, tilt_deg=0.0).geometry
        c = {lv: g["vertebrae"][lv]["corners"] for lv in LEVELS}
        (x0, y0), (x1, y1) = c["C2"]["anterior_inferior"], c["C7"]["anterior_inferior"]
        xm, ym = c["C5"]["anterior_superior"]
        chord_x = x0 + (ym - y0) * (x1 - x0) / (y1 - y0)
        anterior_of_chord = (xm < chord_x) if side == "left" else (xm > chord_x)
        assert anterior_of_chord == convex_anterior


def test_spec_cobb_used_and_random_cobb_in_range() -> None:
    spec_cobbs = [make_phantom("mri", seed=s).geometry for s in range(3)]
    for g in spec_cobbs:
        assert -5.0 - 1e-6 <= g["c2c7_cobb_deg"] <= 40.0 + 1e-6  # single image: no within-patient jitter
        assert g["c2c7_cobb_deg"] == pytest.approx(g["extras"]["requested_cobb_deg"], abs=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_c2_tallest_and_sizes(phantoms: dict, case: tuple[str, int]) -> None:
    ph = phantoms[case]
    extent = [np.ptp(np.nonzero(ph.labels == k)[0]) for k in range(1, 7)]
    assert extent[0] == max(extent) and extent[0] > 1.4 * np.median(extent[1:])
    mm = ph.spacing_mm[0]
    for lv, v in ph.geometry["vertebrae"].items():
        assert 13.9 <= v["width_px"] * mm <= 18.1
        assert 35 <= v["width_px"] <= 90
        if lv != "C2":
            assert 10.0 <= (v["anterior_height_px"] + v["posterior_height_px"]) / 2 * mm <= 17.0


def test_xray_bone_brighter_than_soft_tissue(phantoms: dict) -> None:
    for seed in (0, 3):
        ph = phantoms[("xray", seed)]
        bone = ph.labels > 0
        ring = ndimage.binary_dilation(bone, iterations=12) & ~ndimage.binary_dilation(bone, iterations=4)
        assert ph.image[bone].mean() > ph.image[ring].mean() + 0.03


def test_mri_discs_brighter_than_body_rims(phantoms: dict) -> None:
    for seed in (1, 4):
        ph = phantoms[("mri", seed)]
        v = ph.geometry["vertebrae"]
        disc = np.zeros(ph.labels.shape, bool)
        for up, lo in zip(LEVELS, LEVELS[1:]):
            quad = np.array([v[up]["corners"]["anterior_inferior"], v[up]["corners"]["posterior_inferior"],
                             v[lo]["corners"]["posterior_superior"], v[lo]["corners"]["anterior_superior"]])
            quad = quad.mean(0) + 0.5 * (quad - quad.mean(0))  # the disc's core
            disc[sk_polygon(quad[:, 1] - 0.5, quad[:, 0] - 0.5, disc.shape)] = True
        disc &= ph.labels == 0
        rims = (ph.labels > 0) & ~ndimage.binary_erosion(ph.labels > 0)
        assert disc.sum() > 50
        assert ph.image[disc].mean() > ph.image[rims].mean() + 0.1


def test_occlusion_recorded_and_visible() -> None:
    for seed in (0, 2):
        occ = make_phantom("xray", seed=seed, occlude=True)
        clear = make_phantom("xray", seed=seed, occlude=False)
        assert "C7" in occ.geometry["occluded_levels"] and clear.geometry["occluded_levels"] == []
        assert np.array_equal(occ.labels, clear.labels)  # the mask is still drawn
        c7, c4 = occ.labels == 6, occ.labels == 3
        assert occ.image[c7].mean() > clear.image[c7].mean() + 0.03
        assert occ.image[c4].mean() == pytest.approx(clear.image[c4].mean(), abs=0.02)
    assert make_phantom("xray", seed=1, p_occlusion=1.0).geometry["occluded_levels"]
    assert make_phantom("xray", seed=1, p_occlusion=0.0).geometry["occluded_levels"] == []
    assert make_phantom("mri", seed=1, occlude=True).geometry["occluded_levels"] == []


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        make_phantom("ct")
    with pytest.raises(ValueError):
        make_phantom("xray", cobb_deg=90.0)
    with pytest.raises(TypeError):
        make_phantom("xray", lordosis=3)
    with pytest.raises(ValueError):
        PhantomSpec(anterior_side="up")


def test_as_image(phantoms: dict) -> None:
    ph = phantoms[("mri", 1)]
    img = ph.as_image()
    assert img.shape == ph.labels.shape and img.spacing_mm == ph.spacing_mm and img.meta["modality"] == "MRI"


def test_dataset_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    manifest = write_phantom_dataset(out, 7, style="both", seed=3, size=(128, 128))
    assert manifest == out / "manifest.csv"
    with manifest.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames == ["image", "mask", "patient_id", "modality", "pixel_spacing_mm", "height",
                                     "width", "n_vertebrae", "levels", "label_convention", "geometry", "style",
                                     "seed", "source", "license", "sha256"]
    assert len(rows) == 7 and [r["modality"] for r in rows].count("XR") == 4
    patients = {m: {r["patient_id"] for r in rows if r["modality"] == m} for m in ("XR", "MRI")}
    assert patients["XR"].isdisjoint(patients["MRI"]) and len(patients["XR"]) + len(patients["MRI"]) == 2
    by_patient: dict[str, list[float]] = {}
    for r in rows:
        img_bytes = (out / r["image"]).read_bytes()
        assert hashlib.sha256(img_bytes).hexdigest() == r["sha256"]
        img = np.asarray(PILImage.open(out / r["image"]))
        mask = np.asarray(PILImage.open(out / r["mask"]))
        assert img.dtype == np.uint8 and img.shape == (128, 128) and mask.shape == (128, 128)
        assert set(np.unique(mask)) == set(range(7))
        g = json.loads((out / r["geometry"]).read_text())
        assert g["id"] == Path(r["image"]).stem and g["style"] == r["style"] and g["seed"] == int(r["seed"])
        assert r["levels"] == "C2,C3,C4,C5,C6,C7" and r["n_vertebrae"] == "6"
        assert float(r["pixel_spacing_mm"]) == pytest.approx(g["spacing_mm"][0], rel=1e-5)
        assert r["source"] == "cervkit.data.synth.phantom" and r["license"] == "CC0-1.0, generated"
        widths_mm = [v["width_px"] * g["spacing_mm"][1] for v in g["vertebrae"].values()]
        by_patient.setdefault(r["patient_id"], []).append(widths_mm)
        # the geometry is reproducible from the seeds it records
        again = make_phantom(g["style"], seed=g["seed"], size=(128, 128), patient_seed=g["extras"]["patient_seed"])
        assert np.array_equal(again.labels, mask)
    for widths in by_patient.values():  # one patient = one anatomy in several exposures
        assert len(widths) >= 2 and np.allclose(widths, widths[0], atol=1e-3)
    with pytest.raises(FileExistsError):
        write_phantom_dataset(out, 2, style="xray", seed=3, size=(128, 128))
    before = manifest.read_text()
    write_phantom_dataset(out, 7, style="both", seed=3, size=(128, 128), overwrite=True)
    assert manifest.read_text() == before


def test_dataset_files_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file goes through cervkit.core.files (no temporary left behind, the umask's mode, not mkstemp's 0600)."""
    import os

    from cervkit.core import files

    written = []
    real = files.atomic_write_bytes
    monkeypatch.setattr("cervkit.data.synth.dataset.atomic_write_bytes",
                        lambda path, data, **kw: written.append(Path(path)) or real(path, data, **kw))
    manifest = write_phantom_dataset(tmp_path / "ds", 2, style="xray", seed=1, size=(64, 64))
    on_disk = sorted(p for p in (tmp_path / "ds").rglob("*") if p.is_file())
    assert sorted(written) == on_disk and manifest in written and len(on_disk) == 7
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in on_disk} == {0o666 & ~umask}


def test_patient_grouping_default(tmp_path: Path) -> None:
    manifest = write_phantom_dataset(tmp_path / "x", 9, style="xray", seed=0, size=(96, 96))
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    counts = {}
    for r in rows:
        counts[r["patient_id"]] = counts.get(r["patient_id"], 0) + 1
    assert len(counts) == 3 and set(counts.values()) == {3}
    assert len({r["seed"] for r in rows}) == 9
