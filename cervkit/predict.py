"""Batch prediction over files and folders: ``python -m cervkit predict --model RUN --out DIR INPUT...``.

For each input image ``<stem>`` it writes ``<stem>_mask.png`` (uint8 label map of the
input's size, vertebrae 1..K top to bottom) and ``<stem>_overlay.png``, and one
``predictions.csv`` with a row per input (file, number of vertebrae, seconds, status,
error). One bad file is reported and skipped; the batch goes on. Existing outputs are
never overwritten without ``overwrite=True``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import pandas as pd

from cervkit.errors import CervkitInputError

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
CSV_NAME = "predictions.csv"


@dataclass
class PredictRow:
    """One line of ``predictions.csv``."""

    file: str
    output_stem: str
    n_vertebrae: int | None
    seconds: float | None
    status: str
    error: str = ""


def collect_inputs(inputs: Sequence[str | PathLike[str]]) -> list[Path]:
    """Expand files and folders into the list of image files to predict.

    Folders are searched recursively for files with an image suffix, or with no suffix
    when they start like a DICOM file (``DICM`` at byte 128). Missing paths are kept,
    so that the batch reports them as failed inputs.

    Parameters
    ----------
    inputs : sequence of str or PathLike
        Files and folders.

    Returns
    -------
    list of pathlib.Path
        Files in the order given, folders' contents sorted.
    """
    from cervkit.dicom import has_dicom_preamble

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                suffix = path.suffix.lower()
                if suffix in IMAGE_SUFFIXES or (suffix == "" and has_dicom_preamble(path)):
                    files.append(path)
        else:
            files.append(item)
    return files


def _unique_stems(files: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    used: set[str] = set()
    for path in files:
        stem, n = path.stem or path.name, 1
        candidate = stem
        while candidate in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add(candidate)
        yield path, candidate


def predict_files(predictor, inputs: Sequence[str | PathLike[str]], out_dir: str | PathLike[str], *,
                  overwrite: bool = False, progress: bool | None = None, alpha: float = 0.4) -> pd.DataFrame:
    """Predict every input, writing masks, overlays and ``predictions.csv``.

    Parameters
    ----------
    predictor : object
        Has ``predict(image) -> CascadePrediction`` (see :func:`cervkit.runs.load_predictor`).
    inputs : sequence of str or PathLike
        Files or folders (DICOM, PNG, JPG, TIFF).
    out_dir : str or PathLike
        Output folder (created).
    overwrite : bool
        Replace existing outputs; otherwise an input whose outputs exist fails with a message.
    progress : bool, optional
        Show a progress bar (default: when attached to a terminal).
    alpha : float
        Overlay opacity.

    Returns
    -------
    pandas.DataFrame
        The rows of ``predictions.csv``.
    """
    from tqdm.auto import tqdm

    from cervkit.fileutil import atomic_path, check_writable
    from cervkit.io import read_image, write_png
    from cervkit.viz import overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / CSV_NAME, overwrite)
    rows: list[PredictRow] = []
    files = list(_unique_stems(collect_inputs(inputs)))
    for path, stem in tqdm(files, desc="predict", unit="image", disable=None if progress is None else not progress):
        mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
        try:
            for target in (mask_path, overlay_path):
                check_writable(target, overwrite)
            image = read_image(path)
            start = time.perf_counter()
            result = predictor.predict(image.array)
            seconds = time.perf_counter() - start
            write_png(mask_path, result.labels, overwrite=overwrite)
            write_png(overlay_path, overlay(image.array, result.labels, alpha=alpha), overwrite=overwrite)
            rows.append(PredictRow(str(path), stem, result.n_vertebrae, round(seconds, 4), "ok"))
        except (CervkitInputError, FileExistsError, FileNotFoundError, OSError, ValueError) as exc:
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            tqdm.write(f"cervkit predict: skipped {message}")
            rows.append(PredictRow(str(path), stem, None, None, "failed", message))
    table = pd.DataFrame([r.__dict__ for r in rows], columns=list(PredictRow.__dataclass_fields__))
    table["n_vertebrae"] = table["n_vertebrae"].astype("Int64")  # integers, blank for failed inputs
    with atomic_path(out / CSV_NAME, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False)
    return table
