"""cervkit: YOLO-UNet segmentation of cervical vertebral bodies, in notebooks.

Importing the package is cheap and has no side effects: submodules (``io``,
``manifest``, ``synth`` …) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from cervkit.config import data_dir, quick_mode, real_mri_manifest
from cervkit.errors import CervkitInputError, ManifestError
from cervkit.image import Image

__version__ = "0.1.0"

_SUBMODULES = {
    "io", "manifest", "synth", "instances", "augment", "models", "detector", "segmenter",
    "split", "cascade", "metrics", "matching", "yolo_env", "yolo_dataset", "detector_train", "runs", "train", "predict", "evaluate", "viz", "editor", "export", "measure", "levels", "bodies", "endplates", "cli",
    "dicom", "nifti", "fileutil", "preprocess", "datasets", "config", "notebook_runner",
}

__all__ = [
    "CervkitInputError", "Image", "ManifestError", "data_dir", "quick_mode",
    "real_mri_manifest", "__version__", *sorted(_SUBMODULES),
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"cervkit.{name}")
    raise AttributeError(f"module 'cervkit' has no attribute {name!r}")
