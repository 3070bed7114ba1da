"""Run-time switches read from the environment: quick mode and the data folder.

Nothing here runs at import; each function reads the environment when called.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
DATA_MANIFEST_NAME = "data_manifest.csv"


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


def project_root(start: Path | None = None) -> Path | None:
    """Find the cervkit checkout (the folder with ``data_manifest.csv`` and ``pyproject.toml``).

    Parameters
    ----------
    start : pathlib.Path, optional
        Where to start looking upward (default: the current directory, then this package's folder).

    Returns
    -------
    pathlib.Path or None
        The checkout's root, or None (e.g. cervkit installed from a wheel, run elsewhere).
    """
    bases = [Path.cwd() if start is None else Path(start), Path(__file__).resolve().parent]
    for base in bases:
        for folder in (base.resolve(), *base.resolve().parents):
            if (folder / DATA_MANIFEST_NAME).is_file() and (folder / "pyproject.toml").is_file():
                return folder
    return None


def outputs_dir() -> Path:
    """Return the folder for generated files, creating it if needed.

    ``CERVKIT_OUTPUTS`` when set, else ``outputs/`` at the checkout's root (ignored by git),
    else ``outputs/`` in the current directory (e.g. on Colab with cervkit pip-installed).

    Returns
    -------
    pathlib.Path
        The outputs folder, absolute.
    """
    env = os.environ.get("CERVKIT_OUTPUTS", "").strip()
    root = project_root()
    default = (root / "outputs") if root is not None else Path("outputs")
    path = (Path(env) if env else default).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
