"""Shared fixtures and the real-data policy; one torch thread, quiet matplotlib.

Real data (``$CERVKIT_DATA_DIR``, e.g. ``../shared/data``) reaches a test only through a fixture in
:data:`REAL_DATA_FIXTURES`, and a test requests one exactly when it is marked ``@pytest.mark.realdata``:

* collection stops with a usage error listing every test that uses a real-data fixture without the
  marker, or carries the marker without using one (so ``-m "not realdata"`` means what it says);
* a test without the marker runs with ``CERVKIT_DATA_DIR`` unset, so code that looks for real data
  on its own (``real_mri_manifest()``, ``get_dataset("mri_lumbar_t2")``, a CLI subprocess) finds none;
* a real-data test skips (with the reason) when the data is missing, except in CI (``CI=true``),
  where it fails: CI always provides the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from skips import skip_or_fail_in_ci

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
REAL_DATA_FIXTURES = frozenset({"real_manifest_path"})
"""Fixtures that hand a test real data; a test uses one of them iff it is marked ``realdata``."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``realdata`` marker (also listed in pyproject.toml) so this file works on its own."""
    config.addinivalue_line("markers", "realdata: needs CERVKIT_DATA_DIR with mri_lumbar_t2")


def real_data_problems(items: list[pytest.Item]) -> list[str]:
    """Tests under ``tests/`` whose ``realdata`` marker and real-data fixtures disagree, one line each."""
    problems = []
    for item in items:
        if TESTS not in Path(item.path).resolve().parents:  # e.g. nbval's notebook cells
            continue
        uses = sorted(REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())))
        marked = item.get_closest_marker("realdata") is not None
        if uses and not marked:
            problems.append(f"{item.nodeid}: uses {', '.join(uses)} but is not marked @pytest.mark.realdata")
        elif marked and not uses:
            problems.append(f"{item.nodeid}: marked @pytest.mark.realdata but uses no real-data fixture "
                            f"({', '.join(sorted(REAL_DATA_FIXTURES))})")
    return problems


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop the run when a test's ``realdata`` marker and its use of real data disagree."""
    problems = real_data_problems(items)
    if problems:
        raise pytest.UsageError("real-data marker policy (tests/conftest.py):\n  " + "\n  ".join(problems))


@pytest.fixture(autouse=True)
def _real_data_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide ``CERVKIT_DATA_DIR`` from every test not marked ``realdata``."""
    if request.node.get_closest_marker("realdata") is None:
        monkeypatch.delenv("CERVKIT_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def real_manifest_path() -> Path:
    """Path of ``$CERVKIT_DATA_DIR/mri_lumbar_t2/manifest.csv``.

    Skips the test when unavailable; fails it in CI (``CI=true``), which always sets ``CERVKIT_DATA_DIR``.
    """
    from cervkit.core.config import real_mri_manifest

    path = real_mri_manifest()
    if path is None:
        skip_or_fail_in_ci("real MRI data not available: set CERVKIT_DATA_DIR to the folder holding "
                           f"mri_lumbar_t2/ (CERVKIT_DATA_DIR={os.environ.get('CERVKIT_DATA_DIR')!r})")
    return path


@pytest.fixture()
def outputs_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``CERVKIT_OUTPUTS`` at a temporary folder for the test."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("CERVKIT_OUTPUTS", str(out))
    return out


@pytest.fixture()
def one_thread() -> object:
    """One torch thread: on a shared 2-core machine two threads oversubscribe and run many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
