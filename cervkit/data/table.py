"""The :class:`Manifest` table: one row per image, read from and written to CSV.

A manifest is a CSV whose paths are relative to the manifest's own folder.
Required columns: ``image``, ``mask``, ``patient_id``, ``modality`` (``XR`` or
``MRI``); optional: ``split`` (``train``/``val``/``test``), ``fold``,
``pixel_spacing_mm``, ``source``, ``license``, ``sha256``. Every other column is
kept, in its place, through a load/save round trip.

Reading keeps text columns as text (a patient ``"02"`` stays ``"02"``, a value
``"NA"`` stays ``"NA"``; only empty cells are missing). Other columns become
numbers when every filled cell is one: integers (without leading zeros) as
``int64`` (``Int64`` when some cells are empty, so ``33`` is not written back as
``33.0``), decimals as ``float64``. ``fold`` is always an integer column when it
holds integers. A blank ``mask`` means an unlabelled image.

Validation (:mod:`cervkit.data.checks`) and splitting and summaries (:mod:`cervkit.data.split`)
work on this table; :mod:`cervkit.data.manifest` gathers the public API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path

REQUIRED_COLUMNS = ("image", "mask", "patient_id", "modality")
OPTIONAL_COLUMNS = ("split", "fold", "pixel_spacing_mm", "source", "license", "sha256")
PATH_COLUMNS = ("image", "mask")
MODALITIES = ("XR", "MRI")
SPLITS = ("train", "val", "test")
TEXT_COLUMNS = frozenset({*REQUIRED_COLUMNS, "split", "sha256", "source", "license", "citation"})

_INT_RE = re.compile(r"^[+-]?(0|[1-9]\d*)$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_LEADING_ZERO_RE = re.compile(r"^[+-]?0\d")
_SPACING_SPLIT_RE = re.compile(r"[\\/;, x]+")


def is_blank(value: Any) -> bool:
    """Return True for a missing or empty cell.

    Parameters
    ----------
    value : Any
        A table cell (None, NaN, a string, a number ...).

    Returns
    -------
    bool
        True for None, NaN/NA or a string of whitespace.
    """
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-like cell
        return False


def parse_spacing(value: Any) -> tuple[float, float] | None:
    """Parse a ``pixel_spacing_mm`` cell into (row, col) mm.

    Parameters
    ----------
    value : Any
        One number (isotropic, e.g. ``1.0``), or two separated by ``\\``, ``/``,
        ``;``, ``,``, ``x`` or spaces (``"0.5\\0.6"``: row then column, DICOM order).

    Returns
    -------
    tuple of float or None
        (row, col) when the cell holds positive finite numbers, else None (blank or invalid).
    """
    if is_blank(value):
        return None
    parts = [p for p in _SPACING_SPLIT_RE.split(str(value).strip()) if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or not all(0 < v < float("inf") for v in numbers):
        return None
    return (numbers[0], numbers[1])


def resolve_path(value: Any, root: Path) -> Path:
    """Turn a manifest path cell into an absolute path (backslashes read as separators).

    Parameters
    ----------
    value : Any
        The cell (a relative or absolute path).
    root : pathlib.Path
        Folder relative paths start from.

    Returns
    -------
    pathlib.Path
        The normalised absolute path.
    """
    path = Path(str(value).strip().replace("\\", "/"))
    return Path(os.path.normpath(path if path.is_absolute() else root / path))


def relative_path(path: Path, folder: Path) -> str:
    """Write ``path`` relative to ``folder`` with ``/`` separators (absolute if impossible).

    Parameters
    ----------
    path : pathlib.Path
        The path to write.
    folder : pathlib.Path
        The folder it should be relative to.

    Returns
    -------
    str
        The POSIX-style relative path, or ``path`` itself on another drive.
    """
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


@dataclass
class ManifestRow:
    """One manifest row with typed fields.

    Attributes
    ----------
    index : int
        0-based position in the manifest.
    image : pathlib.Path
        Absolute image path.
    mask : pathlib.Path or None
        Absolute mask path, None for an unlabelled image (blank cell).
    patient_id : str
    modality : str
    split : str or None
    fold : int or None
    pixel_spacing_mm : tuple of float or None
        (row, col) mm from the ``pixel_spacing_mm`` column (see :func:`parse_spacing`).
    extra : dict
        Every other column, blank cells as None.
    """

    index: int
    image: Path
    mask: Path | None
    patient_id: str
    modality: str
    split: str | None = None
    fold: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """A manifest table and the folder its relative paths start from.

    Attributes
    ----------
    df : pandas.DataFrame
        One row per image, columns as in the CSV (paths as written, relative to ``root``).
    path : pathlib.Path or None
        The CSV file it was read from; None for a table built in memory or a subset.
    root : pathlib.Path
        Absolute folder the relative paths in ``df`` are relative to.
    """

    df: pd.DataFrame
    path: Path | None = None
    root: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        self.root = Path(os.path.abspath(self.root))
        if self.path is not None:
            self.path = Path(os.path.abspath(self.path))

    def __len__(self) -> int:
        return len(self.df)

    def _cell(self, i: int, column: str) -> Any:
        if column not in self.df.columns:
            raise KeyError(f"manifest has no {column!r} column")
        if not -len(self.df) <= i < len(self.df):
            raise IndexError(f"row {i} out of range for a manifest of {len(self.df)} rows")
        return self.df[column].iloc[i]

    def image_path(self, i: int) -> Path:
        """Return the absolute image path of row ``i`` (0-based position).

        Parameters
        ----------
        i : int
            0-based row position (negative counts from the end).

        Returns
        -------
        pathlib.Path
            Absolute image path.
        """
        value = self._cell(i, "image")
        if is_blank(value):
            raise CervkitInputError(f"{self.line(i)} has no image path", self.path)
        return resolve_path(value, self.root)

    def mask_path(self, i: int) -> Path | None:
        """Return the absolute mask path of row ``i``, or None when its mask cell is blank.

        Parameters
        ----------
        i : int
            0-based row position (negative counts from the end).

        Returns
        -------
        pathlib.Path or None
            Absolute mask path.
        """
        value = self._cell(i, "mask")
        return None if is_blank(value) else resolve_path(value, self.root)

    def line(self, i: int) -> str:
        """Name row ``i`` for messages: ``line N`` of the CSV (header is line 1) or ``row N``.

        Parameters
        ----------
        i : int
            0-based row position (negative counts from the end).

        Returns
        -------
        str
            ``"line N"`` for a manifest read from a file, ``"row N"`` otherwise.
        """
        return f"line {i + 2}" if self.path is not None else f"row {i + 1}"

    def row(self, i: int) -> ManifestRow:
        """Return row ``i`` (0-based position) as a typed :class:`ManifestRow`.

        Parameters
        ----------
        i : int
            0-based row position (negative counts from the end).

        Returns
        -------
        ManifestRow
            The row's typed fields.
        """
        known = set(REQUIRED_COLUMNS) | {"split", "fold", "pixel_spacing_mm"}
        cells = {c: self._cell(i, c) for c in self.df.columns}
        clean = {c: (None if is_blank(v) else (v.item() if isinstance(v, np.generic) else v))
                 for c, v in cells.items()}
        fold = clean.get("fold")
        return ManifestRow(
            index=i if i >= 0 else len(self.df) + i,
            image=self.image_path(i),
            mask=self.mask_path(i),
            patient_id="" if clean["patient_id"] is None else str(clean["patient_id"]),
            modality="" if clean["modality"] is None else str(clean["modality"]),
            split=None if clean.get("split") is None else str(clean["split"]),
            fold=int(fold) if fold is not None and _INT_RE.match(str(fold).strip()) else None,
            pixel_spacing_mm=parse_spacing(clean.get("pixel_spacing_mm")),
            extra={c: v for c, v in clean.items() if c not in known},
        )

    def rows(self) -> Iterator[ManifestRow]:
        """Iterate over the rows as typed :class:`ManifestRow` objects.

        Yields
        ------
        ManifestRow
            Each row in order.
        """
        for i in range(len(self.df)):
            yield self.row(i)

    def patients(self) -> list[str]:
        """Return the distinct patient ids, sorted.

        Returns
        -------
        list of str
            Non-blank ``patient_id`` values, each once.
        """
        return sorted({str(p) for p in self.df["patient_id"] if not is_blank(p)})

    def with_df(self, df: pd.DataFrame) -> Manifest:
        """Return a manifest with another table (index reset), the same root and no file path.

        Parameters
        ----------
        df : pandas.DataFrame
            The new table (paths relative to this manifest's root).

        Returns
        -------
        Manifest
            A new manifest.
        """
        return Manifest(df.reset_index(drop=True), None, self.root)

    def subset(self, split: str | Iterable[str] | None = None, *,
               modality: str | Iterable[str] | None = None,
               patients: Iterable[str] | None = None,
               fold: int | Iterable[int] | None = None) -> Manifest:
        """Return the rows matching every given filter (a new manifest, same root).

        Parameters
        ----------
        split : str or iterable of str, optional
            Keep these splits (``"train"``, ``["train", "val"]`` …).
        modality : str or iterable of str, optional
            Keep these modalities.
        patients : iterable of str, optional
            Keep these patient ids.
        fold : int or iterable of int, optional
            Keep these folds.

        Returns
        -------
        Manifest
            The matching rows, index reset, ``path`` None.

        Raises
        ------
        KeyError
            Filtering on a column the manifest does not have.
        """
        keep = pd.Series(True, index=self.df.index)
        filters: list[tuple[str, Any]] = [("split", split), ("modality", modality),
                                          ("patient_id", patients), ("fold", fold)]
        for column, wanted in filters:
            if wanted is None:
                continue
            if column not in self.df.columns:
                raise KeyError(f"manifest has no {column!r} column to filter on")
            values = [wanted] if isinstance(wanted, (str, int)) else list(wanted)
            if column == "fold":
                cells = pd.to_numeric(self.df[column], errors="coerce")
                keep &= cells.isin([int(v) for v in values])
            else:
                keep &= self.df[column].astype(str).isin([str(v) for v in values])
        return self.with_df(self.df.loc[keep].copy())


def _convert_column(series: pd.Series, name: str) -> pd.Series:
    """Type a column read as text: numbers where every filled cell is one."""
    if name in TEXT_COLUMNS:
        return series
    filled = series.dropna().astype(str).str.strip()
    if filled.empty:
        return series
    if filled.map(lambda v: bool(_INT_RE.match(v))).all():
        numbers = pd.to_numeric(series, errors="coerce")
        return numbers.astype("Int64" if series.isna().any() else "int64")
    if name == "fold":  # non-integer folds stay text, for the validator to report
        return series
    if filled.map(lambda v: bool(_FLOAT_RE.match(v)) and not _LEADING_ZERO_RE.match(v)).all():
        return pd.to_numeric(series, errors="coerce").astype("float64")
    return series


def read_manifest(path: str | PathLike[str]) -> Manifest:
    """Read a manifest CSV without validating it.

    Parameters
    ----------
    path : str or PathLike
        The CSV file (UTF-8, a byte-order mark is accepted).

    Returns
    -------
    Manifest
        ``root`` is the CSV's folder.

    Raises
    ------
    CervkitInputError
        Missing, empty or unparseable file.
    """
    path = Path(path)
    if not path.is_file():
        raise CervkitInputError("manifest file not found", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                         encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise CervkitInputError("manifest file is empty (no header line)", path) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise CervkitInputError(f"not a readable CSV file ({exc})", path) from exc
    for column in df.columns:
        df[column] = _convert_column(df[column], str(column))
    return Manifest(df, path, path.parent)


def _rebase(df: pd.DataFrame, old_root: Path, new_root: Path) -> pd.DataFrame:
    """Rewrite the path columns of ``df`` relative to ``new_root``."""
    out = df.copy()
    if os.path.normcase(old_root) == os.path.normcase(new_root):
        return out
    for column in PATH_COLUMNS:
        if column in out.columns:
            out[column] = [None if is_blank(v) else relative_path(resolve_path(v, old_root), new_root)
                           for v in out[column]]
    return out


def save_manifest(manifest: Manifest, path: str | PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a manifest CSV atomically, paths relative to the new file's folder.

    Saved elsewhere than ``manifest.root``, the ``image`` and ``mask`` cells are
    rewritten (e.g. ``../../data/images/a.png``) so they still point at the same
    files; saved into ``manifest.root`` they are written exactly as they are.

    Parameters
    ----------
    manifest : Manifest
        The table to write.
    path : str or PathLike
        Destination CSV; parent folders are created.
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    target = Path(os.path.abspath(path))
    df = _rebase(manifest.df, manifest.root, target.parent)
    with atomic_path(target, overwrite=overwrite) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    return target


def manifest_from_records(records: Iterable[Mapping[str, Any]],
                          root: str | PathLike[str]) -> Manifest:
    """Build a manifest from one mapping per image (e.g. in a dataset generator).

    Parameters
    ----------
    records : iterable of mappings
        Each with at least ``image``, ``mask``, ``patient_id``, ``modality``;
        paths absolute or relative to ``root`` (absolute ones are stored
        relative to ``root``); ``mask`` may be None. Other keys become columns,
        in first-seen order after the required ones.
    root : str or PathLike
        The folder the manifest will live in (where it should be saved).

    Returns
    -------
    Manifest
        Not validated (the files may not be written yet); ``path`` None.
    """
    root_path = Path(os.path.abspath(root))
    rows = [dict(r) for r in records]
    df = pd.DataFrame(rows)
    order = [*REQUIRED_COLUMNS, *[c for c in df.columns if c not in REQUIRED_COLUMNS]]
    df = df.reindex(columns=order)
    for column in PATH_COLUMNS:
        df[column] = [None if is_blank(v) else (
            relative_path(Path(v), root_path) if Path(str(v)).is_absolute() else Path(str(v)).as_posix())
            for v in df[column]]
    df["patient_id"] = [None if is_blank(v) else str(v) for v in df["patient_id"]]
    if "fold" in df.columns:
        df["fold"] = pd.to_numeric(df["fold"], errors="coerce").astype("Int64")
    return Manifest(df, None, root_path)

