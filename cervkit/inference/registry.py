"""Load a run folder as a predictor: the one place that maps a run's model kind to its inference class.

:func:`load_predictor` reads ``run.json`` (:mod:`cervkit.runs.folder`) and returns the cascade
(YOLO-UNet, YOLO-DeepLab), a whole-image model or YOLOv11-seg, each with ``predict(image)``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.runs.folder import CASCADE_MODELS, read_run_info


class Predictor(Protocol):
    """Anything with ``predict(image) -> CascadePrediction``."""

    def predict(self, image: np.ndarray) -> Any:  # pragma: no cover - protocol
        """Segment one image.

        Parameters
        ----------
        image : numpy.ndarray
            float (H, W) image in [0, 1].

        Returns
        -------
        CascadePrediction
            At least ``labels``, the uint8 (H, W) label map.
        """
        ...


def load_predictor(run: str | PathLike[str], *, device: str | None = None, **options: Any) -> Predictor:
    """Load a trained run as a predictor.

    Parameters
    ----------
    run : str or PathLike
        A run folder, or the name of a shipped model (``mri``, ``xray``; :mod:`cervkit.zoo.store`). A real
        run folder of that name wins; a shipped model is sha256-checked against its card first.
    device : str, optional
        ``cpu`` or ``cuda``; default CUDA when available.
    **options
        Passed to the predictor (e.g. ``conf``, ``threshold`` for cascades; ``threshold``, ``min_area`` for
        the whole-image models; ``conf``, ``min_area`` for ``yolo-seg``).

    Returns
    -------
    Predictor
        An object with ``predict(image) -> CascadePrediction`` and ``model_source`` (a
        :class:`cervkit.zoo.store.ResolvedModel` saying which model was used).
    """
    from cervkit.zoo.store import resolve_model

    resolved = resolve_model(run) if not (Path(run) / "run.json").is_file() else None
    predictor = _load(resolved.path if resolved else Path(run), device=device, **options)
    if resolved is None:
        from cervkit.zoo.store import ResolvedModel

        resolved = ResolvedModel(Path(run), "run", str(run))
    predictor.model_source = resolved
    return predictor


def _load(run: Path, *, device: str | None, **options: Any) -> Predictor:
    """The predictor of one run folder (see :func:`load_predictor`)."""
    info = read_run_info(run)
    if info.get("status") != "done":
        raise CervkitInputError(f"run status is {info.get('status')!r}, not 'done': training did not finish", run)
    model = info["model"]
    if model in CASCADE_MODELS:
        from cervkit.inference.cascade import Cascade
        from cervkit.inference.detector import Detector
        from cervkit.inference.segmenter import Segmenter

        folder = Path(run)
        anchor = None
        if "anchor" in info["stages"]:
            from cervkit.inference.anchor import AnchorClassifier

            anchor = AnchorClassifier.load(folder / info["stages"]["anchor"], device=device)
        return Cascade(Detector.load(folder / info["stages"]["detector"], device=device),
                       Segmenter.load(folder / info["stages"]["segmenter"], device=device), anchor=anchor, **options)
    if model in ("unet3plus", "deeplabv3plus"):
        from cervkit.inference.whole_image import WholeImageModel

        return WholeImageModel.load(Path(run) / info["stages"]["model"], device=device, **options)
    if model == "yolo-seg":
        from cervkit.inference.yolo_seg import YoloSeg

        return YoloSeg.load(Path(run) / info["stages"]["model"], device=device, **options)
    raise CervkitInputError(f"model {model!r} cannot be loaded by this version of cervkit", run)
