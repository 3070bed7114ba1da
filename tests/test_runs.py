"""Run folders: created once, described by run.json, refused when unfinished or foreign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.inference.registry import load_predictor
from cervkit.runs.folder import read_run_info, start_run, write_run_info


def test_start_run_records_arguments_and_refuses_non_empty(tmp_path: Path) -> None:
    run = start_run(tmp_path / "run", "yolo-unet", {"seed": 3})
    info = read_run_info(run)
    assert info["model"] == "yolo-unet" and info["status"] == "training" and info["arguments"] == {"seed": 3}
    assert "torch" in info["versions"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        start_run(run, "yolo-unet", {})
    assert start_run(run, "yolo-unet", {"seed": 4}, overwrite=True) == run
    with pytest.raises(CervkitInputError, match="unknown model"):
        start_run(tmp_path / "x", "resnet", {})


def test_unfinished_or_foreign_runs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CervkitInputError, match="not a cervkit run folder"):
        read_run_info(tmp_path)
    run = start_run(tmp_path / "run", "yolo-unet", {})
    with pytest.raises(CervkitInputError, match="did not finish"):
        load_predictor(run)
    (run / "run.json").write_text("{broken")
    with pytest.raises(CervkitInputError, match="not valid JSON"):
        read_run_info(run)
    write_run_info(run, {"model": "something-else", "status": "done"})
    assert json.loads((run / "run.json").read_text())["model"] == "something-else"
    with pytest.raises(CervkitInputError, match="cannot be loaded"):
        load_predictor(run)


def test_assemble_run_needs_both_stages(tmp_path: Path) -> None:
    from cervkit.runs.folder import assemble_run

    run = tmp_path / "run"
    (run / "detector" / "weights").mkdir(parents=True)
    with pytest.raises(CervkitInputError, match="detector"):
        assemble_run(run)
    (run / "detector" / "weights" / "best.pt").write_bytes(b"x")
    with pytest.raises(CervkitInputError, match="segmenter"):
        assemble_run(run)
    (run / "segmenter").mkdir()
    (run / "segmenter" / "model.pt").write_bytes(b"x")
    assert read_run_info(assemble_run(run))["status"] == "done"
    with pytest.raises(CervkitInputError, match="cascades only"):
        assemble_run(run, "unet3plus")


def test_run_matches_needs_a_finished_run_on_the_same_split_and_budget(tmp_path: Path) -> None:
    import pandas as pd

    from cervkit.data.manifest import save_manifest
    from cervkit.data.table import Manifest
    from cervkit.training.reuse import ensure_run, run_matches

    split = Manifest(pd.DataFrame({"image": ["a.png", "b.png"], "mask": ["a_m.png", "b_m.png"],
                                   "patient_id": ["p1", "p2"], "modality": ["MRI", "MRI"],
                                   "split": ["train", "test"]}), tmp_path / "split.csv", tmp_path)
    run = tmp_path / "run"
    assert not run_matches(run, split, quick=True)  # missing
    (run / "segmenter").mkdir(parents=True)
    write_run_info(run, {"model": "yolo-unet", "status": "running"})
    (run / "segmenter" / "config.json").write_text(json.dumps({"arguments": {"quick": True}}))
    save_manifest(split, run / "split.csv")  # paths rebased onto the run folder, as train writes it
    assert not run_matches(run, split, quick=True)  # unfinished
    write_run_info(run, {"model": "yolo-unet", "status": "done"})
    assert run_matches(run, split, quick=True)
    assert not run_matches(run, split, quick=False)  # another budget
    other = Manifest(split.df.assign(split=["test", "train"]), split.path, split.root)
    assert not run_matches(run, other, quick=True)  # another split
    calls = []
    assert ensure_run(run, split, model="yolo-unet", quick=True, trainer=lambda *a, **k: calls.append(a)) == (run, False)
    assert ensure_run(run, other, model="yolo-unet", quick=True, trainer=lambda *a, **k: calls.append(a)) == (run, True)
    assert len(calls) == 1
