"""Tests of cervkit.evaluation.metrics and cervkit.evaluation.matching against hand counts, known geometry and brute force."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import wilcoxon
from skimage.metrics import hausdorff_distance
from skimage.segmentation import find_boundaries

from cervkit.core.errors import CervkitInputError
from cervkit.evaluation import metrics as M
from cervkit.evaluation.matching import (
    detection_summary,
    image_and_vertebra_metrics,
    image_metrics,
    match_instances,
    per_vertebra_metrics,
)


# ---------------------------------------------------------------- independent references
def ref_surface(mask: np.ndarray) -> np.ndarray:
    """Inner boundary by skimage, outside the image counting as background."""
    return find_boundaries(np.pad(mask.astype(np.uint8), 1), mode="inner", connectivity=1)[1:-1, 1:-1]


def ref_hd(pred: np.ndarray, gt: np.ndarray, spacing=(1.0, 1.0), q: float = 100) -> float:
    """Brute-force surface HD (q=100) or HDq with all pairwise distances."""
    a = np.argwhere(ref_surface(pred)) * np.asarray(spacing)
    b = np.argwhere(ref_surface(gt)) * np.asarray(spacing)
    d = cdist(a, b)
    return float(max(np.percentile(d.min(axis=1), q), np.percentile(d.min(axis=0), q)))


def square(shape=(40, 40), top=10, left=10, size=12) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top:top + size, left:left + size] = True
    return m


def blob(seed: int, shape=(48, 56)) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    return noise > 0.02


# ---------------------------------------------------------------- overlap metrics
def test_overlap_metrics_match_hand_counts() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]], bool)
    gt = np.array([[0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    tp, fp, fn = 3, 2, 1  # counted by hand
    assert M.confusion_counts(pred, gt) == (tp, fp, fn)
    assert M.dice(pred, gt) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert M.iou(pred, gt) == pytest.approx(tp / (tp + fp + fn))
    assert M.ppv(pred, gt) == pytest.approx(tp / (tp + fp))
    assert M.sensitivity(pred, gt) == pytest.approx(tp / (tp + fn))


def test_surface_agrees_with_skimage_including_image_edge() -> None:
    m = blob(1)
    m[:, :3] = True  # touches the image edge: those pixels are surface too
    np.testing.assert_array_equal(M.surface(m), ref_surface(m))


# ---------------------------------------------------------------- distances with known answers
@pytest.mark.parametrize("k", [1, 3, 5])
def test_squares_offset_by_k_have_hd_k(k: int) -> None:
    a, b = square(), square(left=10 + k)
    assert M.hausdorff(a, b) == pytest.approx(k)
    assert M.hausdorff(a, b) == pytest.approx(hausdorff_distance(M.surface(a), M.surface(b)))
    assert M.hausdorff(a, b) == pytest.approx(ref_hd(a, b))
    assert M.hd95(a, b) == pytest.approx(ref_hd(a, b, q=95))


def test_square_against_itself_is_perfect() -> None:
    a = square()
    res = M.segmentation_metrics(a, a, spacing_mm=(0.7, 0.7))
    assert (res["dice"], res["iou"], res["ppv"], res["sensitivity"]) == (1.0, 1.0, 1.0, 1.0)
    assert res["hd"] == res["hd95"] == res["hd_px"] == res["hd_mm"] == 0.0
    assert res["empty"] == ""


def test_anisotropic_spacing_scales_each_axis() -> None:
    sp = (2.0, 0.5)
    a = square()
    rows, cols = square(top=13), square(left=13)  # offset by 3 along rows / along columns
    r = M.segmentation_metrics(rows, a, spacing_mm=sp)
    c = M.segmentation_metrics(cols, a, spacing_mm=sp)
    assert r["hd_px"] == pytest.approx(3) and c["hd_px"] == pytest.approx(3)
    assert r["hd_mm"] == pytest.approx(3 * sp[0]) and r["hd"] == r["hd_mm"] and r["unit"] == "mm"
    assert c["hd_mm"] == pytest.approx(3 * sp[1])
    assert r["hd95_mm"] == pytest.approx(ref_hd(rows, a, sp, q=95))


def test_outlier_pixel_moves_hd_not_hd95() -> None:
    gt = square(shape=(60, 60), size=20)  # 76 surface pixels: one outlier is < 5 %
    pred = gt.copy()
    pred[55, 55] = True
    expected = math.dist((55, 55), (29, 29))  # nearest gt surface pixel is the corner (29, 29)
    assert M.hausdorff(pred, gt) == pytest.approx(expected)
    assert M.hd95(pred, gt) == 0.0
    assert M.hausdorff(pred, gt, percentile=100) == pytest.approx(ref_hd(pred, gt))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [None, (1.3, 0.6)])
def test_random_shapes_match_brute_force(seed: int, spacing) -> None:
    a, b = blob(seed), blob(seed + 10)
    ref_sp = spacing or (1.0, 1.0)
    res = M.segmentation_metrics(a, b, spacing_mm=spacing)
    assert res["hd"] == pytest.approx(ref_hd(a, b, ref_sp))
    assert res["hd95"] == pytest.approx(ref_hd(a, b, ref_sp, q=95))
    assert res["hd_px"] == pytest.approx(ref_hd(a, b))
    d_pg, d_gp = M.surface_distances(a, b, spacing)
    assert d_pg.size == ref_surface(a).sum() and d_gp.size == ref_surface(b).sum()


# ---------------------------------------------------------------- empty masks
def test_both_empty_is_perfect_and_flagged() -> None:
    z = np.zeros((30, 20), bool)
    res = M.segmentation_metrics(z, z, spacing_mm=(1.0, 2.0))
    assert res["empty"] == "both"
    assert all(res[k] == 1.0 for k in ("dice", "iou", "ppv", "sensitivity"))
    assert all(res[k] == 0.0 for k in ("hd", "hd95", "hd_px", "hd95_px", "hd_mm", "hd95_mm"))


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_one_empty_is_worst_case_and_flagged(which: str) -> None:
    z, m = np.zeros((30, 20), bool), square(shape=(30, 20), top=5, left=5, size=6)
    pred, gt = (z, m) if which == "pred" else (m, z)
    res = M.segmentation_metrics(pred, gt, spacing_mm=(1.0, 2.0))
    assert res["empty"] == which
    assert res["dice"] == res["iou"] == res["ppv"] == res["sensitivity"] == 0.0
    assert res["hd_px"] == res["hd95_px"] == pytest.approx(math.hypot(30, 20))
    assert res["hd_mm"] == res["hd95"] == pytest.approx(math.hypot(30 * 1.0, 20 * 2.0))
    assert M.hausdorff(pred, gt) == pytest.approx(math.hypot(30, 20))
    assert not any(isinstance(v, float) and math.isnan(v) for v in res.values())


def test_bad_input_raises() -> None:
    with pytest.raises(CervkitInputError, match="shape"):
        M.segmentation_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(CervkitInputError, match="spacing"):
        M.segmentation_metrics(np.ones((4, 4)), np.ones((4, 4)), spacing_mm=(1.0, -1.0))
    with pytest.raises(CervkitInputError, match="integer"):
        match_instances(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(CervkitInputError):
        M.surface_distances(np.zeros((4, 4)), np.ones((4, 4)))


# ---------------------------------------------------------------- per vertebra
def stack(n: int = 5, shape=(120, 60)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    for i in range(n):
        lab[5 + 22 * i:5 + 22 * i + 16, 15:45] = i + 1
    return lab


def test_label_maps_are_binarised_per_image() -> None:
    gt = stack()
    pred = np.where(gt > 0, 6 - gt, 0).astype(np.uint8)  # same pixels, reversed numbering
    assert M.segmentation_metrics(pred, gt)["dice"] == 1.0


def test_iou_matrix_matches_direct_computation() -> None:
    from cervkit.evaluation.matching import iou_matrix

    gt = stack()
    pred = np.roll(stack(), 7, axis=0) * 3  # labels 3, 6, 9, … shifted by 7 rows
    g_ids, p_ids, ious = iou_matrix(pred, gt)
    for i, g in enumerate(g_ids):
        for j, p in enumerate(p_ids):
            assert ious[i, j] == pytest.approx(M.iou(pred == p, gt == g))


def test_matching_is_by_overlap_not_label_number() -> None:
    gt = stack()
    pred = np.where(gt > 0, 6 - gt, 0).astype(np.uint8)
    res = match_instances(pred, gt)
    assert [(m.gt_label, m.pred_label) for m in res.matches] == [(g, 6 - g) for g in range(1, 6)]
    assert all(m.iou == 1.0 for m in res.matches) and res.missed == [] and res.extra == []
    table = per_vertebra_metrics(pred, gt)
    assert (table["dice"] == 1.0).all() and (table["hd"] == 0.0).all()


def test_missed_and_extra_vertebrae() -> None:
    gt = stack()
    pred = np.roll(gt, 2, axis=0)
    pred[pred == 3] = 0  # missed gt 3
    pred[100:110, 2:8] = 9  # extra prediction
    res = match_instances(pred, gt)
    assert res.missed == [3] and res.extra == [9]
    counts = detection_summary(pred, gt)
    assert counts["tp"] == 4 and counts["fn"] == 1 and counts["fp"] == 1
    assert counts["detection_rate"] == pytest.approx(4 / 5)
    sp = (0.5, 0.8)
    table = per_vertebra_metrics(pred, gt, sp, level_names=["C2", "C3", "C4", "C5", "C6"])
    assert len(table) == 6
    miss = table[table["gt_label"] == 3].iloc[0]
    assert not miss["matched"] and miss["empty"] == "pred" and miss["dice"] == 0.0
    assert miss["level"] == "C4" and math.isnan(miss["pred_label"])
    assert miss["hd_mm"] == pytest.approx(math.hypot(120 * 0.5, 60 * 0.8))
    fp = table[table["false_positive"]].iloc[0]
    assert math.isnan(fp["gt_label"]) and fp["pred_label"] == 9 and fp["empty"] == "gt"
    for _, row in table[table["matched"]].iterrows():  # cropped scores equal full-image scores
        g, p = gt == row["gt_label"], pred == row["pred_label"]
        assert row["dice"] == pytest.approx(M.dice(p, g))
        assert row["hd_mm"] == pytest.approx(ref_hd(p, g, sp))
        assert row["hd95_px"] == pytest.approx(ref_hd(p, g, q=95))


def test_low_overlap_is_not_a_match() -> None:
    gt = stack(n=1)
    pred = np.roll(gt, 10, axis=0)  # IoU = 6/26 < 0.5
    res = match_instances(pred, gt)
    assert res.matches == [] and res.missed == [1] and res.extra == [1]
    assert len(match_instances(pred, gt, iou_threshold=0.2).matches) == 1


def test_image_metrics_combines_everything() -> None:
    gt = stack()
    pred = np.roll(gt, 2, axis=0)
    pred[pred == 3] = 0
    out = image_metrics(pred, gt, spacing_mm=(1.0, 1.0))
    per_gt = [M.dice(pred == g, gt == g) if g != 3 else 0.0 for g in range(1, 6)]
    assert out["mean_vertebra_dice"] == pytest.approx(np.mean(per_gt))
    assert out["dice"] == pytest.approx(M.dice(pred > 0, gt > 0))
    assert (out["n_gt"], out["n_pred"], out["tp"], out["fn"], out["fp"]) == (5, 4, 4, 1, 0)
    empty = image_metrics(np.zeros_like(gt), np.zeros_like(gt))
    assert empty["detection_rate"] == 1.0 and empty["mean_vertebra_dice"] == 1.0 and empty["empty"] == "both"


# ---------------------------------------------------------------- summaries
def test_bootstrap_ci_contains_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(3)
    small, large = rng.normal(0.9, 0.05, 20), rng.normal(0.9, 0.05, 2000)
    s, s_large = M.summarize(small), M.summarize(large)
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert s["mean"] == pytest.approx(small.mean()) and s["sd"] == pytest.approx(small.std(ddof=1))
    assert s["median"] == pytest.approx(np.median(small)) and s["n"] == 20
    assert s_large["ci_high"] - s_large["ci_low"] < (s["ci_high"] - s["ci_low"]) / 4
    assert M.summarize(small) == s  # seeded: reproducible
    with pytest.raises(CervkitInputError, match="NaN"):
        M.summarize([0.5, float("nan")])


def test_bootstrap_ci_agrees_with_an_independent_resampler() -> None:
    """The CI against a plain NumPy percentile bootstrap (another random stream) and the normal approximation."""
    rng = np.random.default_rng(5)
    x = rng.gamma(4.0, 0.05, 200)
    s = M.summarize(x, n_boot=4000, seed=1)
    means = x[rng.integers(0, x.size, size=(20000, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    se = x.std() / np.sqrt(x.size)  # the bootstrap standard error of the mean
    assert abs(s["ci_low"] - lo) < 0.2 * se and abs(s["ci_high"] - hi) < 0.2 * se  # Monte Carlo error ~0.05 se
    assert s["ci_low"] == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert s["ci_high"] == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)
    assert M.summarize(x, n_boot=4000, seed=2)["ci_low"] != s["ci_low"]  # the seed is used
    narrow = M.summarize(x, n_boot=4000, seed=1, ci=0.5)
    assert s["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < s["ci_high"]
    one = M.summarize([0.7])
    assert one["ci_low"] == one["ci_high"] == 0.7
    y = x - rng.normal(0.01, 0.02, x.size)
    paired = M.paired_comparison(x, y, n_boot=500, seed=3)
    alone = M.summarize(x - y, n_boot=500, seed=3)  # same resampling of the differences
    assert (paired["ci_low"], paired["ci_high"]) == (alone["ci_low"], alone["ci_high"])


def test_paired_comparison_agrees_with_scipy() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(0.9, 0.03, 25)
    b = a - rng.normal(0.01, 0.02, 25)
    res = M.paired_comparison(a, b)
    assert res["wilcoxon_p"] == pytest.approx(wilcoxon(a, b).pvalue)
    assert res["mean_diff"] == pytest.approx(np.mean(a - b)) and res["note"] == ""
    assert res["ci_low"] <= res["mean_diff"] <= res["ci_high"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = M.paired_comparison(a, a)
    assert same["wilcoxon_p"] == 1.0 and "zero" in same["note"] and same["mean_diff"] == 0.0
    with pytest.raises(CervkitInputError, match="equal lengths"):
        M.paired_comparison(a, b[:-1])


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_mask_against_itself_and_shifted(real_manifest_path: Path) -> None:
    from PIL import Image as PILImage

    row = pd.read_csv(real_manifest_path).iloc[0]
    gt = np.asarray(PILImage.open(real_manifest_path.parent / row["mask"]))
    assert gt.ndim == 2 and gt.max() >= 1
    spacing = (float(row["pixel_spacing_mm"]),) * 2
    same = image_metrics(gt, gt, spacing)
    assert same["dice"] == 1.0 and same["hd"] == 0.0 and same["detection_rate"] == 1.0
    assert same["mean_vertebra_dice"] == 1.0
    shifted = np.zeros_like(gt)
    shifted[2:] = gt[:-2]  # 2 pixels down
    assert not gt[-2:].any()  # nothing falls off the image
    out, table = image_and_vertebra_metrics(shifted, gt, spacing)
    assert out["hd_px"] == pytest.approx(2.0)  # a translation by 2 moves the top/bottom edges by 2
    assert out["hd_px"] == pytest.approx(ref_hd(shifted > 0, gt > 0))
    assert out["hd_mm"] == pytest.approx(2 * spacing[0])
    assert out["tp"] == int(row["n_vertebrae"]) and out["fp"] == 0
    assert (table["hd_px"] <= 2.0 + 1e-9).all() and table["matched"].all()
