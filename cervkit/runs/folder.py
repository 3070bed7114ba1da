"""Run folders: what ``cervkit train`` writes and ``predict``/``evaluate``/the editor load by path.

A run folder holds ``run.json`` (the model kind, the arguments, versions, the stages'
sub-folders and the validation summary), ``split.csv`` (the exact split used) and one
sub-folder per stage (``detector/``, ``segmenter/``; ``model/`` for the one-stage baselines).
:func:`load_predictor` turns a run folder into an object with ``predict(image) -> CascadePrediction``.
"""

from __future__ import annotations

import json
import platform
import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes

RUN_FILE = "run.json"
CASCADE_MODELS = ("yolo-unet", "yolo-deeplab")
MODELS = ("yolo-unet", "yolo-deeplab", "unet3plus", "deeplabv3plus", "yolo-seg")


def versions() -> dict[str, str]:
    """Versions of the libraries a run depends on.

    Returns
    -------
    dict
        Package → version, plus python and platform.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("cervkit", "torch", "ultralytics", "segmentation-models-pytorch", "albumentations", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def start_run(out: str | PathLike[str], model: str, arguments: dict[str, Any], *,
              overwrite: bool = False) -> Path:
    """Create a run folder and its ``run.json`` (status ``training``).

    Parameters
    ----------
    out : str or PathLike
        The run folder.
    model : str
        One of :data:`MODELS`.
    arguments : dict
        The training arguments, recorded as given.
    overwrite : bool
        Allow an existing non-empty folder (its stage folders are replaced stage by stage).

    Returns
    -------
    pathlib.Path
        The run folder, absolute.

    Raises
    ------
    FileExistsError
        The folder exists and is not empty, without ``overwrite``.
    """
    if model not in MODELS:
        raise CervkitInputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    run = Path(out).resolve()
    if run.exists() and any(run.iterdir()) and not overwrite:
        raise FileExistsError(f"{run} exists and is not empty; pass --overwrite to train into it anyway")
    run.mkdir(parents=True, exist_ok=True)
    info = {"model": model, "status": "training", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "arguments": arguments, "versions": versions(), "stages": {}}
    write_run_info(run, info)
    return run


def write_run_info(run: Path, info: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically (replacing the previous one of the same run).

    Parameters
    ----------
    run : pathlib.Path
        The run folder.
    info : dict
        JSON-serialisable content.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    text = json.dumps(info, indent=2, default=_jsonable) + "\n"
    return atomic_write_bytes(Path(run) / RUN_FILE, text.encode(), overwrite=True)


def read_run_info(run: str | PathLike[str]) -> dict[str, Any]:
    """Read a run folder's ``run.json``.

    Parameters
    ----------
    run : str or PathLike
        The run folder.

    Returns
    -------
    dict
        Its content.

    Raises
    ------
    CervkitInputError
        Not a run folder, or a run whose training did not finish.
    """
    path = Path(run) / RUN_FILE
    if not path.is_file():
        raise CervkitInputError(f"not a cervkit run folder (no {RUN_FILE}); train one with "
                                "`python -m cervkit train --manifest M --out RUN`", run)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CervkitInputError(f"{RUN_FILE} is not valid JSON ({exc})", path) from exc
    return info


def assemble_run(run: str | PathLike[str], model: str = "yolo-unet", *, split_csv: str | PathLike[str] | None = None,
                 arguments: dict[str, Any] | None = None) -> Path:
    """Mark a folder whose stages were trained one by one (as the notebooks do) as a finished run.

    Parameters
    ----------
    run : str or PathLike
        Folder holding ``detector/`` and ``segmenter/`` for a cascade model.
    model : str
        ``yolo-unet`` or ``yolo-deeplab``.
    split_csv : str or PathLike, optional
        The split manifest the stages were trained on (copied to ``split.csv``).
    arguments : dict, optional
        Recorded in ``run.json``.

    Returns
    -------
    pathlib.Path
        The run folder, loadable by :func:`load_predictor`.
    """
    folder = Path(run).resolve()
    if model not in CASCADE_MODELS:
        raise CervkitInputError(f"assemble_run builds cascades only ({', '.join(CASCADE_MODELS)}), not {model!r}")
    for stage, marker in (("detector", "weights/best.pt"), ("segmenter", "model.pt")):
        if not (folder / stage / marker).is_file():
            raise CervkitInputError(f"stage {stage!r} is not trained (no {stage}/{marker})", folder)
    info = {"model": model, "status": "done", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "arguments": arguments or {}, "versions": versions(),
            "stages": {"detector": "detector", "segmenter": "segmenter"}}
    if split_csv is not None:
        from cervkit.data.manifest import load_manifest
        from cervkit.data.table import save_manifest

        save_manifest(load_manifest(split_csv, validate=False), folder / "split.csv", overwrite=True)
        info["split"] = {"file": "split.csv"}
    write_run_info(folder, info)
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
