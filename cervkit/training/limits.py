"""Honest training limits: every stage's wall-clock cap is explicit, announced, and recorded with why it stopped.

Each trainer takes ``max_minutes``:

* a number: stop after the epoch in which that many minutes have passed (the best weights are kept);
* ``None``: no cap;
* ``"auto"`` (:data:`AUTO`, the default): the stage's CPU cap (its ``cpu_max_minutes``) on a CPU, and **no cap on
  CUDA**, so the paper's epochs and patience are never cut short by a default on a GPU.

At its start a stage prints what is in force (:func:`announce_limits`), e.g.
``segmenter: at most 100 epochs, patience 30, time cap 12 min (CPU default; --max-minutes to change)``, and its
``config.json`` records ``limits`` (:func:`limits_record`): ``epochs``, ``patience``, ``max_minutes`` (the cap in
force), ``max_minutes_source``, ``stop_reason`` (one of :data:`STOP_REASONS`) and ``epochs_run``.
``python -m cervkit train`` copies every stage's ``limits`` into ``run.json``.

Ultralytics stages (detector, YOLO-seg) use :class:`YoloStopWatch`, an ``on_fit_epoch_end`` callback: it stops the
trainer once the cap has passed (ultralytics' own ``time`` argument is not a cap: it re-estimates the number of
epochs to *fill* the time, ignoring ``epochs``) and tells the stop reasons apart: the last requested epoch
(``epochs_done``), ultralytics' early stopping (``trainer.stopper``: ``patience`` epochs since its ``best_epoch``,
``early_stop``) or the cap (``time_cap``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cervkit.core.errors import CervkitInputError

AUTO = "auto"
"""``max_minutes="auto"``: the stage's CPU cap on a CPU, none on CUDA."""
STOP_REASONS = ("early_stop", "epochs_done", "time_cap")
"""Why a stage stopped: patience ran out, every requested epoch ran, or the wall-clock cap passed."""
SOURCES = ("given", "cpu_default", "cuda_default")
"""Where the cap in force came from: the caller, the CPU default, the (absent) CUDA default."""

MaxMinutes = float | str | None
"""One stage's setting: minutes, ``None`` (no cap) or ``"auto"``."""


def on_cuda(device: Any) -> bool:
    """Whether a device (torch or ultralytics spelling) is a CUDA GPU.

    Parameters
    ----------
    device : torch.device, str or int
        ``torch.device("cuda")``, ``"cuda:1"``, ultralytics' ``"0"`` / ``0`` / ``"0,1"``, ``"cpu"``, ``"mps"`` …

    Returns
    -------
    bool
        False for ``cpu`` and ``mps``, True otherwise.
    """
    kind = getattr(device, "type", None)
    text = str(kind if kind is not None else device).strip().lower()
    return text.split(":")[0] not in ("cpu", "mps", "")


def check_max_minutes(value: Any, name: str = "max_minutes") -> MaxMinutes:
    """Validate one stage's ``max_minutes``: a number >= 0, None, or ``"auto"``.

    Parameters
    ----------
    value : float, str or None
        The setting.
    name : str
        How the error names it.

    Returns
    -------
    float, str or None
        ``float(value)``, None or ``"auto"``.

    Raises
    ------
    CervkitInputError
        Any other value.
    """
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise CervkitInputError(f"{name} must be a number of minutes >= 0, None (no cap) or 'auto', not {value!r}")
    return float(value)


def resolve_max_minutes(max_minutes: MaxMinutes, cpu_max_minutes: float | None,
                        device: Any) -> tuple[float | None, str]:
    """The cap in force for a stage, and where it came from.

    Parameters
    ----------
    max_minutes : float, str or None
        The stage's argument: minutes, None (no cap) or ``"auto"``.
    cpu_max_minutes : float, optional
        The stage's cap under ``"auto"`` on a CPU (None: no cap there either).
    device : torch.device, str or int
        The device the stage trains on (:func:`on_cuda`).

    Returns
    -------
    minutes : float or None
        The cap in force (None: no cap).
    source : str
        ``"given"``, ``"cpu_default"`` or ``"cuda_default"`` (:data:`SOURCES`).
    """
    value = check_max_minutes(max_minutes)
    if value != AUTO:
        return value, "given"
    if on_cuda(device):
        return None, "cuda_default"
    cap = check_max_minutes(cpu_max_minutes, "cpu_max_minutes")
    return (None if cap == AUTO else cap), "cpu_default"


