"""Standard exports of a label map: label PNG, overlay PNG, NIfTI, DICOM SEG, measurements.

:func:`export_all` writes, for one image, the files of :func:`export_paths` in ``out_dir``:

==================  ============================  ==================================================
format              file                          label convention
==================  ============================  ==================================================
``label_png``       ``<stem>_mask.png``           uint8 gray: 0 background, 1..K one vertebral body
                                                  each, numbered top to bottom (:func:`cervkit.io.images.read_mask`)
``overlay_png``     ``<stem>_overlay.png``        RGB image with label k in colour k of
                                                  :func:`cervkit.viz.label_colors` (:func:`cervkit.viz.overlay`)
``nifti``           ``<stem>_mask.nii.gz``        the same 1..K labels, one slice, spacing in mm in
                                                  pixdim/affine (:mod:`cervkit.io.nifti`)
``dicom_seg``       ``<stem>_seg.dcm``            segment k = label k, labelled ``"C2 vertebral body"``
                                                  … with level names (:mod:`cervkit.export.dicom_seg`)
``measurements``    ``<stem>_measurements.json``  :func:`cervkit.measurements.spine.measure_spine` (labels 1..K
                    + ``<stem>_vertebrae.csv``    with their level names C2…C7 in ``level``)
==================  ============================  ==================================================

Privacy: no export carries the patient's name or ID. PNG and NIfTI files hold pixels and
spacing only; the measurements name the image by ``source_id``, a pseudonym; the SEG's
copied identifiers are scrubbed unless ``keep_identifiers`` (:func:`cervkit.export.dicom_seg.scrub_identifiers`).
File names come from the caller's ``stem`` (e.g. a manifest ID, checked by
:func:`export_stem`) or, by default, from a pseudonym of the source DICOM's SOPInstanceUID,
the source file's path, or the label map's bytes (:func:`cervkit.io.privacy.pseudonym`).
Every file is written atomically; nothing is replaced without ``overwrite=True``, and
:func:`export_all` checks every target before it writes the first one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path, atomic_write_bytes, check_writable
from cervkit.core.image import Image
from cervkit.export.dicom_seg import read_dicom_seg, write_dicom_seg

__all__ = ["FORMATS", "LABEL_CONVENTION", "export_all", "export_paths", "export_stem", "read_dicom_seg",
           "read_measurements", "write_dicom_seg", "write_label_nifti", "write_label_png",
           "write_measurements", "write_overlay_png"]

FORMATS = ("label_png", "overlay_png", "nifti", "dicom_seg", "measurements")
LABEL_CONVENTION = "0 background; 1..K one vertebral body each, numbered top to bottom"
_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def _label_map(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a checked uint8 (H, W) label map."""
    from cervkit.io.nifti import to_label_map

    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0:
        raise CervkitInputError(f"labels must be a non-empty 2D label map, got shape {arr.shape}")
    return to_label_map(arr)


def export_stem(*, manifest_id: str | None = None, source: str | PathLike[str] | None = None,
                labels: np.ndarray | None = None) -> str:
    """A file-name stem that carries no identifier: a manifest ID or a pseudonym.

    Parameters
    ----------
    manifest_id : str, optional
        The manifest's ID of the image (characters other than letters, digits, ``.``, ``_``
        and ``-`` become ``_``); wins when given.
    source : str or PathLike, optional
        The source image: a DICOM file gives ``img-`` + a pseudonym of its SOPInstanceUID,
        any other file a pseudonym of its resolved path.
    labels : numpy.ndarray, optional
        Last resort: a pseudonym of the label map's bytes.

    Returns
    -------
    str
        The stem.

    Raises
    ------
    CervkitInputError
        Nothing to derive a stem from, or a manifest ID with no usable character.
    """
    from cervkit.io.privacy import pseudonym

    if manifest_id is not None:
        stem = _SAFE_STEM.sub("_", str(manifest_id)).strip("._")
        if not stem:
            raise CervkitInputError(f"manifest ID {manifest_id!r} gives no usable file name")
        return stem
    if source is not None:
        path = Path(source)
        uid = _sop_instance_uid(path)
        return pseudonym(uid if uid else str(path.resolve()), prefix="img-")
    if labels is not None:
        arr = np.ascontiguousarray(labels)
        return pseudonym(hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest(), prefix="img-")
    raise CervkitInputError("no stem: give a manifest ID, a source file or the labels")


