"""NIfTI label maps and images: one 2D slice, ITK-SNAP's axis convention.

NIfTI stores voxel ``data[i, j, k]`` with ``i`` along x (image columns) and
``j`` along y (image rows), which is how ITK-SNAP (and any ITK tool) writes a
segmentation drawn on a PNG or DICOM slice. So :func:`cervkit.io.images.read_mask`
returns ``data[:, :, 0].T`` and :func:`write_nifti` stores
``labels.T[:, :, None]``: a label at (row, col) of the image is at (row, col)
of the array read back. The voxel grid is never reoriented by the affine.
:func:`write_nifti` writes the affine ITK would, ``diag(-col_mm, -row_mm, 1)``
(ITK's LPS to NIfTI's RAS), so the file overlays the source image in ITK-SNAP.
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_UNITS_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}


def is_nifti_path(path: Path) -> bool:
    """Return True for ``.nii`` / ``.nii.gz`` names (any case).

    Parameters
    ----------
    path : pathlib.Path
        A file name.

    Returns
    -------
    bool
        Whether the name ends in a NIfTI suffix.
    """
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def to_label_map(arr: np.ndarray, path: str | PathLike[str] | None = None) -> np.ndarray:
    """Check that ``arr`` holds integers in 0..255 and return it as uint8.

    Parameters
    ----------
    arr : numpy.ndarray
        bool, integer or integral-float label values.
    path : str or PathLike, optional
        The file the values came from, named in errors.

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.

    Raises
    ------
    CervkitInputError
        Non-integer, non-finite, negative or > 255 values, or a non-numeric dtype.
    """
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.rint(arr)):
            raise CervkitInputError("mask holds non-integer values; labels must be integers", path)
    elif arr.dtype.kind not in "ui":
        raise CervkitInputError(f"unsupported mask pixel type {arr.dtype}", path)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise CervkitInputError(
            f"mask values span {arr.min()}..{arr.max()}; labels must be integers 0..255", path)
    return arr.astype(np.uint8)


def read_nifti_slice(path: str | PathLike[str]) -> tuple[np.ndarray, Any]:
    """Return a NIfTI file's single 2D slice as (rows, cols), raw dtype.

    Parameters
    ----------
    path : str or PathLike
        ``.nii`` / ``.nii.gz`` holding (X, Y) or (X, Y, 1[, 1 …]).

    Returns
    -------
    data : numpy.ndarray
        ``data[:, :, 0].T``: rows along y, columns along x.
    img : nibabel.Nifti1Image
        The loaded image (header, affine).

    Raises
    ------
    CervkitInputError
        Unreadable file, or a volume with more than one slice.
    """
    import nibabel as nib

    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise CervkitInputError(f"not a readable NIfTI file ({exc})", path) from exc
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise CervkitInputError(
            f"NIfTI holds a 3D volume of shape {data.shape}; a single 2D slice "
            "(X, Y) or (X, Y, 1) is needed", path)
    return data.T, img


def write_nifti(path: str | PathLike[str], labels: np.ndarray,
                spacing_mm: tuple[float, float] | None = None, *,
                overwrite: bool = False) -> Path:
    """Write a label map as a one-slice NIfTI file, the inverse of :func:`read_mask`.

    Parameters
    ----------
    path : str or PathLike
        Destination ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).
    labels : numpy.ndarray
        (H, W) integer label map with values 0..255 (stored as uint8).
    spacing_mm : (float, float), optional
        (row, col) pixel spacing in mm, stored in pixdim and the affine with
        units mm. None stores pixdim 1 with units "unknown", which
        :func:`read_nifti_spacing` reads back as None.
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise CervkitInputError("write_nifti needs a file name ending in .nii or .nii.gz", path)
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise CervkitInputError(f"labels must be 2D (H, W), got shape {arr.shape}", path)
    data = to_label_map(arr, path).T[:, :, np.newaxis].copy()
    row, col = (1.0, 1.0) if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
    if not (row > 0 and col > 0):
        raise CervkitInputError(f"spacing_mm must be positive, got {spacing_mm}", path)
    affine = np.diag([-col, -row, 1.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm" if spacing_mm is not None else "unknown")
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    return path


def read_nifti_spacing(path: str | PathLike[str]) -> tuple[float, float] | None:
    """Return the (row, col) pixel spacing in mm of a NIfTI file, or None.

    pixdim[1] (x, columns) and pixdim[2] (y, rows) are converted from the
    header's units to mm. With units "unknown" the values are taken as mm
    unless they are both 1.0 (the value written when nothing is known).

    Parameters
    ----------
    path : str or PathLike
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    (float, float) or None
        (row, col) in mm; None when unknown or not positive.
    """
    import nibabel as nib

    path = Path(path)
    try:
        header = nib.load(path).header
    except Exception as exc:  # nibabel raises many types for bad files
        raise CervkitInputError(f"not a readable NIfTI file ({exc})", path) from exc
    zooms = header.get_zooms()
    col, row = float(zooms[0]), float(zooms[1] if len(zooms) > 1 else zooms[0])
    unit = header.get_xyzt_units()[0]
    if unit not in _UNITS_TO_MM:
        if (row, col) == (1.0, 1.0):
            return None
        warnings.warn(f"{path}: NIfTI spatial units unknown; pixdim taken as mm", stacklevel=2)
        unit = "mm"
    if not (row > 0 and col > 0):
        return None
    scale = _UNITS_TO_MM[unit]  # pixdim is float32: keep its shortest decimal form
    return (float(str(np.float32(row))) * scale, float(str(np.float32(col))) * scale)
