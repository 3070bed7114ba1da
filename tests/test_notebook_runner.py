"""`python -m cervkit notebooks` executes notebooks, writes executed copies and reports failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from cervkit.cli.notebooks import find_notebooks, run_all


def _write(path: Path, *sources: str) -> None:
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)


def test_runner_executes_in_order_and_reports_failure(tmp_path: Path) -> None:
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write(folder / "00_ok.ipynb", "import os\nprint(os.getcwd())", "x = 21 * 2\nprint(x)")
    _write(folder / "01_fails.ipynb", "raise RuntimeError('lesson claim broken')")
    (folder / "notes.ipynb").write_text("{}")  # not numbered: ignored
    assert [p.name for p in find_notebooks(folder)] == ["00_ok.ipynb", "01_fails.ipynb"]
    results = run_all(tmp_path / "out", folder=folder)
    ok, bad = results
    assert ok.error is None and bad.error is not None and "lesson claim broken" in bad.error
    executed = nbformat.read(ok.executed, as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells for o in c.outputs)
    assert "42" in outputs and str(folder) in outputs  # ran, with the notebook folder as cwd
    assert (tmp_path / "out" / "01_fails.ipynb").is_file()


def test_cli_exit_status(tmp_path: Path) -> None:
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write(folder / "00_ok.ipynb", "assert 1 + 1 == 2")
    run = [sys.executable, "-m", "cervkit", "notebooks", "--folder", str(folder), "--out", str(tmp_path / "o")]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    _write(folder / "01_bad.ipynb", "assert False, 'no'")
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 1 and "1 passed, 1 failed" in proc.stdout


def test_index_page_links_notebooks_figures_and_headline_numbers(tmp_path: Path) -> None:
    import nbformat

    from cervkit.cli.notebooks import NotebookResult
    from cervkit.cli.report import notebook_html, write_index
    from cervkit.viz import record_result

    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 · x")])
    executed = tmp_path / "notebooks" / "00_quickstart.ipynb"
    nbformat.write(nb, executed)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "00_shipped_model.png").write_bytes(b"\x89PNG")
    (tmp_path / "figures" / "01_other.png").write_bytes(b"\x89PNG")
    record_result("00_quickstart", "xray phantom Dice", 0.4512, note="phantom 0", folder=tmp_path / "results")
    record_result("00_quickstart", "xray phantom Dice", 0.4613, note="phantom 0", folder=tmp_path / "results")
    assert notebook_html(executed) == executed.with_suffix(".html")
    ok = NotebookResult(path=Path("notebooks/00_quickstart.ipynb"), executed=executed, seconds=12.3)
    bad = NotebookResult(path=Path("notebooks/01_data.ipynb"), executed=tmp_path / "notebooks" / "01_data.ipynb",
                         seconds=1.0, error="AssertionError: boom")
    page = write_index(tmp_path, [ok, bad]).read_text()
    assert "notebooks/00_quickstart.html" in page and "notebooks/00_quickstart.ipynb" in page
    assert "figures/00_shipped_model.png" in page and "xray phantom Dice" in page and "0.461" in page
    assert "0.451" not in page, "a number recorded again replaces the old one"
    assert "FAILED: AssertionError: boom" in page
    assert page.index("<h3>00_quickstart") < page.index("figures/00_shipped_model.png") < page.index("<h3>01_data")
    assert page.index("<h3>01_data") < page.index("figures/01_other.png"), "figures under their own notebook"


def test_a_relative_data_dir_is_made_absolute_before_kernels_start_elsewhere(tmp_path, monkeypatch) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "main" / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "main")
    monkeypatch.setenv("CERVKIT_DATA_DIR", "../shared/data")
    assert run_all(tmp_path / "out", folder=tmp_path / "main" / "notebooks") == []
    assert os.environ["CERVKIT_DATA_DIR"] == str((tmp_path / "shared" / "data").resolve())
