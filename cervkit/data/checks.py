"""Manifest validation: collect every problem, never stop at the first.

Problems name the CSV line (the header is line 1, so the first row is line 2;
a manifest built in memory names ``row N`` instead) and the file. Checks:
required columns and values, modality and split spelling (with the likely fix),
fold and spacing values, duplicate images, patients in two splits or two folds
(leaks), missing files, image/mask size mismatch (read from headers only:
Pillow's lazy ``size``, DICOM ``Rows``/``Columns`` with ``stop_before_pixels``,
the NIfTI header), empty (all-zero) masks and sha256 mismatches.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import ManifestError
from cervkit.core.files import sha256_file
from cervkit.data.table import (
    MODALITIES,
    REQUIRED_COLUMNS,
    SPLITS,
    Manifest,
    is_blank,
    parse_spacing,
)

_MODALITY_FIX = {"MR": "MRI", "MRI": "MRI", "XR": "XR", "CR": "XR", "DX": "XR", "X-RAY": "XR",
                 "XRAY": "XR", "X_RAY": "XR", "RADIOGRAPH": "XR", "XA": "XR"}
_SPLIT_FIX = {"train": "train", "training": "train", "val": "val", "valid": "val",
              "validation": "val", "dev": "val", "test": "test", "testing": "test"}
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}
_MAX_LINES_SHOWN = 8


def _lines(manifest: Manifest, positions: Iterable[int], *, name_file: bool = True) -> str:
    """Name rows compactly: ``lines 2-5, 9``; one row with its image: ``line 3 (images/a.png)``."""
    positions = sorted(set(positions))
    numbers = [p + 2 if manifest.path is not None else p + 1 for p in positions]
    word = "line" if manifest.path is not None else "row"
    ranges: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    shown = ", ".join(ranges[:_MAX_LINES_SHOWN]) + (" …" if len(ranges) > _MAX_LINES_SHOWN else "")
    if len(numbers) == 1 and name_file and "image" in manifest.df.columns:
        image = manifest.df["image"].iloc[positions[0]]
        return f"{word} {shown}" + ("" if is_blank(image) else f" ({image})")
    return f"{word}{'s' if len(numbers) > 1 else ''} {shown}"


def _group(manifest: Manifest, column: str) -> dict[str, list[int]]:
    """Map each distinct non-blank text value of ``column`` to its row positions."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, value in enumerate(manifest.df[column]):
        if not is_blank(value):
            groups[str(value)].append(i)
    return groups


def _check_values(manifest: Manifest) -> list[str]:
    """Blank required cells, modality/split spelling, fold and spacing values, sha256 format."""
    df, problems = manifest.df, []
    for column in ("image", "patient_id", "modality"):
        if column in df.columns:
            blank = [i for i, v in enumerate(df[column]) if is_blank(v)]
            if blank:
                problems.append(f"{_lines(manifest, blank)}: {column} is empty")
    if "modality" in df.columns:
        for value, rows in _group(manifest, "modality").items():
            if value not in MODALITIES:
                fix = _MODALITY_FIX.get(value.strip().upper())
                hint = f"; did you mean {fix!r}?" if fix else ""
                problems.append(f"{_lines(manifest, rows)}: unknown modality {value!r} "
                                f"(use 'XR' or 'MRI', upper case){hint}")
    if "split" in df.columns:
        blank = [i for i, v in enumerate(df["split"]) if is_blank(v)]
        if blank:
            problems.append(f"{_lines(manifest, blank)}: split is empty; with a split column every "
                            "row needs train, val or test")
        for value, rows in _group(manifest, "split").items():
            if value not in SPLITS:
                fix = _SPLIT_FIX.get(value.strip().lower())
                hint = f"; did you mean {fix!r}?" if fix else ""
                problems.append(f"{_lines(manifest, rows)}: invalid split {value!r} "
                                f"(use train, val or test){hint}")
    if "fold" in df.columns:
        bad = [i for i, v in enumerate(df["fold"]) if not is_blank(v) and not _is_fold(v)]
        if bad:
            problems.append(f"{_lines(manifest, bad)}: fold must be an integer >= 0 "
                            "(-1 or empty for rows in no fold)")
    if "pixel_spacing_mm" in df.columns:
        bad = [i for i, v in enumerate(df["pixel_spacing_mm"])
               if not is_blank(v) and parse_spacing(v) is None]
        if bad:
            problems.append(f"{_lines(manifest, bad)}: pixel_spacing_mm must be a positive number "
                            "(or 'row\\col'), or empty when unknown")
    if "sha256" in df.columns:
        bad = [i for i, v in enumerate(df["sha256"])
               if not is_blank(v) and not _SHA_RE.match(str(v).strip())]
        if bad:
            problems.append(f"{_lines(manifest, bad)}: sha256 must be 64 hex digits")
    return problems


