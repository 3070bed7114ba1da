"""Run ultralytics offline inside a scope that restores what it changed: no network, no downloads,
nothing written to the cwd, no settings file rewritten.

Ultralytics decides some things once, at import (``ONLINE`` from ``YOLO_OFFLINE``, ``USER_CONFIG_DIR``
from ``YOLO_CONFIG_DIR``, ``WEIGHTS_DIR`` from the settings file), and reads others at every call
(``SETTINGS["sync"]``, the logger integrations, the Platform API key). Its ``SETTINGS`` is a
``JSONDict``: ``SETTINGS[k] = v`` and ``SETTINGS.update(...)`` rewrite ``settings.json`` at once.
:func:`offline_ultralytics` is a context manager that, for the duration of the block only:

* sets ``YOLO_OFFLINE=1``, removes ``ULTRALYTICS_API_KEY`` and, when ultralytics is not imported yet
  and the user has not set one, points ``YOLO_CONFIG_DIR`` at cervkit's own folder
  (:func:`default_config_dir`), then imports ultralytics; on exit these three variables get their
  previous values back (or their absence);
* sets ``ONLINE = False`` in every loaded ultralytics module and disables its analytics
  ``events`` object (no DNS probe, no requirement auto-install, no hub, no analytics);
* turns ``sync``, every logger integration (ClearML, Comet, DVC, MLflow, Ray Tune, TensorBoard,
  W&B) and the Platform ``api_key`` off **in memory only**, with plain ``dict`` methods that bypass
  ``JSONDict``'s save, so no ``settings.json`` (a user's own included) is ever written by cervkit;
* makes ``check_font`` find ``Arial.ttf`` / ``Arial.Unicode.ttf`` locally (copies of matplotlib's
  DejaVuSans) instead of downloading them. The copies live in cervkit's own config folder only:
  ultralytics' ``USER_CONFIG_DIR`` when cervkit chose it, otherwise they are listed in matplotlib's
  font list for the block (a user's config folder is never written to).

Everything listed is put back on exit, except two deliberate one-way changes: ultralytics'
import-time constants stay what the import made them (an ultralytics first imported inside the
block stays offline: ``ONLINE`` is False, ``USER_CONFIG_DIR`` is cervkit's folder, and an analytics
``events`` object created inside stays disabled), and ultralytics' own process-wide monkey-patch of
``PIL.Image.open`` is undone, not restored (:func:`_restore_pil_open`). What ultralytics itself
changes in the process is left to it: the variables it sets at import (``OMP_NUM_THREADS`` when
unset, ``NUMEXPR_MAX_THREADS``, log levels) and in a deterministic training run
(``CUBLAS_WORKSPACE_CONFIG``, ``PYTHONHASHSEED``, which ``torch.use_deterministic_algorithms``,
left on by that run, needs on CUDA).

Nothing here needs ``weights_dir``: cervkit loads ``.pt`` files by path and builds new models from
``.yaml``, so ultralytics never looks a bare weights name up in ``SETTINGS["weights_dir"]``, and
the only weights lookup left, the AMP check, uses the import-time ``WEIGHTS_DIR`` (see
:func:`amp_setting`, which picks an ``amp`` value that avoids that check's download).

:func:`import_ultralytics` is the entry point of cervkit's callers: it imports ultralytics inside
the scope and returns it (:class:`OfflineUltralytics`) with a ``YOLO`` subclass whose
construction, ``train``, ``val``, ``predict``, ``track``, ``export``, ``benchmark`` and ``tune``
each run inside :func:`offline_ultralytics`. The scope is not thread-safe (``os.environ`` and
module attributes are process-wide); nested scopes restore in order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

_OFFLINE_SETTINGS: dict[str, Any] = {
    "sync": False, "api_key": "", "clearml": False, "comet": False, "dvc": False, "mlflow": False,
    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False, "openvino_msg": False}
_ENV_KEYS = ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "ULTRALYTICS_API_KEY")
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_OFFLINE_METHODS = ("train", "val", "predict", "track", "export", "benchmark", "tune")
_prepared: dict[str, Any] = {}


def default_config_dir() -> Path:
    """Return the folder ultralytics settings go to when ``YOLO_CONFIG_DIR`` is unset.

    Returns
    -------
    pathlib.Path
        ``<outputs>/ultralytics_config`` (see :func:`cervkit.core.config.outputs_dir`);
        ultralytics adds ``Ultralytics/`` below it.
    """
    from cervkit.core.config import outputs_dir

    return outputs_dir() / "ultralytics_config"


def _local_font() -> Path | None:
    """Return matplotlib's bundled DejaVuSans.ttf (always installed with matplotlib)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def _install_fonts(folder: Path, names: tuple[str, ...] = _FONT_NAMES) -> list[Path]:
    """Copy the stand-in font into ``folder`` (a cervkit-owned folder) under ``names``; return the copies."""
    font = _local_font()
    if font is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        target = folder / name
        if not target.exists():
            shutil.copyfile(font, target)
        out.append(target)
    return out


