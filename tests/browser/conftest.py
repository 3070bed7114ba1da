"""Fixtures for the real-browser editor tests: private JupyterLab and Notebook 7 servers, Debian's Chromium.

Outside CI the tests skip (with the reason) only when ``/usr/bin/chromium`` or Playwright is absent;
in CI (``CI=true``) either missing fails them: CI installs Chromium with ``apt-get install -y chromium``
and Playwright with the dev extra. Kernels never see ``CERVKIT_DATA_DIR`` (these tests are not
``realdata``: notebook 07 runs on phantoms). Nothing here touches the network: the servers listen on 127.0.0.1,
news and update checks are off, and Playwright drives the system Chromium (``playwright install``
is never needed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from editor_page import REPO, EditorPage
from skips import skip_or_fail_in_ci

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_settings(settings: Path) -> None:
    """User settings: no news, no update check, every notebook cell attached (so prompts can be read)."""
    folder = settings / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"}))
    folder = settings / "@jupyterlab" / "notebook-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))


def _kernel_env(base: Path, config: Path, runtime: Path) -> dict[str, str]:
    """The server's environment: private Jupyter dirs; kernels in quick mode, writing under ``base``, no real data."""
    env = {k: v for k, v in os.environ.items() if k != "CERVKIT_DATA_DIR"}
    return dict(env, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(runtime),
                IPYTHONDIR=str(base / "ipython"), JUPYTER_PLATFORM_DIRS="1", CERVKIT_QUICK="1",
                CERVKIT_OUTPUTS=str(base / "outputs"), OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))


