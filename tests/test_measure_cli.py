"""Tests of ``python -m cervkit measure`` and cervkit.measurements.batch on phantom masks of known angles.

Expected angles come from the phantom geometry (corners of the drawn polygons), never from
the code under test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from cervkit.core.errors import CervkitInputError
from cervkit.data.synth.phantom import make_phantom
from cervkit.io.nifti import write_nifti
from cervkit.measurements.batch import measure_files, vertebrae_csv_path


def _write_png(path: Path, labels: np.ndarray) -> Path:
    PILImage.fromarray(labels.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("masks")
    out = {}
    for seed, style in [(3, "xray"), (4, "mri"), (7, "xray")]:
        ph = make_phantom(style, seed=seed, size=(384, 384), occlude=False)
        out[f"p{seed}"] = (_write_png(folder / f"p{seed}.png", ph.labels), ph)
    first = out["p3"][1]
    no_c7 = np.where(first.labels == 6, 0, first.labels).astype(np.uint8)  # C7 hidden by the shoulders
    out["no_c7"] = (_write_png(folder / "no_c7.png", no_c7), first)
    bad = folder / "broken.png"
    bad.write_bytes(b"not a png")
    out["bad"] = (bad, None)
    return out


def test_measure_files_known_angles_unsure_and_failures(phantoms: dict, tmp_path: Path) -> None:
    files = [phantoms[k][0] for k in ("p3", "p4", "p7", "no_c7", "bad")]
    sp = phantoms["p3"][1].spacing_mm
    batch = measure_files(files, tmp_path / "m.csv", spacing_mm=sp)
    summary = pd.read_csv(tmp_path / "m.csv")
    assert list(summary["file"]) == [str(f) for f in files]
    assert batch.n_failed == 1 and summary.loc[4, "status"] == "failed" and "broken.png" in summary.loc[4, "error"]
    for i, key in enumerate(("p3", "p4", "p7")):
        truth = phantoms[key][1].geometry["c2c7_cobb_deg"]
        assert summary.loc[i, "status"] == "ok" and not summary.loc[i, "levels_unsure"]
        assert summary.loc[i, "levels"] == "C2 C3 C4 C5 C6 C7" and summary.loc[i, "n_vertebrae"] == 6
        assert abs(summary.loc[i, "c2c7_cobb_deg"] - truth) <= 1.0
        assert summary.loc[i, "unit"] == "mm" and summary.loc[i, "spacing_source"] == "argument"
    occluded = summary.loc[3]
    assert occluded["levels_unsure"] and occluded["levels"] == "C2 C3 C4 C5 C6"  # flagged, not shifted
    assert pd.isna(occluded["c2c7_cobb_deg"]) and "C2 or C7" in occluded["reasons"]
    vert = pd.read_csv(vertebrae_csv_path(tmp_path / "m.csv"))
    assert vert.groupby("file").size().to_dict() == {str(files[0]): 6, str(files[1]): 6, str(files[2]): 6,
                                                     str(files[3]): 5}
    geo = phantoms["p4"][1].geometry
    rows = vert[vert["file"] == str(files[1])].set_index("level")
    for level in ("C3", "C6"):  # per-vertebra endplate angles against the phantom's corners
        assert abs(rows.at[level, "inferior_endplate_deg"] - geo["vertebrae"][level]["inferior_endplate_deg"]) <= 1.0
    with pytest.raises(FileExistsError):
        measure_files(files[:1], tmp_path / "m.csv")
    assert measure_files(files[:1], tmp_path / "m.csv", overwrite=True).n_failed == 0
    with pytest.raises(CervkitInputError):
        measure_files(files[:1], tmp_path / "other.csv", spacing_mm=(0.0, 1.0))


def test_nifti_spacing_wins_and_pixels_without_spacing(phantoms: dict, tmp_path: Path) -> None:
    ph = phantoms["p7"][1]
    nii = write_nifti(tmp_path / "p7.nii.gz", ph.labels, spacing_mm=(0.5, 0.5))
    batch = measure_files([nii, phantoms["p7"][0]], tmp_path / "s.csv", spacing_mm=(0.9, 0.9))
    s = batch.summary
    assert s.loc[0, "spacing_source"] == "nifti" and s.loc[0, "spacing_row_mm"] == pytest.approx(0.5)
    assert s.loc[1, "spacing_source"] == "argument"
    assert abs(s.loc[0, "c2c7_cobb_deg"] - ph.geometry["c2c7_cobb_deg"]) <= 1.0
    heights = batch.vertebrae.groupby("file")["anterior_height_mm"].mean()
    assert heights[str(phantoms["p7"][0])] / heights[str(nii)] == pytest.approx(0.9 / 0.5, rel=1e-6)
    px = measure_files([phantoms["p7"][0]], tmp_path / "px.csv").summary
    assert px.loc[0, "unit"] == "px" and px.loc[0, "spacing_source"] == "none"


def test_cli_subprocess(phantoms: dict, tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    cmd = [sys.executable, "-m", "cervkit", "measure", "--out", str(out), "--spacing-mm", "0.3", "0.3",
           str(phantoms["p4"][0]), str(phantoms["bad"][0])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "broken.png" in done.stderr and "1 measured" in done.stdout
    summary = pd.read_csv(out)
    assert abs(summary.loc[0, "c2c7_cobb_deg"] - phantoms["p4"][1].geometry["c2c7_cobb_deg"]) <= 1.0
    assert vertebrae_csv_path(out).is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr  # never overwritten silently
    ok = subprocess.run(cmd[:-1] + ["--overwrite"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr


def test_draw_measurements_lines_at_the_corners(phantoms: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cervkit.measurements.figures import draw_measurements
    from cervkit.measurements.spine import measure_spine

    ph = phantoms["p3"][1]
    spine = measure_spine(ph.labels, ph.spacing_mm)
    fig, ax = plt.subplots()
    draw_measurements(ax, ph.image, ph.labels, spine)
    segments = [np.column_stack(line.get_data()) for line in ax.lines if len(line.get_xdata()) == 2]
    assert len(segments) == 2 * 6  # superior and inferior endplate of each body
    first = spine["vertebrae"][0]  # imshow puts pixel centres at integers: pixel-edge minus 0.5
    want = np.array([[first["anterior_superior_x_px"], first["anterior_superior_y_px"]],
                     [first["posterior_superior_x_px"], first["posterior_superior_y_px"]]]) - 0.5
    assert any(np.allclose(seg, want) for seg in segments)
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("C2–C7 Cobb: ") and f"{spine['c2c7_cobb_deg']:+.1f}" in t for t in texts)
    assert {"C2", "C7"} <= set(texts)
    plt.close(fig)