def _is_ultralytics(name: str) -> bool:
    return name == "ultralytics" or name.startswith("ultralytics.")


def _online_modules() -> dict[str, ModuleType]:
    """Loaded ultralytics modules that hold an ``ONLINE`` flag."""
    return {name: module for name, module in list(sys.modules.items())
            if _is_ultralytics(name) and module is not None and hasattr(module, "ONLINE")}


def _force_offline() -> Callable[[], None]:
    """Set ``ONLINE = False`` in every loaded ultralytics module and disable its analytics events.

    Returns the function that puts the old values back. Modules first imported inside the scope
    take the value ``ultralytics.utils.ONLINE`` goes back to (they stay False when ultralytics
    itself was imported inside the scope).
    """
    saved = {name: module.ONLINE for name, module in _online_modules().items()}
    for name in saved:
        sys.modules[name].ONLINE = False
    events = getattr(sys.modules.get("ultralytics.utils.events"), "events", None)
    events_enabled = getattr(events, "enabled", None)
    if events_enabled is not None:
        events.enabled = False

    def restore() -> None:
        base = saved.get("ultralytics.utils")
        for name, module in _online_modules().items():
            if name in saved:
                module.ONLINE = saved[name]
            elif base is not None:
                module.ONLINE = base
        if events_enabled is not None and events.enabled is False:
            events.enabled = events_enabled

    return restore


def _settings_in_memory(settings: dict[str, Any]) -> Callable[[], None]:
    """Turn sync, integrations and the API key off in ``settings`` without saving; return the undo.

    ``dict.__setitem__`` bypasses ``JSONDict.__setitem__``/``update``, which would rewrite the
    settings file. A key ultralytics changed itself during the scope is left as it set it.
    """
    changes = {k: v for k, v in _OFFLINE_SETTINGS.items() if k in settings}
    saved = {k: dict.__getitem__(settings, k) for k in changes}
    for key, value in changes.items():
        dict.__setitem__(settings, key, value)

    def restore() -> None:
        for key, value in saved.items():
            if key in settings and dict.__getitem__(settings, key) == changes[key]:
                dict.__setitem__(settings, key, value)

    return restore


def _provide_fonts(user_config_dir: Path) -> Callable[[], None]:
    """Make ``check_font`` find local fonts without writing to a folder cervkit does not own.

    In cervkit's own config folder the stand-ins are copied next to ``settings.json``, where
    ``check_font`` looks first. Otherwise (the user's ``YOLO_CONFIG_DIR``, or an ultralytics the
    user imported) the fonts missing there are copied to cervkit's folder and appended to
    matplotlib's font list, ``check_font``'s second place to look, until the returned undo runs.
    """
    own = _prepared.get("own_dir")
    if own is not None and Path(user_config_dir) == own:
        _install_fonts(own)
        return lambda: None
    from matplotlib import font_manager

    ttflist = font_manager.fontManager.ttflist

    def found(name: str) -> bool:
        return (Path(user_config_dir) / name).exists() or any(
            name in entry.fname and os.path.exists(entry.fname) for entry in ttflist)

    missing = tuple(name for name in _FONT_NAMES if not found(name))
    if not missing:
        return lambda: None
    added = [font_manager.ttfFontProperty(font_manager.get_font(str(path)))
             for path in _install_fonts(default_config_dir() / "Ultralytics", missing)]
    ttflist.extend(added)

    def restore() -> None:
        for entry in added:
            with contextlib.suppress(ValueError):
                ttflist.remove(entry)

    return restore


