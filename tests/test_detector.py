"""Stage-1 detector: YOLO dataset builder, offline ultralytics, tiny training run, prediction mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cervkit.core.errors import CervkitInputError
from cervkit.inference.detector import (
    Detections,
    box_iou,
    detector_input,
    match_boxes,
    to_detections,
    to_uint8_rgb,
)
from cervkit.io.images import read_mask
from cervkit.labels.yolo import read_yolo_labels
from cervkit.training.yolo_dataset import build_yolo_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory):
    """Eight small X-ray phantoms (labels 1..6 = C2..C7) with a patient-level split."""
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantoms")
    path = write_phantom_dataset(root / "ph", 8, size=(128, 128), seed=3)
    return ensure_split(path, root / "split.csv", ratios=(0.5, 0.25, 0.25))


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_dataset_labels_match_masks(phantoms, tmp_path: Path) -> None:
    data_yaml = build_yolo_dataset(phantoms, tmp_path / "yolo", splits=("train", "val", "test"))
    data = _read_yaml(data_yaml)
    assert data["names"] == {0: "vertebra"}
    import csv

    sources = list(csv.DictReader((tmp_path / "yolo" / "sources.csv").open()))
    assert len(sources) == len(phantoms)
    for split in ("train", "val", "test"):
        folder = Path(data["path"]) / data[split]
        assert folder.is_dir()
        expected = {s["name"] for s in sources if s["split"] == split}
        assert {p.stem for p in folder.glob("*.png")} == expected
    for src in sources:
        mask = read_mask(src["mask"])
        label_file = tmp_path / "yolo" / "labels" / src["split"] / f"{src['name']}.txt"
        boxes, classes = read_yolo_labels(label_file, mask.shape)
        # independent tight boxes straight from the mask pixels
        want = []
        for k in range(1, int(mask.max()) + 1):
            rows, cols = np.nonzero(mask == k)
            want.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        np.testing.assert_allclose(boxes, np.array(want, dtype=np.float32), atol=1e-3 * max(mask.shape))
        assert np.all(classes == 0)
    with pytest.raises(FileExistsError):
        build_yolo_dataset(phantoms, tmp_path / "yolo")


def test_zoom_copies_show_other_fields_of_view_in_training_only(phantoms, tmp_path: Path) -> None:
    import csv

    data_yaml = build_yolo_dataset(phantoms, tmp_path / "yolo", zoom_copies=(0.5, 2.0))
    data = _read_yaml(data_yaml)
    sources = list(csv.DictReader((tmp_path / "yolo" / "sources.csv").open()))
    n_train, n_val = (len(phantoms.subset(split=s)) for s in ("train", "val"))
    assert sum(s["split"] == "train" for s in sources) == 3 * n_train, "each training image at 1x, 0.5x and 2x"
    assert all(float(s["zoom"]) == 1.0 for s in sources if s["split"] == "val"), "validation stays as acquired"
    assert len(list((Path(data["path"]) / data["val"]).glob("*.png"))) == n_val
    first = next(s for s in sources if s["split"] == "train" and float(s["zoom"]) == 1.0)
    mask = read_mask(first["mask"])
    sizes = {}
    for factor in ("1", "0.5", "2"):
        name = first["name"] if factor == "1" else f"{first['name']}_zoom{factor}"
        boxes, _ = read_yolo_labels(tmp_path / "yolo" / "labels" / "train" / f"{name}.txt", mask.shape)
        sizes[factor] = float(np.median(boxes[:, 3] - boxes[:, 1]))
    assert abs(sizes["0.5"] / sizes["1"] - 0.5) < 0.08 and abs(sizes["2"] / sizes["1"] - 2.0) < 0.25, sizes
    with pytest.raises(CervkitInputError, match="single"):
        build_yolo_dataset(phantoms, tmp_path / "lv", classes="levels", zoom_copies=(0.5,))
    with pytest.raises(CervkitInputError, match="positive"):
        build_yolo_dataset(phantoms, tmp_path / "bad", zoom_copies=(1.0,))


def test_dataset_level_classes(phantoms, tmp_path: Path) -> None:
    data_yaml = build_yolo_dataset(phantoms, tmp_path / "yolo", classes="levels")
    assert _read_yaml(data_yaml)["names"] == dict(enumerate(["C2", "C3", "C4", "C5", "C6", "C7"]))
    for label_file in (tmp_path / "yolo" / "labels" / "train").glob("*.txt"):
        boxes, classes = read_yolo_labels(label_file, (128, 128))
        centre_rows = (boxes[:, 1] + boxes[:, 3]) / 2
        # phantom convention: label k = level k-1 (C2..C7), top to bottom
        assert list(classes[np.argsort(centre_rows)]) == list(range(6))
    # a levels column naming other levels reorders the classes
    df = phantoms.df.copy()
    df["levels"] = "C3,C4,C5,C6,C7,C2"
    data_yaml = build_yolo_dataset(phantoms.with_df(df), tmp_path / "yolo2", classes="levels")
    label_file = next((data_yaml.parent / "labels" / "train").glob("*.txt"))
    _, classes = read_yolo_labels(label_file, (128, 128))
    assert list(classes) == [1, 2, 3, 4, 5, 0]


def test_dataset_needs_split_column(phantoms, tmp_path: Path) -> None:
    with pytest.raises(CervkitInputError, match="split"):
        build_yolo_dataset(phantoms.with_df(phantoms.df.drop(columns=["split"])), tmp_path / "y")


def test_equalized_input_ignores_increasing_remaps() -> None:
    rng = np.random.default_rng(0)
    image = np.round(rng.random((40, 50)) * 200).astype(np.float32) / 255  # quantized: many ties
    eq = detector_input(image, "equalize")
    for remap in (lambda x: x ** 2.2, lambda x: 0.3 + 0.5 * x, lambda x: np.sqrt(x)):
        np.testing.assert_allclose(detector_input(remap(image), "equalize"), eq, atol=1e-6)
    # independent computation: how many pixels are darker, scaled so the brightest value is 1
    flat = image.ravel()
    below = (flat[:, None] > flat[None, :]).sum(1)
    np.testing.assert_allclose(eq.ravel(), below / below.max(), atol=1e-6)
    assert eq.min() == 0 and eq.max() == 1
    padded = np.pad(image, 40)  # a wider field of view, black around: the background stays black
    assert detector_input(padded, "equalize")[0, 0] == 0 and detector_input(padded, "equalize").max() == 1
    inverted = detector_input(1 - image, "equalize")
    assert not np.allclose(inverted, eq, atol=0.1), "inversion is not an increasing remap"
    np.testing.assert_array_equal(detector_input(image, "none"), image)
    np.testing.assert_array_equal(detector_input(np.full((4, 4), 0.5), "equalize"), np.full((4, 4), 0.5))
    with pytest.raises(CervkitInputError, match="input_norm"):
        detector_input(image, "zscore")


def test_dataset_writes_the_normalized_images(phantoms, tmp_path: Path) -> None:
    from cervkit.io.images import read_image

    data_yaml = build_yolo_dataset(phantoms, tmp_path / "yolo", input_norm="equalize")
    written = sorted((data_yaml.parent / "images" / "train").glob("*.png"))[0]
    row = next(r for r in phantoms.subset(split="train").rows() if Path(r.image).stem in written.stem)
    expected = np.round(detector_input(read_image(row.image).array, "equalize") * 255)
    np.testing.assert_allclose(read_image(written).array * 255, expected, atol=0.51)


def test_to_detections_clips_and_sorts() -> None:
    xyxy = np.array([[10, 50, 30, 70], [-5, 5, 20, 15], [40, 90, 60, 130], [5, 5, 5, 9]], dtype=np.float32)
    det = to_detections(xyxy, np.array([0.9, 0.8, 0.7, 0.6]), np.array([2.0, 0.0, 4.0, 1.0]), (100, 50))
    assert isinstance(det, Detections) and len(det) == 3  # the zero-width box is dropped
    np.testing.assert_array_equal(det.boxes, [[0, 5, 20, 15], [10, 50, 30, 70], [40, 90, 50, 100]])
    np.testing.assert_allclose(det.scores, [0.8, 0.9, 0.7])
    assert det.classes.tolist() == [0, 2, 4] and det.boxes.dtype == np.float32
    assert det.image_shape == (100, 50)


def test_to_uint8_rgb() -> None:
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rgb = to_uint8_rgb(image)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 2] == 255 and np.all(rgb[..., 0] == rgb[..., 2])
    with pytest.raises(CervkitInputError):
        to_uint8_rgb(np.zeros((2, 2, 3)))


def test_box_matching() -> None:
    gt = np.array([[0, 0, 10, 10], [0, 20, 10, 30]], dtype=np.float32)
    pred = np.array([[0, 0, 10, 5], [0, 21, 10, 30], [50, 50, 60, 60]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(pred, gt)[:2], [[0.5, 0.0], [0.0, 0.9]])
    assert match_boxes(pred, gt) == {"tp": 2, "fp": 1, "fn": 0}
    assert match_boxes(pred, gt, 0.6) == {"tp": 1, "fp": 2, "fn": 1}
    assert match_boxes(np.zeros((0, 4)), gt) == {"tp": 0, "fp": 0, "fn": 2}


def test_box_iou_matches_a_brute_force_loop() -> None:
    """Random boxes (some overlapping, some disjoint, some zero-area) against the IoU definition, pair by pair."""
    rng = np.random.default_rng(7)
    corners = rng.integers(0, 20, size=(2, 9, 4)).astype(np.float32)
    a, b = (np.concatenate([np.minimum(c[:, :2], c[:, 2:]), np.maximum(c[:, :2], c[:, 2:])], axis=1) for c in corners)
    a[0] = b[0] = [3, 3, 3, 8]  # zero-area pair: empty union counts as IoU 0

    def iou(p, q) -> float:
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
        return w * h / union if union > 0 else 0.0

    expected = np.array([[iou(p, q) for q in b.tolist()] for p in a.tolist()])  # Python floats
    got = box_iou(a, b)
    assert got.dtype == np.float64 and got.shape == (9, 9) and 0 < np.count_nonzero(got) < got.size
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 9) and box_iou(a, np.zeros((0, 4))).shape == (9, 0)


@pytest.fixture(scope="module")
def tiny_run(phantoms, tmp_path_factory: pytest.TempPathFactory):
    """A 2-epoch imgsz-128 training run, made with the cwd in an empty folder."""
    from cervkit.training.detector import train_detector

    root = tmp_path_factory.mktemp("run")
    cwd = root / "cwd"
    cwd.mkdir()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        run = train_detector(phantoms, root / "run", epochs=2, imgsz=128, batch=4, device="cpu", quick=False)
    finally:
        os.chdir(old)
    return run, cwd


def test_train_writes_run_folder(tiny_run) -> None:
    run, cwd = tiny_run
    assert list(cwd.iterdir()) == []  # nothing in the cwd (no runs/)
    for path in (run.weights, run.results_csv, run.config_json, run.curves_png):
        assert path.is_file() and path.parent.is_relative_to(run.run_dir)
    assert run.run_dir.name == "detector" and run.weights.name == "best.pt"
    config = json.loads(run.config_json.read_text())
    assert config["arguments"]["imgsz"] == 128 and config["arguments"]["epochs"] == 2
    assert config["arguments"]["input_norm"] == "none"
    assert config["data"]["train"]["boxes"] == 6 * config["data"]["train"]["images"]
    assert "ultralytics" in config["versions"] and run.epochs_run == 2
    assert run.stop_reason == config["limits"]["stop_reason"] == "epochs_done"


def test_loaded_detector_applies_its_training_normalization(tiny_run, tmp_path: Path) -> None:
    import shutil

    from cervkit.inference.detector import Detector

    run, _ = tiny_run
    assert Detector.load(run.weights.parent.parent.parent).input_norm == "none"
    copy = tmp_path / "detector"
    shutil.copytree(run.run_dir, copy, ignore=shutil.ignore_patterns("data"))
    config = json.loads((copy / "config.json").read_text())
    config["arguments"]["input_norm"] = "equalize"
    (copy / "config.json").write_text(json.dumps(config))
    det = Detector.load(copy / "weights" / "best.pt")
    assert det.input_norm == "equalize"
    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64) ** 3
    np.testing.assert_allclose(det._input(image), detector_input(image, "equalize"))
    as_uint8 = np.round(image * 255).astype(np.uint8)
    np.testing.assert_allclose(det._input(as_uint8), detector_input(as_uint8 / 255.0, "equalize"), atol=1e-6)


def test_predict_maps_to_input_coordinates(tiny_run, phantoms) -> None:
    from cervkit.inference.detector import Detector
    from cervkit.io.images import read_image

    run, _ = tiny_run
    det = Detector.load(run.run_dir.parent)
    assert det.imgsz == 128 and det.names == {0: "vertebra"}
    base = read_image(phantoms.image_path(0)).array
    tall = np.vstack([base, base[:64]])  # 192 x 128, non-square
    wide = tall.T.copy()  # 128 x 192
    out = det.predict([tall, wide], conf=0.001, max_det=20)
    assert len(out) == 2
    raw = det.model.predict([to_uint8_rgb(tall), to_uint8_rgb(wide)], imgsz=128, conf=0.001, iou=0.5,
                            max_det=20, verbose=False, device="cpu")
    for image, dets, result in zip((tall, wide), out, raw):
        h, w = image.shape
        assert dets.image_shape == (h, w)
        assert len(dets) > 0  # conf=0.001 keeps some boxes even after 2 epochs
        assert np.all(dets.boxes[:, [0, 2]] <= w) and np.all(dets.boxes[:, [1, 3]] <= h)
        centres = (dets.boxes[:, 1] + dets.boxes[:, 3]) / 2
        assert np.all(np.diff(centres) >= 0)
        # the same boxes as ultralytics' own output (which undoes the letterbox), as a set
        ref = result.boxes.xyxy.numpy()
        assert len(ref) == len(dets)
        np.testing.assert_allclose(np.sort(dets.boxes, axis=0), np.sort(ref.clip(0, [w, h, w, h]), axis=0),
                                   atol=1e-3)
    assert det.last_seconds > 0


_GUARD = textwrap.dedent("""
    import os, socket, traceback, urllib.request
    def _deny(*a, **k):
        # record the attempt even when the caller swallows the exception
        with open(os.environ["NET_LOG"], "a") as log:
            log.write("".join(traceback.format_stack(limit=8)) + "\\n")
        raise RuntimeError("network access attempted")
    socket.socket.connect = _deny
    socket.socket.connect_ex = _deny
    socket.create_connection = _deny
    socket.getaddrinfo = _deny
    urllib.request.urlopen = _deny
    try:
        import requests
        requests.Session.request = _deny
        requests.head = requests.get = _deny
    except ImportError:
        pass
