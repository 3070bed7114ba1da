"""The mask editor in a real browser: JupyterLab + Chromium driven with real mouse and key events.

A notebook builds a 1024 x 1024 image, opens ``MaskEditor`` with an autosave and displays it; the
test runs all cells from JupyterLab's Run menu, draws a brush stroke and an eraser stroke with
``page.mouse``, presses ``z`` and checks the kernel's map (via the autosave the state writes after
every change, and a ``.npy`` the last cell writes) against :func:`cervkit.editor.tools.paint_stroke`
applied to the image-space points that the view's transform (``data-zoom``/``data-ox``/``data-oy``)
gives for the screen positions used. It also measures mouse-up → patch shown and undo latency.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from cervkit.editor.persist import read_autosave
from cervkit.editor.tools import paint_stroke

REPO = Path(__file__).resolve().parents[2]
SIZE = 1024
RADIUS = 12.0
BOX = (slice(100, 300), slice(100, 400))  # the label-1 block the notebook starts with

SETUP = f"""\
import numpy as np
from cervkit.editor.widget import MaskEditor
yy, xx = np.mgrid[:{SIZE}, :{SIZE}]
image = ((xx + yy) / {2 * SIZE}).astype(np.float32)
labels = np.zeros(({SIZE}, {SIZE}), np.uint8)
labels[100:300, 100:400] = 1
editor = MaskEditor(image, labels, level_names={{1: "C2", 2: "C3"}}, autosave_path="autosave.png", height=512)
editor.brush_radius = {RADIUS}"""


def _write_notebook(root: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell("editor"),
                nbformat.v4.new_code_cell('np.save("labels_now.npy", editor.labels)')]
    path = root / "editor.ipynb"
    nbformat.write(nb, path)
    return path


def _run_all_cells(page) -> None:
    """Run → Run All Cells from JupyterLab's menu bar, once the kernel is idle (retried once)."""
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
    for _attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-InputPrompt'))"
                                   ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))", timeout=10_000)
            return
        except Exception:  # the click landed before the session was ready: try again
            page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start any cell")


def _view(page) -> dict[str, float]:
    """The editor's transform and the overlay canvas' position on the page (CSS px)."""
    return page.evaluate("""() => {
        const root = document.querySelector('.cervkit-editor');
        const r = root.querySelector('.ck-overlay').getBoundingClientRect();
        return {zoom: +root.dataset.zoom, ox: +root.dataset.ox, oy: +root.dataset.oy,
                left: r.left, top: r.top, version: +(root.dataset.version || 0)};
    }""")


def _drag(page, view: dict[str, float], start: tuple[float, float], end: tuple[float, float],
          steps: int = 12) -> list[list[float]]:
    """Drag with real mouse events between two image points; return the image points the view saw."""
    to_screen = [(view["left"] + view["ox"] + x * view["zoom"], view["top"] + view["oy"] + y * view["zoom"])
                 for x, y in (start, end)]
    page.mouse.move(*to_screen[0])
    page.mouse.down()
    page.mouse.move(*to_screen[1], steps=steps)
    page.mouse.up()
    return to_screen


def _wait_version(page, version: int, timeout: float = 10_000) -> float:
    """Wait until the view has applied kernel version ``version``; return the seconds waited."""
    t0 = time.perf_counter()
    page.wait_for_function(f"() => +(document.querySelector('.cervkit-editor').dataset.version||-1) >= {version}",
                           timeout=timeout, polling="raf")
    return time.perf_counter() - t0


def _latency(page) -> float:
    return float(page.evaluate("() => +document.querySelector('.cervkit-editor').dataset.latencyMs"))


def _pixel(page, x: float, y: float) -> list[int]:
    """RGBA of the main canvas at image point (x, y) (accounting for the device pixel ratio)."""
    return page.evaluate(f"""() => {{
        const root = document.querySelector('.cervkit-editor'), c = root.querySelector('.ck-main');
        const dpr = window.devicePixelRatio || 1, z = +root.dataset.zoom;
        const sx = Math.floor(dpr * (+root.dataset.ox + {x} * z)), sy = Math.floor(dpr * (+root.dataset.oy + {y} * z));
        return Array.from(c.getContext('2d').getImageData(sx, sy, 1, 1).data);
    }}""")


def _expected_points(view: dict[str, float], screen: list[tuple[float, float]]) -> np.ndarray:
    return np.array([((sx - view["left"] - view["ox"]) / view["zoom"], (sy - view["top"] - view["oy"]) / view["zoom"])
                     for sx, sy in screen])


