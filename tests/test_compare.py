"""Model comparison: Table 2, paired Wilcoxon tests, Figure 5 image choice and figures, the compare CLI.

Hand-made per-image tables give answers known in advance (means, sds, differences, the worst image of
each model); a tiny manifest with a stand-in predictor (bright regions, shifted by a known number of rows)
checks the whole path from evaluate to the figures and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from scipy import ndimage
from scipy.stats import wilcoxon

from cervkit.cli.main import main
from cervkit.core.errors import CervkitInputError
from cervkit.data.table import manifest_from_records, save_manifest
from cervkit.evaluation import metrics
from cervkit.evaluation.compare import (
    format_table2,
    paired_comparison,
    paired_differences,
    table2,
)
from cervkit.evaluation.evaluate import (
    Evaluation,
    evaluate_predictor,
    read_evaluation,
    write_evaluation,
)
from cervkit.evaluation.figures import boxplots, choose_figure5_images, figure5
from cervkit.evaluation.report import write_comparison
from cervkit.inference.cascade import CascadePrediction
from cervkit.labels.instances import boxes_from_labels, relabel_top_to_bottom


def _evaluation(dice: list[float], hd95: list[float], *, unit: str = "mm", names: list[str] | None = None,
                dataset: str | None = None, seconds: float = 0.1) -> Evaluation:
    """An Evaluation whose per-image numbers are given (iou = dice / 2, so it is known too)."""
    n = len(dice)
    names = names or [f"/data/img{i}.png" for i in range(n)]
    d, h = np.asarray(dice, float), np.asarray(hd95, float)
    images = pd.DataFrame({"image": names, "mask": "", "patient_id": [f"p{i}" for i in range(n)], "modality": "MRI",
                           "dice": d, "iou": d / 2, "ppv": d, "sensitivity": d, "hd": h + 1, "hd95": h,
                           "hd_px": (h + 1) * 2, "hd95_px": h * 2, "unit": unit, "empty": "",
                           "detection_rate": d > 0.5, "seconds": seconds})
    return Evaluation(images, pd.DataFrame(), pd.DataFrame(), {"dataset": dataset} if dataset else {})


REF_DICE = [0.9, 0.8, 0.95, 0.6, 0.85, 0.7]
BASE_DICE = [0.7, 0.75, 0.9, 0.0, 0.8, 0.72]   # worse on 5 of 6 images, total failure on img3
REF_HD = [2.0, 3.0, 1.0, 8.0, 2.5, 4.0]
BASE_HD = [1.5, 2.0, 0.5, 7.0, 2.0, 3.0]       # better (lower) on every image


def test_table2_means_sds_units_and_datasets_never_pooled() -> None:
    evals = {("yolo-unet", "real"): _evaluation(REF_DICE, REF_HD),
             ("unet3plus", "real"): _evaluation(BASE_DICE, BASE_HD, seconds=0.3),
             ("yolo-unet", "phantoms"): _evaluation([1.0, 0.5], [1.0, 3.0], unit="px")}
    table = table2(evals)
    assert list(zip(table["dataset"], table["model"])) == [("real", "yolo-unet"), ("real", "unet3plus"),
                                                            ("phantoms", "yolo-unet")]
    real = table.iloc[1]
    assert real["n_images"] == 6 and real["unit"] == "mm"
    assert real["dice_mean"] == pytest.approx(np.mean(BASE_DICE))
    assert real["dice_sd"] == pytest.approx(np.std(BASE_DICE, ddof=1))
    assert real["iou_mean"] == pytest.approx(np.mean(BASE_DICE) / 2)
    assert real["hd95_mean"] == pytest.approx(np.mean(BASE_HD)) and real["seconds_mean"] == pytest.approx(0.3)
    assert real["detection_rate_mean"] == pytest.approx(5 / 6)
    phantoms = table.iloc[2]  # px: the pixel columns are used, never pooled with the mm data set
    assert phantoms["n_images"] == 2 and phantoms["unit"] == "px"
    assert phantoms["hd95_mean"] == pytest.approx(np.mean([2.0, 6.0]))
    pretty = format_table2(table)
    assert {"HD95 (mm)", "HD95 (px)", "Dice", "s / image"} <= set(pretty.columns)
    assert pretty.loc[0, "Dice"] == f"{np.mean(REF_DICE):.3f} ± {np.std(REF_DICE, ddof=1):.3f}"
    assert pretty.loc[2, "HD95 (mm)"] == "" and pretty.loc[2, "HD95 (px)"] == "4.0 ± 2.8"


def test_mixed_units_fall_back_to_pixels_and_nan_is_refused() -> None:
    mixed = _evaluation([0.9, 0.8], [1.0, 2.0])
    mixed.images.loc[1, "unit"] = "px"
    row = table2({"a": mixed}).iloc[0]
    assert row["unit"] == "px" and row["hd95_mean"] == pytest.approx(3.0)
    broken = _evaluation([0.9, 0.8], [1.0, 2.0])
    broken.images.loc[0, "dice"] = np.nan
    with pytest.raises(CervkitInputError, match="NaN"):
        table2({"a": broken})


def test_paired_comparison_matches_scipy_and_names_the_better_model() -> None:
    evals = {"yolo-unet": _evaluation(REF_DICE, REF_HD), "unet3plus": _evaluation(BASE_DICE, BASE_HD)}
    paired = paired_comparison(evals, n_boot=200).set_index("metric")
    dice, hd95 = paired.loc["dice"], paired.loc["hd95"]
    diff = np.subtract(BASE_DICE, REF_DICE)
    assert dice["n"] == 6 and dice["median_diff"] == pytest.approx(np.median(diff))
    assert dice["mean_diff"] == pytest.approx(diff.mean())
    assert dice["wilcoxon_p"] == pytest.approx(wilcoxon(BASE_DICE, REF_DICE).pvalue)
    assert dice["better"] == "yolo-unet"          # higher Dice is better: the reference wins
    assert hd95["better"] == "unet3plus"          # lower HD95 is better: the baseline wins
    assert hd95["wilcoxon_p"] == pytest.approx(wilcoxon(BASE_HD, REF_HD).pvalue)
    assert bool(hd95["significant"]) == (hd95["wilcoxon_p"] < 0.05)
    long = paired_differences(evals)
    assert len(long) == 6 * 5 and set(long["model"]) == {"unet3plus"}
    same = paired_comparison({"yolo-unet": _evaluation(REF_DICE, REF_HD), "copy": _evaluation(REF_DICE, REF_HD)})
    assert (same["better"] == "tie").all() and (same["wilcoxon_p"] == 1.0).all()


def test_paired_comparison_refuses_different_images_or_a_missing_reference() -> None:
    other = _evaluation(BASE_DICE, BASE_HD, names=[f"/data/other{i}.png" for i in range(6)])
    with pytest.raises(CervkitInputError, match="different images"):
        paired_comparison({"yolo-unet": _evaluation(REF_DICE, REF_HD), "unet3plus": other})
    with pytest.raises(CervkitInputError, match="reference model"):
        paired_comparison({"unet3plus": _evaluation(BASE_DICE, BASE_HD)})
    with pytest.raises(CervkitInputError, match="twice"):
        table2({("a", "d"): _evaluation([1.0], [0.0]), "a": _evaluation([1.0], [0.0], dataset="d")})


def test_figure5_choice_shows_each_models_worst_image() -> None:
    third = [0.9, 0.8, 0.95, 0.7, 0.85, 0.1]     # its worst is img5
    evals = {"yolo-unet": _evaluation(REF_DICE, REF_HD), "unet3plus": _evaluation(BASE_DICE, BASE_HD),
             "yolo-seg": _evaluation(third, REF_HD)}
    chosen = choose_figure5_images(evals)
    reasons = dict(zip(chosen["image"], chosen["reason"]))
    # yolo-unet's and unet3plus' worst is the same image (img3): shown once with both reasons
    assert reasons["/data/img3.png"] == "worst yolo-unet; worst unet3plus"
    assert reasons["/data/img5.png"] == "worst yolo-seg"
    typical = [i for i, r in reasons.items() if r.startswith("typical")]
    assert typical == ["/data/img4.png"]          # ranks 0.6 0.7 0.8 0.85 0.9 0.95: rank 6 // 2 is 0.85
    assert list(chosen["yolo-seg"]) == [third[3], third[5], third[4]]
    worst_hd = choose_figure5_images(evals, metric="hd95")  # lower is better: the largest HD95 is the worst
    assert worst_hd["image"].iloc[0] == "/data/img3.png"


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array if array.dtype == np.uint8 else (array * 255).astype(np.uint8)).save(path)
    return str(path)


class Shifted:
    """Bright regions of the image, moved down by ``shift`` rows (0 = perfect); ``blank`` images give nothing."""

    def __init__(self, shift: int, blank: int | None = None) -> None:
        self.shift, self.blank, self.seen = shift, blank, []

    def predict(self, image: np.ndarray) -> CascadePrediction:
        self.seen.append(image)
        fg = np.roll(image > 0.5, self.shift, axis=0)
        if self.blank is not None and int(round(image[0, 0] * 10)) == self.blank:
            fg[:] = False
        labels = relabel_top_to_bottom(ndimage.label(fg)[0].astype(np.uint8))
        n = int(labels.max())
        return CascadePrediction(labels, boxes_from_labels(labels), np.ones(n, np.float32),
                                 np.ones(n, np.float32), np.zeros(n, np.int64), n)


@pytest.fixture()
def scenes(tmp_path: Path):
    records = []
    for i in range(5):
        image, labels = np.zeros((48, 32), np.float32), np.zeros((48, 32), np.uint8)
        image[0, 0] = i / 10  # tags the image for Shifted.blank
        for k in range(2):
            image[6 + 18 * k:18 + 18 * k, 8:24] = 1.0
            labels[6 + 18 * k:18 + 18 * k, 8:24] = k + 1
        records.append({"image": _png(tmp_path / "img" / f"s{i}.png", image),
                        "mask": _png(tmp_path / "msk" / f"s{i}.png", labels), "patient_id": f"p{i}",
                        "modality": "XR", "pixel_spacing_mm": 0.5})
    manifest = manifest_from_records(records, tmp_path)
    path = save_manifest(manifest, tmp_path / "manifest.csv")
    from cervkit.data.manifest import load_manifest

    return load_manifest(path)


def scenes_labels(manifest, i: int) -> np.ndarray:
    return np.asarray(PILImage.open(manifest.mask_path(i)))


def test_compare_from_folders_figures_and_cli(scenes, tmp_path: Path, capsys) -> None:
    models = {"yolo-unet": Shifted(0), "unet3plus": Shifted(2), "yolo-seg": Shifted(0, blank=3)}
    folders = {}
    for name, predictor in models.items():
        ev = evaluate_predictor(predictor, scenes, split=None, progress=False, n_boot=50)
        ev.info.update(dataset="scenes")
        folders[name] = write_evaluation(ev, tmp_path / "eval" / name)
    back = read_evaluation(folders["yolo-seg"])
    assert back.info["dataset"] == "scenes" and back.images["empty"].tolist().count("pred") == 1
    table = table2(folders).set_index("model")
    assert table.loc["yolo-unet", "dice_mean"] == 1.0 and table.loc["yolo-unet", "hd95_mean"] == 0.0
    # a 2-row shift of two 12x16 bodies: TP = 2 * 10 * 16 px of 2 * 12 * 16, so Dice = 10/12
    assert table.loc["unet3plus", "dice_mean"] == pytest.approx(10 / 12)
    truth = scenes_labels(scenes, 0)
    expected = metrics.hd95(np.roll(truth, 2, axis=0), truth, (0.5, 0.5))   # computed apart from evaluate
    assert table.loc["unet3plus", "hd95_mean"] == pytest.approx(expected) and table.loc["unet3plus", "unit"] == "mm"
    assert table.loc["yolo-seg", "dice_mean"] == pytest.approx(4 / 5)   # one empty prediction counts as 0
    chosen = choose_figure5_images(folders)
    assert "worst yolo-seg" in dict(zip(chosen["image"], chosen["reason"]))[scenes.image_path(3).as_posix()]
    predictors = {name: Shifted(p.shift, p.blank) for name, p in models.items()}
    fig = figure5(folders, chosen, predictors=predictors)
    assert np.array(fig.axes).size == len(chosen) * (2 + 3)
    assert len(predictors["unet3plus"].seen) == len(chosen)
    assert "nothing found" in " ".join(ax.get_title() for ax in fig.axes)
    box = boxplots(folders, ("dice", "hd95"))
    assert len(box.axes) == 2 and sum(len(c.get_offsets()) for c in box.axes[0].collections) == 3 * 5
    with pytest.raises(CervkitInputError, match="run"):
        figure5(folders, chosen)                  # no run recorded and no predictors: said, not guessed
    written = write_comparison(folders, tmp_path / "cmp", figures=False)
    paired = pd.read_csv(written["paired.csv"])
    assert set(paired["model"]) == {"unet3plus", "yolo-seg"} and len(paired) == 2 * 5
    with pytest.raises(FileExistsError):
        write_comparison(folders, tmp_path / "cmp", figures=False)
    args = [f"{m}@scenes={f}" for m, f in folders.items()]
    assert main(["compare", "--out", str(tmp_path / "cli"), "--no-figures", *args]) == 0
    cli_table = pd.read_csv(tmp_path / "cli" / "table2.csv")
    assert list(cli_table["dataset"].unique()) == ["scenes"] and len(cli_table) == 3
    assert "HD95 (mm)" in capsys.readouterr().out
    assert main(["compare", "--out", str(tmp_path / "cli2"), "--no-figures", f"yolo-unet={folders['unet3plus']}",
                 "unet3plus=/nonexistent"]) == 2   # bad input: an error message, not a traceback


def test_evaluation_json_records_the_run(scenes, tmp_path: Path, monkeypatch) -> None:
    import cervkit.inference.registry
    from cervkit.evaluation.evaluate import evaluate_run

    monkeypatch.setattr(cervkit.inference.registry, "load_predictor", lambda run, device=None: Shifted(0))
    monkeypatch.setattr(cervkit.runs.folder, "read_run_info", lambda run: {"model": "yolo-unet"})
    (tmp_path / "somerun").mkdir()
    (tmp_path / "somerun" / "run.json").write_text('{"model": "yolo-unet"}')  # a run folder, not a model name
    ev = evaluate_run(tmp_path / "somerun", scenes, split=None, progress=False, n_boot=20)
    out = write_evaluation(ev, tmp_path / "e")
    info = json.loads((out / "evaluation.json").read_text())
    assert info["model"] == "yolo-unet" and info["run"] == str((tmp_path / "somerun").resolve())
    assert info["dataset"] == tmp_path.name and info["manifest"] == str(scenes.path)
    assert list(read_evaluation(out).images["mask"]) == [str(scenes.mask_path(i)) for i in range(5)]
