"""The test suite's own rules (tests/conftest.py, tests/skips.py), checked on small planted suites.

* a test that uses real data without ``@pytest.mark.realdata``, or carries it without using real data,
  stops collection with a usage error naming it;
* an unmarked test never sees ``CERVKIT_DATA_DIR``;
* a real-data test skips when the data is missing, but fails in CI (``CI=true``);
* the browser tests skip without Chromium, but fail in CI;
* nothing in tests/ skips because a hard dependency or cervkit itself failed to import.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

PLANTED_OK = """
    import os

    import pytest


    @pytest.mark.realdata
    def test_reads_real(real_manifest_path):
        assert real_manifest_path.name == "manifest.csv" and os.environ["CERVKIT_DATA_DIR"]


    @pytest.mark.realdata
    def test_reads_real_too(real_manifest_path):
        assert real_manifest_path.is_file()


    def test_sees_no_real_data():
        assert "CERVKIT_DATA_DIR" not in os.environ
"""

PLANTED_BAD = """
    import pytest


    def test_unmarked(real_manifest_path):
        pass


    @pytest.mark.realdata
    def test_marked_without_data():
        pass


    @pytest.fixture
    def rows(real_manifest_path):
        return real_manifest_path


    def test_through_another_fixture(rows):
        pass
"""


def _run(tmp_path: Path, source: str, *args: str, data: Path | None, ci: bool) -> subprocess.CompletedProcess:
    """Run pytest on a planted suite (this suite's conftest.py and skips.py beside ``source``)."""
    suite = tmp_path / "tests"
    suite.mkdir(exist_ok=True)
    for name in ("conftest.py", "skips.py"):
        shutil.copy(TESTS / name, suite / name)
    (suite / "test_planted.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CERVKIT_DATA_DIR", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if data is not None:
        env["CERVKIT_DATA_DIR"] = str(data)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", str(suite), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def _summary(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr


def test_marker_and_real_data_must_agree(tmp_path: Path) -> None:
    proc = _run(tmp_path, PLANTED_BAD, "-m", "not realdata", data=None, ci=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's usage error: nothing ran
    assert "test_planted.py::test_unmarked: uses real_manifest_path but is not marked" in out
    assert "test_planted.py::test_marked_without_data: marked @pytest.mark.realdata but uses no" in out
    assert "test_planted.py::test_through_another_fixture: uses real_manifest_path" in out


def test_real_data_skips_outside_ci_fails_in_ci_and_is_hidden_from_the_rest(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    data = tmp_path / "data"
    (data / "mri_lumbar_t2").mkdir(parents=True)
    (data / "mri_lumbar_t2" / "manifest.csv").write_text("image,mask,patient_id,modality\n")

    skipped = _run(tmp_path, PLANTED_OK, data=empty, ci=False)
    assert skipped.returncode == 0 and re.search(r"1 passed, 2 skipped", _summary(skipped)), skipped.stdout
    assert "real MRI data not available" in skipped.stdout

    failed = _run(tmp_path, PLANTED_OK, data=None, ci=True)
    assert failed.returncode == 1 and re.search(r"1 passed, 2 errors", _summary(failed)), failed.stdout
    assert "CI=true: this must not be skipped in CI" in failed.stdout

    deselected = _run(tmp_path, PLANTED_OK, "-m", "not realdata", data=None, ci=True)
    assert deselected.returncode == 0 and re.search(r"1 passed, 2 deselected", _summary(deselected))

    passed = _run(tmp_path, PLANTED_OK, data=data, ci=True)
    assert passed.returncode == 0 and re.search(r"^3 passed", _summary(passed)), passed.stdout


def _skip_offences(path: Path) -> list[str]:
    """Lines of ``path`` that could hide a failure as a skip (read from the syntax tree, not from strings)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("importorskip", "skipif"):
            found.append((node.lineno, f"pytest.{node.attr}"))
        elif isinstance(node, ast.Attribute) and node.attr == "skip" and path.name != "skips.py":
            found.append((node.lineno, "pytest.skip outside tests/skips.py (use skip_or_fail_in_ci)"))
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
            if names & {"ImportError", "ModuleNotFoundError"}:
                found.append((node.lineno, "except ImportError"))
    return [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in sorted(found)]


def test_no_skip_hides_a_missing_hard_dependency() -> None:
    """No importorskip, skipif or ``except ImportError`` in tests/; every skip goes through skips.py."""
    offenders = [o for path in sorted(TESTS.rglob("*.py")) for o in _skip_offences(path)]
    assert not offenders, "\n".join(offenders)


def test_browser_tests_skip_without_chromium_but_fail_in_ci(tmp_path: Path) -> None:
    """tests/browser/conftest.py with Chromium looked for where it is not."""
    browser = tmp_path / "tests" / "browser"
    browser.mkdir(parents=True)
    shutil.copy(TESTS / "browser" / "editor_page.py", browser)
    text = (TESTS / "browser" / "conftest.py").read_text()
    assert text.count('CHROMIUM = Path("/usr/bin/chromium")') == 1
    (browser / "conftest.py").write_text(
        text.replace('CHROMIUM = Path("/usr/bin/chromium")', f'CHROMIUM = Path({str(tmp_path / "no-chromium")!r})'))
    (browser / "test_planted_browser.py").write_text("def test_needs_chromium(chromium_path):\n    pass\n")
    source = "def test_other():\n    pass\n"

    skipped = _run(tmp_path, source, data=None, ci=False)
    assert skipped.returncode == 0 and re.search(r"1 passed, 1 skipped", _summary(skipped)), skipped.stdout
    assert "need Debian's Chromium" in skipped.stdout

    failed = _run(tmp_path, source, data=None, ci=True)
    assert failed.returncode == 1 and re.search(r"1 passed, 1 error", _summary(failed)), failed.stdout
    assert "CI=true: this must not be skipped in CI" in failed.stdout
