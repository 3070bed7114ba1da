"""Batch prediction over files and folders: ``python -m cervkit predict --model RUN --out DIR INPUT...``.

For each input image it writes ``<stem>_mask.png`` (uint8 label map of the input's size,
vertebrae 1..K top to bottom) and ``<stem>_overlay.png``, appends one row to
``predictions.csv`` as soon as that image is done, and at the end writes ``queue.csv``,
the drafts as a manifest, least confident first (:mod:`cervkit.inference.batch_rows`).

- **Streaming**: folders are walked lazily (:func:`iter_inputs`, sorted per folder); only
  one image and its prediction are in memory at a time, so memory stays flat however
  many inputs there are.
- **Resume** (``resume=True``): inputs whose last row is ``ok`` and whose mask and overlay
  exist are skipped; failed and unfinished ones are redone (their half-written outputs
  replaced). Without ``resume`` or ``overwrite``, an existing ``predictions.csv`` or
  ``queue.csv`` is an error.
- **Confidence** per image: :func:`cervkit.inference.confidence.image_confidence`.
- **Privacy** (:mod:`cervkit.io.privacy`): ``patient_id`` is a pseudonym (``p-`` + hash) of the
  DICOM PatientID/PatientName, or of the file stem for other formats; outputs of DICOM
  inputs are named after a hash of their path (``names="auto"``); header identifiers are
  removed from error messages. ``keep_identifiers=True`` writes the raw IDs instead.
- **Modality**: from the DICOM Modality (CR/DX/DR/RF/XA… → ``XR``, MR → ``MRI``), else
  ``modality``, else the modality the run was trained on (when it was one), else ``XR``.

One bad file is reported and skipped; the batch goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.inference.batch_rows import (
    COLUMNS,
    CSV_NAME,
    QUEUE_NAME,
    RowWriter,
    read_rows,
    read_table,
    repair_tail,
)

__all__ = ["COLUMNS", "CSV_NAME", "IMAGE_SUFFIXES", "NAME_MODES", "QUEUE_NAME", "collect_inputs", "iter_inputs",
           "predict_files", "run_modality"]

IMAGE_SUFFIXES = {".dcm", ".dicom", ".ima", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
NAME_MODES = ("auto", "stem", "hash")
FALLBACK_MODALITY = "XR"


def _walk(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, depth first, entries sorted by name (symlinked folders not followed)."""
    from cervkit.io.dicom import has_dicom_preamble

    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file():
            path = Path(entry.path)
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES or (suffix == "" and has_dicom_preamble(path)):
                yield path


def iter_inputs(inputs: Sequence[str | PathLike[str]]) -> Iterator[tuple[Path, Path]]:
    """Lazily expand files and folders into ``(image file, its input root)`` pairs.

    Folders are searched recursively for files with an image suffix, or with no suffix when
    they start like a DICOM file (``DICM`` at byte 128); the root of those is the folder. A
    file given directly (or a missing path, kept so the batch reports it) has its parent as root.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Files and folders.

    Yields
    ------
    tuple of pathlib.Path
        In the order given, each folder's contents sorted by path.
    """
    for item in map(Path, inputs):
        if item.is_dir():
            for path in _walk(item):
                yield path, item
        else:
            yield item, item.parent


def collect_inputs(inputs: Sequence[str | PathLike[str]]) -> list[Path]:
    """Expand files and folders into the list of image files (see :func:`iter_inputs`).

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Files and folders.

    Returns
    -------
    list of pathlib.Path
        Files in the order given, folders' contents sorted.
    """
    return [path for path, _ in iter_inputs(inputs)]


def _run_record(run: str | PathLike[str]) -> str:
    """How ``queue.csv`` names the model: a run folder's absolute path, a shipped model by its name."""
    from cervkit.zoo.store import resolve_model

    try:
        resolved = resolve_model(run)
    except CervkitInputError:
        return os.path.abspath(run)
    return resolved.name if resolved.kind == "zoo" else os.path.abspath(run)


def run_modality(run: str | PathLike[str] | None) -> str | None:
    """The one modality a run was trained on (from its ``run.json`` split summary), else None.

    Parameters
    ----------
    run : str or PathLike, optional
        The run folder.

    Returns
    -------
    str or None
        ``XR`` or ``MRI``; None when unknown or mixed.
    """
    if run is None:
        return None
    from cervkit.zoo.store import resolve_model

    try:
        info = json.loads((resolve_model(run).path / "run.json").read_text())
        if info.get("modality") in ("XR", "MRI"):
            return str(info["modality"])
        found = {str(r.get("modality")) for r in info.get("split", {}).get("summary", [])} - {"all", "None"}
    except (OSError, ValueError, AttributeError, TypeError, CervkitInputError):
        return None
    return found.pop() if len(found) == 1 and found <= {"XR", "MRI"} else None


