"""Reading images and label masks; writing PNG and NIfTI.

Readers
    :func:`read_image` returns an :class:`~cervkit.core.image.Image` (float32 in [0, 1])
    from DICOM files or single-series DICOM folders (see :mod:`cervkit.io.dicom`),
    PNG / JPEG / BMP / TIFF (scaled by the dtype range: 8-bit / 255, 16-bit /
    65535, floats clipped; colour converted to luminance) or a 2D NIfTI image.
    :func:`read_mask` returns a uint8 label map from PNG / TIFF / BMP or NIfTI.

NIfTI
    One 2D slice, stored (x=col, y=row) as ITK-SNAP writes it, so arrays are
    transposed on the way in and out; see :mod:`cervkit.io.nifti`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path
from cervkit.core.image import Image
from cervkit.io.nifti import (
    is_nifti_path,
    read_nifti_slice,
    read_nifti_spacing,
    to_label_map,
    write_nifti,
)
from cervkit.io.resize import resize_image

__all__ = [
    "binarize", "read_image", "read_mask", "read_nifti_spacing", "resize_image",
    "write_nifti", "write_png",
]

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
TIFF_SUFFIXES = {".tif", ".tiff"}


def _unit_from_dtype(arr: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """Scale an array to [0, 1] float64 by its dtype's range (floats are clipped)."""
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        return (arr.astype(np.float64) - info.min) / (float(info.max) - info.min)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise CervkitInputError("image holds NaN or infinite values", path)
        if arr.min() < 0 or arr.max() > 1:
            notes.append("float image outside [0, 1]; clipped")
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise CervkitInputError(f"unsupported pixel type {arr.dtype}", path)


def _to_gray(arr: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """Return a 2D [0, 1] array from gray, gray+alpha, RGB or RGBA pixels."""
    unit = _unit_from_dtype(arr, path, notes)
    if unit.ndim == 2:
        return unit
    if unit.ndim == 3 and unit.shape[-1] in (2, 3, 4):
        if unit.shape[-1] in (2, 4):
            notes.append("alpha channel ignored")
        if unit.shape[-1] == 2:
            return unit[..., 0]
        from skimage.color import rgb2gray

        notes.append("colour image converted to gray luminance")
        return rgb2gray(unit[..., :3])
    raise CervkitInputError(
        f"a 3D volume (shape {arr.shape}) where a 2D image is needed; save one slice", path)


def _pillow_array(path: Path, *, keep_palette: bool = False) -> tuple[np.ndarray, str]:
    """Return the pixels of a Pillow-readable file and its mode.

    Palette images are expanded to RGB(A) unless ``keep_palette`` (then the
    palette indices are returned, as label masks need).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise CervkitInputError(
                    f"holds {im.n_frames} frames/pages; a 2D image is needed", path)
            mode = im.mode
            if mode in ("P", "PA") and not keep_palette:
                im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, CervkitInputError):
            raise
        raise CervkitInputError(f"not a readable image ({exc})", path) from exc
    if mode == "I" and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # 16-bit gray as older Pillow versions return it
    return arr, mode


def _tiff_array(path: Path) -> np.ndarray:
    """Return the pixels of a TIFF file, inverted when stored min-is-white."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.asarray()
            axes = tif.series[0].axes
            photometric = tif.pages[0].photometric
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise CervkitInputError(f"not a readable TIFF image ({exc})", path) from exc
    if arr.ndim == 3 and axes.startswith("S"):  # colour stored as separate planes
        arr = np.moveaxis(arr, 0, -1)
    arr = np.squeeze(arr) if arr.ndim > 2 and arr.shape[0] == 1 else arr
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE and arr.dtype.kind in "ui":
        arr = np.iinfo(arr.dtype).max - arr
    return arr


def read_image(path: str | PathLike[str], *, slice_index: int | None = None) -> Image:
    """Read a 2D image as float32 in [0, 1] with spacing and provenance.

    Parameters
    ----------
    path : str or PathLike
        DICOM file (found by extension ``.dcm``/``.dicom``/``.ima``/none or by
        its ``DICM`` preamble), a folder holding one DICOM series, PNG, JPEG,
        BMP, TIFF, or a 2D NIfTI file.
    slice_index : int, optional
        For a multi-frame DICOM file or a series folder: the slice to return
        (0-based, negative from the end); default the middle one. Ignored by
        single-slice formats except that a value other than 0/-1/None errors.

    Returns
    -------
    Image
        ``array`` float32 (H, W) in [0, 1]; ``spacing_mm`` (row, col) or None;
        ``meta`` with ``source``, ``format``, ``spacing_kind``, ``notes`` …

    Raises
    ------
    CervkitInputError
        Missing, unreadable or unsupported file, a 3D volume, pixel-less DICOM,
        several series in a folder, or ``slice_index`` out of range.
    """
    from cervkit.io.dicom import (
        DICOM_SUFFIXES,
        has_dicom_preamble,
        read_dicom,
        read_dicom_series,
    )

    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, slice_index=slice_index)
    if not path.is_file():
        raise CervkitInputError("file not found", path)
    suffix = path.suffix.lower()
    if has_dicom_preamble(path) or (suffix in DICOM_SUFFIXES and not is_nifti_path(path)):
        return read_dicom(path, slice_index=slice_index)
    if slice_index not in (None, 0, -1):
        raise CervkitInputError(f"slice_index {slice_index} given for a single 2D image", path)
    notes: list[str] = []
    spacing = None
    if suffix in PILLOW_SUFFIXES | TIFF_SUFFIXES:
        arr = _tiff_array(path) if suffix in TIFF_SUFFIXES else _pillow_array(path)[0]
        fmt = "tiff" if suffix in TIFF_SUFFIXES else suffix.lstrip(".").replace("jpeg", "jpg")
        unit = _to_gray(arr, path, notes)
    elif is_nifti_path(path):
        arr, _ = read_nifti_slice(path)
        fmt = "nifti"
        data = arr.astype(np.float64)
        lo, hi = float(data.min()), float(data.max())
        unit = (data - lo) / (hi - lo) if hi > lo else np.zeros_like(data)
        notes.append("NIfTI intensities stretched from min..max to [0, 1]")
        spacing = read_nifti_spacing(path)
    else:
        raise CervkitInputError(
            f"unsupported file type {suffix!r}; use DICOM, PNG, JPEG, BMP, TIFF or NIfTI", path)
    meta: dict[str, Any] = {
        "source": str(path), "format": fmt, "modality": None, "photometric": "MONOCHROME2",
        "dtype": str(arr.dtype), "rows": int(unit.shape[0]), "cols": int(unit.shape[1]),
        "spacing_kind": "patient" if spacing is not None else None, "notes": notes,
    }
    return Image(unit.astype(np.float32), spacing, meta)


