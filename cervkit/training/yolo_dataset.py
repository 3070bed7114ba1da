"""Turn a cervkit manifest into an ultralytics detection dataset (images, labels, data.yaml).

Layout written under ``out_dir``::

    out_dir/data.yaml                 path (absolute), train/val[/test] folders, names
    out_dir/images/<split>/<name>.png 8-bit grayscale, original size (ultralytics letterboxes)
    out_dir/labels/<split>/<name>.txt one ``cls cx cy w h`` line per vertebral body
    out_dir/sources.csv               which manifest row each file came from

Images are read with :func:`cervkit.io.images.read_image` (so DICOM windowing applies) and
written 8-bit; boxes are the tight pixel-edge boxes of the mask's labels
(:func:`cervkit.labels.instances.boxes_from_labels`); a binary mask is split into connected
components first.

Classes
-------
``"single"``: one class, ``vertebra``.
``"levels"``: one class per level name (default C2..C7). Label ``k`` of a row is the
level ``levels[k-1]`` when the manifest has a ``levels`` column (e.g. ``"C2,C3,…"``,
the phantom convention 1..6 = C2..C7); otherwise label ``k`` is class ``k-1``
(instance order top to bottom).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes, check_writable
from cervkit.inference.detector import detector_input
from cervkit.io.images import read_image, read_mask, write_png
from cervkit.labels.instances import boxes_from_labels
from cervkit.labels.yolo import write_yolo_labels

if TYPE_CHECKING:  # pragma: no cover
    from cervkit.data.table import Manifest

DEFAULT_LEVELS = ("C2", "C3", "C4", "C5", "C6", "C7")
SINGLE_NAME = "vertebra"


def _load(manifest: Manifest | str | PathLike[str]) -> Manifest:
    """Accept a Manifest or a manifest path."""
    from cervkit.data.manifest import load_manifest
    from cervkit.data.table import Manifest

    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def _label_map(mask: np.ndarray) -> np.ndarray:
    """Return an instance label map; a binary mask (one value) is split into components."""
    values = np.unique(mask[mask > 0])
    if len(values) == 1:
        from cervkit.labels.instances import (
            instances_from_labels,
            labels_from_instances,
        )

        parts = instances_from_labels(mask, binary=True)
        return labels_from_instances([p.mask for p in parts], mask.shape)
    return mask


def row_classes(labels: np.ndarray, classes: str, level_names: Sequence[str],
                levels_cell: Any = None, *, path: Path | None = None) -> np.ndarray:
    """Class id of each label present in ``labels`` (increasing label order).

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 label map.
    classes : {"single", "levels"}
        Class scheme (see the module docstring).
    level_names : sequence of str
        Class names for ``"levels"``.
    levels_cell : str, optional
        The row's ``levels`` cell (comma-separated level of label 1, 2, …).
    path : pathlib.Path, optional
        The mask file, for error messages.

    Returns
    -------
    numpy.ndarray
        int64 class ids, one per label present.
    """
    present = [int(v) for v in np.unique(labels) if v != 0]
    if classes == "single":
        return np.zeros(len(present), dtype=np.int64)
    names = list(level_names)
    has_cell = isinstance(levels_cell, str) and levels_cell.strip() != ""
    per_label = [s.strip() for s in levels_cell.split(",")] if has_cell else None
    ids = []
    for k in present:
        if per_label is not None:
            if k > len(per_label) or per_label[k - 1] not in names:
                raise CervkitInputError(f"label {k} has no level among {names} in levels {levels_cell!r}", path)
            ids.append(names.index(per_label[k - 1]))
        else:
            if k > len(names):
                raise CervkitInputError(f"label {k} but only {len(names)} level names {names}; pass level_names",
                                        path)
            ids.append(k - 1)
    return np.asarray(ids, dtype=np.int64)


def _yaml(out_dir: Path, splits: Sequence[str], names: Sequence[str]) -> str:
    """The data.yaml text (written by hand: plain keys, quoted strings)."""
    lines = [f"path: '{out_dir.as_posix()}'"]
    for split in splits:
        lines.append(f"{split}: images/{split}")
    lines.append("names:")
    lines += [f"  {i}: '{name}'" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def build_yolo_dataset(manifest: Manifest | str | PathLike[str], out_dir: str | PathLike[str], *,
                       imgsz: int | None = None, classes: str = "single",
                       splits: Sequence[str] = ("train", "val"), level_names: Sequence[str] | None = None,
                       input_norm: str = "none", zoom_copies: Sequence[float] = (),
                       overwrite: bool = False) -> Path:
    """Write an ultralytics detection dataset from a manifest with a ``split`` column.

    Parameters
    ----------
    manifest : Manifest or path
        Rows with ``image``, ``mask`` and ``split`` (use :func:`cervkit.data.manifest.ensure_split`).
    out_dir : str or PathLike
        Destination folder (created).
    imgsz : int, optional
        Recorded in data.yaml's comment only: images keep their size (ultralytics letterboxes).
    classes : {"single", "levels"}, default "single"
        One ``vertebra`` class, or one class per level.
    splits : sequence of str, default ("train", "val")
        Splits to write; each must have at least one row.
    level_names : sequence of str, optional
        Level class names for ``classes="levels"`` (default C2..C7).
    input_norm : {"none", "equalize"}, default "none"
        Normalisation of the written images (:func:`detector_input`).
    zoom_copies : sequence of float, optional
        Field-of-view augmentation: each ``train`` image is also written zoomed by each factor
        (:func:`cervkit.transforms.shift.zoom` at the same matrix size: 0.5 shows twice the anatomy, 2.0 half of it,
        bodies cut at the edge kept as the part in view), so the detector meets fields of view it would otherwise
        never see. Only with ``classes="single"`` (a zoomed-in view loses levels).
    overwrite : bool, default False
        Replace an existing ``data.yaml`` (and the files of the same names); else FileExistsError.

    Returns
    -------
    pathlib.Path
        The ``data.yaml`` file.
    """
    if classes not in ("single", "levels"):
        raise ValueError(f"classes must be 'single' or 'levels', got {classes!r}")
    if zoom_copies and classes != "single":
        raise CervkitInputError("zoom copies need the single 'vertebra' class (a zoomed-in view loses levels)")
    if any(float(f) <= 0 or float(f) == 1.0 for f in zoom_copies):
        raise CervkitInputError(f"zoom factors must be positive and not 1, got {list(zoom_copies)}")
    man = _load(manifest)
    if "split" not in man.df.columns:
        raise CervkitInputError("manifest has no 'split' column; call cervkit.data.manifest.ensure_split first",
                                man.path)
    out = Path(out_dir).resolve()
    yaml_path = check_writable(out / "data.yaml", overwrite)
    names = [SINGLE_NAME] if classes == "single" else list(level_names or DEFAULT_LEVELS)
    sources: list[dict[str, Any]] = []
    for split in splits:
        part = man.subset(split=split)
        if len(part) == 0:
            raise CervkitInputError(f"split {split!r} has no rows", man.path)
        for i, row in enumerate(part.rows()):
            if row.mask is None:
                raise CervkitInputError(f"{part.line(i)} has no mask", man.path)
            image = read_image(row.image)
            labels = _label_map(read_mask(row.mask))
            if labels.shape != image.array.shape:
                raise CervkitInputError(f"mask shape {labels.shape} != image shape {image.array.shape}", row.mask)
            stem = f"{row.index:05d}_{Path(row.image).stem}"
            cls = row_classes(labels, classes, names, row.extra.get("levels"), path=row.mask)
            write_png(out / "images" / split / f"{stem}.png", detector_input(image.array, input_norm),
                      overwrite=overwrite)
            write_yolo_labels(out / "labels" / split / f"{stem}.txt", boxes_from_labels(labels),
                              labels.shape, cls, overwrite=overwrite)
            sources.append({"split": split, "name": stem, "image": str(row.image), "mask": str(row.mask),
                            "patient_id": row.patient_id, "n_boxes": len(cls), "zoom": 1.0})
            for factor in zoom_copies if split == "train" else ():
                from cervkit.transforms.shift import zoom

                zoomed, zlabels, _ = zoom(image.array, labels, float(factor))
                zstem = f"{stem}_zoom{float(factor):g}"
                zboxes = boxes_from_labels(zlabels)
                write_png(out / "images" / split / f"{zstem}.png", detector_input(zoomed, input_norm),
                          overwrite=overwrite)
                write_yolo_labels(out / "labels" / split / f"{zstem}.txt", zboxes, zlabels.shape,
                                  np.zeros(len(zboxes), dtype=int), overwrite=overwrite)
                sources.append({"split": split, "name": zstem, "image": str(row.image), "mask": str(row.mask),
                                "patient_id": row.patient_id, "n_boxes": len(zboxes), "zoom": float(factor)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(sources[0]))
    writer.writeheader()
    writer.writerows(sources)
    atomic_write_bytes(out / "sources.csv", buf.getvalue().encode("utf-8"), overwrite=overwrite)
    text = (f"# written by cervkit.training.yolo_dataset (imgsz {imgsz})\n" if imgsz else "") + _yaml(out, splits, names)
    atomic_write_bytes(yaml_path, text.encode("utf-8"), overwrite=overwrite)
    return yaml_path


def choose_classes(manifest: Manifest, splits: Sequence[str] = ("train", "val")) -> tuple[str, list[str] | None]:
    """Pick the detector's classes for a dataset: per-level when every mask covers the same levels.

    A per-level detector (one class per level, at most one box each at inference, see
    :mod:`cervkit.inference.cascade`) cannot add an instance for a vertebra just outside the annotated
    range, which a single ``vertebra`` class does (measured on the real MRI set: 9 of 18
    test images gained the unannotated vertebra above T11). Levels are only meaningful when
    every training and validation mask holds the same K bodies.

    Parameters
    ----------
    manifest : Manifest
        With a ``split`` column (rows of other splits are ignored).
    splits : sequence of str
        The parts the detector learns from.

    Returns
    -------
    classes : {"levels", "single"}
        The mode for :func:`build_yolo_dataset`.
    level_names : list of str or None
        The names: the manifest's ``levels`` column when it is the same on every row,
        else ``V1``..``VK`` (position from the top); None for ``"single"``.
    """
    df = manifest.df
    rows = df[df["split"].isin(splits)] if "split" in df.columns else df
    if len(rows) == 0:
        return "single", None
    if "n_vertebrae" in rows.columns and rows["n_vertebrae"].notna().all():
        counts = {int(v) for v in rows["n_vertebrae"]}
    else:
        counts = {int(read_mask(manifest.mask_path(int(i))).max()) for i in rows.index}
    if len(counts) != 1 or 0 in counts:
        return "single", None
    (k,) = counts
    if "levels" in rows.columns:
        cells = {str(v).strip() for v in rows["levels"]}
        if len(cells) == 1:
            names = [s.strip() for s in cells.pop().split(",")]
            if len(names) == k:
                return "levels", names
    return "levels", [f"V{j}" for j in range(1, k + 1)]