""")


def _user_settings(config_dir: Path) -> Path:
    """A user's own ultralytics settings file, made by ultralytics itself, then saved in a layout of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env.update(YOLO_CONFIG_DIR=str(config_dir), YOLO_OFFLINE="1")
    subprocess.run([sys.executable, "-c", "import ultralytics.utils"], env=env, check=True, capture_output=True,
                   timeout=120)
    path = config_dir / "Ultralytics" / "settings.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=4) + "\n")  # JSONDict writes indent=2
    return path


@pytest.mark.parametrize("config", ["cervkit", "user"])
def test_offline_train_and_predict_touch_no_network(phantoms, tmp_path: Path, config: str) -> None:
    """A fresh interpreter with every network entry point raising still trains and predicts.

    With ``config="user"`` the user's ``YOLO_CONFIG_DIR`` holds their own settings file: it stays
    byte-identical and nothing else is written there (the stand-in fonts go to cervkit's folder).
    """
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_GUARD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    user_dir = tmp_path / "user_config"
    if config == "user":
        settings = _user_settings(user_dir)
        before = settings.read_bytes()
        env["YOLO_CONFIG_DIR"] = str(user_dir)
    script = textwrap.dedent(f"""
        import json, os, socket
        import numpy as np
        from cervkit.data.manifest import load_manifest
        from cervkit.inference.detector import Detector
        from cervkit.training.detector import train_detector
        def yolo_env():
            return {{k: v for k, v in os.environ.items() if k.startswith(("YOLO_", "ULTRALYTICS_"))}}
        env_before = yolo_env()
        run = train_detector(load_manifest({str(phantoms.path)!r}), {str(tmp_path / 'run')!r}, epochs=1,
                             imgsz=64, batch=4, device="cpu", quick=False)
        out = Detector.load(run.weights).predict([np.zeros((50, 70), np.float32)], conf=0.001)
        from ultralytics import utils
        from cervkit.core.ultralytics_env import config_dir, offline_ultralytics
        assert yolo_env() == env_before  # YOLO_OFFLINE / YOLO_CONFIG_DIR only inside the scope
        assert utils.ONLINE is False  # fixed when ultralytics was imported (inside the scope)
        on_disk = json.loads(utils.SETTINGS_FILE.read_text())
        assert utils.SETTINGS["sync"] == on_disk["sync"] and utils.SETTINGS["clearml"] == on_disk["clearml"]
        with offline_ultralytics():
            assert utils.SETTINGS["sync"] is False and utils.SETTINGS["clearml"] is False
        fonts = {str(tmp_path / 'outputs' / 'ultralytics_config' / 'Ultralytics')!r}
        assert os.path.isfile(os.path.join(fonts, "Arial.ttf")), os.listdir(fonts)
        print("CONFIG", config_dir())
        assert not os.path.exists(os.environ["NET_LOG"]), open(os.environ["NET_LOG"]).read()
        try:
            socket.create_connection(("example.com", 80))
        except RuntimeError:
            print("GUARD-ACTIVE")
        os.remove(os.environ["NET_LOG"])  # the deliberate probe above
        print("OK", len(out))
    """)
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]),
               CERVKIT_OUTPUTS=str(tmp_path / "outputs"), MPLBACKEND="Agg",
               NET_LOG=str(tmp_path / "net.log"))
    log = tmp_path / "net.log"
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    attempts = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + attempts
    assert "GUARD-ACTIVE" in proc.stdout and "OK 1" in proc.stdout
    assert "network access attempted" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()
    own = tmp_path / "outputs" / "ultralytics_config" / "Ultralytics"
    if config == "user":
        assert f"CONFIG {user_dir / 'Ultralytics'}" in proc.stdout
        assert settings.read_bytes() == before
        assert sorted(p.relative_to(user_dir).as_posix() for p in user_dir.rglob("*")) == [
            "Ultralytics", "Ultralytics/settings.json"]
        assert not (own / "settings.json").exists()
    else:
        assert f"CONFIG {own}" in proc.stdout
        assert (own / "settings.json").is_file()


