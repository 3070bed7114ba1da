"""``python -m cervkit zoo build NAME``: the one recipe of each shipped model, from scratch, seeded.

A recipe names its sources (real data sets read through ``CERVKIT_DATA_DIR``, phantoms generated from a seed),
the split (by patient within each source, 6:2:2), and the two stages' settings. :func:`build`

1. writes each source's manifest and trains them with :func:`cervkit.training.train.train_run`, the same
   multi-source training a user gets from ``train --manifest A --manifest B`` (one recipe of training): the
   sources are merged and split by patient within each; the single-class YOLOv11 detector learns from the
   training images **cropped to their annotated span** (:func:`cervkit.data.sources.write_span_crops`), so a
   vertebra a source leaves unannotated (T12 and S1 in the Dixon set, T10 in the T2 set, C1 and T1 in the
   phantoms) is never learnt as background; the U-Net3+ crop segmenter learns every annotated body of the full
   images; the anchor classifier (:mod:`cervkit.training.anchor`) learns C2 and L5-above-the-sacrum, which
   name the levels;
2. scores each source's held-out test patients (bodies outside a source's annotated levels ignored), and how
   often each annotated body is found **and** named right (:mod:`cervkit.evaluation.naming`);
3. writes the run folder into ``cervkit/zoo/<name>/`` with fp16 weights and the cards ``<name>.json`` /
   ``<name>.md`` (data, split, command, seed, versions, sha256 of every file, metrics, use, limits, terms).

Nothing else writes into ``cervkit/zoo/``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes, sha256_file
from cervkit.zoo.catalog import RECIPES, source_manifest, test_manifest
from cervkit.zoo.store import ZOO_DIR

__all__ = ["build", "rescore", "score_sources"]

_STAGES = ("detector", "segmenter", "anchor")


def score_sources(run: str | PathLike[str], split: Any, *, device: str | None = "cpu") -> dict[str, dict[str, Any]]:
    """Score a run on each source's test patients: per image, per vertebra, detection and time.

    Parameters
    ----------
    run : str or PathLike
        A run folder or a shipped model's name.
    split : Manifest
        With ``source`` and ``split`` columns.
    device : str, optional

    Returns
    -------
    dict
        Source → ``images``, ``bodies``, ``dice_image`` (mean per-image Dice), ``dice_vertebra`` (mean
        over annotated bodies, a missed body counting 0), ``found`` (bodies matched at IoU ≥ 0.5),
        ``hd95_mm_or_px``, ``seconds_median``, and ``named_right`` (annotated bodies found and named right,
        :mod:`cervkit.evaluation.naming`) where the source states its levels.
    """
    import numpy as np

    from cervkit.evaluation.evaluate import evaluate_predictor
    from cervkit.evaluation.naming import body_names, naming_summary
    from cervkit.inference.registry import load_predictor

    predictor = load_predictor(run, device=device)
    out = {}
    for name in sorted(split.df["source"].astype(str).unique()):
        part = split.with_df(split.df[split.df["source"].astype(str) == name].reset_index(drop=True))
        if not (part.df["split"] == "test").any():
            continue
        made: dict[str, Any] = {}
        ev = evaluate_predictor(predictor, part, split="test", progress=False, n_boot=200, unannotated=True,
                                keep=made)
        gt = ev.vertebrae[~ev.vertebrae["false_positive"]]
        out[name] = {"images": len(ev.images), "bodies": len(gt),
                     "dice_image": round(float(ev.images["dice"].mean()), 4),
                     "dice_vertebra": round(float(gt["dice"].fillna(0).mean()), 4),
                     "found": round(float(gt["matched"].mean()), 4) if "matched" in gt else None,
                     "hd95": round(float(ev.images["hd95"].mean()), 2),
                     "seconds_median": round(float(np.median(ev.images["seconds"])), 4)}
        if "levels" in part.df.columns:
            test = part.with_df(part.df[part.df["split"] == "test"].reset_index(drop=True))
            out[name]["named_right"] = float(naming_summary(body_names(predictor, test, predictions=made))["right"]
                                             .iloc[0])
    return out


def _half_checkpoint(src: Path, dst: Path) -> None:
    """Copy a cervkit segmentation checkpoint with its floating tensors in float16."""
    import io

    import torch

    payload = torch.load(src, map_location="cpu", weights_only=True)
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(dst, buffer.getvalue(), overwrite=True)


def _export(run: Path, target: Path, modality: str) -> None:
    """Copy what prediction needs from a run folder into ``target`` (replaced)."""
    if target.exists():
        shutil.rmtree(target)
    (target / "detector" / "weights").mkdir(parents=True)
    (target / "segmenter").mkdir(parents=True)
    shutil.copyfile(run / "detector" / "weights" / "best.pt", target / "detector" / "weights" / "best.pt")
    for stage in _STAGES:
        if (run / stage / "config.json").is_file():
            (target / stage).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / stage / "config.json", target / stage / "config.json")
    _half_checkpoint(run / "segmenter" / "model.pt", target / "segmenter" / "model.pt")
    if (run / "anchor" / "model.pt").is_file():
        _half_checkpoint(run / "anchor" / "model.pt", target / "anchor" / "model.pt")
    info = json.loads((run / "run.json").read_text())
    for key in ("split", "arguments", "resumed_from"):  # the split and the data live on the card (portable)
        info.pop(key, None)
    info["modality"] = modality
    (target / "run.json").write_text(json.dumps(info, indent=2) + "\n")


def _test_images(split: Any) -> dict[str, list[str]]:
    """Per source, the test images as paths relative to the source's manifest folder (portable)."""
    out: dict[str, list[str]] = {}
    for i in range(len(split)):
        row = split.df.iloc[i]
        if row["split"] == "test":
            path = split.image_path(i)
            out.setdefault(str(row["source"]), []).append(f"{path.parent.name}/{path.name}")
    return {k: sorted(v) for k, v in out.items()}


