"""Batch pre-annotation: streaming rows, resume after a kill, confidence ranking, pseudonyms, no identifier leaks.

Stand-in predictors with exact rules give known answers (confidence = a score chosen per image); the
privacy test runs the real command line on a tiny trained cascade and DICOM files carrying a made-up
patient name and ID, then searches every byte written or printed for them.
"""

from __future__ import annotations

import gc
import hashlib
import math
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from cervkit.data.manifest import load_manifest
from cervkit.inference.batch_rows import COLUMNS, QUEUE_COLUMNS
from cervkit.inference.cascade import CascadePrediction
from cervkit.inference.confidence import image_confidence
from cervkit.inference.predict import collect_inputs, iter_inputs, predict_files
from cervkit.io.privacy import dicom_patient_key, modality_code, pseudonym, redact

NAME, PATIENT_ID = "Doe^Jane", "SECRET-123"


def _entropy_bits(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _pred(labels: np.ndarray, scores: list[float], mean_prob: list[float] | None = None,
          prob: np.ndarray | None = None) -> CascadePrediction:
    n = len(scores)
    mp = np.asarray(mean_prob if mean_prob is not None else [1.0] * n, np.float32)
    return CascadePrediction(labels, np.zeros((n, 4), np.float32), np.asarray(scores, np.float32), mp,
                             np.zeros(n, np.int64), n, prob=prob)


class ScoreByWidth:
    """One vertebra (the bright pixels); detector score = image width / 100; certain masks. Tracks inputs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.calls = 0
        self.alive_before: list[int] = []
        self._refs: list[weakref.ref] = []

    def predict(self, image: np.ndarray) -> CascadePrediction:
        gc.collect()
        self.alive_before.append(sum(r() is not None for r in self._refs))
        self._refs.append(weakref.ref(image))
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt  # stands in for a kill: nothing after this image is written
        self.calls += 1
        labels = (image > 0.5).astype(np.uint8)
        return _pred(labels, [image.shape[1] / 100.0])


def _png(path: Path, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((30, width), np.uint8)
    array[10:20, 5:15] = 255
    PILImage.fromarray(array).save(path)
    return path


def _dicom(path: Path, *, pixels: bool = True) -> Path:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientName, ds.PatientID = NAME, PATIENT_ID
    if not pixels:
        del ds.PixelData
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


# --- confidence and privacy helpers ---------------------------------------------------------------------

def test_confidence_known_answers() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:8, 2:8], labels[10:16, 2:8] = 1, 2
    prob = np.zeros((20, 20), np.float32)
    prob[labels > 0] = 0.9                                   # 72 pixels at 0.9, the rest below FOREGROUND_ISH
    c = image_confidence(_pred(labels, [0.8, 0.6], prob=prob))
    assert c["det_score_min"] == pytest.approx(0.6) and c["det_score_mean"] == pytest.approx(0.7)
    assert c["mask_uncertainty"] == pytest.approx(_entropy_bits(0.9), rel=1e-5)
    assert c["confidence"] == pytest.approx(0.6 * (1 - _entropy_bits(0.9)), rel=1e-5)
    prob[labels > 0] = 0.5                                   # a coin flip everywhere: no confidence at all
    assert image_confidence(_pred(labels, [0.8, 0.6], prob=prob))["confidence"] == pytest.approx(0.0, abs=1e-6)
    prob[:] = 0.0
    prob[labels > 0], prob[0, :10] = 1.0, 0.5                # 72 certain + 10 coin-flip pixels
    assert image_confidence(_pred(labels, [1.0, 1.0], prob=prob))["mask_uncertainty"] == pytest.approx(10 / 82)
    # no probability map (YOLO-seg): 2 * (1 - mean of mean_prob)
    c = image_confidence(_pred(labels, [0.9, 0.7], mean_prob=[0.9, 0.8]))
    assert c["mask_uncertainty"] == pytest.approx(2 * (1 - 0.85)) and c["confidence"] == pytest.approx(0.7 * 0.7)
    # no detector (whole-image baselines): scores are ignored
    c = image_confidence(_pred(labels, [0.9, 0.7], mean_prob=[0.9, 0.8]), detector=False)
    assert math.isnan(c["det_score_min"]) and math.isnan(c["det_score_mean"])
    assert c["confidence"] == pytest.approx(1 - 2 * (1 - 0.85))
    # nothing found: confidence 0
    c = image_confidence(_pred(np.zeros((20, 20), np.uint8), []))
    assert c["confidence"] == 0.0 and math.isnan(c["det_score_min"]) and math.isnan(c["mask_uncertainty"])


def test_pseudonym_and_dicom_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVKIT_PSEUDONYM_SALT", raising=False)
    assert pseudonym(PATIENT_ID) == hashlib.sha256(PATIENT_ID.encode()).hexdigest()[:12]
    assert pseudonym(PATIENT_ID, length=8, prefix="p-") == "p-" + hashlib.sha256(PATIENT_ID.encode()).hexdigest()[:8]
    salted = pseudonym(PATIENT_ID, salt="s3cret")
    assert salted != pseudonym(PATIENT_ID) and salted == pseudonym(PATIENT_ID, salt="s3cret")
    monkeypatch.setenv("CERVKIT_PSEUDONYM_SALT", "s3cret")
    assert pseudonym(PATIENT_ID) == salted
    with pytest.raises(ValueError):
        pseudonym("x", length=0)
    assert dicom_patient_key(_dicom(tmp_path / "a.dcm")) == PATIENT_ID
    import pydicom

    ds = pydicom.dcmread(tmp_path / "a.dcm")
    del ds.PatientID
    ds.save_as(tmp_path / "b.dcm")
    assert dicom_patient_key(tmp_path / "b.dcm") == NAME
    assert dicom_patient_key(_png(tmp_path / "c.png", 20)) is None
    assert dicom_patient_key(tmp_path / "missing.dcm") is None
    assert [modality_code(m) for m in ("CR", "DX", "DR", "RF", "XA", "MR", "CT", None)] == \
        ["XR", "XR", "XR", "XR", "XR", "MRI", None, None]
    assert NAME not in redact(f"x {NAME} y Jane {PATIENT_ID}", (PATIENT_ID, NAME))
    assert "Jane" not in redact(f"x {NAME} y Jane", (NAME,))


# --- streaming, resume, queue ---------------------------------------------------------------------------

def test_inputs_stream_in_sorted_order(tmp_path: Path) -> None:
    for rel in ("b/z.png", "a.png", "b/c/x.png", "c.dcm", "d.txt", "b/y.tif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    stream = iter_inputs([tmp_path])
    assert iter(stream) is stream                                 # a generator, not a list
    expected = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".txt")
    assert [p for p, _ in stream] == expected == collect_inputs([tmp_path])
    assert {root for _, root in iter_inputs([tmp_path])} == {tmp_path}


def test_rows_stream_resume_and_queue(tmp_path: Path) -> None:
    widths = {"w90": 90, "w30": 30, "w60": 60, "w45": 45, "w75": 75}     # confidence = width / 100
    inputs = tmp_path / "in"
    for stem, width in widths.items():
        _png(inputs / f"{stem}.png", width)
    (inputs / "zz_bad.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    first = ScoreByWidth(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        predict_files(first, [inputs], out, progress=False)
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 3        # the two finished rows survived
    with open(out / "predictions.csv", "a") as handle:                     # killed in the middle of a line
        handle.write(str(inputs / "w60.png") + ",w60,w60_mask.pn")
    with pytest.raises(FileExistsError, match="predictions.csv"):
        predict_files(ScoreByWidth(), [inputs], out, progress=False)

    second = ScoreByWidth()
    table = predict_files(second, [inputs], out, resume=True, progress=False)
    assert second.calls == len(widths) - 2                                 # done ones skipped
    assert max(first.alive_before + second.alive_before) == 0              # never two images alive at once
    assert len(table) == len(widths) + 1 and table["file"].is_unique
    assert (table.set_index("output_stem").loc["zz_bad", "status"]) == "failed"
    ok = table[table.status == "ok"].set_index("output_stem")
    for stem, width in widths.items():
        assert ok.loc[stem, "confidence"] == pytest.approx(width / 100, rel=1e-5)
        assert (out / ok.loc[stem, "mask"]).is_file() and (out / ok.loc[stem, "overlay"]).is_file()

    queue = load_manifest(out / "queue.csv")                               # a valid manifest, files checked
    assert list(queue.df.columns) == list(QUEUE_COLUMNS)
    assert list(queue.df["output_stem"]) == sorted(widths, key=widths.get)  # least confident first
    assert all(queue.image_path(i).resolve() == (inputs / f"{s}.png").resolve()
               for i, s in enumerate(queue.df["output_stem"]))

    _png(inputs / "zz_bad.png", 20)                                        # the user fixes the bad file
    third = ScoreByWidth()
    table = predict_files(third, [inputs], out, resume=True, progress=False)
    assert third.calls == 1 and (table.status == "ok").all() and len(table) == len(widths) + 1
    assert len(pd.read_csv(out / "predictions.csv")) == len(widths) + 1   # the stale failed row is gone
    assert load_manifest(out / "queue.csv").df["output_stem"].iloc[0] == "zz_bad"


def test_names_hash_and_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVKIT_PSEUDONYM_SALT", raising=False)
    inputs = tmp_path / "in"
    _png(inputs / "sub" / "a.png", 40)
    table = predict_files(ScoreByWidth(), [inputs], tmp_path / "h", names="hash", progress=False)
    assert table["output_stem"][0] == hashlib.sha256(b"sub/a.png").hexdigest()[:12]
    assert table["patient_id"][0] == "p-" + hashlib.sha256(b"a").hexdigest()[:12]
    table = predict_files(ScoreByWidth(), [inputs], tmp_path / "a", progress=False, modality="XR")
    assert table["output_stem"][0] == "a" and table["modality"][0] == "XR"


# --- the command line on DICOM: nothing identifying is written or printed --------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch cascade on six 64 px phantoms (it may find nothing: these tests are about files)."""
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.training.train import train_run

    root = tmp_path_factory.mktemp("batch_run")
    mp = pytest.MonkeyPatch()
    mp.setenv("CERVKIT_OUTPUTS", str(root / "outputs"))
    source = write_phantom_dataset(root / "ph", 6, size=(64, 64), seed=3)
    ensure_split(source, root / "split.csv", ratios=(0.5, 0.25, 0.25))
    run = train_run(root / "split.csv", root / "run", quick=True, imgsz=64, device="cpu", validate=False,
                    detector_options={"epochs": 1}, segmenter_options={"epochs": 1})
    yield run
    mp.undo()


def _cli(capfd: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, bytes]:
    """Run ``cervkit predict`` in this process; return its exit status and everything it printed (fd level)."""
    from cervkit.cli.main import main

    capfd.readouterr()
    status = main(["predict", *map(str, args)])
    printed = capfd.readouterr()
    return status, (printed.out + printed.err).encode()


def test_cli_writes_no_patient_identifiers(tiny_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVKIT_PSEUDONYM_SALT", raising=False)
    inputs = tmp_path / "export"
    _dicom(inputs / "study" / "img001.dcm")
    _dicom(inputs / "study" / "img002.dcm", pixels=False)                 # fails: no pixel data
    out = tmp_path / "out"
    status, printed = _cli(capfd, "--model", tiny_run, "--out", out, inputs)
    assert status == 1, printed.decode()                                  # one input failed
    assert b"img002.dcm" in printed                                       # the failure was reported
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"predictions.csv", "queue.csv"} <= {p.name for p in written}
    for secret in (NAME, PATIENT_ID, "Doe", "Jane"):
        for blob in [printed, *(p.read_bytes() for p in written)]:
            assert secret.encode() not in blob
    table = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    expected_id = "p-" + hashlib.sha256(PATIENT_ID.encode()).hexdigest()[:12]
    assert list(table["patient_id"]) == [expected_id] * 2 and list(table["modality"]) == ["MRI"] * 2
    assert list(table["output_stem"]) == [hashlib.sha256(f"study/img00{i}.dcm".encode()).hexdigest()[:12]
                                          for i in (1, 2)]
    assert list(table["status"]) == ["ok", "failed"] and "img002.dcm" in table["error"][1]

    status, printed = _cli(capfd, "--model", tiny_run, "--out", tmp_path / "kept", "--keep-identifiers",
                           inputs / "study" / "img001.dcm")
    assert status == 0, printed.decode()
    assert PATIENT_ID.encode() in (tmp_path / "kept" / "predictions.csv").read_bytes()
