"""Write a folder of synthetic phantoms with a manifest (images, masks, geometry JSON).

Layout (paths in the manifest are relative to ``out_dir``)::

    out_dir/manifest.csv
    out_dir/images/<id>.png     8-bit grayscale image
    out_dir/masks/<id>.png      uint8 label map, 1..6 = C2..C7 ("instance" convention)
    out_dir/geometry/<id>.json  the phantom geometry contract

Phantoms are grouped into synthetic patients: the phantoms of one patient share
the anatomy (``patient_seed``) and differ in posture, positioning and rendering, so
patient-level splits are meaningful.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from cervkit.core.files import atomic_write_bytes
from cervkit.data.synth.geometry import LEVELS
from cervkit.data.synth.phantom import MODALITY, PhantomSpec, phantom_from_spec

MANIFEST_COLUMNS = ("image", "mask", "patient_id", "modality", "pixel_spacing_mm", "height", "width",
                    "n_vertebrae", "levels", "label_convention", "geometry", "style", "seed", "source",
                    "license", "sha256")
SOURCE = "cervkit.data.synth.phantom"
LICENSE = "CC0-1.0, generated"
_STYLE_CODE = {"xray": 1, "mri": 2}


def _png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) array as a grayscale PNG."""
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def derived_seed(*parts: int) -> int:
    """A 31-bit seed derived deterministically from integers (``numpy.random.SeedSequence``).

    Parameters
    ----------
    *parts : int
        Dataset seed, style code, index …

    Returns
    -------
    int
        Seed in [0, 2**31).
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def _plan(n: int, style: str, n_patients: int | None) -> list[tuple[str, int, int]]:
    """(style, image index within style, patient index within style) for every phantom."""
    styles = ["xray", "mri"] if style == "both" else [style]
    counts = [math.ceil(n / 2), n // 2] if style == "both" else [n]
    total_p = max(1, round(n / 3)) if n_patients is None else int(n_patients)
    plan = []
    for k, (st, cnt) in enumerate(zip(styles, counts)):
        if cnt == 0:
            continue
        share = total_p if len(styles) == 1 else (math.ceil(total_p / 2) if k == 0 else total_p // 2)
        n_p = min(cnt, max(1, share))
        plan += [(st, i, i * n_p // cnt) for i in range(cnt)]
    return plan


def write_phantom_dataset(out_dir: str | os.PathLike[str], n: int, *, style: str = "xray", seed: int = 0,
                          size: tuple[int, int] = (512, 512), n_patients: int | None = None,
                          overwrite: bool = False) -> Path:
    """Generate ``n`` phantoms and write images, masks, geometry JSON and ``manifest.csv``.

    Parameters
    ----------
    out_dir : str or PathLike
        Dataset folder (created if needed).
    n : int
        Number of phantoms (>= 1).
    style : str
        ``"xray"``, ``"mri"`` or ``"both"`` (half each, rounded up for X-ray; different patients).
    seed : int
        Dataset seed; the per-image and per-patient seeds are derived from it.
    size : tuple of int
        (H, W) of every image.
    n_patients : int, optional
        Number of synthetic patients (default about ``n / 3``; with ``"both"`` split between styles).
    overwrite : bool
        Replace an existing non-empty folder's ``images/``, ``masks/``, ``geometry/`` and
        ``manifest.csv`` (other files are left alone). Without it a non-empty folder raises.

    Returns
    -------
    pathlib.Path
        The path of ``manifest.csv`` (written last, atomically).

    Raises
    ------
    FileExistsError
        ``out_dir`` exists, is not empty and ``overwrite`` is False.
    ValueError
        Bad ``n``, ``style`` or ``n_patients``.
    """
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if style not in ("xray", "mri", "both"):
        raise ValueError(f"style must be 'xray', 'mri' or 'both', got {style!r}")
    if n_patients is not None and int(n_patients) < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace the phantom dataset in it")
        for sub in ("images", "masks", "geometry"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "manifest.csv").unlink(missing_ok=True)
    for sub in ("images", "masks", "geometry"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for st, i, p in _plan(int(n), style, n_patients):
        code = _STYLE_CODE[st]
        pid = f"synth-{MODALITY[st].lower()}-p{p:04d}"
        img_id = f"{st}_{i:05d}"
        spec = PhantomSpec(style=st, size=size, seed=derived_seed(seed, code, i),
                           patient_seed=derived_seed(seed, code, 1_000_000 + p))
        ph = phantom_from_spec(spec, phantom_id=img_id)
        ph.geometry["extras"]["patient_id"] = pid
        img_png = _png_bytes(np.round(ph.image * 255.0))
        atomic_write_bytes(out / "images" / f"{img_id}.png", img_png, overwrite=True)
        atomic_write_bytes(out / "masks" / f"{img_id}.png", _png_bytes(ph.labels), overwrite=True)
        atomic_write_bytes(out / "geometry" / f"{img_id}.json", json.dumps(ph.geometry, indent=1).encode(),
                           overwrite=True)
        rows.append({
            "image": f"images/{img_id}.png", "mask": f"masks/{img_id}.png", "patient_id": pid,
            "modality": MODALITY[st], "pixel_spacing_mm": f"{ph.spacing_mm[0]:.6f}",
            "height": size[0], "width": size[1], "n_vertebrae": len(LEVELS), "levels": ",".join(LEVELS),
            "label_convention": "instance", "geometry": f"geometry/{img_id}.json", "style": st,
            "seed": spec.seed, "source": SOURCE, "license": LICENSE,
            "sha256": hashlib.sha256(img_png).hexdigest(),
        })
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    atomic_write_bytes(manifest, buf.getvalue().encode(), overwrite=True)
    return manifest
