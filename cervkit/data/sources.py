"""Several data sources in one training: one manifest, a ``source`` column, each source's annotated levels.

Real data sets annotate different level ranges: ``mri_lumbar_t2`` T11–L5, ``mri_lumbar_dixon`` L1–L5 (with
T12 and S1 visible), the phantoms C2–C7 (with C1 and T1 visible). A vertebra visible outside a source's
``levels`` is *unannotated*, not background. This module

* merges manifests into one (:func:`combine_sources`), keeping each row's ``source`` and ``levels``, and
  splits by patient *within* each source (:func:`split_sources`), so every source has its own
  train/val/test patients and is reported on its own;
* crops a labelled image to its annotated span (:func:`annotated_span`, :func:`write_span_crops`): the
  rows from half a disc above the top annotated body to half a disc below the bottom one. A detector
  trained on these crops never sees an unannotated vertebra labelled as background.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.data.table import Manifest, is_blank, manifest_from_records, save_manifest

__all__ = ["annotated_span", "combine_sources", "source_of", "split_sources", "write_span_crops"]


def source_of(manifest: Manifest) -> str:
    """The name of a manifest's source: its ``source`` column when it has one value, else its folder name.

    Parameters
    ----------
    manifest : Manifest

    Returns
    -------
    str
    """
    if "source" in manifest.df.columns:
        values = {str(v) for v in manifest.df["source"] if not is_blank(v)}
        if len(values) == 1:
            return values.pop()
    return Path(manifest.root).name


def combine_sources(manifests: Sequence[Manifest], folder: str | PathLike[str]) -> Manifest:
    """Merge manifests of several sources into one, each row keeping its ``source`` and ``levels``.

    Parameters
    ----------
    manifests : sequence of Manifest
        One per source (a manifest whose ``source`` column holds several values keeps them).
    folder : str or PathLike
        Where the merged manifest will be saved (paths are stored relative to it).

    Returns
    -------
    Manifest
        Not saved. Patient IDs are prefixed with the source where two sources share one.

    Raises
    ------
    CervkitInputError
        No manifest, or two manifests list the same image file.
    """
    if not manifests:
        raise CervkitInputError("no manifest to combine")
    records, seen, patients = [], {}, {}
    for manifest in manifests:
        name = source_of(manifest)
        for i in range(len(manifest)):
            row = manifest.df.iloc[i].to_dict()
            image = manifest.image_path(i)
            if image in seen:
                raise CervkitInputError(f"image listed by two sources ({seen[image]} and {name})", image)
            seen[image] = name
            mask = manifest.mask_path(i)
            src = name if is_blank(row.get("source")) else str(row["source"])
            row.update(image=str(image), mask=None if mask is None else str(mask), source=src)
            patients.setdefault(str(row["patient_id"]), set()).add(src)
            records.append(row)
    shared = {p for p, srcs in patients.items() if len(srcs) > 1}
    for row in records:
        if str(row["patient_id"]) in shared:
            row["patient_id"] = f"{row['source']}:{row['patient_id']}"
    return manifest_from_records(records, folder)


def split_sources(manifest: Manifest, *, seed: int = 0,
                  ratios: Sequence[float] = (0.6, 0.2, 0.2)) -> Manifest:
    """Patient-level split within each source (rows that already have a ``split`` keep it).

    Parameters
    ----------
    manifest : Manifest
        With a ``source`` column.
    seed : int
    ratios : (float, float, float)
        train : val : test.

    Returns
    -------
    Manifest
        The same rows with a ``split`` column.
    """
    from cervkit.data.split import split_by_patient

    df = manifest.df.copy()
    if "split" not in df.columns:
        df["split"] = None
    sources = df["source"].astype(str) if "source" in df.columns else pd.Series(["data"] * len(df))
    for name in sorted(sources.unique()):
        rows = (sources == name) & df["split"].map(is_blank)
        if not rows.any():
            continue
        part = manifest.with_df(df[rows].drop(columns=["split"]).reset_index(drop=True))
        done = split_by_patient(part, ratios, seed=seed, stratify_by=None)
        df.loc[rows, "split"] = done.df["split"].to_numpy()
    return manifest.with_df(df)


def annotated_span(labels: np.ndarray, *, disc_fraction: float = 0.5) -> tuple[int, int]:
    """Rows ``[top, bottom)`` from part of a disc above the top annotated body to part of one below the last.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map of the annotated bodies.
    disc_fraction : float
        How much of the median gap between consecutive bodies to keep beyond the first and last body
        (0.5: half a disc, so the unannotated neighbour's body stays outside).

    Returns
    -------
    (int, int)
        Row range within ``[0, H]``.

    Raises
    ------
    CervkitInputError
        The label map is empty.
    """
    ids = [int(v) for v in np.unique(labels) if v]
    if not ids:
        raise CervkitInputError("empty label map: no annotated body to crop to")
    extents = []
    for k in ids:
        rows = np.flatnonzero((labels == k).any(axis=1))
        extents.append((int(rows[0]), int(rows[-1]) + 1))
    extents.sort()
    gaps = [b[0] - a[1] for a, b in zip(extents, extents[1:])]
    heights = [b - a for a, b in extents]
    gap = float(np.median(gaps)) if gaps and np.median(gaps) > 0 else 0.25 * float(np.median(heights))
    margin = int(round(disc_fraction * gap))
    return max(0, extents[0][0] - margin), min(labels.shape[0], extents[-1][1] + margin)


def write_span_crops(manifest: Manifest, out_dir: str | PathLike[str], *,
                     splits: Sequence[str] = ("train", "val"), disc_fraction: float = 0.5) -> Manifest:
    """Write each labelled image of ``splits`` cropped to its annotated span, with a manifest of the crops.

    Parameters
    ----------
    manifest : Manifest
        With ``split`` (rows of other splits are left out).
    out_dir : str or PathLike
        Gets ``images/``, ``masks/`` and ``manifest.csv`` (replaced).
    splits : sequence of str
    disc_fraction : float
        See :func:`annotated_span`.

    Returns
    -------
    Manifest
        The crops, same columns (``span_rows`` added: ``top:bottom`` in the original image).
    """
    from cervkit.io.images import read_image, read_mask, write_png

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(len(manifest)):
        row = manifest.df.iloc[i].to_dict()
        if str(row.get("split")) not in splits or manifest.mask_path(i) is None:
            continue
        image, labels = read_image(manifest.image_path(i)), read_mask(manifest.mask_path(i))
        if labels.shape != image.array.shape:
            raise CervkitInputError(f"mask shape {labels.shape} differs from image shape {image.array.shape}",
                                    manifest.mask_path(i))
        top, bottom = annotated_span(labels, disc_fraction=disc_fraction)
        source, stem = str(row.get("source", "data")), Path(manifest.image_path(i)).stem
        stem = stem if stem.startswith(source) else f"{source}_{stem}"
        img_path, msk_path = out / "images" / f"{stem}.png", out / "masks" / f"{stem}.png"
        write_png(img_path, image.array[top:bottom], overwrite=True)
        write_png(msk_path, labels[top:bottom].astype(np.uint8), overwrite=True)
        row.update(image=str(img_path), mask=str(msk_path), span_rows=f"{top}:{bottom}")
        for column in ("height", "width", "sha256"):
            row.pop(column, None)
        records.append(row)
    crops = manifest_from_records(records, out)
    save_manifest(crops, out / "manifest.csv", overwrite=True)
    return crops