def _unique(stem: str, used: set[str]) -> str:
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}"
    used.add(candidate)
    return candidate


def _error_text(exc: Exception, path: Path) -> str:
    text = str(exc) if isinstance(exc, CervkitInputError) else f"{type(exc).__name__}: {exc}"
    return text if str(path) in text else f"{path}: {text}"


def _predict_one(predictor: Any, path: Path, root: Path, out: Path, used: set[str], previous_stem: str | None,
                 settings: dict[str, Any]) -> dict[str, Any]:
    """Predict one input and write its outputs; return its ``predictions.csv`` row (never raises)."""
    from cervkit.core.files import check_writable
    from cervkit.inference.confidence import image_confidence
    from cervkit.inference.level_names import format_names, keep_levels, name_bodies
    from cervkit.io.images import read_image, write_png
    from cervkit.io.privacy import (
        dicom_identity,
        is_dicom_path,
        modality_code,
        pseudonym,
        redact,
    )
    from cervkit.viz import overlay

    dicom = is_dicom_path(path)
    identity = dicom_identity(path) if dicom else None
    salt, keep = settings["salt"], settings["keep_identifiers"]
    if settings["names"] == "hash" or (settings["names"] == "auto" and dicom):
        base = pseudonym(Path(os.path.relpath(path, root)).as_posix(), salt=salt)
    else:
        base = path.stem or path.name
    stem = previous_stem if previous_stem and previous_stem not in used else base
    stem = _unique(stem, used)
    key = (identity.key if identity is not None else None) or (path.stem or path.name)
    row: dict[str, Any] = {
        "file": str(path), "output_stem": stem, "status": "failed",
        "patient_id": key if keep else pseudonym(key, prefix="p-", salt=salt),
        "modality": modality_code(identity.modality if identity else None) or settings["modality"]}
    mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
    replace = settings["replace"]
    try:
        for target in (mask_path, overlay_path):
            check_writable(target, replace)
        image = read_image(path)
        start = time.perf_counter()
        result = predictor.predict(image.array)
        seconds = time.perf_counter() - start
        confidence = image_confidence(result, detector=settings["detector"])
        named = name_bodies(result.labels, spacing_mm=image.spacing_mm, protocol=settings["levels"],
                            anchor_scores=getattr(result, "anchor_scores", None) or None)
        labels = result.labels
        if settings["levels"] is not None:  # predict --levels: only the named bodies inside the range
            labels = keep_levels(labels, named.names, settings["levels"])
        names = {k: v for k, v in named.names.items() if (labels == k).any()}
        write_png(mask_path, labels, overwrite=replace)
        write_png(overlay_path, overlay(image.array, labels, alpha=settings["alpha"]), overwrite=replace)
    except Exception as exc:  # one bad file never stops the batch; KeyboardInterrupt does
        message = _error_text(exc, path)
        if identity is not None and not keep:
            message = redact(message, identity.identifiers)
        row["error"] = " ".join(message.split())
        return row
    row.update(mask=mask_path.name, overlay=overlay_path.name, n_vertebrae=len(np.unique(labels)) - 1,
               seconds=round(seconds, 4), status="ok", level_names=format_names(names),
               levels_unsure=int(named.unsure), **confidence)
    return row


def _previous(csv_path: Path, out: Path) -> tuple[dict[str, str], dict[str, str], int]:
    """From an existing CSV: done files → stem, other files → their last stem, and the number of rows."""
    repair_tail(csv_path)
    done: dict[str, str] = {}
    stems: dict[str, str] = {}
    rows = read_rows(csv_path)
    for row in rows:
        file, stem = row["file"], row["output_stem"]
        finished = (row["status"] == "ok" and bool(row["mask"]) and (out / row["mask"]).is_file()
                    and bool(row["overlay"]) and (out / row["overlay"]).is_file())
        done.pop(file, None)
        stems[file] = stem
        if finished:
            done[file] = stem
    return done, {f: s for f, s in stems.items() if f not in done}, len(rows)