def test_ema_callback_shortens_memory() -> None:
    import math
    from types import SimpleNamespace

    import torch

    from cervkit.core.ultralytics_env import import_ultralytics
    from cervkit.training.detector import ema_callback

    import_ultralytics()
    from ultralytics.utils.torch_utils import ModelEMA

    trainer = SimpleNamespace(ema=ModelEMA(torch.nn.Linear(2, 2)))
    assert trainer.ema.decay(50) < 0.03  # ultralytics' default ramp: still ~random weights after 50 steps
    ema_callback(0.99, 50.0)(trainer)
    assert math.isclose(trainer.ema.decay(50), 0.99 * (1 - math.exp(-1)))


def test_max_minutes_caps_training(phantoms, tmp_path: Path) -> None:
    """The wall-clock cap stops after the epoch in which it ran out (ultralytics' `time` would fill it)."""
    from cervkit.training.detector import train_detector

    run = train_detector(phantoms, tmp_path / "run", epochs=5, imgsz=96, batch=4, device="cpu", quick=False,
                         max_minutes=1e-4)
    assert run.epochs_run == 1 and run.weights.is_file()
    assert run.stop_reason == json.loads(run.config_json.read_text())["limits"]["stop_reason"] == "time_cap"


def test_ultralytics_leaves_pil_open_alone(tmp_path: Path) -> None:
    """After cervkit imports ultralytics, a broken image still raises cervkit's clear error, not a pip attempt."""
    from PIL import Image as PILImage

    from cervkit.core.errors import CervkitInputError
    from cervkit.core.ultralytics_env import import_ultralytics
    from cervkit.io.images import read_image

    import_ultralytics()
    from ultralytics.utils import patches

    assert PILImage.open is patches._image_open
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(CervkitInputError, match="broken.png"):
        read_image(bad)


def test_choose_classes_levels_only_for_a_consistent_range(phantoms) -> None:
    from cervkit.training.yolo_dataset import choose_classes

    assert choose_classes(phantoms) == ("levels", ["C2", "C3", "C4", "C5", "C6", "C7"])
    mixed = phantoms.with_df(phantoms.df.assign(levels=""))
    assert choose_classes(mixed) == ("levels", [f"V{j}" for j in range(1, 7)])
    uneven = phantoms.with_df(phantoms.df.assign(n_vertebrae=[6] * (len(phantoms.df) - 1) + [5]))
    assert choose_classes(uneven) == ("single", None)
