"""When a test may skip: outside CI, for something genuinely optional; in CI (``CI=true``) never.

CI installs every requirement (the dev extra, Chromium) and sets ``CERVKIT_DATA_DIR``, so there a
missing requirement is a failure, not a skip. Imported by the conftests and tests (``tests/`` is on
``sys.path``); not a test module itself.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """True when running in CI (``CI`` is ``true`` or ``1``, any case)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip the test with ``reason``; in CI fail with it instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this must not be skipped in CI)", pytrace=False)
    pytest.skip(reason)
