"""Drive the mask editor in a JupyterLab or Notebook 7 page (Playwright) with real input events; read the kernel map.

Used by ``conftest.py`` and ``test_editor_browser.py`` (imported by name: pytest puts this folder on
``sys.path``, the folder has no ``__init__``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_ERROR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:has(.ansi-red-fg, .ansi-red-intense-fg)"
"""A traceback (IPython colours the exception name red)."""
NOTEBOOK7_IDLE = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
"""Notebook 7's toolbar kernel indicator once the kernel is idle (``run_all(idle_selector=...)``)."""


class EditorPage:
    """A JupyterLab tab with a notebook that displays a ``MaskEditor``, driven with real input events.

    Image points are pixel-edge (x, y); the view's transform is read from the editor root's
    ``data-zoom``/``data-ox``/``data-oy`` (screen = canvas origin + offset + zoom * image).
    """

    def __init__(self, page: Any, root: Path) -> None:
        self.page = page
        self.root = root
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))

    # ---------------------------------------------------------------- notebook
    def run_all(self, timeout_s: float = 120, idle_selector: str | None = None) -> None:
        """Run → Run All Cells from the menu bar; return when every code cell has run (a number in its prompt).

        First waits for the kernel to be idle: JupyterLab's status bar text by default, or the element
        ``idle_selector`` (Notebook 7 has no status bar: :data:`NOTEBOOK7_IDLE`).
        """
        page = self.page
        if idle_selector is None:
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        else:
            page.wait_for_selector(idle_selector, timeout=60_000)
        for _attempt in range(3):
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            try:
                page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-InputPrompt'))"
                                       ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))", timeout=10_000)
                break
            except Exception:  # the click landed before the session was ready: try again
                page.keyboard.press("Escape")
        else:
            raise AssertionError("Run All Cells did not start any cell")
        done = page.wait_for_function(
            """() => { const ps = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'));
                       const failed = document.querySelector(ERROR_SELECTOR);
                       if (failed && !ps.some(p => p.textContent.includes('*'))) return 'failed';
                       return ps.length > 0 && ps.every(p => /\\[\\d+\\]/.test(p.textContent)) && 'done'; }"""
            .replace("ERROR_SELECTOR", json.dumps(_ERROR)), timeout=timeout_s * 1000, polling=200).json_value()
        if done == "failed":
            raise AssertionError(f"a notebook cell failed:\n{page.locator(_ERROR).first.inner_text()[-3000:]}")

    def wait_editor(self) -> None:
        """Wait until the first editor has decoded its image and labels, and bring it into view."""
        self.page.wait_for_selector(".cervkit-editor[data-ready='1'][data-version]", timeout=60_000)
        self.page.locator(".cervkit-editor .ck-overlay").first.scroll_into_view_if_needed()

    # -------------------------------------------------------------------- view
    def data(self) -> dict[str, str]:
        """The editor root's data attributes (strings)."""
        return self.page.evaluate("() => Object.assign({}, document.querySelector('.cervkit-editor').dataset)")

    def view(self) -> dict[str, float]:
        """The view transform and the overlay canvas' position and size on the page (CSS px)."""
        return self.page.evaluate("""() => {
            const root = document.querySelector('.cervkit-editor');
            const r = root.querySelector('.ck-overlay').getBoundingClientRect();
            return {zoom: +root.dataset.zoom, ox: +root.dataset.ox, oy: +root.dataset.oy, left: r.left,
                    top: r.top, width: r.width, height: r.height, version: +(root.dataset.version || 0)};
        }""")

    def to_screen(self, x: float, y: float, view: dict[str, float] | None = None) -> tuple[float, float]:
        """Page coordinates of image point (x, y)."""
        v = view or self.view()
        return v["left"] + v["ox"] + x * v["zoom"], v["top"] + v["oy"] + y * v["zoom"]

    def to_image(self, sx: float, sy: float, view: dict[str, float]) -> tuple[float, float]:
        """Image point under page coordinates (sx, sy)."""
        return (sx - view["left"] - view["ox"]) / view["zoom"], (sy - view["top"] - view["oy"]) / view["zoom"]

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> list[tuple[float, float]]:
        """Press at image point ``start``, move to ``end`` in ``steps`` mouse moves, release.

        Returns the image points of every mouse position used (what the view should record).
        """
        view = self.view()
        (ax, ay), (bx, by) = self.to_screen(*start, view), self.to_screen(*end, view)
        mouse = self.page.mouse
        mouse.move(ax, ay)
        mouse.down()
        mouse.move(bx, by, steps=steps)
        mouse.up()
        screen = [(ax, ay)] + [(ax + (bx - ax) * i / steps, ay + (by - ay) * i / steps) for i in range(1, steps + 1)]
        return [self.to_image(sx, sy, view) for sx, sy in screen]

    def click(self, x: float, y: float) -> None:
        """Click at image point (x, y)."""
        self.page.mouse.click(*self.to_screen(x, y))

    def key(self, key: str) -> None:
        """Press a key with the editor focused (as after a click on it)."""
        self.page.locator(".cervkit-editor").first.focus()
        self.page.keyboard.press(key)

    def last_stroke(self) -> list[list[float]]:
        """The image points of the last stroke the view sent."""
        return json.loads(self.data()["lastStroke"])

    def wait_version(self, version: int, timeout_ms: float = 15_000) -> None:
        """Wait until the view has drawn kernel version ``version`` (or later)."""
        self.page.wait_for_function(
            f"() => +(document.querySelector('.cervkit-editor').dataset.version||-1) >= {int(version)}",
            timeout=timeout_ms, polling="raf")

    def wait_data(self, name: str, value: str, timeout_ms: float = 10_000) -> None:
        """Wait until the root's ``data-<name>`` (camelCase ``name``) equals ``value``."""
        self.page.wait_for_function(
            f"() => document.querySelector('.cervkit-editor').dataset[{json.dumps(name)}] === {json.dumps(value)}",
            timeout=timeout_ms, polling="raf")

    def pixel(self, x: float, y: float) -> list[int]:
        """RGBA of the main canvas at image point (x, y)."""
        return self.page.evaluate("""([x, y]) => {
            const root = document.querySelector('.cervkit-editor'), c = root.querySelector('.ck-main');
            const dpr = window.devicePixelRatio || 1, z = +root.dataset.zoom;
            const sx = Math.floor(dpr * (+root.dataset.ox + x * z)), sy = Math.floor(dpr * (+root.dataset.oy + y * z));
            return Array.from(c.getContext('2d').getImageData(sx, sy, 1, 1).data);
        }""", [x, y])

    def set_range(self, css_class: str, value: float) -> None:
        """Set a toolbar slider (``input[type=range]``) as a user would; fires its input event."""
        self.page.locator(f".cervkit-editor input.{css_class}").first.fill(str(value))

    def screenshot(self, path: Path) -> None:
        """Screenshot of the page into ``path`` (folders made)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))


def wait_autosave(path: Path, version: int, timeout_s: float = 15) -> Any:
    """Return the kernel's label map from its crash copy once the copy holds ``version`` (or later)."""
    from cervkit.editor.persist import read_autosave, sidecar_path

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            steps = json.loads(sidecar_path(path).read_text())["steps"]
        except (OSError, ValueError, KeyError):
            steps = -1
        if steps >= version:  # the PNG is written before its sidecar: it holds this version too
            return read_autosave(path)[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: autosave still at step {steps}, expected {version}")
        time.sleep(0.02)
