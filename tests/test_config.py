"""Quick mode, data folder, outputs folder, the data manifest and the CLI's error path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from cervkit.core import config
from cervkit.core.errors import CervkitInputError, ManifestError
from cervkit.data import datasets

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("ON", True), ("0", False),
                                            ("", False), ("no", False)])
def test_quick_mode_reads_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CERVKIT_QUICK", value)
    assert config.quick_mode() is expected


def test_data_dir_unset_and_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CERVKIT_DATA_DIR", raising=False)
    assert config.data_dir() is None and config.real_mri_manifest() is None
    monkeypatch.setenv("CERVKIT_DATA_DIR", str(tmp_path))
    assert config.data_dir() == tmp_path.resolve()
    assert config.real_mri_manifest() is None  # folder exists but holds no mri_lumbar_t2
    (tmp_path / "mri_lumbar_t2").mkdir()
    (tmp_path / "mri_lumbar_t2" / "manifest.csv").write_text("image,mask,patient_id,modality\n")
    assert config.real_mri_manifest() == tmp_path.resolve() / "mri_lumbar_t2" / "manifest.csv"


def test_outputs_dir_defaults_to_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CERVKIT_OUTPUTS", raising=False)
    monkeypatch.chdir(REPO / "tests")
    assert config.outputs_dir() == REPO / "outputs"
    monkeypatch.setenv("CERVKIT_OUTPUTS", str(tmp_path / "o"))
    assert config.outputs_dir() == (tmp_path / "o").resolve() and (tmp_path / "o").is_dir()


def test_errors_name_the_file() -> None:
    err = CervkitInputError("truncated pixel data", "scan.dcm")
    assert isinstance(err, ValueError) and "scan.dcm" in str(err) and "truncated" in str(err)
    many = ManifestError(["a missing", "b duplicate"], "m.csv")
    assert "2 problem(s)" in str(many) and "a missing" in str(many) and "b duplicate" in str(many)


def test_data_manifest_lists_default_datasets() -> None:
    full = {e.name: e for e in datasets.list_datasets(quick=False)}
    quick = {e.name: e for e in datasets.list_datasets(quick=True)}
    assert {"phantoms_xray", "phantoms_mri", "mri_lumbar_t2"} <= set(full)
    for name, entry in full.items():
        assert entry.modality in {"XR", "MRI"} and entry.kind in {"synthetic", "real"}
        assert quick[name].n_images <= entry.n_images
        assert entry.license and entry.source


def test_real_dataset_needs_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVKIT_DATA_DIR", raising=False)
    with pytest.raises(CervkitInputError, match="CERVKIT_DATA_DIR"):
        datasets.get_dataset("mri_lumbar_t2")
    with pytest.raises(CervkitInputError, match="unknown dataset"):
        datasets.get_dataset("nope")


@pytest.mark.realdata
def test_real_dataset_found(real_manifest_path: Path) -> None:
    assert datasets.get_dataset("mri_lumbar_t2") == real_manifest_path


def test_environment_yml_matches_pyproject() -> None:
    """Conda users get the same packages as pip users."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[ ]", d)[0].lower() for d in deps["dependencies"] + deps["optional-dependencies"]["dev"]]
    env = (REPO / "environment.yml").read_text().lower()
    missing = [n for n in names if not re.search(rf"^\s*- {re.escape(n)}\b", env, re.M)]
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"


def test_ci_calls_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M) and "CERVKIT_QUICK=1" in ci and "CERVKIT_DATA_DIR" in ci


def test_cli_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("image,mask\n")
    proc = subprocess.run([sys.executable, "-m", "cervkit", "validate", "--manifest", str(bad)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "patient_id" in proc.stdout + proc.stderr


def test_import_has_no_heavy_side_effects() -> None:
    code = "import sys, cervkit; print('torch' in sys.modules, 'ultralytics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
