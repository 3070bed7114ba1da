"""The shipped models: where they live, their cards, and the sha256 check before anything is loaded.

Each model is a run folder inside the package, ``cervkit/zoo/<name>/`` (``run.json``, ``detector/``,
``segmenter/``), beside two cards: ``<name>.json`` (machine-readable: data, split, recipe command and seed,
versions, sha256 of every file, held-out metrics, intended use, limits, terms) and ``<name>.md`` (the same for
people). The weights are written only by ``python -m cervkit zoo build NAME``
(:mod:`cervkit.zoo.recipes`); this module only reads, and never imports training code.

A model name is accepted wherever a run folder is (:func:`resolve_model`): a real run folder of the same
name wins, and the caller is told which one was used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import sha256_file

__all__ = ["MODEL_FOR_MODALITY", "ZOO_DIR", "ResolvedModel", "available", "card", "check", "model_folder", "resolve_model",
           "verify"]

MODEL_FOR_MODALITY = {"MR": "mri", "MRI": "mri", "CR": "xray", "DX": "xray", "DR": "xray", "XR": "xray",
                      "RG": "xray", "RF": "xray"}
"""DICOM Modality (or manifest modality) → the shipped model for it."""

ZOO_DIR = Path(__file__).resolve().parent
"""The folder holding the shipped models and their cards."""


def available() -> list[str]:
    """Names of the shipped models (those with a card and a run folder).

    Returns
    -------
    list of str
    """
    return sorted(p.stem for p in ZOO_DIR.glob("*.json") if (ZOO_DIR / p.stem / "run.json").is_file())


def card(name: str) -> dict[str, Any]:
    """The machine-readable card of a shipped model.

    Parameters
    ----------
    name : str

    Returns
    -------
    dict

    Raises
    ------
    CervkitInputError
        No such model.
    """
    path = ZOO_DIR / f"{name}.json"
    if not path.is_file():
        shipped = ", ".join(available()) or "none"
        raise CervkitInputError(f"no shipped model {name!r} (shipped: {shipped})", path)
    return json.loads(path.read_text())


def model_folder(name: str) -> Path:
    """The run folder of a shipped model.

    Parameters
    ----------
    name : str

    Returns
    -------
    pathlib.Path
    """
    card(name)
    return ZOO_DIR / name


def check(name: str) -> list[str]:
    """Compare every file of a shipped model with the sha256 its card records.

    Parameters
    ----------
    name : str

    Returns
    -------
    list of str
        One line per problem (a missing file, a changed file, a file the card does not list); empty when
        the model is as built.
    """
    files = card(name).get("files", {})
    folder = ZOO_DIR / name
    problems = []
    for rel, digest in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{name}/{rel}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}/{rel}: sha256 differs from the card (file changed after zoo build)")
    listed = set(files)
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in listed and "__pycache__" not in rel:
            problems.append(f"{name}/{rel}: not listed on the card")
    return problems


def verify(name: str) -> Path:
    """Refuse a shipped model whose files differ from its card; return its folder otherwise.

    Parameters
    ----------
    name : str

    Returns
    -------
    pathlib.Path

    Raises
    ------
    CervkitInputError
        Naming the first file that does not match.
    """
    problems = check(name)
    if problems:
        raise CervkitInputError(f"shipped model {name!r} refused: {problems[0]}"
                                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                                ZOO_DIR / name)
    return ZOO_DIR / name


@dataclass(frozen=True)
class ResolvedModel:
    """What a model argument turned out to be.

    Attributes
    ----------
    path : pathlib.Path
        The run folder to load.
    kind : str
        ``"run"`` (a run folder) or ``"zoo"`` (a shipped model, sha256-checked).
    name : str
        The argument as given.
    """

    path: Path
    kind: str
    name: str

    def describe(self) -> str:
        """One line saying which model is used.

        Returns
        -------
        str
        """
        if self.kind == "zoo":
            return f"model {self.name!r}: the shipped model (cervkit/zoo/{self.name})"
        return f"model {self.name!r}: the run folder {self.path}"


def resolve_model(model: str | PathLike[str]) -> ResolvedModel:
    """Turn a model argument into a run folder: a real run folder wins, else a shipped model of that name.

    Parameters
    ----------
    model : str or PathLike
        A run folder or a shipped model's name (``mri``, ``xray``).

    Returns
    -------
    ResolvedModel

    Raises
    ------
    CervkitInputError
        Neither a run folder nor a shipped model, or a shipped model whose files fail the sha256 check.
    """
    path = Path(model)
    if (path / "run.json").is_file():
        return ResolvedModel(path, "run", str(model))
    name = str(model)
    if "/" not in name and (ZOO_DIR / f"{name}.json").is_file():
        return ResolvedModel(verify(name), "zoo", name)
    shipped = ", ".join(available()) or "none"
    raise CervkitInputError(f"not a run folder (no run.json) and not a shipped model (shipped: {shipped})", path)