def _sop_instance_uid(path: Path) -> str | None:
    """The SOPInstanceUID of a DICOM file, or None for anything else."""
    from cervkit.io.privacy import is_dicom_path

    if not path.is_file() or not is_dicom_path(path):
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
    except Exception:  # pydicom raises many types for non-DICOM bytes; all mean "no UID"
        return None
    uid = ds.get("SOPInstanceUID")
    return str(uid) if uid else None


def export_paths(out_dir: str | PathLike[str], stem: str) -> dict[str, Path]:
    """The files :func:`export_all` writes, by format (measurements: JSON and CSV).

    Parameters
    ----------
    out_dir : str or PathLike
        The output folder.
    stem : str
        File-name stem (no folder part).

    Returns
    -------
    dict of str to pathlib.Path
        Keys ``label_png``, ``overlay_png``, ``nifti``, ``dicom_seg``, ``measurements``
        (JSON) and ``measurements_csv``.
    """
    if not stem or Path(stem).name != stem or stem in (".", ".."):
        raise CervkitInputError(f"stem {stem!r} must be a plain file-name stem without folders")
    out = Path(out_dir)
    return {"label_png": out / f"{stem}_mask.png", "overlay_png": out / f"{stem}_overlay.png",
            "nifti": out / f"{stem}_mask.nii.gz", "dicom_seg": out / f"{stem}_seg.dcm",
            "measurements": out / f"{stem}_measurements.json",
            "measurements_csv": out / f"{stem}_vertebrae.csv"}


