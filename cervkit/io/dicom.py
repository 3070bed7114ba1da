"""Reading DICOM files and single-series folders into :class:`~cervkit.core.image.Image`.

Display pipeline, in the order the DICOM standard applies it (PS3.4 N.2):

1. decode the pixel data (pydicom with the pylibjpeg / pyjpegls plugins:
   uncompressed, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000);
2. Modality LUT or Rescale Slope/Intercept (:func:`pydicom.pixels.apply_modality_lut`);
3. VOI LUT, else Window Center/Width (:func:`pydicom.pixels.apply_voi_lut`), and the
   result divided by that transform's output range; when the file has neither,
   the slice's own min..max is stretched to [0, 1];
4. MONOCHROME1 ("white is zero", most CR/DX radiographs) inverted, so bone is bright.

Enhanced (multi-frame) files keep rescale, window and spacing in functional
groups; the frame's own group wins over the shared one. Colour images
(RGB, YBR, PALETTE COLOR) are converted to luminance, with a note in ``meta``.

Spacing is ``PixelSpacing`` (``meta['spacing_kind'] = 'patient'``), else
``ImagerPixelSpacing`` (``'detector'``: measured at the detector plane, so
anatomy is magnified), else None. Zero or missing spacing is None, never 1.0.
No patient name, ID or birth date is copied into ``meta``.
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    pixel_array,
)

from cervkit.core.errors import CervkitInputError
from cervkit.core.image import Image

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ""}
_MONO = {"MONOCHROME1", "MONOCHROME2"}
_GROUP_KEYS = {  # functional group sequence -> attributes copied into the frame view
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
    "PixelMeasuresSequence": ("PixelSpacing",),
}


def has_dicom_preamble(path: str | PathLike[str]) -> bool:
    """Return True when the file has the 128-byte preamble followed by ``DICM``.

    Parameters
    ----------
    path : str or PathLike
        Any file (an unreadable one gives False).

    Returns
    -------
    bool
        Whether the DICOM preamble is there.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: Path, *, stop_before_pixels: bool) -> Dataset:
    """Read a dataset, falling back to ``force=True`` for files without preamble."""
    force = not has_dicom_preamble(path)
    try:
        ds = pydicom.dcmread(path, force=force, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CervkitInputError(f"not a readable DICOM file ({exc})", path) from exc
    if force and "Rows" not in ds and "PixelData" not in ds:
        raise CervkitInputError("not a DICOM file (no DICOM header found)", path)
    return ds


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """Return a small dataset with the pixel module plus the frame's functional groups."""
    view = Dataset()
    for keyword in ("PhotometricInterpretation", "BitsStored", "BitsAllocated",
                    "PixelRepresentation", "SamplesPerPixel", "ModalityLUTSequence",
                    "VOILUTSequence", "RescaleSlope", "RescaleIntercept", "RescaleType",
                    "WindowCenter", "WindowWidth", "VOILUTFunction", "PixelSpacing",
                    "ImagerPixelSpacing"):
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta
    groups = [ds.get("SharedFunctionalGroupsSequence")]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append([per_frame[frame]])
    for group in groups:  # per-frame last, so it wins
        if not group:
            continue
        for seq_name, keys in _GROUP_KEYS.items():
            seq = group[0].get(seq_name)
            if seq:
                for key in keys:
                    if key in seq[0]:
                        setattr(view, key, seq[0][key].value)
    return view


def _spacing(view: Dataset, meta: dict[str, Any]) -> tuple[float, float] | None:
    """Return (row, col) spacing in mm and record its kind in ``meta``."""
    for keyword, kind in (("PixelSpacing", "patient"), ("ImagerPixelSpacing", "detector")):
        value = view.get(keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            meta["notes"].append(f"{keyword} {value!r} is not two numbers; ignored")
            continue
        if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
            meta["spacing_kind"] = kind
            if kind == "detector":
                meta["notes"].append(
                    "spacing from ImagerPixelSpacing: measured at the detector plane, "
                    "anatomy is magnified (distances in mm overestimate true size)")
            return (row, col)
        meta["notes"].append(f"{keyword} is {row}/{col}; spacing unknown")
    meta["spacing_kind"] = None
    return None


def _first(value: Any) -> float:
    """Return the first number of a possibly multi-valued DICOM element."""
    return float(value[0] if isinstance(value, list | MultiValue) else value)


def _widen_8bit_voi_lut(view: Dataset) -> None:
    """Declare an 8-bit VOI LUT with more than 256 entries as 16-bit, in ``view`` only.

    pydicom 3.0 builds the LUT index array in the LUT's own dtype, so with
    8-bit entries indices above 255 wrap around; the entry values are the same
    either way.
    """
    item = view.VOILUTSequence[0]
    descriptor = [int(v) for v in item.LUTDescriptor]
    if descriptor[2] == 8 and (descriptor[0] or 2**16) > 256:
        copy = Dataset()
        for element in item:
            copy.add(element)
        copy.add_new(0x00283002, item["LUTDescriptor"].VR, [descriptor[0], descriptor[1], 16])
        view.VOILUTSequence = [copy]


def _output_range(view: Dataset) -> tuple[float, float]:
    """Return the (low, high) output range of the dataset's VOI LUT or window."""
    if view.get("VOILUTSequence"):
        item = view.VOILUTSequence[0]
        entries = int(item.LUTDescriptor[0]) or 2**16
        probe = np.arange(int(item.LUTDescriptor[1]), int(item.LUTDescriptor[1]) + entries)
        out = apply_voi_lut(probe, view)
    else:  # windowing: send extreme values through the same function
        with np.errstate(over="ignore"):
            out = apply_voi_lut(np.array([-1e30, 1e30]), view)
    return float(np.min(out)), float(np.max(out))


def _to_unit(raw: np.ndarray, view: Dataset, ds: Dataset, meta: dict[str, Any]) -> np.ndarray:
    """Apply modality LUT, VOI LUT/window (or min..max) and inversion; return [0, 1]."""
    photometric = str(view.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3 or photometric not in _MONO:
        from skimage.color import rgb2gray

        if photometric == "PALETTE COLOR":
            raw = apply_color_lut(raw, ds)
        peak = float(2 ** int(view.get("BitsStored", 8)) - 1)
        if raw.dtype.kind == "u" and raw.max() > peak:
            peak = float(np.iinfo(raw.dtype).max)
        meta["notes"].append(f"colour image ({photometric}) converted to gray luminance")
        meta["intensity"], meta["inverted"] = "colour", False
        return np.clip(rgb2gray(raw[..., :3].astype(np.float64) / peak), 0.0, 1.0)
    y = apply_modality_lut(raw, view)
    meta["intensity"] = "minmax"
    lo, hi = float(np.min(y)), float(np.max(y))
    if view.get("VOILUTSequence") or ("WindowCenter" in view and "WindowWidth" in view):
        try:
            if view.get("VOILUTSequence"):
                _widen_8bit_voi_lut(view)
                if y.dtype.kind == "f" and np.all(y == np.rint(y)):
                    y = y.astype(np.int64)
            windowed = np.asarray(apply_voi_lut(y, view))
            lo, hi = _output_range(view)
            y = windowed
            meta["intensity"] = "voi_lut" if view.get("VOILUTSequence") else "window"
        except (ValueError, TypeError, IndexError, NotImplementedError) as exc:
            meta["notes"].append(f"VOI LUT/window unusable ({exc}); min..max used")
    if meta["intensity"] == "window":
        meta["window"] = (_first(view.WindowCenter), _first(view.WindowWidth))
    unit = (np.asarray(y, np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(y.shape)
    unit = np.clip(unit, 0.0, 1.0)
    meta["inverted"] = photometric == "MONOCHROME1"
    return 1.0 - unit if meta["inverted"] else unit


def _n_frames(ds: Dataset) -> int:
    """Return NumberOfFrames (1 when absent or invalid)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _pick(n: int, slice_index: int | None, path: Path, what: str) -> int:
    """Return the middle index by default, else check ``slice_index`` is in range."""
    if slice_index is None:
        return n // 2
    if not -n <= slice_index < n:
        raise CervkitInputError(
            f"slice_index {slice_index} out of range: the {what} has {n} slice(s) "
            f"(valid 0..{n - 1})", path)
    return slice_index % n


def _base_meta(ds: Dataset, path: Path) -> dict[str, Any]:
    """Return the non-identifying provenance of a dataset."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    sop = ds.get("SOPClassUID")
    return {
        "source": str(path), "format": "dicom", "modality": ds.get("Modality"),
        "photometric": ds.get("PhotometricInterpretation"),
        "transfer_syntax": syntax.name if syntax is not None else None,
        "transfer_syntax_uid": str(syntax) if syntax is not None else None,
        "sop_class": sop.name if sop is not None else None,
        "rows": ds.get("Rows"), "cols": ds.get("Columns"),
        "bits_stored": ds.get("BitsStored"),
        "series_description": ds.get("SeriesDescription"),
        "series_number": ds.get("SeriesNumber"),
        "body_part": ds.get("BodyPartExamined"),
        "notes": [],
    }


def _image_from(ds: Dataset, path: Path, frame: int, n_frames: int,
                meta: dict[str, Any]) -> Image:
    """Decode one frame of ``ds`` and run the display pipeline."""
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise CervkitInputError(
            f"DICOM file holds no pixel data (SOP class {meta['sop_class']}); not an image", path)
    try:
        raw = pixel_array(ds, index=frame if n_frames > 1 else None)
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise CervkitInputError(
            f"cannot decode pixel data ({meta['transfer_syntax']}): {exc}", path) from exc
    view = _frame_view(ds, frame)
    unit = _to_unit(raw, view, ds, meta)
    spacing = _spacing(view, meta)
    return Image(unit.astype(np.float32), spacing, meta)


def read_dicom(path: str | PathLike[str], *, slice_index: int | None = None) -> Image:
    """Read one DICOM file (single- or multi-frame) as an :class:`Image`.

    Parameters
    ----------
    path : str or PathLike
        The file; a preamble is not required.
    slice_index : int, optional
        Frame of a multi-frame file (0-based; negative counts from the end).
        Default: the middle frame. A single-frame file accepts 0 or None.

    Returns
    -------
    Image
        float32 in [0, 1], spacing (row, col) mm or None, and provenance ``meta``.

    Raises
    ------
    CervkitInputError
        Missing, non-DICOM, truncated or undecodable file, no pixel data, or
        ``slice_index`` out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise CervkitInputError("file not found", path)
    ds = _read_header(path, stop_before_pixels=False)
    n_frames = _n_frames(ds)
    frame = _pick(n_frames, slice_index, path, "file")
    meta = _base_meta(ds, path)
    meta.update(n_frames=n_frames, slice_index=frame, n_slices=n_frames)
    return _image_from(ds, path, frame, n_frames, meta)


def _sort_key_info(headers: list[tuple[Path, Dataset]]) -> tuple[list[int], str]:
    """Return the order of the series' files and what decided it."""
    numbers = [h.get("InstanceNumber") for _, h in headers]
    if all(n is not None for n in numbers) and len(set(map(int, numbers))) == len(numbers):
        return sorted(range(len(headers)), key=lambda i: int(numbers[i])), "InstanceNumber"
    keys: list[float] = []
    for _, h in headers:
        pos, ori = h.get("ImagePositionPatient"), h.get("ImageOrientationPatient")
        if pos is None or ori is None:
            break
        normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
        keys.append(float(np.dot(normal, np.asarray(pos, float))))
    if len(keys) == len(headers) and len(set(keys)) == len(keys):
        return sorted(range(len(headers)), key=lambda i: keys[i]), "ImagePositionPatient"
    return sorted(range(len(headers)), key=lambda i: headers[i][0].name), "file name"


def read_dicom_series(folder: str | PathLike[str], *, slice_index: int | None = None) -> Image:
    """Read one slice of the single DICOM series stored in ``folder``.

    Files are ordered by InstanceNumber when every file has a distinct one,
    else by position along the slice normal (ImagePositionPatient projected on
    the ImageOrientationPatient normal), else by file name. Files that are not
    DICOM images (e.g. ``DICOMDIR``, notes) are skipped.

    Parameters
    ----------
    folder : str or PathLike
        A folder holding the files of one series (not searched recursively).
    slice_index : int, optional
        Position in that order (0-based, negative from the end); default middle.

    Returns
    -------
    Image
        The chosen slice; ``meta`` adds ``n_slices``, ``slice_index``,
        ``slice_file`` and ``sorted_by``.

    Raises
    ------
    CervkitInputError
        No DICOM images in the folder, several series (they are named), or
        ``slice_index`` out of range.
    """
    folder = Path(folder)
    headers: list[tuple[Path, Dataset]] = []
    skipped = 0
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        if not (has_dicom_preamble(file) or file.suffix.lower() in DICOM_SUFFIXES):
            skipped += 1
            continue
        try:
            header = _read_header(file, stop_before_pixels=True)
        except CervkitInputError:
            skipped += 1
            continue
        if "Rows" in header and "Columns" in header:
            headers.append((file, header))
        else:
            skipped += 1
    if not headers:
        raise CervkitInputError("folder holds no DICOM images", folder)
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    for item in headers:
        series.setdefault(str(item[1].get("SeriesInstanceUID", "?")), []).append(item)
    if len(series) > 1:
        names = "; ".join(
            f"series #{items[0][1].get('SeriesNumber', '?')} "
            f"'{items[0][1].get('SeriesDescription', '')}' ({len(items)} file(s), UID {uid})"
            for uid, items in series.items())
        raise CervkitInputError(
            f"folder holds {len(series)} DICOM series, expected one: {names}; "
            "pass one series' folder or a single file", folder)
    if len(headers) == 1:
        image = read_dicom(headers[0][0], slice_index=slice_index)
        image.meta.update(series_folder=str(folder), slice_file=headers[0][0].name)
        return image
    if any(_n_frames(h) > 1 for _, h in headers):
        raise CervkitInputError(
            "folder holds several multi-frame DICOM files; pass one file", folder)
    order, sorted_by = _sort_key_info(headers)
    position = _pick(len(order), slice_index, folder, "series")
    file = headers[order[position]][0]
    image = read_dicom(file)
    image.meta.update(source=str(folder), slice_file=file.name, n_slices=len(order),
                      slice_index=position, sorted_by=sorted_by, n_files_skipped=skipped)
    return image