def predict_files(predictor: Any, inputs: Sequence[str | PathLike[str]], out_dir: str | PathLike[str], *,
                  overwrite: bool = False, resume: bool = False, progress: bool | None = None, alpha: float = 0.4,
                  names: str = "auto", modality: str | None = None, keep_identifiers: bool = False,
                  run: str | PathLike[str] | None = None, salt: str | None = None,
                  levels: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Predict every input, streaming: outputs and a ``predictions.csv`` row per image, then ``queue.csv``.

    Parameters
    ----------
    predictor : object
        Has ``predict(image) -> CascadePrediction`` (see :func:`cervkit.inference.registry.load_predictor`).
    inputs : sequence of str or PathLike
        Files or folders (DICOM, PNG, JPG, TIFF, BMP).
    out_dir : str or PathLike
        Output folder (created).
    overwrite : bool
        Start afresh, replacing existing outputs; otherwise an existing ``predictions.csv`` or
        ``queue.csv`` raises FileExistsError, and an input whose outputs exist fails.
    resume : bool
        Continue the batch recorded in ``out_dir/predictions.csv`` (see the module docstring).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    alpha : float
        Overlay opacity.
    names : {"auto", "stem", "hash"}
        Output names: the input's stem, a pseudonym of its path relative to its input root,
        or (``auto``) ``hash`` for DICOM inputs and ``stem`` for the others. Duplicates get ``_2``, ``_3`` …
    modality : {"XR", "MRI"}, optional
        For inputs whose header does not say (see the module docstring for the default).
    keep_identifiers : bool
        Write raw DICOM patient IDs/names in ``patient_id`` and error messages.
    run : str or PathLike, optional
        The run folder behind ``predictor``: the queue's ``run`` column and the default modality.
    salt : str, optional
        Secret for the pseudonyms (default ``$CERVKIT_PSEUDONYM_SALT``, see :func:`cervkit.io.privacy.pseudonym`).
    levels : str or sequence of str, optional
        The protocol (``"C2-C7"``): keep only the bodies named inside it (``predict --levels``). Names come from
        anatomy (C2, or L5 above the sacrum: :func:`cervkit.inference.level_names.name_bodies`); without a
        landmark, from the protocol's order (flagged ``levels_unsure``). Default: keep every body, name those a
        landmark names.

    Returns
    -------
    pandas.DataFrame
        The rows of ``predictions.csv`` (:data:`cervkit.inference.batch_rows.COLUMNS`), one per input.
    """
    from tqdm.auto import tqdm

    from cervkit.core.files import atomic_path, check_writable
    from cervkit.inference.batch_rows import write_queue
    from cervkit.inference.confidence import has_detector

    if names not in NAME_MODES:
        raise CervkitInputError(f"unknown names mode {names!r}; use one of {', '.join(NAME_MODES)}")
    if modality not in (None, "XR", "MRI"):
        raise CervkitInputError(f"unknown modality {modality!r}; use XR or MRI")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / CSV_NAME
    resuming = resume and csv_path.is_file()
    if not resuming:
        check_writable(csv_path, overwrite)
        check_writable(out / QUEUE_NAME, overwrite)
    done, stems, n_rows = _previous(csv_path, out) if resuming else ({}, {}, 0)
    if levels is not None:
        from cervkit.inference.level_names import level_range

        levels = level_range(levels)  # a bad range fails before anything is written
    settings = {"levels": levels, "names": names, "salt": salt, "keep_identifiers": keep_identifiers, "alpha": alpha,
                "replace": overwrite or resume, "detector": has_detector(predictor),
                "modality": modality or run_modality(run) or FALLBACK_MODALITY}
    used = set(done.values())
    show = sys.stderr.isatty() if progress is None else progress
    total = sum(1 for _ in iter_inputs(inputs)) if show else None
    appended = 0
    with RowWriter(csv_path, fresh=not resuming) as writer, \
            tqdm(total=total, desc="predict", unit="image", disable=not show) as bar:
        for path, root in iter_inputs(inputs):
            bar.update(1)
            if str(path) in done:
                continue
            row = _predict_one(predictor, path, root, out, used, stems.get(str(path)), settings)
            writer.write(row)
            appended += 1
            if row["status"] != "ok":
                tqdm.write(f"cervkit predict: skipped {row['error']}")
    table = read_table(csv_path)
    if resuming and appended and len(table) < n_rows + appended:  # drop the redone inputs' stale rows
        with atomic_path(csv_path, overwrite=True) as tmp:
            with RowWriter(tmp, fresh=True) as compact:
                for record in table.to_dict("records"):
                    compact.write({k: (None if pd.isna(v) else v) for k, v in record.items()})
    write_queue(table, out, run=None if run is None else _run_record(run))
    return table