def write_label_png(path: str | PathLike[str], labels: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write the label map (0 background, 1..K top to bottom) as an 8-bit gray PNG, atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination PNG.
    labels : numpy.ndarray
        Integer (H, W) label map, 0 background.
    overwrite : bool, default False
        Replace an existing file; otherwise an existing ``path`` raises FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from cervkit.io.images import write_png

    return write_png(path, _label_map(labels), overwrite=overwrite)


def write_overlay_png(path: str | PathLike[str], image: np.ndarray | Image, labels: np.ndarray, *,
                      alpha: float = 0.4, overwrite: bool = False) -> Path:
    """Write the image with label k drawn in colour k (:func:`cervkit.viz.overlay`) as RGB PNG.

    Parameters
    ----------
    path : str or PathLike
        Destination PNG.
    image : numpy.ndarray or Image
        float (H, W) image in [0, 1].
    labels : numpy.ndarray
        Integer (H, W) label map, 0 background.
    alpha : float, default 0.4
        Opacity of the label colours.
    overwrite : bool, default False
        Replace an existing file; otherwise an existing ``path`` raises FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from cervkit.io.images import write_png
    from cervkit.viz import overlay

    pixels = image.array if isinstance(image, Image) else np.asarray(image, dtype=np.float32)
    return write_png(path, overlay(pixels, _label_map(labels), alpha=alpha), overwrite=overwrite)


def write_label_nifti(path: str | PathLike[str], labels: np.ndarray,
                      spacing_mm: tuple[float, float] | None = None, *, overwrite: bool = False) -> Path:
    """Write the 1..K label map as one-slice NIfTI with (row, col) spacing in mm (:func:`cervkit.io.nifti.write_nifti`).

    Parameters
    ----------
    path : str or PathLike
        Destination ``.nii`` or ``.nii.gz``.
    labels : numpy.ndarray
        Integer (H, W) label map, 0 background.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing in mm; None stores unknown spacing (read back as None).
    overwrite : bool, default False
        Replace an existing file; otherwise an existing ``path`` raises FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from cervkit.io.nifti import write_nifti

    return write_nifti(path, _label_map(labels), spacing_mm, overwrite=overwrite)


def _plain(value: Any) -> Any:
    """Convert numpy scalars, NaN and nested containers into JSON values (NaN → None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def write_measurements(json_path: str | PathLike[str], labels: np.ndarray,
                       spacing_mm: tuple[float, float] | None = None, *,
                       level_names: Mapping[int, str] | None = None,
                       csv_path: str | PathLike[str] | None = None, source_id: str | None = None,
                       anterior_side: str | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write :func:`cervkit.measurements.spine.measure_spine` as JSON and its per-vertebra table as CSV.

    Bodies are the labels 1..K (top to bottom); ``level`` holds their names (C2…C7, given or
    assigned by :func:`cervkit.measurements.levels.assign_levels`). Without ``level_names`` the C2–C7
    angles are reported only when C2 and C7 are certain (the rule of ``cervkit measure``,
    :func:`cervkit.measurements.batch.c2_c7_certain`). Lengths are in mm with a spacing, else px.

    Parameters
    ----------
    json_path : str or PathLike
        The JSON file: ``format``, ``label_convention``, ``source_id``, ``shape``,
        ``spacing_mm`` and every key of ``measure_spine`` (NaN written as null).
    labels : numpy.ndarray
        uint8 (H, W) label map.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing.
    level_names : mapping of int to str, optional
        Label → level; default assigned from the anatomy.
    csv_path : str or PathLike, optional
        Default ``<json stem without _measurements>_vertebrae.csv`` beside the JSON.
    source_id : str, optional
        A non-identifying name of the image (e.g. the export stem).
    anterior_side : {"left", "right"}, optional
        Which image side is anterior (default decided from the anatomy).
    overwrite : bool, default False
        Replace existing files.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The JSON and CSV files.
    """
    from cervkit.measurements.batch import c2_c7_certain
    from cervkit.measurements.levels import LevelAssignment
    from cervkit.measurements.spine import measure_spine

    json_path = Path(json_path)
    if csv_path is None:
        base = json_path.name.removesuffix(".json").removesuffix("_measurements")
        csv_path = json_path.with_name(f"{base}_vertebrae.csv")
    csv_path = Path(csv_path)
    check_writable(json_path, overwrite)
    check_writable(csv_path, overwrite)
    arr = _label_map(labels)
    levels = None if level_names is None else LevelAssignment({int(k): str(v) for k, v in level_names.items()},
                                                              False, [])
    spine = measure_spine(arr, spacing_mm, levels=levels, anterior_side=anterior_side)
    if level_names is None and spine["c2c7_cobb_deg"] is not None and not c2_c7_certain(
            spine["levels"], spine["levels_unsure"], spine["reasons"], spine["n_vertebrae"]):
        spine.update(c2c7_cobb_deg=None, c2c7_harrison_deg=None)
        spine["reasons"].append("C2–C7 angles not reported: C2 or C7 not identified with certainty")
    doc = {"format": "cervkit-measurements/1", "label_convention": LABEL_CONVENTION,
           "source_id": source_id, "shape": list(arr.shape),
           "spacing_mm": None if spacing_mm is None else [float(v) for v in spacing_mm], **spine}
    table = pd.DataFrame(spine["vertebrae"])
    with atomic_path(csv_path, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)
    text = json.dumps(_plain(doc), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(json_path, text.encode("utf-8"), overwrite=overwrite)
    return json_path, csv_path


def read_measurements(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a measurements JSON written by :func:`write_measurements`.

    Parameters
    ----------
    path : str or PathLike
        The ``<stem>_measurements.json`` file.

    Returns
    -------
    dict
        As written; ``levels`` has int keys again (label → level name), null values are None.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CervkitInputError(f"not a readable measurements JSON ({exc})", path) from exc
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("cervkit-measurements/"):
        raise CervkitInputError("not a cervkit measurements file (no 'format' cervkit-measurements/…)", path)
    doc["levels"] = {int(k): v for k, v in (doc.get("levels") or {}).items()}
    return doc


def _chosen(formats: Sequence[str] | None, has_image: bool, dicom: Path | None,
            labels: np.ndarray) -> list[str]:
    """Validate ``formats``; for the default set, drop what cannot be written (with a warning)."""
    if formats is not None:
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise CervkitInputError(f"unknown export format(s) {unknown}; use some of {FORMATS}")
        return list(dict.fromkeys(formats))
    chosen = list(FORMATS)
    if not has_image:
        chosen.remove("overlay_png")
    why = ("no DICOM source given" if dicom is None else
           f"{dicom} is not a DICOM image" if _sop_instance_uid(dicom) is None else
           "the label map is empty" if not labels.any() else "")
    if why:
        warnings.warn(f"no DICOM SEG written: {why}", stacklevel=3)
        chosen.remove("dicom_seg")
    return chosen


def export_all(labels: np.ndarray, image: np.ndarray | Image | None, out_dir: str | PathLike[str],
               stem: str | None = None, *, spacing_mm: tuple[float, float] | None = None,
               source_dicom: str | PathLike[str] | None = None,
               level_names: Mapping[int, str] | None = None, formats: Sequence[str] | None = None,
               frame_index: int | None = None, keep_identifiers: bool = False,
               overwrite: bool = False) -> dict[str, Path]:
    """Write the standard exports of one label map (see the module docstring for files and conventions).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 (H, W): 0 background, 1..K one vertebral body each, top to bottom.
    image : numpy.ndarray or Image or None
        The image for the overlay (float [0, 1]); None reads ``source_dicom`` when given.
    out_dir : str or PathLike
        Output folder (created).
    stem : str, optional
        File-name stem; default :func:`export_stem` of the source (a pseudonym).
    spacing_mm : (float, float), optional
        (row, col) mm; default the Image's spacing.
    source_dicom : str or PathLike, optional
        The DICOM file the labels belong to: the SEG references it.
    level_names : mapping of int to str, optional
        Label → level (``{1: "C2", …}``) for SEG segment labels and measurements.
    formats : sequence of str, optional
        Some of :data:`FORMATS`. Default: all that can be written (no overlay without an
        image; no SEG without a DICOM source or with an empty map, with a warning saying so).
        Asking for ``dicom_seg`` or ``overlay_png`` without what they need is an error.
    frame_index : int, optional
        Frame of a multi-frame ``source_dicom`` (default the middle one).
    keep_identifiers : bool, default False
        Keep patient name/ID and the other identifiers in the SEG.
    overwrite : bool, default False
        Replace existing files; otherwise FileExistsError before anything is written.

    Returns
    -------
    dict of str to pathlib.Path
        Written files by :func:`export_paths` key.
    """
    arr = _label_map(labels)
    dicom = None if source_dicom is None else Path(source_dicom)
    if image is None and dicom is not None:
        from cervkit.io.images import read_image

        image = read_image(dicom, slice_index=frame_index)
    if isinstance(image, Image) and spacing_mm is None:
        spacing_mm = image.spacing_mm
    if image is not None and np.asarray(image.array if isinstance(image, Image) else image).shape != arr.shape:
        raise CervkitInputError(f"image and labels {arr.shape} differ in shape")
    chosen = _chosen(formats, image is not None, dicom, arr)
    if "overlay_png" in chosen and image is None:
        raise CervkitInputError("overlay_png needs the image (pass image= or source_dicom=)")
    if "dicom_seg" in chosen and (dicom is None or _sop_instance_uid(dicom) is None):
        raise CervkitInputError("dicom_seg needs source_dicom, the DICOM image the labels were drawn on; "
                                f"{'none given' if dicom is None else f'{dicom} is not one'}")
    if stem is None:
        source = dicom if dicom is not None else (image.meta.get("source") if isinstance(image, Image) else None)
        stem = export_stem(source=source or None, labels=arr)
    paths = export_paths(out_dir, stem)
    targets = [paths[f] for f in chosen] + ([paths["measurements_csv"]] if "measurements" in chosen else [])
    for target in targets:
        check_writable(target, overwrite)
    written: dict[str, Path] = {}
    fresh = [t for t in targets if not t.exists()]
    try:
        for fmt in sorted(chosen, key=lambda f: f != "dicom_seg"):  # the SEG first: likeliest to fail
            if fmt == "label_png":
                written[fmt] = write_label_png(paths[fmt], arr, overwrite=overwrite)
            elif fmt == "overlay_png":
                written[fmt] = write_overlay_png(paths[fmt], image, arr, overwrite=overwrite)  # type: ignore[arg-type]
            elif fmt == "nifti":
                written[fmt] = write_label_nifti(paths[fmt], arr, spacing_mm, overwrite=overwrite)
            elif fmt == "dicom_seg":
                written[fmt] = write_dicom_seg(
                    paths[fmt], arr, dicom, level_names=level_names, spacing_mm=spacing_mm,  # type: ignore[arg-type]
                    frame_index=frame_index, keep_identifiers=keep_identifiers, overwrite=overwrite)
            else:
                written[fmt], written["measurements_csv"] = write_measurements(
                    paths[fmt], arr, spacing_mm, level_names=level_names, csv_path=paths["measurements_csv"],
                    source_id=stem, overwrite=overwrite)
    except BaseException:
        for target in fresh:  # leave no partial export behind
            target.unlink(missing_ok=True)
        raise
    return dict(sorted(written.items(), key=lambda item: list(paths).index(item[0])))
