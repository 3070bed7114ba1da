"""Run-time switches read from the environment: quick mode and the data folder.

Nothing here runs at import; each function reads the environment when called.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def quick_mode() -> bool:
    """Return True when ``CERVKIT_QUICK`` asks for quick mode.

    Quick mode shrinks epochs, image size and data so a notebook runs in about
    a minute on 2 CPU cores; it never changes which code path runs.

    Returns
    -------
    bool
        True for ``CERVKIT_QUICK`` in {1, true, yes, on} (any case).
    """
    return os.environ.get("CERVKIT_QUICK", "0").strip().lower() in _TRUE


def data_dir() -> Path | None:
    """Return the folder named by ``CERVKIT_DATA_DIR``, or None when unset.

    Returns
    -------
    pathlib.Path or None
        The data root (e.g. ``../shared/data``); it holds ``mri_lumbar_t2/``.
    """
    value = os.environ.get("CERVKIT_DATA_DIR", "").strip()
    return Path(value).expanduser().resolve() if value else None


def real_mri_manifest() -> Path | None:
    """Return the real lumbar MRI manifest path when the data folder has it.

    Returns
    -------
    pathlib.Path or None
        ``$CERVKIT_DATA_DIR/mri_lumbar_t2/manifest.csv`` if it exists, else None.
    """
    root = data_dir()
    if root is None:
        return None
    path = root / "mri_lumbar_t2" / "manifest.csv"
    return path if path.is_file() else None


def outputs_dir() -> Path:
    """Return the folder for generated files (``CERVKIT_OUTPUTS``, default ``outputs``).

    The folder is created if needed. It is ignored by git.

    Returns
    -------
    pathlib.Path
        The outputs folder, absolute.
    """
    path = Path(os.environ.get("CERVKIT_OUTPUTS", "outputs")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