def test_draw_erase_undo_in_jupyterlab(lab_server: dict, chromium_path: Path, chromium_args: list[str],
                                       tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    root = Path(lab_server["root"])
    _write_notebook(root)
    url = f"{lab_server['url']}/lab/tree/editor.ipynb?token={lab_server['token']}"
    shots = REPO / "outputs" / "browser"
    report: dict[str, float] = {}
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(chromium_path), args=chromium_args, headless=True,
            viewport={"width": 1280, "height": 1000})
        try:
            page = ctx.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _run_all_cells(page)
            page.wait_for_selector(".cervkit-editor[data-ready='1']", timeout=60_000)
            page.locator(".cervkit-editor .ck-overlay").scroll_into_view_if_needed()
            page.wait_for_function("() => document.querySelector('.cervkit-editor').dataset.version !== undefined")
            autosave = root / "autosave.png"
            start, _ = read_autosave(autosave)
            expected0 = np.zeros((SIZE, SIZE), np.uint8)
            expected0[BOX] = 1
            np.testing.assert_array_equal(start, expected0)
            view = _view(page)
            # "fit": the whole 1024² image in the 512 px high stage, centred
            assert view["zoom"] == pytest.approx(512 / SIZE)
            before_pixel = _pixel(page, 700, 600)

            # ---- brush stroke (label 1, radius 12) from (600, 600) to (800, 640) in image pixels
            v = int(view["version"])
            screen = _drag(page, view, (600.0, 600.0), (800.0, 640.0))
            report["stroke_wait_s"] = _wait_version(page, v + 1)
            report["stroke_roundtrip_ms"] = _latency(page)
            sent = np.array(json.loads(page.evaluate(
                "() => document.querySelector('.cervkit-editor').dataset.lastStroke")))
            np.testing.assert_allclose(sent[0], _expected_points(view, screen)[0], atol=0.02)
            np.testing.assert_allclose(sent[-1], _expected_points(view, screen)[1], atol=0.02)
            after_brush, _ = paint_stroke(expected0, sent, RADIUS, 1)
            got, _ = read_autosave(autosave)
            np.testing.assert_array_equal(got, after_brush)
            assert int((after_brush != expected0).sum()) > 3000  # a real stroke, not a dot
            tinted = _pixel(page, 700, 620)
            assert tinted[2] - tinted[0] > 40 and abs(before_pixel[2] - before_pixel[0]) < 3  # blue label colour

            # ---- eraser: key "e", then a stroke across the block and the brush stroke
            page.keyboard.press("e")
            page.wait_for_selector(".cervkit-editor[data-tool='eraser']", timeout=5_000)
            view = _view(page)
            _drag(page, view, (350.0, 250.0), (700.0, 630.0))
            _wait_version(page, v + 2)
            sent_erase = np.array(json.loads(page.evaluate(
                "() => document.querySelector('.cervkit-editor').dataset.lastStroke")))
            after_erase, _ = paint_stroke(after_brush, sent_erase, RADIUS, 0)
            got, _ = read_autosave(autosave)
            np.testing.assert_array_equal(got, after_erase)
            assert int((after_erase != after_brush).sum()) > 1000
            page.screenshot(path=str(tmp_path / "after_erase.png"))

            # ---- z undoes the erase
            page.keyboard.press("z")
            report["undo_wait_s"] = _wait_version(page, v + 3)
            report["undo_roundtrip_ms"] = _latency(page)
            got, _ = read_autosave(autosave)
            np.testing.assert_array_equal(got, after_brush)
            page.screenshot(path=str(tmp_path / "after_undo.png"))

            # ---- the kernel's own map agrees: run the last cell from the UI
            page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            deadline = time.monotonic() + 20
            while not (root / "labels_now.npy").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.2)
            np.testing.assert_array_equal(np.load(root / "labels_now.npy"), after_brush)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            shots.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "failure.png", shots / "failure.png")
            print("\n".join(console[-40:]))
            raise
        finally:
            ctx.close()
    shots.mkdir(parents=True, exist_ok=True)
    for name in ("after_erase.png", "after_undo.png"):
        shutil.copy(tmp_path / name, shots / name)
    (shots / "latency.json").write_text(json.dumps(report, indent=1))
    print("editor latency:", report)
    assert report["stroke_roundtrip_ms"] <= 1000 and report["undo_roundtrip_ms"] <= 1000