def _card_md(card: Mapping[str, Any]) -> str:
    lines = [f"# cervkit model `{card['name']}`", "", card["summary"], "",
             f"Built by `{card['recipe']['command']}` (seed {card['recipe']['seed']}) on "
             f"{card['built']['date']} in {card['built']['minutes']} min ({card['built']['device']})."
             + (f" Scored again on {card['scored']['date']} by `{card['scored']['command']}` (cervkit "
                f"{card['scored']['cervkit']}, {card['scored']['inference']}; same weights)." if "scored" in card else ""),
             "",
             "## Held-out test patients, per source", "",
             "| source | images | bodies | Dice / image | Dice / vertebra | bodies found | found and named right "
             "| HD95 | s / image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in card["metrics"].items():
        named = f"{m['named_right']:.3f}" if m.get("named_right") is not None else "–"
        lines.append(f"| {name} | {m['images']} | {m['bodies']} | {m['dice_image']:.3f} | {m['dice_vertebra']:.3f} "
                     f"| {m['found']:.3f} | {named} | {m['hd95']:.2f} | {m['seconds_median']:.3f} |")
    lines += ["", "Bodies outside a source's annotated levels are not scored (the protocol left them unannotated).",
              "", "## Data and split", ""]
    for name, d in card["data"].items():
        lines.append(f"- **{name}**: {d['images']} images, {d['patients']} patients; split by patient "
                     f"{d['split']}; levels {d['levels']}; {d['terms']}")
    lines += ["", "## Intended use", "", *[f"- {u}" for u in card["intended_use"]], "", "## Limits", "",
              *[f"- {u}" for u in card["limits"]], "", "## Training", "",
              f"- detector: {json.dumps(card['recipe']['detector'])}; stopped: {card['stages'].get('detector')}",
              f"- segmenter: {json.dumps(card['recipe']['segmenter'])}; stopped: {card['stages'].get('segmenter')}",
              f"- anchor: {json.dumps(card['recipe'].get('anchor', {}))}; stopped: {card['stages'].get('anchor')}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}", "",
              "## Files (sha256)", "", *[f"- `{k}` {v}" for k, v in card["files"].items()], ""]
    return "\n".join(lines)


def build(name: str, *, zoo_dir: str | PathLike[str] | None = None, work_dir: str | PathLike[str] | None = None,
          quick: bool = False, device: str | None = None) -> dict[str, Any]:
    """Build a shipped model from scratch with its recipe and write it with its cards.

    Parameters
    ----------
    name : str
        A key of :data:`RECIPES`.
    zoo_dir : str or PathLike, optional
        Where the model and cards go (default: the package's ``cervkit/zoo``). A quick build must name
        another folder.
    work_dir : str or PathLike, optional
        Scratch folder for data, the training run and logs (default ``outputs/zoo_build/<name>``).
    quick : bool
        A tiny smoke-test build (a few images, one epoch): never written into the package.
    device : str, optional
        Training device (default CUDA when visible).

    Returns
    -------
    dict
        The card.

    Raises
    ------
    CervkitInputError
        Unknown recipe, a real source missing (``CERVKIT_DATA_DIR``), or a quick build aimed at the package.
    """
    from cervkit.core.config import outputs_dir
    from cervkit.data.manifest import load_manifest
    from cervkit.data.table import save_manifest
    from cervkit.runs.folder import read_run_info, versions, write_run_info
    from cervkit.training.segmenter import seed_everything
    from cervkit.training.train import train_run

    if name not in RECIPES:
        raise CervkitInputError(f"no recipe {name!r} (recipes: {', '.join(RECIPES)})")
    recipe = RECIPES[name]
    zoo = Path(zoo_dir) if zoo_dir is not None else ZOO_DIR
    if quick and zoo.resolve() == ZOO_DIR:
        raise CervkitInputError("a quick build is a smoke test: give zoo_dir outside the package", zoo)
    work = Path(work_dir) if work_dir is not None else outputs_dir() / "zoo_build" / name
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    seed_everything(recipe.seed)
    manifests = [source_manifest(s, work, quick=quick, recipe=recipe) for s in recipe.sources]
    csvs = [save_manifest(m, work / "manifests" / f"{s.name}.csv", overwrite=True)
            for m, s in zip(manifests, recipe.sources)]
    det = dict(recipe.detector)
    seg = dict(recipe.segmenter)
    anc = dict(recipe.anchor)
    if quick:
        anc.update(epochs=1)
        det.update(epochs=recipe.quick.get("detector_epochs", 1), max_minutes=None, imgsz=96)
        det.pop("zoom_copies", None)
        seg.update(epochs=recipe.quick.get("segmenter_epochs", 1), max_minutes=None)
    train_run(csvs if len(csvs) > 1 else csvs[0], run, seed=recipe.seed, device=device, quick=False,
              overwrite=True, validate=False, detector_classes="single", detector_options=det,
              segmenter_options=seg, anchor_options=anc)
    info = read_run_info(run)
    info["arguments"] = {"recipe": name, "command": f"python -m cervkit zoo build {name}", "seed": recipe.seed}
    write_run_info(run, info)
    split = load_manifest(run / "split.csv", validate=False)
    minutes = round((time.time() - start) / 60, 1)
    metrics = score_sources(run, split, device="cpu")
    target = zoo / name
    zoo.mkdir(parents=True, exist_ok=True)
    _export(run, target, recipe.modality)
    stages = {}
    for stage in _STAGES:
        config = json.loads((run / stage / "config.json").read_text()) if (run / stage / "config.json").is_file() else {}
        stages[stage] = config.get("limits", {}).get("stop_reason", config.get("stop_reason"))
    data = {}
    for table, source in zip(manifests, recipe.sources):
        rows = split.df[split.df["source"].astype(str) == source.name]
        levels = sorted({str(v) for v in rows.get("levels", [])}) or ["not stated"]
        data[source.name] = {
            "images": int(len(rows)), "patients": int(rows["patient_id"].nunique()),
            "split": {s: int(rows.loc[rows["split"] == s, "patient_id"].nunique()) for s in ("train", "val", "test")},
            "levels": levels[0] if len(levels) == 1 else levels,
            "terms": str(rows["license"].iloc[0]) if "license" in rows and len(rows) else "see source",
            "phantoms": dict(source.phantoms, size=list(source.phantoms["size"])) if source.phantoms else None,
        }
    card = {"name": name, "summary": recipe.summary, "modality": recipe.modality, "quick_build": quick,
            "recipe": {"command": f"python -m cervkit zoo build {name}", "seed": recipe.seed,
                       "sources": [s.name for s in recipe.sources], "detector": det, "segmenter": seg,
                       "anchor": anc,
                       "detector_input": "images cropped to the annotated span (half a disc beyond)"},
            "built": {"date": time.strftime("%Y-%m-%d"), "minutes": minutes, "device": device or "auto"},
            "data": data, "test_images": _test_images(split), "metrics": metrics, "stages": stages,
            "versions": versions(), "intended_use": list(recipe.intended_use), "limits": list(recipe.limits),
            "terms": "Weights inherit the terms of their training data: research use (see each source's citation).",
            "files": {p.relative_to(target).as_posix(): sha256_file(p)
                      for p in sorted(target.rglob("*")) if p.is_file()}}
    (zoo / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    (zoo / f"{name}.md").write_text(_card_md(card))
    return card


def rescore(name: str, *, device: str | None = "cpu", work_dir: str | PathLike[str] | None = None,
            write: bool = False) -> dict[str, dict[str, Any]]:
    """Score a shipped model again on the test images its card lists (what CI compares with the card).

    Parameters
    ----------
    name : str
    device : str, optional
    work_dir : str or PathLike, optional
        Where generated phantoms go (default ``outputs/zoo_check/<name>``).
    write : bool
        Put the new numbers on the card (``NAME.json`` and ``NAME.md``), with a ``scored`` record (date,
        cervkit version, what changed: the inference, never the weights, whose sha256 is checked first).
    Returns
    -------
    dict
        As :func:`score_sources`.

    Raises
    ------
    CervkitInputError
        ``write`` on a model whose files do not match its card.
    """
    from cervkit.core.version import __version__
    from cervkit.zoo import store

    zoo = store.ZOO_DIR
    if write:
        problems = store.check(name)
        if problems:
            raise CervkitInputError("its files do not match the card; rebuild it (zoo build): "
                                    + "; ".join(problems), zoo / name)
    metrics = score_sources(name, test_manifest(name, work_dir=work_dir), device=device)
    if write:
        card_file = zoo / f"{name}.json"
        card = json.loads(card_file.read_text())
        card["metrics"] = metrics
        card["scored"] = {"date": time.strftime("%Y-%m-%d"), "cervkit": __version__,
                          "inference": "segmenter with test-time left-right mirroring; single-class boxes kept on the "
                                       "spine chain, weak boxes (confidence 0.05-0.25) where it expects a body",
                          "command": f"python -m cervkit zoo score {name} --write"}
        card_file.write_text(json.dumps(card, indent=2) + "\n")
        (zoo / f"{name}.md").write_text(_card_md(card))
    return metrics