def _is_fold(value: Any) -> bool:
    """Return True for an integer >= -1 (as int or text)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return False
    return number.is_integer() and number >= -1


def _check_duplicates(manifest: Manifest) -> list[str]:
    """Rows listing the same image (and slice, when a ``slice_index`` column exists)."""
    df = manifest.df
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, value in enumerate(df["image"]):
        if is_blank(value):
            continue
        key_slice = "" if "slice_index" not in df.columns else str(df["slice_index"].iloc[i])
        seen[(str(manifest.image_path(i)), key_slice)].append(i)
    return [f"{_lines(manifest, rows)}: image {df['image'].iloc[rows[0]]} is listed "
            f"{len(rows)} times (duplicate rows)" for rows in seen.values() if len(rows) > 1]


def leak_problems(manifest: Manifest) -> list[str]:
    """Patients found in more than one split, or in more than one fold.

    Parameters
    ----------
    manifest : Manifest

    Returns
    -------
    list of str
        One message per leaked patient and column, naming the parts and lines.
    """
    df, problems = manifest.df, []
    if "patient_id" not in df.columns:
        return problems
    for column, what in (("split", "splits"), ("fold", "folds")):
        if column not in df.columns:
            continue
        parts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (patient, value) in enumerate(zip(df["patient_id"], df[column])):
            if is_blank(patient) or is_blank(value) or (column == "fold" and _is_fold(value)
                                                     and float(str(value)) < 0):
                continue
            parts[str(patient)][str(value)].append(i)
        for patient, found in sorted(parts.items()):
            if len(found) > 1:
                listing = " and ".join(f"{name} ({_lines(manifest, rows, name_file=False)})"
                                       for name, rows in sorted(found.items()))
                problems.append(f"patient {patient!r} is in {len(found)} {what}: {listing} "
                                "(a patient's images must all be in one)")
    return problems


def _is_dicom(path: Path) -> bool:
    """DICOM by suffix or by its ``DICM`` preamble."""
    if path.suffix.lower() in _DICOM_SUFFIXES and not path.name.lower().endswith(".nii"):
        return True
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def read_size(path: Path, *, decode: bool = False) -> tuple[tuple[int, int], bool | None]:
    """Read an image's (rows, cols) from its header; optionally whether any pixel is non-zero.

    Parameters
    ----------
    path : pathlib.Path
        PNG/JPEG/BMP/TIFF (Pillow), DICOM, or NIfTI (rows along y, see :mod:`cervkit.io.nifti`).
    decode : bool, default False
        Also decode the pixels and report whether any is non-zero (for masks).

    Returns
    -------
    size : tuple of int
        (rows, cols).
    nonzero : bool or None
        Whether any pixel is non-zero; None when ``decode`` is False.

    Raises
    ------
    Exception
        Whatever the reader raises for an unreadable file (the validator reports it).
    """
    if _nifti(path):
        import nibabel as nib

        img = nib.load(path)
        shape = img.header.get_data_shape()
        size = (int(shape[1]) if len(shape) > 1 else 1, int(shape[0]))
        return size, (bool(np.any(np.asanyarray(img.dataobj))) if decode else None)
    if _is_dicom(path):
        import pydicom

        ds = pydicom.dcmread(path, force=True, stop_before_pixels=not decode)
        size = (int(ds.Rows), int(ds.Columns))
        return size, (bool(np.any(ds.pixel_array)) if decode else None)
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        size = (int(im.size[1]), int(im.size[0]))
        if not decode:
            return size, None
        arr = np.asarray(im)
    if arr.ndim == 3:  # colour: ignore alpha, which is often 255 everywhere
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
    return size, bool(np.any(arr))


def _check_files(manifest: Manifest, *, check_sizes: bool, check_empty_masks: bool,
                 check_sha256: bool) -> list[str]:
    """Missing files, unreadable headers, size mismatches, empty masks, hash mismatches."""
    df, problems = manifest.df, []
    for i in range(len(df)):
        where = manifest.line(i)
        image_cell = df["image"].iloc[i]
        image = None if is_blank(image_cell) else manifest.image_path(i)
        mask = manifest.mask_path(i)
        image_ok = image is not None and image.exists()
        mask_ok = mask is not None and mask.exists()
        if image is not None and not image_ok:
            problems.append(f"{where}: image file not found: {image_cell} (looked for {image})")
        if mask is not None and not mask_ok:
            problems.append(f"{where}: mask file not found: {df['mask'].iloc[i]} (looked for {mask})")
        image_size = mask_size = None
        if image_ok and check_sizes and image.is_file():
            try:
                image_size = read_size(image)[0]
            except Exception as exc:  # noqa: BLE001  any reader error is a problem to report
                problems.append(f"{where}: cannot read image {image_cell}: {exc}")
        if mask_ok and (check_sizes or check_empty_masks):
            try:
                mask_size, nonzero = read_size(mask, decode=check_empty_masks)
                if check_empty_masks and not nonzero:
                    problems.append(f"{where}: mask {df['mask'].iloc[i]} is empty (all zero)")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where}: cannot read mask {df['mask'].iloc[i]}: {exc}")
        if check_sizes and image_size and mask_size and image_size != mask_size:
            problems.append(f"{where}: image {image_cell} is {image_size[0]}x{image_size[1]} (HxW) "
                            f"but mask {df['mask'].iloc[i]} is {mask_size[0]}x{mask_size[1]}")
        if check_sha256 and image_ok and image.is_file() and "sha256" in df.columns:
            expected = df["sha256"].iloc[i]
            if not is_blank(expected) and _SHA_RE.match(str(expected).strip()):
                actual = sha256_file(image)
                if actual != str(expected).strip().lower():
                    problems.append(f"{where}: sha256 of image {image_cell} is {actual[:12]}…, "
                                    f"manifest says {str(expected).strip()[:12]}… (file changed?)")
    return problems


def validate_manifest(manifest: Manifest, *, check_files: bool = True, check_sizes: bool = True,
                      check_empty_masks: bool = True, check_sha256: bool = False) -> list[str]:
    """Return every problem found in a manifest (an empty list when it is valid).

    Parameters
    ----------
    manifest : Manifest
        The table to check.
    check_files : bool, default True
        Check that image and mask files exist; without it no file is opened.
    check_sizes : bool, default True
        Compare image and mask (rows, cols), read from file headers.
    check_empty_masks : bool, default True
        Decode each mask and report those with no non-zero pixel.
    check_sha256 : bool, default False
        Hash each image and compare with the ``sha256`` column (where filled).

    Returns
    -------
    list of str
        One message per problem, naming the line(s) and file.
    """
    df = manifest.df
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    problems = []
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)} "
                        f"(found: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        problems.append("manifest has no rows")
    problems += _check_values(manifest)
    if "image" in df.columns:
        problems += _check_duplicates(manifest)
    problems += leak_problems(manifest)
    if check_files and "image" in df.columns and "mask" in df.columns:
        problems += _check_files(manifest, check_sizes=check_sizes,
                                 check_empty_masks=check_empty_masks, check_sha256=check_sha256)
    return problems


def ensure_valid(manifest: Manifest, **checks: bool) -> Manifest:
    """Validate a manifest and return it, or raise with every problem.

    Parameters
    ----------
    manifest : Manifest
    **checks : bool
        ``check_files``, ``check_sizes``, ``check_empty_masks``, ``check_sha256``
        as for :func:`validate_manifest`.

    Returns
    -------
    Manifest
        The same manifest.

    Raises
    ------
    ManifestError
        Listing every problem, with the manifest's path.
    """
    problems = validate_manifest(manifest, **checks)
    if problems:
        raise ManifestError(problems, manifest.path)
    return manifest


def check_no_leak(manifest: Manifest) -> None:
    """Raise if a patient is in two splits or two folds.

    Parameters
    ----------
    manifest : Manifest

    Raises
    ------
    ManifestError
        Naming each leaked patient and the parts it is in.
    """
    problems = leak_problems(manifest)
    if problems:
        raise ManifestError(problems, manifest.path)
