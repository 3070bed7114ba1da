"""cervkit: YOLO-UNet segmentation of cervical vertebral bodies, in notebooks.

Importing the package is cheap and has no side effects: it loads the one-line API (:mod:`cervkit.api`,
whose functions import their work when called) and the subpackages, whose ``__init__`` files import
nothing heavy. The subpackages follow the data's path::

    core → io → data → labels → transforms → models → training / inference → runs → evaluation
         → measurements → export → editor → cli

See the README's "Architecture" section for what each owns.
"""

from __future__ import annotations

from cervkit import (
    cli,
    core,
    data,
    editor,
    evaluation,
    export,
    inference,
    io,
    labels,
    measurements,
    models,
    runs,
    training,
    transforms,
)
from cervkit.api import MaskEditor, load_model, measure, read_image, read_mask, segment
from cervkit.core.config import data_dir, quick_mode, real_mri_manifest
from cervkit.core.errors import CervkitInputError, ManifestError
from cervkit.core.image import Image
from cervkit.core.version import __version__

SUBPACKAGES = ("core", "io", "data", "labels", "transforms", "models", "training", "inference", "runs",
               "evaluation", "measurements", "export", "editor", "cli")
"""The subpackages, in the order data flows through them."""

__all__ = [
    "CervkitInputError", "Image", "ManifestError", "MaskEditor", "__version__", "data_dir", "load_model",
    "measure", "quick_mode", "read_image", "read_mask", "real_mri_manifest", "segment", *SUBPACKAGES,
]


def __dir__() -> list[str]:
    return sorted(__all__)
