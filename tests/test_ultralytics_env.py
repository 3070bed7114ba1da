"""offline_ultralytics(): offline inside the scope, and everything it changed put back after it.

Each check runs in a fresh interpreter: ultralytics decides ONLINE and its config folder at import.
Training and prediction with a user's own settings file are in tests/test_detector.py
(``test_offline_train_and_predict_touch_no_network[user]``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env.update(PYTHONPATH=str(REPO), CERVKIT_OUTPUTS=str(tmp_path / "outputs"), MPLBACKEND="Agg", **env_extra)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_fresh_import_keeps_settings_in_cervkits_folder_and_restores_the_environment(tmp_path: Path) -> None:
    out = _run("""
        import os
        def ours():
            return {k: os.environ.get(k) for k in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "ULTRALYTICS_API_KEY")}
        os.environ["ULTRALYTICS_API_KEY"] = "secret"
        before = ours()
        from cervkit.core.ultralytics_env import import_ultralytics, offline_ultralytics
        own = os.path.join(os.environ["CERVKIT_OUTPUTS"], "ultralytics_config")
        with offline_ultralytics() as ul:
            from ultralytics import utils
            assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_CONFIG_DIR"] == own
            assert "ULTRALYTICS_API_KEY" not in os.environ
            assert str(utils.USER_CONFIG_DIR) == os.path.join(own, "Ultralytics")
            assert os.path.isfile(os.path.join(own, "Ultralytics", "Arial.Unicode.ttf"))
            assert utils.SETTINGS["sync"] is False and utils.SETTINGS["mlflow"] is False
        assert ours() == before == {"YOLO_OFFLINE": None, "YOLO_CONFIG_DIR": None, "ULTRALYTICS_API_KEY": "secret"}
        assert utils.ONLINE is False  # an import-time constant: the import happened offline
        saved = utils.SETTINGS_FILE.read_bytes()
        assert utils.SETTINGS["sync"] is True and utils.SETTINGS["mlflow"] is True  # the file's defaults
        model = import_ultralytics().YOLO("yolo11n.yaml")
        assert isinstance(model, ul.YOLO) and type(model).__name__ == "OfflineYOLO"
        assert ours() == before and utils.SETTINGS_FILE.read_bytes() == saved
        from PIL import Image
        from ultralytics.utils import patches
        assert Image.open is patches._image_open
        print("OK")
    """, tmp_path)
    assert "OK" in out


def test_scope_over_a_users_online_ultralytics_restores_everything(tmp_path: Path) -> None:
    """The user imported ultralytics first (their settings file, online): the scope borrows it and gives it back."""
    user = tmp_path / "user"
    _run("import ultralytics.utils", tmp_path, YOLO_CONFIG_DIR=str(user), YOLO_OFFLINE="1")
    settings = user / "Ultralytics" / "settings.json"
    settings.write_text(json.dumps(json.loads(settings.read_text()), indent=4) + "\n")  # not JSONDict's layout
    before_bytes = settings.read_bytes()
    out = _run("""
        import os
        os.environ["YOLO_OFFLINE"] = "1"  # no DNS probe in the test; ONLINE is set True by hand below
        import ultralytics
        from ultralytics import utils
        from ultralytics.utils import checks
        utils.ONLINE = checks.ONLINE = True
        os.environ["YOLO_OFFLINE"] = "0"
        del os.environ["YOLO_CONFIG_DIR"]
        os.environ["ULTRALYTICS_API_KEY"] = "secret"
        import requests
        def deny(*a, **k):
            raise RuntimeError("network access attempted")
        requests.head = requests.get = deny
        def yolo_env():  # ultralytics sets others itself (CUBLAS_WORKSPACE_CONFIG ...): its business
            return {k: v for k, v in os.environ.items() if k.startswith(("YOLO_", "ULTRALYTICS_"))}
        env_before, settings_before = yolo_env(), dict(utils.SETTINGS)
        from matplotlib import font_manager
        fonts_before = list(font_manager.fontManager.ttflist)

        from cervkit.core.ultralytics_env import offline_ultralytics
        with offline_ultralytics() as ul:
            assert ul is ultralytics
            assert utils.ONLINE is False and checks.ONLINE is False
            assert os.environ["YOLO_OFFLINE"] == "1" and "ULTRALYTICS_API_KEY" not in os.environ
            assert "YOLO_CONFIG_DIR" not in os.environ  # ultralytics was already imported: nothing to point
            off = {k: utils.SETTINGS[k] for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune",
                                                 "tensorboard", "wandb", "api_key")}
            assert not any(off.values()), off
            from ultralytics.utils import events  # first imported inside the scope
            assert events.ONLINE is False and events.events.enabled is False
            font = checks.check_font("Arial.ttf")  # found locally, never fetched
            assert str(font).startswith(os.path.join(os.environ["CERVKIT_OUTPUTS"], "ultralytics_config")), font
            ul.YOLO("yolo11n.yaml")
        assert yolo_env() == env_before == {"YOLO_OFFLINE": "0", "ULTRALYTICS_API_KEY": "secret"}
        assert utils.ONLINE is True and checks.ONLINE is True and events.ONLINE is True
        assert dict(utils.SETTINGS) == settings_before
        assert font_manager.fontManager.ttflist == fonts_before
        events.events.enabled = True  # as if the user's online session had created it
        with offline_ultralytics():
            assert events.events.enabled is False
        assert events.events.enabled is True
        print("OK")
    """, tmp_path, YOLO_CONFIG_DIR=str(user))
    assert "OK" in out
    assert settings.read_bytes() == before_bytes
    assert sorted(p.name for p in user.rglob("*")) == ["Ultralytics", "settings.json"]  # no fonts written there
