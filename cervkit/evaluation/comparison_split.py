"""The split of the paper's comparison (notebooks 05 and 06): the shipped model's own, so it can stand with the others.

Every model of a data set must train on the same patients and be tested on the same other patients. The shipped
YOLO-UNet (``cervkit/zoo``) was built on a patient split of each of its sources (:func:`cervkit.zoo.catalog.recipe_split`);
using that split for the baselines too makes the comparison fair *and* lets the shipped model be the reference in
quick mode, when a two-epoch YOLO-UNet would find nothing: its test patients are ones it never saw.

:data:`REFERENCE_MODEL` names the shipped model of each data set. :func:`comparison_split` writes the split (and, in
quick mode, keeps only a few patients of each part).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.core.errors import CervkitInputError

__all__ = ["REFERENCE_MODEL", "comparison_split"]

REFERENCE_MODEL = {"phantoms_xray": "xray", "phantoms_mri": "mri", "mri_lumbar_t2": "mri", "mri_lumbar_dixon": "mri"}
"""Data set → the shipped model built on (a split of) it."""


def comparison_split(dataset: str, out_csv: str | PathLike[str], *,
                     patients: Sequence[int] | None = None) -> Any:
    """Write and return the split every model of ``dataset`` trains and is tested on.

    Parameters
    ----------
    dataset : str
        A key of :data:`REFERENCE_MODEL`.
    out_csv : str or PathLike
        Where the split manifest is written (replaced).
    patients : (int, int, int), optional
        Keep only the first this many train, val and test patients (by ID), e.g. ``(2, 1, 1)`` in quick mode.

    Returns
    -------
    Manifest
        Loaded from ``out_csv``; ``split`` as in the shipped model's build.

    Raises
    ------
    CervkitInputError
        A data set no shipped model was built on.
    """
    from cervkit.data.manifest import load_manifest
    from cervkit.data.table import save_manifest
    from cervkit.zoo.catalog import recipe_split

    if dataset not in REFERENCE_MODEL:
        raise CervkitInputError(f"no shipped model was built on {dataset!r} (known: {', '.join(REFERENCE_MODEL)})")
    split = recipe_split(REFERENCE_MODEL[dataset], sources=[dataset])
    df = split.df
    if patients is not None:
        keep: list[str] = []
        for part, n in zip(("train", "val", "test"), patients):
            ids = sorted(df.loc[df["split"] == part, "patient_id"].astype(str).unique())
            keep += ids[: int(n)]
        df = df[df["patient_id"].astype(str).isin(keep)].reset_index(drop=True)
    out = Path(out_csv)
    save_manifest(split.with_df(df), out, overwrite=True)
    return load_manifest(out)