def describe_limits(stage: str, epochs: int, patience: int | None, max_minutes: float | None, source: str) -> str:
    """One line saying what bounds a stage, e.g. ``detector: at most 200 epochs, patience 20, no time cap``.

    Parameters
    ----------
    stage : str
        The stage's name as printed.
    epochs, patience : int
        Maximum epochs and early-stopping patience (None or 0: no early stopping).
    max_minutes : float, optional
        The cap in force.
    source : str
        Where it came from (:func:`resolve_max_minutes`).

    Returns
    -------
    str
        The line.
    """
    stopping = f"patience {patience}" if patience else "no early stopping"
    if max_minutes is None:
        cap = "no time cap" + (" (none by default on CUDA; --max-minutes to set one)" if source == "cuda_default"
                               else " (--max-minutes to set one)" if source == "cpu_default" else "")
    else:
        cap = f"time cap {max_minutes:g} min" + (" (CPU default; --max-minutes to change)" if source == "cpu_default"
                                                 else "")
    return f"{stage}: at most {int(epochs)} epochs, {stopping}, {cap}"


def announce_limits(stage: str, epochs: int, patience: int | None, max_minutes: float | None, source: str) -> str:
    """Print :func:`describe_limits` at the start of a stage (stdout, flushed) and return it.

    Parameters
    ----------
    stage, epochs, patience, max_minutes, source
        As in :func:`describe_limits`.

    Returns
    -------
    str
        The printed line.
    """
    line = describe_limits(stage, epochs, patience, max_minutes, source)
    print(line, flush=True)
    return line


def limits_record(epochs: int, patience: int | None, max_minutes: float | None, source: str, stop_reason: str,
                  epochs_run: int) -> dict[str, Any]:
    """What a stage's ``config.json`` (and ``run.json``) records under ``limits``.

    Parameters
    ----------
    epochs, patience : int
        The requested maximum epochs and patience (after quick mode).
    max_minutes : float, optional
        The cap in force (None: no cap).
    source : str
        Where the cap came from (:data:`SOURCES`).
    stop_reason : str
        One of :data:`STOP_REASONS`.
    epochs_run : int
        The epoch reached.

    Returns
    -------
    dict
        ``epochs``, ``patience``, ``max_minutes``, ``max_minutes_source``, ``stop_reason``, ``epochs_run``.
    """
    if stop_reason not in STOP_REASONS:
        raise ValueError(f"stop_reason must be one of {STOP_REASONS}, not {stop_reason!r}")
    return {"epochs": int(epochs), "patience": None if patience is None else int(patience),
            "max_minutes": max_minutes, "max_minutes_source": source, "stop_reason": stop_reason,
            "epochs_run": int(epochs_run)}


class EpochLimits:
    """The stop rule of a hand-written epoch loop (crop segmenter, whole-image models).

    Call :meth:`stop_after` after each epoch; it says whether to stop and records why.

    Parameters
    ----------
    epochs, patience : int
        Maximum epochs; stop after ``patience`` epochs without a better score.
    max_minutes : float, optional
        Stop after the epoch in which this many minutes have passed since :meth:`start` (None: no cap).

    Attributes
    ----------
    stop_reason : str
        ``"epochs_done"`` until an early stop or the cap says otherwise.
    """

    def __init__(self, epochs: int, patience: int, max_minutes: float | None) -> None:
        self.epochs, self.patience, self.max_minutes = int(epochs), int(patience), max_minutes
        self.stop_reason = "epochs_done"
        self._start = time.perf_counter()

    def start(self) -> None:
        """Start the clock (call it just before the first epoch)."""
        self._start = time.perf_counter()

    def stop_after(self, epoch: int, best_epoch: int) -> bool:
        """Whether to stop after 1-based ``epoch`` given the best epoch so far; the last epoch is ``epochs_done``.

        Parameters
        ----------
        epoch, best_epoch : int
            The epoch just trained and the 1-based epoch with the best score.

        Returns
        -------
        bool
            True to stop now.
        """
        if epoch >= self.epochs:
            self.stop_reason = "epochs_done"
            return True
        if epoch - best_epoch >= self.patience:
            self.stop_reason = "early_stop"
            return True
        if self.max_minutes is not None and time.perf_counter() - self._start > 60.0 * self.max_minutes:
            self.stop_reason = "time_cap"
            return True
        return False


