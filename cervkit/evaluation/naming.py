"""How often a model names the vertebral bodies right: every annotated body, found or not.

A body counts as right only when a predicted body matches it (IoU ≥ 0.5) **and** carries its level name
(:func:`cervkit.inference.level_names.name_bodies`, anchored on C2's dens or on L5 above the sacrum). A missed
body and a found body with a wrong or no name are both errors, so the rate is never better than detection.
The true names come from the manifest's ``levels`` column (label ``k`` is the ``k``-th level, top to bottom).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError

__all__ = ["body_names", "naming_summary"]

_IOU = 0.5


def body_names(predictor: Any, manifest: Any, *, protocol: str | None = None,
               predictions: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Predict every image of a manifest with its ``levels`` and compare each annotated body's name.

    Parameters
    ----------
    predictor : object
        A loaded model (:func:`cervkit.inference.registry.load_predictor`); its predictions may carry
        ``anchor_scores``.
    manifest : Manifest
        With masks and a ``levels`` column; every row is used.
    protocol : str, optional
        Passed to :func:`~cervkit.inference.level_names.name_bodies` (default: none, the anatomy alone).
    predictions : mapping, optional
        Image path (``str``) → prediction already made (``evaluate_predictor(..., keep=)``); other images are
        predicted here.

    Returns
    -------
    pandas.DataFrame
        One row per annotated body: ``image``, ``source``, ``level`` (true), ``found``, ``name`` (predicted, or
        empty), ``right``, ``anchor`` and ``unsure`` (of the image's naming).

    Raises
    ------
    CervkitInputError
        The manifest has no ``levels`` column.
    """
    from cervkit.evaluation.matching import match_instances
    from cervkit.inference.level_names import name_bodies
    from cervkit.io.images import read_image, read_mask

    if "levels" not in manifest.df.columns:
        raise CervkitInputError("the manifest has no 'levels' column: true level names unknown", manifest.root)
    rows = []
    for i in range(len(manifest)):
        levels = [v.strip() for v in str(manifest.df["levels"].iloc[i]).split(",") if v.strip()]
        image = read_image(manifest.image_path(i))
        gt = read_mask(manifest.mask_path(i))
        made = predictions.get(str(manifest.image_path(i))) if predictions is not None else None
        result = made if made is not None else predictor.predict(image.array)
        named = name_bodies(result.labels, spacing_mm=image.spacing_mm, protocol=protocol,
                            anchor_scores=getattr(result, "anchor_scores", None) or None)
        source = str(manifest.df["source"].iloc[i]) if "source" in manifest.df.columns else ""
        pred_of_gt = {m.gt_label: m.pred_label for m in match_instances(result.labels, gt, _IOU).matches}
        for k in (int(v) for v in np.unique(gt) if v):
            if k > len(levels):
                continue
            match = pred_of_gt.get(k)
            name = named.names.get(match, "") if match is not None else ""
            rows.append({"image": str(manifest.image_path(i)), "source": source, "level": levels[k - 1],
                         "found": match is not None, "name": name, "right": name == levels[k - 1],
                         "anchor": named.anchor or "", "unsure": bool(named.unsure)})
    return pd.DataFrame(rows, columns=["image", "source", "level", "found", "name", "right", "anchor", "unsure"])


def naming_summary(bodies: pd.DataFrame) -> pd.DataFrame:
    """Per source: bodies, found, named right (of all bodies and of the found ones), images flagged unsure.

    Parameters
    ----------
    bodies : pandas.DataFrame
        From :func:`body_names`.

    Returns
    -------
    pandas.DataFrame
        ``source``, ``bodies``, ``found``, ``right``, ``right_of_found``, ``images``, ``images_unsure``.
    """
    out = []
    for source, part in bodies.groupby("source", sort=True):
        images = part.drop_duplicates("image")
        found = part[part["found"]]
        out.append({"source": source, "bodies": int(len(part)), "found": round(float(part["found"].mean()), 4),
                    "right": round(float(part["right"].mean()), 4),
                    "right_of_found": round(float(found["right"].mean()), 4) if len(found) else float("nan"),
                    "images": int(len(images)), "images_unsure": int(images["unsure"].sum())})
    return pd.DataFrame(out)
