"""Offline expansion of a manifest with the paper's augmentations (training split only).

:func:`expand_dataset` writes ``factor`` augmented copies of every training row
(PNG image + PNG label map) and a new manifest listing the original rows and the
copies. Only rows whose ``split`` is in ``splits`` (default ``("train",)``) are
augmented: validation and test rows are listed unchanged, so no augmented copy of
a validation or test patient can leak into training. Each copy keeps its source
row's ``patient_id`` and ``split`` and names its source in ``augmented_from``,
so a later patient-level split keeps the copies with their patient.

The manifest is read with pandas (paths relative to the manifest's folder, absolute
paths also accepted); images and masks with :func:`cervkit.io.images.read_image` and
:func:`cervkit.io.images.read_mask` (any format they support). Copies are written as PNG,
8-bit when the source image was 8-bit, else 16-bit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes, check_writable, sha256_file
from cervkit.io.images import read_image, read_mask, write_png
from cervkit.transforms.augment import augment_sample, item_seed, paper_pipeline

if TYPE_CHECKING:  # pragma: no cover
    import albumentations as A

MANIFEST_NAME = "manifest.csv"


def _relative(target: Path, start: Path) -> str:
    """``target`` relative to ``start`` (POSIX separators), or absolute when impossible."""
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # another drive on Windows
        return target.as_posix()


def expand_dataset(manifest_csv: str | PathLike[str], out_dir: str | PathLike[str], *, factor: int = 24,
                   seed: int = 0, splits: Sequence[str] | None = ("train",),
                   transform: A.BasicTransform | A.BaseCompose | None = None,
                   include_originals: bool = True, overwrite: bool = False) -> Path:
    """Write ``factor`` augmented copies of each training row and a manifest listing them.

    Parameters
    ----------
    manifest_csv : str or PathLike
        Source manifest (columns ``image``, ``mask``, ``patient_id`` at least).
    out_dir : str or PathLike
        Output folder: ``images/``, ``masks/`` and ``manifest.csv`` are written there.
    factor : int, default 24
        Augmented copies per training row.
    seed : int, default 0
        Copy ``k`` of row ``i`` uses the seed :func:`cervkit.transforms.augment.item_seed` ``(seed, i, k)``.
    splits : sequence of str or None, default ("train",)
        Splits to augment (rows need a ``split`` column). None augments every row;
        use it only for a manifest that holds training data alone.
    transform : albumentations transform, optional
        Default :func:`cervkit.transforms.augment.paper_pipeline` (each augmentation with p = 0.5).
    include_originals : bool, default True
        List the source rows too (paths rewritten relative to ``out_dir``, nothing copied),
        so the new manifest is a complete dataset.
    overwrite : bool, default False
        Replace existing files; otherwise raise FileExistsError before any work.

    Returns
    -------
    pathlib.Path
        The written manifest (``out_dir / "manifest.csv"``).

    Notes
    -----
    ``pixel_spacing_mm`` is copied from the source row; the scaling augmentation
    (±10 %) makes it approximate for the copies. ``sha256``, ``height``, ``width``
    and ``n_vertebrae`` (when present) are recomputed for the copies.
    """
    src = Path(manifest_csv)
    out = Path(out_dir).resolve()
    if factor < 1:
        raise CervkitInputError(f"factor must be >= 1, got {factor}")
    try:
        table = pd.read_csv(src, dtype={"patient_id": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CervkitInputError(f"cannot read manifest: {exc}", src) from exc
    missing = [c for c in ("image", "mask", "patient_id") if c not in table.columns]
    if missing:
        raise CervkitInputError(f"manifest lacks column(s) {', '.join(missing)}", src)
    if splits is not None and "split" not in table.columns:
        raise CervkitInputError("manifest has no 'split' column: split it by patient first, or pass "
                                "splits=None if every row is training data", src)
    check_writable(out / MANIFEST_NAME, overwrite)
    pipe = transform if transform is not None else paper_pipeline(p=0.5)
    wanted = None if splits is None else {str(s) for s in splits}
    root = src.resolve().parent
    rows: list[dict[str, object]] = []
    for i, row in table.iterrows():
        image_path = (root / str(row["image"])).resolve()
        mask_path = (root / str(row["mask"])).resolve()
        base = dict(row)
        base["image"], base["mask"] = _relative(image_path, out), _relative(mask_path, out)
        base["augmented_from"] = str(row["augmented_from"]) if "augmented_from" in table.columns else ""
        if include_originals:
            rows.append(base)
        if wanted is not None and str(row["split"]) not in wanted:
            continue
        source = read_image(image_path)
        image, deep = source.array, str(source.meta.get("dtype", "uint8")) not in ("uint8", "bool")
        labels = read_mask(mask_path)
        if image.shape != labels.shape:
            raise CervkitInputError(f"image {image.shape} and mask {labels.shape} differ in shape", mask_path)
        stem = f"r{int(i):05d}_{Path(str(row['image'])).stem}"  # the row number keeps names unique
        for k in range(factor):
            sample = augment_sample(image, labels, transform=pipe, seed=item_seed(seed, int(i), k))
            pixels = np.round(sample.image * (65535.0 if deep else 255.0)).astype(np.uint16 if deep else np.uint8)
            name = f"{stem}_aug{k:03d}.png"
            img_out = write_png(out / "images" / name, pixels, overwrite=overwrite)
            write_png(out / "masks" / name, sample.labels, overwrite=overwrite)
            copy = dict(base)
            copy.update(image=f"images/{name}", mask=f"masks/{name}", augmented_from=base["image"])
            if "sha256" in table.columns:
                copy["sha256"] = sha256_file(img_out)
            if "height" in table.columns and "width" in table.columns:
                copy["height"], copy["width"] = sample.image.shape
            if "n_vertebrae" in table.columns:
                copy["n_vertebrae"] = int(sample.labels.max())
            rows.append(copy)
    columns = [*table.columns] + ([] if "augmented_from" in table.columns else ["augmented_from"])
    result = pd.DataFrame(rows, columns=columns)
    return atomic_write_bytes(out / MANIFEST_NAME, result.to_csv(index=False).encode("utf-8"),
                              overwrite=overwrite)
