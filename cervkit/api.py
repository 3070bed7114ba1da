"""The one-line entry points: read an image, load a model, segment, measure, open the editor.

Every function imports what it needs when it is called, so ``import cervkit`` stays light (no torch, no
ultralytics, no widgets). Each one is a thin front for the subpackage that owns the work:

* :func:`read_image`, :func:`read_mask` → :mod:`cervkit.io.images`
* :func:`load_model`, :func:`segment` → :mod:`cervkit.inference.registry` (a run folder or a shipped model,
  :mod:`cervkit.zoo.store`)
* :func:`measure` → :mod:`cervkit.measurements.batch`
* :func:`MaskEditor` → :class:`cervkit.editor.widget.MaskEditor`
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from cervkit.core.image import Image
    from cervkit.inference.cascade import CascadePrediction
    from cervkit.inference.registry import Predictor

__all__ = ["MODEL_FOR_MODALITY", "MaskEditor", "choose_model", "load_model", "measure", "read_image", "read_mask",
           "segment"]

from cervkit.zoo.store import MODEL_FOR_MODALITY  # noqa: E402  (light: no torch)


def read_image(path: str | PathLike[str], *, slice_index: int | None = None) -> Image:
    """Read a DICOM, PNG, JPG or TIFF image as float32 in [0, 1] with its pixel spacing.

    Parameters
    ----------
    path : str or PathLike
        The image file (or a DICOM series folder).
    slice_index : int, optional
        Which frame of a multi-frame DICOM or slice of a 3-D NIfTI.

    Returns
    -------
    cervkit.core.image.Image
        A 2-D float32 array with ``spacing_mm`` ((row, col) in mm, or None) and ``meta``.
    """
    from cervkit.io.images import read_image as _read_image

    return _read_image(path, slice_index=slice_index)


def read_mask(path: str | PathLike[str]) -> np.ndarray:
    """Read a label map (PNG label image or ITK-SNAP NIfTI) as uint8, 0 background, 1..K bodies.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    numpy.ndarray
        uint8 (H, W) label map.
    """
    from cervkit.io.images import read_mask as _read_mask

    return _read_mask(path)


def choose_model(image: Any) -> str:
    """The shipped model for an image, from its DICOM Modality (MR → ``mri``; CR, DX, DR → ``xray``).

    Parameters
    ----------
    image : Image or str or PathLike
        An image read by :func:`read_image` (its ``meta["modality"]``), or a path to read.

    Returns
    -------
    str
        ``"mri"`` or ``"xray"``.

    Raises
    ------
    cervkit.core.errors.CervkitInputError
        Nothing in the image says which (a PNG, or a DICOM of another modality): pass ``model="mri"`` or
        ``model="xray"``.
    """
    from os import fspath

    from cervkit.core.errors import CervkitInputError

    if isinstance(image, (str, PathLike)):
        image = read_image(fspath(image))
    modality = str(getattr(image, "meta", {}).get("modality") or "").upper()
    if modality in MODEL_FOR_MODALITY:
        return MODEL_FOR_MODALITY[modality]
    source = getattr(image, "meta", {}).get("source")
    raise CervkitInputError(f"cannot tell which model fits this image (modality {modality or 'not recorded'}): "
                            "pass model='mri' (sagittal MRI) or model='xray' (lateral radiograph)", source)


def load_model(model: str | PathLike[str], *, device: str | None = None, **options: Any) -> Predictor:
    """Load a model: a shipped one by name (``"mri"``, ``"xray"``) or a run folder from ``python -m cervkit train``.

    Parameters
    ----------
    model : str or PathLike
        A shipped model's name or a run folder (a real run folder of that name wins; ``model_source`` on the
        result says which was used).
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default CUDA when visible.
    **options
        Passed to the predictor (e.g. ``conf``, ``threshold``).

    Returns
    -------
    Predictor
        An object with ``predict(image) -> CascadePrediction``.
    """
    from cervkit.inference.registry import load_predictor

    return load_predictor(model, device=device, **options)


def segment(image: np.ndarray | Image | str | PathLike[str], model: Any = "auto", *,
            device: str | None = None) -> CascadePrediction:
    """Segment the vertebral bodies of one image.

    Parameters
    ----------
    image : array, Image, str or PathLike
        A float image in [0, 1] or a path read with :func:`read_image`.
    model : str, PathLike or Predictor
        ``"auto"`` (the shipped model for the image's DICOM Modality, :func:`choose_model`), a shipped model's
        name, a run folder, or an already loaded predictor.
    device : str, optional
        Used when ``model`` is loaded here.

    Returns
    -------
    cervkit.inference.cascade.CascadePrediction
        ``labels`` (uint8 label map, bodies 1..K top to bottom), ``boxes``, ``scores`` (one detector score
        per body), ``seconds``, and ``level_names`` (label → name, counted from C2 or from L5 above the sacrum,
        found by the model's anchor classifier or C2's dens; empty when no
        landmark is in view) with ``levels_unsure``.
    """
    from os import fspath

    if isinstance(image, (str, PathLike)):
        image = read_image(fspath(image))
    if isinstance(model, str) and model == "auto":
        model = choose_model(image)
    from cervkit.inference.level_names import name_bodies

    predictor = load_model(model, device=device) if isinstance(model, (str, PathLike)) else model
    result = predictor.predict(image)
    if hasattr(result, "level_names"):
        named = name_bodies(result.labels, spacing_mm=getattr(image, "spacing_mm", None),
                            anchor_scores=getattr(result, "anchor_scores", None) or None)
        result.level_names, result.levels_unsure = dict(named.names), bool(named.unsure)
    return result


def measure(labels: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
            expected: Sequence[str] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Measure a label map: level names, C2–C7 Cobb angle, heights and widths of each body.

    Parameters
    ----------
    labels : numpy.ndarray
        (H, W) label map.
    spacing_mm : (float, float), optional
        (row, col) pixel spacing; lengths in pixels without it.
    expected : sequence of str, optional
        The levels the image should show (default C2…C7).

    Returns
    -------
    (dict, pandas.DataFrame)
        The summary (``levels``, ``levels_unsure``, ``c2c7_cobb_deg`` …) and one row per body.
    """
    from cervkit.measurements.batch import measure_labels

    if expected is None:
        return measure_labels(labels, spacing_mm)
    return measure_labels(labels, spacing_mm, expected=expected)


def MaskEditor(image: Any, labels: Any = None, **options: Any) -> Any:  # noqa: N802 - a class's front
    """The in-notebook mask editor (an anywidget view of :class:`cervkit.editor.state.EditorState`).

    Parameters
    ----------
    image : array, Image or path
        The image to annotate.
    labels : numpy.ndarray, optional
        A draft label map to correct.
    **options
        Passed to :class:`cervkit.editor.widget.MaskEditor` (``spacing_mm``, ``level_names``,
        ``autosave_path``, ``run`` …).

    Returns
    -------
    cervkit.editor.widget.MaskEditor
        The widget; display it as a notebook cell's last expression.
    """
    from cervkit.editor.widget import MaskEditor as _MaskEditor

    return _MaskEditor(image, labels, **options)
