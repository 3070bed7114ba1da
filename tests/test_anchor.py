"""The anchor classifier: examples from the levels column, context windows, training, and the names it anchors
(L5 above the sacrum counting up; C2 counting down; doubts flagged, never shifted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage, ImageDraw

from cervkit.inference.level_names import name_bodies
from cervkit.labels.context import ANCHOR_CLASSES, anchor_examples, context_crop, context_window

L5, S1, C2 = (ANCHOR_CLASSES.index(n) for n in ("L5", "S1", "C2"))


def _column(n: int = 8, *, top: int = 30, height: int = 26, gap: int = 10, size: int = 384,
            skip: int | None = None) -> np.ndarray:
    """``n`` bodies drawn with PIL down a slightly curved column, labels 1..n top to bottom (``skip``: left out)."""
    canvas = PILImage.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        if i == skip:
            continue
        y = top + i * (height + gap)
        x = 170 + int(12 * np.sin(i / 3))
        draw.rectangle([x, y, x + 40, y + height - 1], fill=i + 1)
    return np.asarray(canvas, np.uint8)


def test_examples_come_from_the_levels_column_with_s1_one_step_below_l5() -> None:
    labels = _column(7)
    levels = ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert [c for _, c in anchor_examples(labels, levels)] == [0, 0, 0, 0, 0, 0, L5, S1]  # the recipes' examples
    examples = anchor_examples(labels, levels, beyond=True)
    classes = [c for _, c in examples]
    assert classes == [0, 0, 0, 0, 0, 0, L5, S1, 0]
    l4, l5, s1, s2 = (np.array(examples[i][0]) for i in (5, 6, 7, 8))
    np.testing.assert_allclose(s1 - l5, l5 - l4)  # S1 sits one L4→L5 step below L5
    np.testing.assert_allclose(s2 - s1, l5 - l4)  # S2, a negative, one more step down
    cervical_levels = ["C2", "C3", "C4", "C5", "C6", "C7"]
    assert [c for _, c in anchor_examples(_column(6, top=80), cervical_levels)] == [C2, 0, 0, 0, 0, 0]
    cervical = anchor_examples(_column(6, top=80), cervical_levels, beyond=True)
    assert [c for _, c in cervical] == [C2, 0, 0, 0, 0, 0, 0]
    c2, c3, c1 = (np.array(cervical[i][0]) for i in (0, 1, 6))
    np.testing.assert_allclose(c2 - c1, c3 - c2)  # C1 (a negative) one C3→C2 step above C2
    assert len(anchor_examples(_column(6, top=10), ["C2", "C3", "C4", "C5", "C6", "C7"], beyond=True)) == 6  # C1 off
    assert len(anchor_examples(_column(7, top=120), levels, beyond=True)) == 8  # S2 below the image: left out
    assert anchor_examples(labels, None) == [] and anchor_examples(labels, []) == []


def test_the_context_window_is_square_padded_and_normalised() -> None:
    image = np.zeros((100, 100), np.float32)
    image[40:60, 40:60] = 1.0
    x0, y0, x1, y1 = context_window((40, 45, 60, 55))
    assert x1 - x0 == y1 - y0 == 60 and (x0 + x1) / 2 == 50
    crop = context_crop(image, (0, 0, 20, 10), size=32)  # mostly outside the image: padded, still finite
    assert crop.shape == (32, 32) and np.isfinite(crop).all()
    crop = context_crop(image, (40, 45, 60, 55), size=48)
    assert abs(float(crop.mean())) < 1e-4 and abs(float(crop.std()) - 1.0) < 1e-3


def _scores(labels: np.ndarray, l5: int | None = None, p: float = 0.95, c2: int | None = None,
            also: dict[int, float] | None = None) -> dict[int, dict[str, float]]:
    out = {}
    for k in (int(v) for v in np.unique(labels) if v):
        row = {"other": 1.0, "C2": 0.0, "L5": 0.0, "S1": 0.0}
        if k == l5:
            row.update(L5=p, other=1 - p)
        if k == c2:
            row.update(C2=p, other=1 - p)
        if also and k in also:
            row.update(L5=also[k])
        out[k] = row
    return out


def test_l5_above_the_sacrum_anchors_the_count_upwards() -> None:
    labels = _column(8)  # T11..L5 and S1 below
    named = name_bodies(labels, anchor_scores=_scores(labels, l5=7))
    assert named.anchor == "L5 (sacrum below)" and not named.unsure, named.reasons
    assert [named.names[k] for k in range(1, 9)] == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    # the same bodies with L5 scored one higher: every name moves with the anchor, none is guessed from the top
    named = name_bodies(labels, anchor_scores=_scores(labels, l5=6))
    assert named.names[6] == "L5" and named.names[1] == "T12" and named.names[7] == "S1"
    assert named.unsure and "below S1 left unnamed" in " ".join(named.reasons)


def test_a_missing_body_counts_as_a_missing_level_and_is_flagged() -> None:
    labels = _column(8, skip=3)  # label 4 (L2) not found
    named = name_bodies(labels, anchor_scores=_scores(labels, l5=7))
    assert named.names[7] == "L5" and named.names[5] == "L3" and named.names[3] == "L1" and 4 not in named.names
    assert named.unsure and "missing" in " ".join(named.reasons)


def test_weak_or_doubled_landmarks_are_flagged_and_no_landmark_names_nothing() -> None:
    labels = _column(8)
    weak = name_bodies(labels, anchor_scores=_scores(labels, l5=7, p=0.6))
    assert weak.names[7] == "L5" and weak.unsure and "scored 0.60" in weak.reasons[0]
    double = name_bodies(labels, anchor_scores=_scores(labels, l5=7, also={6: 0.4}))
    assert double.names[7] == "L5" and double.unsure and "2 bodies look like L5" in double.reasons[0]
    none = name_bodies(labels, anchor_scores=_scores(labels))
    assert none.names == {} and none.anchor is None and none.unsure


def test_a_learnt_c2_counts_down_and_the_learnt_anchor_wins_over_the_shape_rule() -> None:
    labels = _column(7)  # C1 (unannotated, found) above C2..C7
    named = name_bodies(labels, anchor_scores=_scores(labels, c2=2))
    assert named.anchor == "C2 (learnt)" and named.names[2] == "C2" and named.names[7] == "C7"
    assert named.names[1] == "C1" and named.unsure  # C1 is outside C2-C7: said, not hidden
    lumbar = name_bodies(labels, anchor_scores=_scores(labels, l5=7))
    assert lumbar.anchor == "L5 (sacrum below)" and lumbar.names[7] == "L5" and lumbar.names[1] == "T11"


def test_train_anchor_learns_from_levels_and_skips_data_without_landmarks(tmp_path: Path) -> None:
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.data.manifest import load_manifest
    from cervkit.inference.anchor import AnchorClassifier
    from cervkit.training.anchor import train_anchor

    folder = tmp_path / "ph"
    write_phantom_dataset(folder, 4, style="xray", seed=0, size=(192, 192), n_patients=2)
    manifest = load_manifest(folder / "manifest.csv")
    manifest = manifest.with_df(manifest.df.assign(split=["train", "train", "val", "val"]))
    run = train_anchor(manifest, tmp_path / "run", epochs=2, seed=0)
    assert run is not None and run.model_path.is_file() and run.epochs_run == 2
    with pytest.raises(FileExistsError):
        train_anchor(manifest, tmp_path / "run", epochs=1)
    clf = AnchorClassifier.load(tmp_path / "run")
    from cervkit.io.images import read_image, read_mask

    scores = clf.score(read_image(manifest.image_path(0)).array, read_mask(manifest.mask_path(0)))
    assert set(scores) == {1, 2, 3, 4, 5, 6} and all(abs(sum(v.values()) - 1) < 1e-3 for v in scores.values())
    no_landmark = manifest.with_df(manifest.df.assign(levels="C3,C4,C5,C6,C7,T1"))
    assert train_anchor(no_landmark, tmp_path / "run2", epochs=1) is None
    assert not (tmp_path / "run2" / "anchor").exists()
    wide = train_anchor(manifest, tmp_path / "run3", epochs=1, seed=0, other_sequences=True, beyond=True)
    config = json.loads(wide.config_json.read_text())
    assert config["arguments"]["other_sequences"] and config["arguments"]["beyond"]
    assert config["data"]["train_windows"] > json.loads(run.config_json.read_text())["data"]["train_windows"]  # + C1
    # a fine-tune on a few images: every validation window is right after the first epoch, so the kept epoch is the
    # one of lowest validation loss among those (keeping the first kept the classifier it started from)
    base = train_anchor(manifest, tmp_path / "run4", epochs=12, seed=0, quick=False)  # quick mode stops at 2
    tuned = train_anchor(manifest, tmp_path / "run5", epochs=8, seed=0, init_checkpoint=base.model_path, quick=False)
    history = json.loads(tuned.config_json.read_text())["history"]
    ranked = max(history, key=lambda r: (r["val_balanced_accuracy"], -r["val_loss"]))
    assert tuned.best_epoch == ranked["epoch"]
    assert len({r["val_balanced_accuracy"] for r in history}) == 1 and tuned.best_epoch > 1


def test_naming_counts_a_missed_or_misnamed_body_as_an_error(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cervkit.data.manifest import load_manifest
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.evaluation.naming import body_names, naming_summary
    from cervkit.io.images import read_mask

    folder = tmp_path / "ph"
    write_phantom_dataset(folder, 2, style="xray", seed=1, size=(192, 192), n_patients=2)
    manifest = load_manifest(folder / "manifest.csv")
    truth = [read_mask(manifest.mask_path(i)) for i in range(2)]

    class Stub:
        """Returns the true map (one body dropped on request) with C2 scored at label ``c2``."""

        def __init__(self, c2: int, drop: int | None = None) -> None:
            self.c2, self.drop, self.i = c2, drop, 0

        def predict(self, image: np.ndarray) -> SimpleNamespace:
            labels = truth[self.i % 2].copy()
            self.i += 1
            if self.drop is not None:
                labels[labels == self.drop] = 0
            return SimpleNamespace(labels=labels, anchor_scores=_scores(labels, c2=self.c2))

    right = naming_summary(body_names(Stub(c2=1), manifest))
    assert right["bodies"].iloc[0] == 12 and right["right"].iloc[0] == 1.0
    shifted = naming_summary(body_names(Stub(c2=2), manifest))  # C3 taken for C2: every name wrong
    assert shifted["found"].iloc[0] == 1.0 and shifted["right"].iloc[0] == 0.0
    missed = body_names(Stub(c2=1, drop=6), manifest)  # C7 not found: an error, though the rest is right
    assert not missed["found"].iloc[5] and not missed["right"].iloc[5] and missed["right"].sum() == 10

    from cervkit.evaluation.evaluate import evaluate_predictor

    made: dict = {}  # scoring predicts once: the evaluation hands its predictions to the naming
    stub = Stub(c2=1, drop=6)
    evaluate_predictor(stub, manifest, split=None, progress=False, n_boot=10, keep=made)
    assert stub.i == 2 and len(made) == 2
    again = body_names(stub, manifest, predictions=made)
    assert stub.i == 2 and again.equals(missed)


def test_the_editor_names_the_current_bodies_with_the_models_anchor() -> None:
    from types import SimpleNamespace

    from cervkit.editor.state import EditorState

    labels = _column(8)
    seen = {}

    def score(image: np.ndarray, current: np.ndarray) -> dict[int, dict[str, float]]:
        seen["shape"] = current.shape
        return _scores(current, l5=int(current.max()) - 1)  # the body above the lowest one

    state = EditorState(np.zeros(labels.shape, np.float32), labels)
    named = state.name_levels(model=SimpleNamespace(anchor=SimpleNamespace(score=score)))
    assert seen["shape"] == labels.shape and named.anchor == "L5 (sacrum below)"
    assert state.level_names[7] == "L5" and state.level_names[8] == "S1" and state.level_names[1] == "T11"
    assert state.name_levels().names == {}  # no model, no dens: unnamed, as before


def test_a_body_split_in_two_takes_one_level_and_is_flagged() -> None:
    labels = _column(8).copy()
    rows, cols = np.nonzero(labels == 3)
    labels[rows[rows >= rows.min() + 15], cols[rows >= rows.min() + 15]] = 9  # L1's lower part: a fragment
    from cervkit.labels.instances import relabel_top_to_bottom

    labels = relabel_top_to_bottom(labels)
    named = name_bodies(labels, anchor_scores=_scores(labels, l5=8))
    assert named.names[8] == "L5" and named.names[3] == named.names[4] == "L1" and named.names[1] == "T11"
    assert named.unsure and "split in two" in " ".join(named.reasons)


def test_the_intensity_curve_stays_in_range_and_can_reorder_grey_values() -> None:
    from cervkit.training.anchor import intensity_curve

    ramp = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    rng = np.random.default_rng(3)
    curves = [intensity_curve(ramp, rng) for _ in range(40)]
    assert all(c.dtype == np.float32 and c.min() >= 0.0 and c.max() <= 1.0 for c in curves)
    steps = [np.diff(c) for c in curves]
    assert any((s >= 0).all() for s in steps) and any((s <= 0).all() for s in steps)  # monotone, either way
    assert any((s > 1e-6).any() and (s < -1e-6).any() for s in steps)  # and non-monotone: tissues swap order


def test_a_spine_that_looks_lumbar_is_not_named_by_the_c2_shape_rules() -> None:
    labels = _column(7, top=60).copy()
    labels[20:60][labels[60:100] == 1] = 1  # the top body twice as tall: the "tallest top body" rule would say C2
    assert name_bodies(labels).anchor == "C2 (tallest top body)"
    hint = name_bodies(labels, anchor_scores=_scores(labels, l5=6, p=0.35))  # L5 weakly seen, no C2 at all
    assert hint.names == {} and hint.unsure and "L5 scored 0.35 only" in hint.reasons[0]
    assert name_bodies(labels, anchor_scores=_scores(labels, l5=6, p=0.1)).anchor == "C2 (tallest top body)"
    ordered = name_bodies(labels, anchor_scores=_scores(labels, l5=6, p=0.35), protocol="T11-L5")
    assert ordered.anchor == "protocol order" and ordered.names[7] == "L5"


def test_a_landmark_is_not_taken_where_the_bodies_around_it_rule_it_out() -> None:
    labels = _column(9)  # top to bottom: 1..9
    # 5 bodies under the most L5-like one: only S1 and the fused sacrum lie below L5, so the count is not anchored
    # there; the next most L5-like body with at most 3 below is
    named = name_bodies(labels, anchor_scores=_scores(labels, l5=4, p=0.9, also={7: 0.6}))
    assert [named.names[k] for k in (1, 4, 7, 8)] == ["T11", "L2", "L5", "S1"]
    assert named.unsure and "scored 0.60 only" in named.reasons[0]
    alone = name_bodies(labels, anchor_scores=_scores(labels, l5=4, p=0.9))
    assert alone.names == {} and alone.unsure  # the ruled-out body was the only one: nothing named
    assert name_bodies(labels, anchor_scores=_scores(labels, l5=6, p=0.9)).names[6] == "L5"  # 3 below: allowed
    # a dens-shaped peg on the 7th body (a sacrum can look like one): with 6 bodies above it, it is not C2
    pegged = labels.copy()
    ys, xs = np.nonzero(labels == 7)
    pegged[ys.min() - 8:ys.min(), (xs.min() + xs.max()) // 2 - 3:(xs.min() + xs.max()) // 2 + 3] = 7
    high = labels.copy()
    ys, xs = np.nonzero(labels == 2)
    high[ys.min() - 8:ys.min(), (xs.min() + xs.max()) // 2 - 3:(xs.min() + xs.max()) // 2 + 3] = 2
    assert name_bodies(high).anchor == "C2 dens" and name_bodies(high).names[2] == "C2"  # 1 body above: C1
    low = name_bodies(pegged)
    assert low.anchor != "C2 dens" and "C2" not in low.names.values()
    learnt = name_bodies(labels, anchor_scores=_scores(labels, c2=7))
    assert "C2" not in learnt.names.values()


def test_the_cpu_anchor_runs_channels_last_with_the_same_scores() -> None:
    """oneDNN's channels-last convolutions: 4.1 -> 1.5 ms per pass over 7 bodies on 2 cores, the same scores."""
    import torch

    from cervkit.inference.anchor import AnchorClassifier
    from cervkit.models.anchor import AnchorNet

    torch.manual_seed(0)
    labels = _column(7)
    image = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    clf = AnchorClassifier(AnchorNet(len(ANCHOR_CLASSES)), {}, device="cpu")
    weights = [p for p in clf.net.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    fast = clf.score(image, labels)
    clf.net = clf.net.to(memory_format=torch.contiguous_format)
    plain = clf.score(image, labels)
    assert fast.keys() == plain.keys()
    for k in fast:
        assert all(abs(fast[k][c] - plain[k][c]) < 1e-3 for c in fast[k])