def _restore_pil_open() -> None:
    """Undo ultralytics' global monkey-patch of ``PIL.Image.open`` (kept undone after the scope).

    On import, ultralytics replaces ``PIL.Image.open`` for every library in the process:
    on a file Pillow cannot identify it tries to pip-install ``pi-heif`` (a network call)
    and then raises ``ModuleNotFoundError`` instead of Pillow's own error, which breaks
    cervkit's clear messages about bad image files. cervkit needs no HEIF support.
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    original = getattr(patches, "_image_open", None)
    if original is None:
        return
    from PIL import Image as PILImage

    if PILImage.open is not original:
        PILImage.open = original


def _restore_environ(saved: dict[str, str | None]) -> None:
    """Give each key of ``saved`` its old value in ``os.environ`` again (None: absent)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def offline_ultralytics() -> Iterator[ModuleType]:
    """Import ultralytics and keep it offline for the block; restore what was changed on exit.

    See the module docstring for the full list. In short: ``YOLO_OFFLINE`` / ``YOLO_CONFIG_DIR`` /
    ``ULTRALYTICS_API_KEY`` in ``os.environ``, ``ONLINE`` in ultralytics' modules, its analytics
    ``events``, and ``sync`` / integrations / ``api_key`` in ``SETTINGS`` (in memory, never saved)
    are set on entry and restored on exit. Local fonts are provided for ``check_font``.

    Yields
    ------
    types.ModuleType
        The imported ``ultralytics`` package.

    Examples
    --------
    >>> with offline_ultralytics() as ul:  # doctest: +SKIP
    ...     ul.YOLO("yolo11n.yaml").train(data="data.yaml", epochs=1)
    """
    saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
    undo: list[Callable[[], None]] = []
    try:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ.pop("ULTRALYTICS_API_KEY", None)
        fresh = "ultralytics.utils" not in sys.modules
        ours = fresh and not os.environ.get("YOLO_CONFIG_DIR", "").strip()
        if ours:
            own = default_config_dir()
            own.mkdir(parents=True, exist_ok=True)
            os.environ["YOLO_CONFIG_DIR"] = str(own)
        import ultralytics
        from ultralytics import utils as ul_utils

        if ours and Path(ul_utils.USER_CONFIG_DIR) == own / "Ultralytics":
            _prepared["own_dir"] = Path(ul_utils.USER_CONFIG_DIR)
        undo.append(_force_offline())
        undo.append(_settings_in_memory(ul_utils.SETTINGS))
        undo.append(_provide_fonts(Path(ul_utils.USER_CONFIG_DIR)))
        _restore_pil_open()
        yield ultralytics
    finally:
        _restore_pil_open()  # also after a lazy ``ultralytics.utils.patches`` import inside the block
        for restore in reversed(undo):
            restore()
        _restore_environ(saved_env)


def _in_scope(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``YOLO`` method so that every call runs inside :func:`offline_ultralytics`."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with offline_ultralytics():
            return method(*args, **kwargs)

    return wrapper


class OfflineUltralytics:
    """The ``ultralytics`` package as cervkit uses it: ``YOLO`` models that run offline.

    ``YOLO`` is a subclass of ``ultralytics.YOLO`` whose construction and ``train``, ``val``,
    ``predict``, ``track``, ``export``, ``benchmark`` and ``tune`` each run inside
    :func:`offline_ultralytics`; every other attribute is the package's own.

    Parameters
    ----------
    module : types.ModuleType
        The imported ``ultralytics`` package.
    """

    def __init__(self, module: ModuleType) -> None:
        base = module.YOLO

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            with offline_ultralytics():
                base.__init__(self, *args, **kwargs)

        namespace: dict[str, Any] = {"__init__": __init__, "__module__": __name__,
                                     "__doc__": "ultralytics.YOLO whose calls run in offline_ultralytics()."}
        namespace.update({name: _in_scope(getattr(base, name)) for name in _OFFLINE_METHODS})
        self.module = module
        self.YOLO = type("OfflineYOLO", (base,), namespace)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def import_ultralytics() -> OfflineUltralytics:
    """Import ultralytics offline and return it with a ``YOLO`` whose calls stay offline.

    The import runs inside :func:`offline_ultralytics` (so an ultralytics imported here is
    offline for good and keeps its settings in cervkit's folder unless ``YOLO_CONFIG_DIR`` is
    set); nothing else outlives the call. Later calls return the same object at once.

    Returns
    -------
    OfflineUltralytics
        ``.YOLO`` runs every construction, ``train``, ``val``, ``predict`` … inside
        :func:`offline_ultralytics`; other attributes are the ``ultralytics`` package's.
    """
    if "module" not in _prepared:
        with offline_ultralytics() as ultralytics:
            _prepared["module"] = OfflineUltralytics(ultralytics)
    return _prepared["module"]


def config_dir() -> Path:
    """Return ultralytics' ``USER_CONFIG_DIR`` (importing it offline first).

    Returns
    -------
    pathlib.Path
        The folder holding ``settings.json`` (and, when it is cervkit's own folder, the stand-in fonts).
    """
    import_ultralytics()
    from ultralytics.utils import USER_CONFIG_DIR

    return Path(USER_CONFIG_DIR)


def amp_setting(device_type: str) -> bool | str:
    """Choose ultralytics' ``amp`` argument so training never downloads the AMP-check model.

    Parameters
    ----------
    device_type : str
        ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns
    -------
    bool or str
        False on CPU/MPS (AMP unused there). On CUDA: True when the check model
        (``yolo26n.pt``) is already in ultralytics' ``WEIGHTS_DIR`` (fixed at import from
        the settings file), ``"bf16"`` when the GPU supports bfloat16 (ultralytics skips
        the check for bf16), else False (FP32).
    """
    if device_type != "cuda":
        return False
    import_ultralytics()
    import torch
    from ultralytics.utils import WEIGHTS_DIR

    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        return True
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return False
