"""Import ultralytics safely offline: no network, no downloads, nothing written to the cwd.

Ultralytics decides at import time whether it is online (``ONLINE``), where its
settings live (``USER_CONFIG_DIR`` from ``YOLO_CONFIG_DIR``) and whether to send
analytics (``SETTINGS["sync"]``). :func:`import_ultralytics` prepares all of that
*before* the first import, the first time it is called (never at cervkit import):

* ``YOLO_OFFLINE=1`` so ``ultralytics.utils.ONLINE`` is False (no DNS probe, no
  requirement auto-install, no hub, no asset download attempts);
* ``YOLO_CONFIG_DIR`` under ``outputs/ultralytics_config`` unless the user set one,
  so settings (``<dir>/Ultralytics/settings.json``) are written somewhere writable, not in the home folder;
* settings ``sync=False`` and every logger integration off (ClearML, Comet, DVC,
  MLflow, Ray Tune, TensorBoard, W&B);
* ``Arial.ttf`` / ``Arial.Unicode.ttf`` in ``USER_CONFIG_DIR`` as copies of
  matplotlib's bundled DejaVuSans, so ``check_font`` never downloads a font.

The AMP check that ultralytics runs on CUDA loads (and would download) ``yolo26n.pt``;
:func:`amp_setting` picks an AMP value that avoids it (``"bf16"`` skips the check).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_INTEGRATIONS_OFF = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
                     "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
                     "openvino_msg": False}
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_prepared: dict[str, Any] = {}


def default_config_dir() -> Path:
    """Return the folder ultralytics settings go to when ``YOLO_CONFIG_DIR`` is unset.

    Returns
    -------
    pathlib.Path
        ``<outputs>/ultralytics_config`` (see :func:`cervkit.core.config.outputs_dir`).
    """
    from cervkit.core.config import outputs_dir

    return outputs_dir() / "ultralytics_config"


def _local_font() -> Path | None:
    """Return matplotlib's bundled DejaVuSans.ttf (always installed with matplotlib)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def _install_fonts(config_dir: Path) -> None:
    """Put local stand-ins for the fonts ultralytics would download into its config folder."""
    font = _local_font()
    if font is None:
        return
    for name in _FONT_NAMES:
        target = config_dir / name
        if not target.exists():
            shutil.copyfile(font, target)


def _force_offline_flags() -> None:
    """Set ``ONLINE = False`` in every loaded ultralytics module (covers an import made before ours)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("ultralytics") and module is not None and hasattr(module, "ONLINE"):
            module.ONLINE = False


def _restore_pil_open() -> None:
    """Undo ultralytics' global monkey-patch of ``PIL.Image.open``.

    On import, ultralytics replaces ``PIL.Image.open`` for every library in the process:
    on a file Pillow cannot identify it tries to pip-install ``pi-heif`` (a network call)
    and then raises ``ModuleNotFoundError`` instead of Pillow's own error, which breaks
    cervkit's clear messages about bad image files. cervkit needs no HEIF support.
    """
    from PIL import Image as PILImage
    from ultralytics.utils import patches

    original = getattr(patches, "_image_open", None)
    if original is not None and PILImage.open is not original:
        PILImage.open = original


def import_ultralytics() -> ModuleType:
    """Return the ``ultralytics`` module, configured to run offline.

    The first call sets ``YOLO_OFFLINE=1`` and (unless already set) ``YOLO_CONFIG_DIR``
    in ``os.environ``, imports ultralytics, turns sync and integrations off in its
    settings, installs local fonts and restores ``PIL.Image.open`` (see
    :func:`_restore_pil_open`); later calls return the module at once.

    Returns
    -------
    types.ModuleType
        The imported ``ultralytics`` package.
    """
    if "module" in _prepared:
        return _prepared["module"]
    os.environ["YOLO_OFFLINE"] = "1"
    if not os.environ.get("YOLO_CONFIG_DIR", "").strip():
        os.environ["YOLO_CONFIG_DIR"] = str(default_config_dir())
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    import ultralytics
    from ultralytics import utils as ul_utils

    _force_offline_flags()
    settings = ul_utils.SETTINGS
    changes = {k: v for k, v in _INTEGRATIONS_OFF.items() if k in settings and settings.get(k) != v}
    weights_dir = str(Path(ul_utils.USER_CONFIG_DIR) / "weights")
    if settings.get("weights_dir") != weights_dir:
        changes["weights_dir"] = weights_dir
    if changes:
        settings.update(changes)
    _install_fonts(Path(ul_utils.USER_CONFIG_DIR))
    _restore_pil_open()
    _prepared["module"] = ultralytics
    return ultralytics


def config_dir() -> Path:
    """Return ultralytics' ``USER_CONFIG_DIR`` (importing it offline first).

    Returns
    -------
    pathlib.Path
        The folder holding ``settings.json``, the stand-in fonts and ``weights/``.
    """
    import_ultralytics()
    from ultralytics.utils import USER_CONFIG_DIR

    return Path(USER_CONFIG_DIR)


def amp_setting(device_type: str) -> bool | str:
    """Choose ultralytics' ``amp`` argument so training never downloads the AMP-check model.

    Parameters
    ----------
    device_type : str
        ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns
    -------
    bool or str
        False on CPU/MPS (AMP unused there). On CUDA: True when the check model
        (``yolo26n.pt``) is already in the weights folder, ``"bf16"`` when the GPU
        supports bfloat16 (ultralytics skips the check for bf16), else False (FP32).
    """
    if device_type != "cuda":
        return False
    import_ultralytics()
    import torch
    from ultralytics.utils import WEIGHTS_DIR

    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        return True
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return False
