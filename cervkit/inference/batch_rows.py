"""The files ``cervkit predict`` keeps its record in: ``predictions.csv`` and ``queue.csv``.

``predictions.csv`` is appended one row per finished input (:class:`RowWriter`, flushed
after every row), so a killed batch leaves a valid CSV of what it finished; a line cut
short by the kill is dropped when the batch resumes (:func:`repair_tail`). A resumed
batch may append a second row for an input it redid; :func:`read_table` keeps the last
row of each input and the batch rewrites the file without the stale ones at its end.

``queue.csv`` (:func:`write_queue`) is a cervkit manifest of the ``ok`` rows sorted by
ascending confidence (least certain first) for :class:`cervkit.editor.queue.CorrectionQueue`.
A draft in which nothing was found is an all-zero mask: :func:`cervkit.data.manifest.load_manifest`
with its default ``check_files=True`` reports those as empty masks, so read such a queue
with ``check_files=False`` (as the correction queue does).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from cervkit.core.errors import CervkitInputError

__all__ = ["COLUMNS", "CSV_NAME", "QUEUE_COLUMNS", "QUEUE_NAME", "RowWriter", "read_rows", "read_table",
           "repair_tail", "write_queue"]

CSV_NAME = "predictions.csv"
QUEUE_NAME = "queue.csv"
COLUMNS = ("file", "output_stem", "mask", "overlay", "n_vertebrae", "seconds", "status", "error", "confidence",
           "det_score_min", "det_score_mean", "mask_uncertainty", "patient_id", "modality", "level_names",
           "levels_unsure")
NUMERIC_COLUMNS = ("n_vertebrae", "seconds", "confidence", "det_score_min", "det_score_mean", "mask_uncertainty")
QUEUE_COLUMNS = ("image", "mask", "patient_id", "modality", "output_stem", "confidence", "det_score_min",
                 "det_score_mean", "mask_uncertainty", "level_names", "levels_unsure", "run")


def _cell(value: Any) -> str:
    """One CSV cell: blank for None/NaN, 6 significant digits for floats, one line of text."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


class RowWriter:
    """Append rows to ``predictions.csv``, one flushed line per row.

    Parameters
    ----------
    path : str or PathLike
        The CSV file.
    fresh : bool
        Start a new file (truncating one that is there: the caller checked it may), else append
        to it (writing the header first when it is missing or empty).
    """

    def __init__(self, path: str | PathLike[str], *, fresh: bool) -> None:
        self.path = Path(path)
        new = fresh or not self.path.is_file() or self.path.stat().st_size == 0
        self._handle = open(self.path, "w" if fresh else "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        if new:
            self._writer.writerow(COLUMNS)
            self._handle.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (keys of :data:`COLUMNS`; missing ones blank) and flush it to the OS.

        Parameters
        ----------
        row : mapping
            Column → value.
        """
        self._writer.writerow([_cell(row.get(c)) for c in COLUMNS])
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def repair_tail(path: str | PathLike[str]) -> bool:
    """Cut a last line that a killed process left unfinished (no newline at the end).

    Parameters
    ----------
    path : str or PathLike
        The CSV file.

    Returns
    -------
    bool
        True when something was cut.
    """
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return False
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        keep, step = 0, 1 << 16
        position = size
        while position > 0:  # scan back block by block for the last newline
            start = max(0, position - step)
            handle.seek(start)
            block = handle.read(position - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            position = start
        handle.truncate(keep)
    return True


def read_rows(path: str | PathLike[str]) -> list[dict[str, str]]:
    """The complete rows of a ``predictions.csv`` as text, in file order.

    Parameters
    ----------
    path : str or PathLike
        The CSV file.

    Returns
    -------
    list of dict
        One per complete line (an unfinished last line is ignored).

    Raises
    ------
    CervkitInputError
        The header is not this version's :data:`COLUMNS`.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        text = handle.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    lines = text.splitlines()
    if not lines:
        return []
    reader = csv.reader(lines)
    header = next(reader)
    if tuple(header) != COLUMNS:
        raise CervkitInputError(f"columns {header} are not those of this version's predictions.csv "
                                f"({', '.join(COLUMNS)}); predict into a new folder or pass --overwrite", path)
    return [dict(zip(COLUMNS, cells)) for cells in reader if len(cells) == len(COLUMNS)]


def read_table(path: str | PathLike[str]) -> pd.DataFrame:
    """``predictions.csv`` as a typed table, one row per input (the last one written).

    Parameters
    ----------
    path : str or PathLike
        The CSV file.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`; numbers as floats (``n_vertebrae`` as ``Int64``), text as str ("" when blank).
    """
    df = pd.DataFrame(read_rows(path), columns=list(COLUMNS))
    df = df.drop_duplicates("file", keep="last").reset_index(drop=True)
    for column in NUMERIC_COLUMNS:
        df[column] = pd.to_numeric(df[column].where(df[column] != ""), errors="coerce").astype(float)
    df["n_vertebrae"] = df["n_vertebrae"].round().astype("Int64")
    return df


def write_queue(table: pd.DataFrame, out_dir: str | PathLike[str], *, run: str | None = None) -> Path:
    """Write ``queue.csv``: the ``ok`` rows as a manifest, least confident first.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`read_table`.
    out_dir : str or PathLike
        The predict output folder (``mask`` cells are relative to it, as is the queue's ``image``
        when a relative path exists, else absolute).
    run : str, optional
        The run folder that made the drafts (the ``run`` column).

    Returns
    -------
    pathlib.Path
        The file (header only when no input was ``ok``); replaced if it exists.
    """
    from cervkit.core.files import atomic_path
    from cervkit.data.table import relative_path

    out = Path(os.path.abspath(out_dir))
    ok = table[table["status"] == "ok"].copy()
    ok = ok.sort_values("confidence", kind="mergesort", na_position="last")
    queue = pd.DataFrame({
        "image": [relative_path(Path(os.path.abspath(f)), out) for f in ok["file"]],
        "mask": ok["mask"].to_numpy(), "patient_id": ok["patient_id"].to_numpy(),
        "modality": ok["modality"].to_numpy(), "output_stem": ok["output_stem"].to_numpy(),
        **{c: ok[c].to_numpy() for c in ("confidence", "det_score_min", "det_score_mean", "mask_uncertainty",
                                         "level_names", "levels_unsure")},
        "run": "" if run is None else str(run)}, columns=list(QUEUE_COLUMNS))
    target = out / QUEUE_NAME
    with atomic_path(target, overwrite=True) as tmp:
        queue.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6g")
    return target
