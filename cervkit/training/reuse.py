"""Reuse a finished run when it matches, train it otherwise: what a notebook re-run should not redo.

Notebooks 05 and 06 train several models per data set; run again, they should pick up the runs they
already have. :func:`run_matches` says whether a run folder is finished, was trained on exactly a given
split (same images in the same split columns) and with the same budget (quick or full);
:func:`ensure_run` trains only when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.data.table import Manifest
from cervkit.runs.folder import RUN_FILE, assemble_run, read_run_info

__all__ = ["ensure_run", "run_matches", "train_cascade_by_stage"]



def run_matches(run: str | PathLike[str], split: Manifest, *, quick: bool) -> bool:
    """Whether ``run`` is a finished run trained on ``split`` with the ``quick`` budget.

    Parameters
    ----------
    run : str or PathLike
        A run folder (need not exist).
    split : Manifest
        The split manifest the run should have been trained on.
    quick : bool
        The budget every stage's ``config.json`` must record.

    Returns
    -------
    bool
        False for a missing, unfinished or differently trained run.
    """
    from cervkit.data.manifest import load_manifest, same_split

    folder = Path(run)
    if not (folder / RUN_FILE).is_file() or read_run_info(folder).get("status") != "done":
        return False
    budgets = {json.loads(p.read_text())["arguments"].get("quick") for p in folder.glob("*/config.json")}
    if budgets != {quick} or not (folder / "split.csv").is_file():
        return False
    return same_split(load_manifest(folder / "split.csv", validate=False), split)


def train_cascade_by_stage(split: Manifest, run: str | PathLike[str], *, seed: int, quick: bool) -> Path:
    """Notebooks 03 and 04's way: the detector, then the U-Net3+ crop segmenter, then one run folder.

    Parameters
    ----------
    split : Manifest
        The split manifest (its ``path`` is recorded).
    run : str or PathLike
        The run folder (replaced).
    seed : int
    quick : bool

    Returns
    -------
    pathlib.Path
        The finished run folder.
    """
    from cervkit.training.detector import train_detector
    from cervkit.training.segmenter import train_segmenter

    train_detector(split, run, seed=seed, quick=quick, overwrite=True)
    train_segmenter(split, run, seed=seed, quick=quick, overwrite=True)
    return assemble_run(run, "yolo-unet", split_csv=split.path)


def ensure_run(run: str | PathLike[str], split: Manifest, *, model: str, quick: bool, seed: int = 0,
               trainer: Callable[..., Any] | None = None, **train_options: Any) -> tuple[Path, bool]:
    """Return a run folder trained on ``split``: the existing one when it matches, else a new training.

    Parameters
    ----------
    run : str or PathLike
        Where the run lives (replaced when it does not match).
    split : Manifest
        The split manifest to train on; its ``path`` is passed to the trainer.
    model : str
        ``yolo-unet``, ``yolo-seg``, ``unet3plus``, ``deeplabv3plus`` or ``yolo-deeplab``.
    quick : bool
        Quick budget (also what a reused run must have been trained with).
    seed : int
    trainer : callable, optional
        ``trainer(split, run, seed=, quick=)`` instead of :func:`cervkit.training.train.train_run`
        (e.g. :func:`train_cascade_by_stage`).
    **train_options
        Passed to :func:`cervkit.training.train.train_run` (e.g. ``detector_classes``).

    Returns
    -------
    (pathlib.Path, bool)
        The run folder and whether it was trained now (False: reused).
    """
    folder = Path(run)
    if run_matches(folder, split, quick=quick):
        return folder, False
    if trainer is not None:
        trainer(split, folder, seed=seed, quick=quick)
    else:
        from cervkit.training.train import train_run

        train_run(split.path, folder, model=model, quick=quick, seed=seed, overwrite=True, **train_options)
    return folder, True
