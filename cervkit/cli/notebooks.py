"""Execute the notebooks top to bottom in fresh kernels (the README's main job).

Used by ``python -m cervkit notebooks``: each ``notebooks/NN_*.ipynb`` runs in its own
kernel with the notebook folder as working directory, and its executed copy is
written to the output folder. Figures the notebooks save go to ``outputs/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from cervkit.core.config import data_dir, project_root


@dataclass
class NotebookResult:
    """Outcome of one executed notebook.

    Attributes
    ----------
    path : pathlib.Path
        The source notebook.
    executed : pathlib.Path
        Where the executed copy was written.
    seconds : float
        Wall time.
    error : str or None
        The error's last line when a cell failed, else None.
    """

    path: Path
    executed: Path
    seconds: float
    error: str | None = None


def find_notebooks(folder: Path | None = None, pattern: str = "[0-9][0-9]_*.ipynb") -> list[Path]:
    """List the numbered notebooks in order.

    Parameters
    ----------
    folder : pathlib.Path, optional
        Default: ``notebooks/`` of the checkout.
    pattern : str
        Glob for the notebook names.

    Returns
    -------
    list of pathlib.Path
        Sorted by name (so by number).
    """
    if folder is None:
        root = project_root()
        if root is None:
            raise FileNotFoundError("no cervkit checkout found: pass the notebooks folder")
        folder = root / "notebooks"
    return sorted(Path(folder).glob(pattern))


def run_notebook(path: Path, out_dir: Path, *, timeout: int = 1800, kernel: str = "python3") -> NotebookResult:
    """Execute one notebook in a fresh kernel and save the executed copy.

    Parameters
    ----------
    path : pathlib.Path
        The notebook.
    out_dir : pathlib.Path
        Folder for the executed copy (same file name).
    timeout : int
        Seconds allowed per cell.
    kernel : str
        Kernel name.

    Returns
    -------
    NotebookResult
        Timing and the error, if any (the executed copy is written either way).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(path.parent)}})
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    seconds = time.perf_counter() - start
    nbformat.write(notebook, executed)
    return NotebookResult(path=path, executed=executed, seconds=seconds, error=error)


def run_all(out_dir: Path, *, folder: Path | None = None, only: list[str] | None = None) -> list[NotebookResult]:
    """Execute every numbered notebook, printing one line per notebook.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder for the executed copies.
    folder : pathlib.Path, optional
        The notebooks folder.
    only : list of str, optional
        Run only notebooks whose name starts with one of these prefixes (e.g. ``["00", "01"]``).

    Returns
    -------
    list of NotebookResult
        One per notebook run.

    Notes
    -----
    A relative ``CERVKIT_DATA_DIR`` (``CERVKIT_DATA_DIR=../shared/data make run``) is made absolute from the
    current folder first, as the user meant it.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    root = data_dir()
    if root is not None:  # kernels start in the notebooks folder: a relative CERVKIT_DATA_DIR would point elsewhere
        os.environ["CERVKIT_DATA_DIR"] = str(root)
    results = []
    for path in find_notebooks(folder):
        if only and not any(path.name.startswith(p) for p in only):
            continue
        result = run_notebook(path, out_dir)
        status = "ok" if result.error is None else f"FAILED: {result.error}"
        print(f"{path.name:40s} {result.seconds:7.1f} s  {status}", flush=True)
        results.append(result)
    return results
