"""Every notebook follows the agreed shape (DESIGN.md, "Notebook shape").

Title cell with goal, Colab badge and time to run; a setup cell that installs only in Colab; one imports cell;
one ``parameters`` cell using quick mode; asserts that check the lesson; a summary; outputs stripped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_notebooks() -> None:
    names = [p.name for p in NOTEBOOKS]
    for required in ("00_quickstart.ipynb", "01_data_and_preprocessing.ipynb", "02_augmentation.ipynb"):
        assert required in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path: Path) -> None:
    cells = _cells(path)
    number = path.name[:2]
    title = _src(cells[0])
    assert cells[0]["cell_type"] == "markdown" and re.match(rf"# {number} · \S", title), "title cell"
    assert "colab.research.google.com/github/" in title and f"notebooks/{path.name}" in title, "Colab badge"
    assert re.search(r"time to run", title, re.I), "time to run"
    code = [c for c in cells if c["cell_type"] == "code"]
    setup = _src(code[0])
    assert '"google.colab" in sys.modules' in setup and "pip install" in setup, "guarded setup cell"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "quick_mode()" in _src(params[0]), "one parameters cell using quick mode"
    imports = [c for c in code if re.match(r"(import|from) ", _src(c))]
    assert len(imports) == 1, "one imports cell"
    assert any("assert " in _src(c) for c in code), "asserts check the lesson's claims"
    assert re.search(r"summary", _src(cells[-1]), re.I) and cells[-1]["cell_type"] == "markdown", "summary"
    for c in code:
        assert not c.get("outputs") and c.get("execution_count") is None, "outputs stripped"
        assert len(_src(c).splitlines()) <= 25, f"cell too long:\n{_src(c)[:200]}"
