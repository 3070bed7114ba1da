"""Shipped models: the recipe builds a loadable model with a truthful card; the sha256 check refuses changes;
a model name works wherever a run folder does; each shipped model scores what its card says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.zoo import store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke-test build of the ``xray`` recipe (phantoms only, one epoch per stage) in a folder of its own."""
    from cervkit.zoo.recipes import build

    base = tmp_path_factory.mktemp("zoo")
    build("xray", zoo_dir=base / "zoo", work_dir=base / "work", quick=True, device="cpu")
    return base


@pytest.fixture()
def in_quick_zoo(quick_zoo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(store, "ZOO_DIR", quick_zoo / "zoo")
    return quick_zoo / "zoo"


def test_the_recipe_writes_a_run_folder_and_a_card_that_matches_it(in_quick_zoo: Path) -> None:
    card = json.loads((in_quick_zoo / "xray.json").read_text())
    assert card["recipe"]["command"] == "python -m cervkit zoo build xray" and card["recipe"]["seed"] == 0
    assert card["quick_build"] is True and card["modality"] == "XR"
    assert set(card["files"]) == {"run.json", "detector/config.json", "detector/weights/best.pt",
                                  "segmenter/config.json", "segmenter/model.pt", "anchor/config.json",
                                  "anchor/model.pt"}
    assert card["recipe"]["anchor"] == {"epochs": 1, "patience": 12}
    assert {"cervkit", "torch", "ultralytics"} <= set(card["versions"])
    assert card["data"]["phantoms_xray"]["split"] == {"train": 1, "val": 1, "test": 1}
    assert card["test_images"]["phantoms_xray"] and card["intended_use"] and card["limits"] and card["terms"]
    assert set(card["stages"].values()) <= {"early_stop", "epochs_done", "time_cap"}
    assert store.available() == ["xray"] and store.check("xray") == []
    md = (in_quick_zoo / "xray.md").read_text()
    assert "python -m cervkit zoo build xray" in md and card["files"]["segmenter/model.pt"] in md
    import torch

    for stage in ("segmenter", "anchor"):
        payload = torch.load(in_quick_zoo / "xray" / stage / "model.pt", weights_only=True)
        assert {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()} == {torch.float16}


def test_a_quick_build_never_writes_into_the_package() -> None:
    from cervkit.zoo.recipes import build

    with pytest.raises(CervkitInputError, match="quick build"):
        build("xray", quick=True)
    with pytest.raises(CervkitInputError, match="no recipe"):
        build("ct")


def test_a_zoo_name_loads_and_rescores_as_on_its_card(in_quick_zoo: Path, quick_zoo: Path) -> None:
    import cervkit
    from cervkit.zoo.recipes import rescore

    predictor = cervkit.load_model("xray", device="cpu")
    assert predictor.model_source.kind == "zoo" and "shipped" in predictor.model_source.describe()
    pred = cervkit.segment(np.zeros((96, 96), np.float32), model="xray")
    assert pred.labels.shape == (96, 96) and pred.labels.dtype == np.uint8
    again = rescore("xray", work_dir=quick_zoo / "work")
    card = store.card("xray")["metrics"]
    for source, metrics in card.items():
        for key in ("images", "bodies", "dice_image", "dice_vertebra", "found"):
            assert again[source][key] == pytest.approx(metrics[key], abs=1e-3), (source, key)


def test_a_changed_file_is_refused_naming_it(in_quick_zoo: Path, tmp_path: Path) -> None:
    from cervkit.inference.registry import load_predictor

    copy = tmp_path / "zoo"
    shutil.copytree(in_quick_zoo, copy)
    store.ZOO_DIR = copy  # restored by the monkeypatch of in_quick_zoo
    weights = copy / "xray" / "segmenter" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    (copy / "xray" / "stray.txt").write_text("x")
    problems = store.check("xray")
    assert any("segmenter/model.pt: sha256 differs" in p for p in problems)
    assert any("stray.txt: not listed" in p for p in problems)
    with pytest.raises(CervkitInputError, match="refused: xray/segmenter/model.pt"):
        load_predictor("xray", device="cpu")


def test_a_real_run_folder_of_the_same_name_wins(in_quick_zoo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(in_quick_zoo / "xray", tmp_path / "xray")
    monkeypatch.chdir(tmp_path)
    resolved = store.resolve_model("xray")
    assert resolved.kind == "run" and resolved.path == Path("xray")
    shutil.rmtree(tmp_path / "xray")
    (tmp_path / "xray").mkdir()  # an empty folder is no run: the shipped model is used
    assert store.resolve_model("xray").kind == "zoo"
    with pytest.raises(CervkitInputError, match="not a run folder .* not a shipped model"):
        store.resolve_model("ct")


def test_zoo_cli_lists_and_checks(in_quick_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cervkit.cli.main import main

    assert main(["zoo", "list"]) == 0
    assert "xray: Lateral cervical X-ray" in capsys.readouterr().out
    assert main(["zoo", "check"]) == 0
    shutil.copytree(in_quick_zoo, tmp_path / "zoo")
    store.ZOO_DIR = tmp_path / "zoo"  # restored by the monkeypatch of in_quick_zoo
    (tmp_path / "zoo" / "xray" / "run.json").write_text("{}")
    assert main(["zoo", "check", "xray"]) == 1
    assert "run.json: sha256 differs" in capsys.readouterr().out


def test_auto_picks_the_model_from_the_dicom_modality() -> None:
    from cervkit.api import choose_model
    from cervkit.core.image import Image

    assert choose_model(Image(np.zeros((4, 4), np.float32), meta={"modality": "MR"})) == "mri"
    assert choose_model(Image(np.zeros((4, 4), np.float32), meta={"modality": "DX"})) == "xray"
    with pytest.raises(CervkitInputError, match="pass model='mri'"):
        choose_model(Image(np.zeros((4, 4), np.float32)))


SHIPPED = store.available()


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "mri"])
def test_each_shipped_model_matches_its_card(name: str, tmp_path: Path) -> None:
    """The CI check of the shipped weights: sha256 as on the card, and held-out scores within 0.01 of it."""
    _check_shipped(name, tmp_path)


@pytest.mark.realdata
@pytest.mark.parametrize("name", [n for n in SHIPPED if n == "mri"])
def test_the_shipped_mri_model_matches_its_card(name: str, real_manifest_path: Path, tmp_path: Path) -> None:
    _check_shipped(name, tmp_path)


def _check_shipped(name: str, tmp_path: Path) -> None:
    from cervkit.zoo.recipes import rescore

    assert store.check(name) == []
    card = store.card(name)
    assert card["quick_build"] is False
    again = rescore(name, work_dir=tmp_path)
    for source, metrics in card["metrics"].items():
        assert again[source]["images"] == metrics["images"]
        for key in ("dice_image", "dice_vertebra", "found", "named_right"):
            if key in metrics:  # named_right: where the source states its levels
                assert again[source][key] >= metrics[key] - 0.01, (source, key, again[source][key], metrics[key])


def test_shipped_models_fit_the_size_budget() -> None:
    files = [p for p in store.ZOO_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20


def test_zoo_store_never_imports_training() -> None:
    code = "import sys, cervkit.zoo.store, cervkit.inference.registry; print([m for m in sys.modules if m.startswith('cervkit.training.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_recipe_split_is_the_cards_and_the_comparison_uses_it(tmp_path: Path) -> None:
    from cervkit.evaluation.comparison_split import comparison_split
    from cervkit.zoo.catalog import recipe_split

    split = recipe_split("xray")
    card = store.card("xray")
    test = {f"images/{Path(p).name}" for p in split.df.loc[split.df["split"] == "test", "image"]}
    assert test == set(card["test_images"]["phantoms_xray"])
    by_part = {s: set(split.df.loc[split.df["split"] == s, "patient_id"]) for s in ("train", "val", "test")}
    assert not (by_part["train"] & by_part["test"]) and not (by_part["val"] & by_part["test"])
    assert {s: len(v) for s, v in by_part.items()} == card["data"]["phantoms_xray"]["split"]
    small = comparison_split("phantoms_xray", tmp_path / "split.csv", patients=(2, 1, 1))
    assert small.df.groupby("split")["patient_id"].nunique().to_dict() == {"test": 1, "train": 2, "val": 1}
    assert set(small.df.loc[small.df["split"] == "test", "patient_id"]) <= by_part["test"], "never-seen patients"
    with pytest.raises(CervkitInputError, match="no shipped model"):
        comparison_split("elsewhere", tmp_path / "x.csv")
