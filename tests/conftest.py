"""Shared fixtures: the real-data manifest (skips with a reason when absent), one torch thread, quiet matplotlib."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_manifest_path() -> Path:
    """Path of ``$CERVKIT_DATA_DIR/mri_lumbar_t2/manifest.csv``; skips the test when unavailable."""
    from cervkit.core.config import real_mri_manifest

    path = real_mri_manifest()
    if path is None:
        pytest.skip("real MRI data not available: set CERVKIT_DATA_DIR to the folder holding mri_lumbar_t2/")
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
