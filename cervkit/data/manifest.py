"""Manifests: the CSV listing images, masks, patients and modalities (the public API).

Schema (paths relative to the CSV's folder)::

    required  image, mask, patient_id, modality (XR | MRI)
    optional  split (train | val | test), fold, pixel_spacing_mm, source, license, sha256
    any other column is kept, in its place, through load and save

Typical use::

    m = load_manifest("data/manifest.csv")            # validated: every problem at once
    m = ensure_split("data/manifest.csv", "outputs/manifest_split.csv")  # one split for all runs
    train = m.subset("train")
    for tr, va in kfold_splits(train, 5): ...

The pieces live in :mod:`cervkit.data.table` (the table, CSV read/write),
:mod:`cervkit.data.checks` (validation, leak checks) and :mod:`cervkit.data.split`
(patient-level split, folds); they are all importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from cervkit.core.config import data_dir, outputs_dir
from cervkit.core.errors import CervkitInputError, ManifestError
from cervkit.data.checks import (
    check_no_leak,
    ensure_valid,
    leak_problems,
    read_size,
    validate_manifest,
)
from cervkit.data.split import (
    assign_folds,
    kfold_splits,
    largest_remainder,
    split_by_patient,
    summary,
)
from cervkit.data.table import (
    MODALITIES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SPLITS,
    Manifest,
    ManifestRow,
    manifest_from_records,
    parse_spacing,
    read_manifest,
    save_manifest,
)

__all__ = [
    "MODALITIES", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "SPLITS", "Manifest", "ManifestRow",
    "assign_folds", "check_no_leak", "default_split_path", "ensure_split", "ensure_valid", "kfold_splits",
    "largest_remainder", "leak_problems", "load_manifest", "manifest_from_records",
    "parse_spacing", "read_manifest", "read_size", "save_manifest", "split_by_patient",
    "summary", "validate_manifest",
]


def load_manifest(path: str | PathLike[str], *, validate: bool = True, check_files: bool = True,
                  check_sha256: bool = False) -> Manifest:
    """Read a manifest CSV and (by default) validate it.

    Parameters
    ----------
    path : str or PathLike
        The CSV file; its folder is the root of the relative paths in it.
    validate : bool, default True
        Run :func:`validate_manifest` and raise on any problem.
    check_files : bool, default True
        With ``validate``: check that files exist, image/mask sizes match and
        masks are not empty (decodes every mask: about 0.1 s per 100 small PNGs).
    check_sha256 : bool, default False
        With ``validate``: hash every image and compare with the ``sha256`` column.

    Returns
    -------
    Manifest
        The table (columns and values as in the file), ``path`` and ``root`` set.

    Raises
    ------
    CervkitInputError
        Missing, empty or unparseable CSV.
    ManifestError
        ``validate`` and at least one problem (all of them are listed).
    """
    manifest = read_manifest(path)
    if validate:
        ensure_valid(manifest, check_files=check_files, check_sizes=check_files,
                     check_empty_masks=check_files, check_sha256=check_sha256)
    return manifest


def same_split(a: Manifest, b: Manifest) -> bool:
    """True when both list the same images (resolved) with the same split.

    Parameters
    ----------
    a, b : Manifest
        ``a`` with a ``split`` column; ``b`` may lack one (then False).

    Returns
    -------
    bool
    """
    def pairs(m: Manifest) -> list[tuple[str, str]]:
        return sorted((str(m.image_path(i)), str(m.df["split"].iloc[i])) for i in range(len(m)))
    return "split" in b.df.columns and pairs(a) == pairs(b)


def default_split_path(manifest_path: Path) -> Path:
    """Where :func:`ensure_split` writes a split by default.

    Parameters
    ----------
    manifest_path : pathlib.Path
        The source manifest.

    Returns
    -------
    pathlib.Path
        ``<stem>_split.csv`` beside it, except for manifests inside the shared data
        folder (``CERVKIT_DATA_DIR``): ``outputs/splits/<folder>_<stem>_split.csv``.
    """
    src = Path(manifest_path).resolve()
    shared = data_dir()
    if shared is not None and src.is_relative_to(shared):
        return outputs_dir() / "splits" / f"{src.parent.name}_{src.stem}_split.csv"
    return src.with_name(f"{src.stem}_split.csv")


def ensure_split(manifest_path: str | PathLike[str], out_path: str | PathLike[str] | None = None, *,
                 seed: int = 0, ratios: Sequence[float] = (0.6, 0.2, 0.2),
                 stratify_by: str | None = "modality", overwrite: bool = False) -> Manifest:
    """Return a manifest with a patient-level split, computing and saving it once.

    If the manifest already has a ``split`` column it is used as it is (after
    checking its values and that no patient is in two parts). Otherwise the
    split is computed with :func:`split_by_patient` and written to ``out_path``
    (default ``<stem>_split.csv`` beside the manifest, or under
    ``outputs/splits/`` for a manifest inside ``CERVKIT_DATA_DIR``, which
    cervkit never writes into), so every notebook and
    run uses the same one; its paths are rewritten relative to where it is
    written, so it may live in another (writable) folder. If that file already
    exists it is reused when it holds exactly the split this call computes.

    Parameters
    ----------
    manifest_path : str or PathLike
        The manifest CSV.
    out_path : str or PathLike, optional
        Where to write the split manifest (e.g. under ``outputs/`` when the
        data folder is read-only).
    seed : int, default 0
        Seed of :func:`split_by_patient`.
    ratios : sequence of 3 float, default (0.6, 0.2, 0.2)
        Train/val/test proportions of patients.
    stratify_by : str or None, default "modality"
        Split each modality's patients separately.
    overwrite : bool, default False
        Replace an existing split file that holds another split.

    Returns
    -------
    Manifest
        The split manifest, as loaded back from the file it was read from or written to.

    Raises
    ------
    ManifestError
        Problems in the manifest, a leaked patient, or an existing split file
        that holds another split (another seed, ratios or edited) without ``overwrite``.
    CervkitInputError
        The split file cannot be written (e.g. a read-only data folder: pass ``out_path``).
    """
    source = load_manifest(manifest_path)
    if "split" in source.df.columns:
        check_no_leak(source)
        return source
    split = split_by_patient(source, ratios, seed=seed, stratify_by=stratify_by)
    src = Path(manifest_path)
    target = Path(out_path) if out_path is not None else default_split_path(src)
    if target.exists() and not overwrite:
        existing = load_manifest(target)
        if same_split(split, existing):
            return existing
        raise ManifestError([f"{target} exists and holds another split than seed={seed}, "
                             f"ratios={tuple(ratios)} gives; pass overwrite=True to replace it "
                             "or choose another out_path"], target)
    try:
        save_manifest(split, target, overwrite=overwrite)
    except OSError as exc:  # PermissionError, read-only file system …
        if isinstance(exc, (FileExistsError, IsADirectoryError)):
            raise
        raise CervkitInputError(f"cannot write the split manifest ({exc}); pass out_path= "
                                "a file in a writable folder", target) from exc
    written = load_manifest(target)
    if not same_split(split, written):  # a bug, not a user error: the file must read back unchanged
        raise ManifestError([f"{target} did not read back with the split just written"], target)
    return written
