"""The mask editor in Jupyter Notebook 7's own page (``/notebooks/<path>``), not JupyterLab.

``test_notebook7_stroke_and_undo`` opens a generated notebook (a 256 x 256 gradient, one vertebra) in
the Notebook 7 server of ``conftest.py``, runs it from Notebook 7's Run menu, draws one brush stroke
on the editor's canvas with real mouse events and presses ``z``. The kernel's crash copy (the
editor's autosave, rewritten after every change) must hold exactly
:func:`cervkit.editor.tools.paint_stroke` of the points the view sent, then the map from before the
stroke; the canvas must show the bare image again where the stroke was, and the editor's keys must
not have reached Notebook 7's own command-mode shortcuts (there ``b`` inserts a cell below, ``z``
undoes a cell operation).

The screenshot goes to the test's tmp folder and ``outputs/browser/editor_notebook7.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from editor_page import NOTEBOOK7_IDLE, REPO, wait_autosave
from test_editor_browser import _stroke_and_check

SIZE = 256
SETUP = f"""\
import numpy as np
from cervkit.editor.widget import MaskEditor
yy, xx = np.mgrid[:{SIZE}, :{SIZE}]
image = ((xx + yy) / {2 * SIZE}).astype(np.float32)
labels = np.zeros(({SIZE}, {SIZE}), np.uint8)
labels[40:100, 60:200] = 1
editor = MaskEditor(image, labels, level_names={{1: "C2", 2: "C3"}}, autosave_path="autosave.png", height=420)
editor.brush_radius = 6
editor"""


def _cells(page: Any) -> list[str]:
    """The kind of each of the notebook's cells, top to bottom: ``"code"`` or ``"other"`` (markdown, raw)."""
    return page.evaluate("() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'))"
                         ".map(c => c.classList.contains('jp-CodeCell') ? 'code' : 'other')")


def test_notebook7_stroke_and_undo(notebook7_server: dict, open_notebook7, tmp_path: Path) -> None:
    root = Path(notebook7_server["root"])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    nbformat.write(nb, root / "editor_nb7.ipynb")
    ed = open_notebook7("editor_nb7.ipynb")
    page = ed.page
    assert "/notebooks/editor_nb7.ipynb" in page.url
    assert page.locator(".jp-LabShell").count() == 0  # Notebook 7's shell, not JupyterLab's
    assert page.locator(".jp-NotebookKernelStatus").count() == 1  # Notebook 7's own kernel status widget
    ed.run_all(idle_selector=NOTEBOOK7_IDLE)
    ed.wait_editor()
    autosave = root / "autosave.png"
    before = wait_autosave(autosave, 0)
    expected0 = np.zeros((SIZE, SIZE), np.uint8)
    expected0[40:100, 60:200] = 1
    np.testing.assert_array_equal(before, expected0)
    data = ed.data()
    assert (int(data["imageHeight"]), int(data["imageWidth"])) == (SIZE, SIZE)
    assert data["tool"] == "brush"
    assert _cells(page) == ["code"]

    # keys: eraser, back to the brush ("b" is also Notebook 7's "insert cell below"), vertebra 2
    ed.key("e")
    ed.wait_data("tool", "eraser")
    ed.key("b")
    ed.wait_data("tool", "brush")
    ed.key("2")
    ed.wait_data("activeLabel", "2")
    # one brush stroke below vertebra 1
    radius = float(ed.data()["brushRadius"])
    assert radius == 6.0
    after = _stroke_and_check(ed, autosave, before, (50.0, 150.0), (210.0, 190.0), 2, radius)
    assert int((after == 2).sum()) > 2 * radius * 150  # about length x width of the stroke
    ed.screenshot(tmp_path / "editor_notebook7.png")

    # z: undo the stroke, in the kernel and on the canvas
    version = int(ed.data()["version"])
    ed.key("z")
    ed.wait_version(version + 1)
    np.testing.assert_array_equal(wait_autosave(autosave, version + 1), before)
    x, y = 130.0, 170.0  # on the stroke's path; the image there is (x + y) / 512
    assert after[int(y), int(x)] == 2
    np.testing.assert_allclose(ed.pixel(x, y)[:3], [(x + y) / (2 * SIZE) * 255] * 3, atol=2.5)
    assert _cells(page) == ["code"]  # "b" and "z" stayed in the editor: no new cell
    assert page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").first.inner_text().strip() == "[1]:"

    keep = REPO / "outputs" / "browser"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "editor_notebook7.png", keep / "editor_notebook7.png")
