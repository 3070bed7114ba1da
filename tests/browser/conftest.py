"""Fixtures for the real-browser editor tests: a private JupyterLab server and Debian's Chromium.

The tests skip (with the reason) only when ``/usr/bin/chromium`` is absent; CI installs it with
``apt-get install -y chromium``. Nothing here touches the network: the server listens on 127.0.0.1,
news and update checks are off, and Playwright drives the system Chromium (``playwright install``
is never needed).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    """User settings that keep JupyterLab quiet: no news, no update check."""
    folder = settings / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"}))


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    """Path of Debian's Chromium; skips the module when it is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("real-browser tests need Debian's Chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_args() -> list[str]:
    """Command-line flags for a quiet, offline headless Chromium."""
    return list(CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def lab_server(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Start JupyterLab on a free localhost port with a token and temp root/config dirs; stop it after.

    Yields
    ------
    dict
        ``url`` (base URL), ``token``, ``root`` (the server's root folder, where notebooks go).
    """
    base = tmp_path_factory.mktemp("lab")
    root, config, runtime, settings, workspaces = (base / n for n in
                                                   ("root", "config", "runtime", "settings", "workspaces"))
    for folder in (root, config, runtime, settings, workspaces):
        folder.mkdir()
    _write_settings(settings)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(runtime),
               IPYTHONDIR=str(base / "ipython"), JUPYTER_PLATFORM_DIRS="1")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={workspaces}", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI runners often run as root
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "root": root, "log": base / "server.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