class YoloStopWatch:
    """An ultralytics ``on_fit_epoch_end`` callback: the wall-clock cap, and why training stopped.

    The clock starts when the watch is made (just before ``model.train``). After each epoch it records the
    epoch reached and, once the trainer is to stop, why: ``epochs_done`` on the last requested epoch,
    ``early_stop`` when ``trainer.stopper`` has seen ``patience`` epochs without a better fitness, ``time_cap``
    when ``max_minutes`` have passed (it then sets ``trainer.stop``). The callbacks run once more for the final
    validation of ``best.pt``; by then the reason is known and is kept.

    Parameters
    ----------
    max_minutes : float, optional
        The cap (None: none).

    Attributes
    ----------
    stop_reason : str or None
        None until training stops.
    epoch : int
        The last 1-based epoch seen.
    """

    def __init__(self, max_minutes: float | None) -> None:
        self.max_seconds = None if max_minutes is None else 60.0 * float(max_minutes)
        self.start = time.perf_counter()
        self.stop_reason: str | None = None
        self.epoch = 0

    def __call__(self, trainer: Any) -> None:
        """Check the cap after one epoch of ``trainer`` (an ultralytics ``BaseTrainer``)."""
        if self.stop_reason is not None:
            return
        self.epoch = int(trainer.epoch) + 1
        stopper = getattr(trainer, "stopper", None)
        if self.epoch >= int(trainer.epochs):
            self.stop_reason = "epochs_done"
        elif stopper is not None and self.epoch - int(stopper.best_epoch) >= stopper.patience:
            self.stop_reason = "early_stop"
        elif self.max_seconds is not None and time.perf_counter() - self.start > self.max_seconds:
            trainer.stop = True
            self.stop_reason = "time_cap"
        elif getattr(trainer, "stop", False):  # ultralytics' own `time` argument, if someone passed it
            self.stop_reason = "time_cap" if getattr(getattr(trainer, "args", None), "time", None) else "early_stop"

    def reason(self, epochs_run: int, epochs: int) -> str:
        """The stop reason after training (from the table's length if no epoch end was seen).

        Parameters
        ----------
        epochs_run, epochs : int
            Rows of ``results.csv`` and the requested epochs.

        Returns
        -------
        str
            One of :data:`STOP_REASONS`.
        """
        if self.stop_reason is not None:
            return self.stop_reason
        return "epochs_done" if epochs_run >= epochs else "early_stop"


def parse_max_minutes(text: str) -> MaxMinutes | dict[str, MaxMinutes]:
    """Parse ``--max-minutes``: one value for every stage, or ``stage=value`` pairs separated by commas.

    A value is a number of minutes, ``none`` (no cap) or ``auto`` (the CPU default on a CPU, no cap on CUDA).

    Parameters
    ----------
    text : str
        ``"30"``, ``"none"``, ``"auto"`` or e.g. ``"detector=20,segmenter=none"``.

    Returns
    -------
    float, str, None or dict
        One setting, or stage → setting (stages not named keep ``"auto"``).

    Raises
    ------
    ValueError
        Not a number, ``none`` or ``auto``; a pair without a stage; a stage named twice.
    """

    def value(part: str) -> MaxMinutes:
        word = part.strip().lower()
        if word in ("none", "off", "no"):
            return None
        if word == AUTO:
            return AUTO
        try:
            minutes = float(word)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a number of minutes, 'none' or 'auto'") from None
        if not minutes >= 0:
            raise ValueError(f"a time cap must be >= 0 minutes, not {part.strip()!r}")
        return minutes

    if "=" not in text:
        return value(text)
    out: dict[str, MaxMinutes] = {}
    for pair in text.split(","):
        stage, sep, setting = pair.partition("=")
        stage = stage.strip()
        if not sep or not stage:
            raise ValueError(f"{pair.strip()!r} is not STAGE=MINUTES (e.g. detector=20,segmenter=12)")
        if stage in out:
            raise ValueError(f"stage {stage!r} is named twice in {text!r}")
        out[stage] = value(setting)
    return out


def stage_max_minutes(spec: MaxMinutes | Mapping[str, MaxMinutes], stage: str,
                      stages: Sequence[str]) -> MaxMinutes:
    """One stage's setting from ``train_run``'s ``max_minutes`` (one value, or stage → value).

    Parameters
    ----------
    spec : float, str, None or mapping
        The setting for every stage, or per stage (stages not named: ``"auto"``).
    stage : str
        The stage asked about.
    stages : sequence of str
        The run's stages (``detector``, ``segmenter``; ``model`` for a one-stage baseline).

    Returns
    -------
    float, str or None
        The stage's setting.

    Raises
    ------
    CervkitInputError
        A mapping naming a stage the run does not have, or an invalid value.
    """
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(stages))
        if unknown:
            raise CervkitInputError(f"--max-minutes names {', '.join(unknown)}, but this run's stages are "
                                    f"{', '.join(stages)}")
        return check_max_minutes(spec.get(stage, AUTO), f"--max-minutes {stage}")
    return check_max_minutes(spec, "--max-minutes")
