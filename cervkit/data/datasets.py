"""The datasets the notebooks use by default, as listed in ``data_manifest.csv``.

``data_manifest.csv`` at the repository root has one row per dataset: synthetic
phantom sets, generated on first use into ``outputs/data`` from a fixed seed,
and real sets found through ``CERVKIT_DATA_DIR``. :func:`get_dataset` returns the path of a dataset's
manifest CSV, generating or locating it as the row says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cervkit.core.config import (
    DATA_MANIFEST_NAME,
    data_dir,
    outputs_dir,
    project_root,
    quick_mode,
)
from cervkit.core.errors import CervkitInputError

_STYLE_OF_MODALITY = {"XR": "xray", "MRI": "mri"}


@dataclass(frozen=True)
class DatasetEntry:
    """One row of ``data_manifest.csv``.

    Attributes
    ----------
    name, kind, modality, location : str
        Identity, ``synthetic`` or ``real``, ``XR``/``MRI`` and where its manifest lives.
    n_images, n_patients : int
        Size for the requested mode (quick or full).
    seed : int or None
        Generator seed (synthetic sets).
    image_size : int
        Side of the (square) images.
    source, license, citation : str
        Provenance.
    """

    name: str
    kind: str
    modality: str
    location: str
    n_images: int
    n_patients: int
    seed: int | None
    image_size: int
    source: str
    license: str
    citation: str


def list_datasets(path: Path | None = None, *, quick: bool | None = None) -> list[DatasetEntry]:
    """Read ``data_manifest.csv``.

    Parameters
    ----------
    path : pathlib.Path, optional
        The CSV (default: the one at the project root).
    quick : bool, optional
        Sizes for quick mode (default: :func:`cervkit.quick_mode`).

    Returns
    -------
    list of DatasetEntry
        One entry per row, sizes for the chosen mode.
    """
    if path is None:
        root = project_root()
        if root is None:
            raise CervkitInputError(f"no {DATA_MANIFEST_NAME} found above {Path.cwd()}")
        path = root / DATA_MANIFEST_NAME
    quick = quick_mode() if quick is None else quick
    suffix = "quick" if quick else "full"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    entries = []
    for _, row in table.iterrows():
        entries.append(DatasetEntry(
            name=row["name"], kind=row["kind"], modality=row["modality"], location=row["location"],
            n_images=int(row[f"n_images_{suffix}"]), n_patients=int(row[f"n_patients_{suffix}"]),
            seed=int(row["seed"]) if row["seed"] else None, image_size=int(row["image_size"]),
            source=row["source"], license=row["license"], citation=row["citation"],
        ))
    return entries


def get_dataset(name: str, *, quick: bool | None = None, root: Path | None = None) -> Path:
    """Return the manifest CSV of a default dataset, generating synthetic ones on first use.

    Parameters
    ----------
    name : str
        A ``name`` from ``data_manifest.csv`` (``phantoms_xray``, ``phantoms_mri``, ``mri_lumbar_t2``).
    quick : bool, optional
        Quick-mode size (default: :func:`cervkit.quick_mode`). Quick and full sets live in different folders.
    root : pathlib.Path, optional
        Where synthetic sets are written (default: ``outputs/data``).

    Returns
    -------
    pathlib.Path
        Path of the dataset's ``manifest.csv``.

    Raises
    ------
    CervkitInputError
        Unknown name, or a real dataset that ``CERVKIT_DATA_DIR`` does not provide.
    """
    quick = quick_mode() if quick is None else quick
    entries = {e.name: e for e in list_datasets(quick=quick)}
    if name not in entries:
        raise CervkitInputError(f"unknown dataset {name!r}; known: {sorted(entries)}", DATA_MANIFEST_NAME)
    entry = entries[name]
    if entry.kind == "real":
        base = data_dir()
        if base is None:
            raise CervkitInputError(
                f"dataset {name!r} is real data: set CERVKIT_DATA_DIR to the folder holding it")
        path = Path(entry.location.replace("$CERVKIT_DATA_DIR", str(base)))
        if not path.is_file():
            raise CervkitInputError(f"dataset {name!r} not found (CERVKIT_DATA_DIR={base})", path)
        return path
    from cervkit.data.synth.dataset import (
        write_phantom_dataset,  # heavy import only when generating
    )

    folder = (root or outputs_dir() / "data") / f"{name}{'_quick' if quick else ''}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    write_phantom_dataset(folder, entry.n_images, style=_STYLE_OF_MODALITY[entry.modality],
                          seed=entry.seed or 0, size=(entry.image_size, entry.image_size),
                          n_patients=entry.n_patients)
    return manifest


def env_report() -> str:
    """One line for the notebooks' imports cell: versions, device and quick mode.

    Returns
    -------
    str
        e.g. ``cervkit 0.1.0 | torch 2.14.1 (cpu, 2 threads) | quick mode ON | data: /path``.
    """
    import torch

    from cervkit.core.version import __version__

    device = f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    data = data_dir()
    return (f"cervkit {__version__} | torch {torch.__version__} ({device}, "
            f"{torch.get_num_threads()} threads) | quick mode {'ON' if quick_mode() else 'off'} | "
            f"real data: {data if data else 'not set (CERVKIT_DATA_DIR)'} | pid {os.getpid()}")