def read_mask(path: str | PathLike[str]) -> np.ndarray:
    """Read a label map: 0 background, 1..K one structure each.

    Values are returned as stored (a binary mask saved as 0/255 stays 0/255;
    use :func:`binarize`). Palette PNGs give their palette indices.

    Parameters
    ----------
    path : str or PathLike
        PNG (8/16-bit), BMP, TIFF, or NIfTI ``.nii``/``.nii.gz`` holding one 2D
        slice (see the module docstring for the axis convention).

    Returns
    -------
    numpy.ndarray
        uint8 (H, W).

    Raises
    ------
    CervkitInputError
        Missing or unreadable file, colour mask whose channels differ, values
        outside 0..255 or not integers, a 3D volume, JPEG (lossy) or another
        unsupported type.
    """
    path = Path(path)
    if not path.is_file():
        raise CervkitInputError("file not found", path)
    suffix = path.suffix.lower()
    if is_nifti_path(path):
        return to_label_map(read_nifti_slice(path)[0], path)
    if suffix in (".jpg", ".jpeg"):
        raise CervkitInputError("JPEG is lossy and corrupts label values; save masks as PNG", path)
    if suffix in PILLOW_SUFFIXES:
        arr = _pillow_array(path, keep_palette=True)[0]
    elif suffix in TIFF_SUFFIXES:
        arr = _tiff_array(path)
    else:
        raise CervkitInputError(
            f"unsupported mask file type {suffix!r}; use PNG, TIFF or NIfTI", path)
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        if not np.all(colour == colour[..., :1]):
            raise CervkitInputError(
                "colour mask with differing channels; save a single-channel label map "
                "(0 background, 1..K one vertebra each)", path)
        arr = colour[..., 0]
    if arr.ndim != 2:
        raise CervkitInputError(f"mask of shape {arr.shape} is not a 2D label map", path)
    return to_label_map(arr, path)


def binarize(mask: np.ndarray) -> np.ndarray:
    """Return a boolean foreground mask (any non-zero label is foreground).

    Parameters
    ----------
    mask : numpy.ndarray
        A label map (any integer/bool/float dtype).

    Returns
    -------
    numpy.ndarray
        bool array of the same shape.
    """
    return np.asarray(mask) != 0


def _png_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Convert an array to what PNG stores: uint8 (gray/RGB/RGBA) or uint16 gray."""
    arr = np.asarray(array)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise CervkitInputError(f"cannot write shape {arr.shape} as PNG: need (H, W) or "
                                "(H, W, 3|4)", path)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise CervkitInputError("float images must hold finite values in [0, 1]", path)
        return np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    if arr.dtype in (np.uint8, np.uint16):
        if arr.dtype == np.uint16 and arr.ndim == 3:
            raise CervkitInputError("16-bit colour PNG is not supported; use uint8", path)
        return arr
    if arr.dtype.kind in "ui" and arr.size and arr.min() >= 0:
        if arr.max() <= 255:
            return arr.astype(np.uint8)
        if arr.max() <= 65535 and arr.ndim == 2:
            return arr.astype(np.uint16)
    raise CervkitInputError(f"cannot write {arr.dtype} values as PNG", path)


def write_png(path: str | PathLike[str], array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an image or label map as PNG, atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination ending in ``.png``; parent folders are created.
    array : numpy.ndarray
        float image in [0, 1] (written 8-bit, rounded), uint8 (gray label map,
        RGB or RGBA, as is), uint16 (16-bit gray), bool (0/1), or other integer
        arrays whose values fit 8 or 16 bits.
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    CervkitInputError
        Wrong suffix, shape, or values that PNG cannot hold.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    from PIL import Image as PILImage

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CervkitInputError("write_png needs a file name ending in .png", path)
    data = _png_array(array, path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        PILImage.fromarray(data).save(tmp, format="PNG")
    return path