@contextmanager
def _running_server(cmd: list[str], env: dict[str, str], base: Path, port: int, token: str,
                    name: str) -> Iterator[str]:
    """Run a Jupyter server (``cmd``, root ``base/root``, log ``base/server.log``) until its API answers.

    Yields the server's URL; terminates it (kills it after 15 s) when the block ends.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd = [*cmd, "--allow-root"]  # containers and CI runners often run as root
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base / "root")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Path of Debian's Chromium; skips the tests when it or Playwright is missing (in CI: fails them)."""
    if not CHROMIUM.exists():
        skip_or_fail_in_ci("real-browser tests need Debian's Chromium at /usr/bin/chromium "
                           "(apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:  # installed but broken: fails at its import
        skip_or_fail_in_ci("real-browser tests need playwright (python, in the dev extra)")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_args() -> list[str]:
    """Command-line flags for a quiet, offline headless Chromium."""
    return list(CHROMIUM_ARGS)


@pytest.fixture(scope="session")
def lab_server(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Start JupyterLab on a free localhost port with a token and temp root/config dirs; stop it after.

    Kernels inherit ``CERVKIT_QUICK=1`` and ``CERVKIT_OUTPUTS=<temp>/outputs`` (a notebook run from the
    browser writes nothing into the checkout) and import ``cervkit`` from this checkout (``PYTHONPATH``).

    Yields
    ------
    dict
        ``url`` (base URL), ``token``, ``root`` (the server's root folder, where notebooks go),
        ``outputs`` (the kernels' outputs folder), ``log``.
    """
    base = tmp_path_factory.mktemp("lab")
    root, config, runtime, settings, workspaces = (base / n for n in
                                                   ("root", "config", "runtime", "settings", "workspaces"))
    for folder in (root, config, runtime, settings, workspaces):
        folder.mkdir()
    _write_settings(settings)
    port, token = _free_port(), secrets.token_hex(16)
    env = _kernel_env(base, config, runtime)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={workspaces}", "--ServerApp.open_browser=False"]
    with _running_server(cmd, env, base, port, token, "JupyterLab") as url:
        yield {"url": url, "token": token, "root": root, "outputs": base / "outputs", "log": base / "server.log"}


@pytest.fixture(scope="session")
def notebook7_server(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Start Jupyter Notebook 7 (``python -m notebook``) like :func:`lab_server`; stop it after.

    Same private dirs, token, offline settings and kernel environment as ``lab_server``; the
    notebook's own page is ``/notebooks/<path>``.

    Yields
    ------
    dict
        ``url``, ``token``, ``root``, ``outputs``, ``log`` (as ``lab_server``).
    """
    import notebook  # in the dev extra: missing is a failure, not a skip

    assert int(notebook.__version__.split(".")[0]) >= 7, f"Jupyter Notebook 7 needed, found {notebook.__version__}"
    base = tmp_path_factory.mktemp("nb7")
    root, config, runtime, settings, workspaces = (base / n for n in
                                                   ("root", "config", "runtime", "settings", "workspaces"))
    for folder in (root, config, runtime, settings, workspaces):
        folder.mkdir()
    _write_settings(settings)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "notebook", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--JupyterNotebookApp.user_settings_dir={settings}",
           f"--JupyterNotebookApp.workspaces_dir={workspaces}",
           # JupyterLab's server extension loads too: keep its news and update checks off as well
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={workspaces}", "--ServerApp.open_browser=False"]
    with _running_server(cmd, _kernel_env(base, config, runtime), base, port, token, "Jupyter Notebook") as url:
        yield {"url": url, "token": token, "root": root, "outputs": base / "outputs", "log": base / "server.log"}


@pytest.fixture(scope="session")
def browser_context(chromium_path: Path, chromium_args: list[str],
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium (Playwright, persistent profile in a temp folder) for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=str(chromium_path), args=chromium_args,
            headless=True, viewport={"width": 1280, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture()
def open_notebook(lab_server: dict, browser_context: Any, request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[Any]:
    """Factory: ``open_notebook(relative_path)`` opens a notebook under the server root in a new tab.

    On a failure the page's screenshot goes to the test's tmp folder and ``outputs/browser/``.
    """
    pages: list[EditorPage] = []

    def _open(rel: str) -> EditorPage:
        page = browser_context.new_page()
        editor = EditorPage(page, Path(lab_server["root"]))
        pages.append(editor)
        # a workspace of its own: JupyterLab would otherwise reopen the tabs of the previous test too
        workspace = f"test{len(pages)}-{secrets.token_hex(4)}"
        page.goto(f"{lab_server['url']}/lab/workspaces/{workspace}/tree/{rel}?token={lab_server['token']}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        return editor

    yield _open
    _close_pages(pages, request, tmp_path, lab_server)


@pytest.fixture()
def open_notebook7(notebook7_server: dict, browser_context: Any, request: pytest.FixtureRequest,
                   tmp_path: Path) -> Iterator[Callable[[str], EditorPage]]:
    """Factory: ``open_notebook7(relative_path)`` opens a notebook in Notebook 7's own page (``/notebooks/``).

    On a failure the page's screenshot goes to the test's tmp folder and ``outputs/browser/``.
    """
    pages: list[EditorPage] = []

    def _open(rel: str) -> EditorPage:
        page = browser_context.new_page()
        editor = EditorPage(page, Path(notebook7_server["root"]))
        pages.append(editor)
        page.goto(f"{notebook7_server['url']}/notebooks/{rel}?token={notebook7_server['token']}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        return editor

    yield _open
    _close_pages(pages, request, tmp_path, notebook7_server)


def _close_pages(pages: list[EditorPage], request: pytest.FixtureRequest, tmp_path: Path, server: dict) -> None:
    """Close the test's tabs (screenshot + console first if the test failed) and stop the server's kernels."""
    failed = getattr(request.node, "rep_call", None)
    for editor in pages:
        if failed is not None and failed.failed:
            shot = tmp_path / f"failure_{request.node.name}.png"
            editor.screenshot(shot)
            keep = REPO / "outputs" / "browser"
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, keep / shot.name)
            print("\n".join(editor.console[-40:]))
        try:
            editor.page.close()
        except Exception:  # already closed by a crash
            pass
    _stop_kernels(server)


def _stop_kernels(lab_server: dict) -> None:
    """Shut down this server's kernels (REST API), so the next notebook starts on a quiet machine."""
    base, token = lab_server["url"], lab_server["token"]
    with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=10) as resp:
        kernels = json.loads(resp.read())
    for kernel in kernels:
        req = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
        with urllib.request.urlopen(req, timeout=30):
            pass


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
