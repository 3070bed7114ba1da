"""Train the anchor classifier (C2, L5 with the sacrum under it, S1, other) on the context windows of annotated bodies.

The examples come from the manifests' ``levels`` column (:func:`cervkit.labels.context.anchor_examples`); a run
whose training data annotates neither C2 nor L5 has nothing to learn, and
:func:`train_anchor` returns None. Augmentation keeps what the task depends on, up and down: horizontal flips,
box jitter, window scale, gamma and contrast inversion (another sequence), a field of view ending near the body,
never a vertical flip.

Two options are for sources the classifier never saw, and off in the shipped recipes (see ``train_anchor``):
``other_sequences`` maps most windows through a random intensity curve (:func:`intensity_curve`) and adds
noise, and ``beyond`` adds the windows just beyond each landmark as negatives (C1 above C2, S2 below S1).
Trained on T2 and phantoms only, they raised the unseen Dixon slices whose most L5-like window is L5 from
120/157 to 143/157 and 150/157 (seeds 0, 1); but in the rebuilt ``mri`` model (all sources) they left L5 below
the naming threshold on one T2 test patient (found and named right 0.992 -> 0.778), so the recipes keep them off.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cervkit.labels.context import ANCHOR_CLASSES, CONTEXT_SIZE, CONTEXT_SPAN, anchor_examples, context_crop
from cervkit.labels.crops import jitter_box

__all__ = ["AnchorRun", "anchor_samples", "intensity_curve", "train_anchor"]

STAGE_DIR = "anchor"
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class AnchorRun:
    """What :func:`train_anchor` wrote.

    Attributes
    ----------
    folder, model_path, config_json : pathlib.Path
    epochs_run, best_epoch : int
    val_accuracy : float
        Balanced accuracy (mean per-class recall) on the validation windows at the best epoch.
    seconds : float
    """

    folder: Path
    model_path: Path
    config_json: Path
    epochs_run: int
    best_epoch: int
    val_accuracy: float
    seconds: float


def anchor_samples(manifest: Any, split: str, *,
                   beyond: bool = False) -> tuple[list[np.ndarray], list[tuple[int, tuple[float, ...], int]]]:
    """Images of one split and their anchor examples.

    Parameters
    ----------
    manifest : Manifest
        With ``split`` and ``levels`` columns.
    split : str
    beyond : bool
        Also the negatives beyond each landmark (:func:`cervkit.labels.context.anchor_examples`).

    Returns
    -------
    images : list of numpy.ndarray
    samples : list of (image index, box, class)
    """
    from cervkit.io.images import read_image, read_mask

    images: list[np.ndarray] = []
    samples: list[tuple[int, tuple[float, ...], int]] = []
    df = manifest.df
    if "levels" not in df.columns:
        return images, samples
    for i in range(len(df)):
        if str(df["split"].iloc[i]) != split or manifest.mask_path(i) is None:
            continue
        levels = [v for v in str(df["levels"].iloc[i]).split(",") if v.strip() and v != "nan"]
        examples = anchor_examples(read_mask(manifest.mask_path(i)), levels, beyond=beyond)
        if not examples:
            continue
        images.append(read_image(manifest.image_path(i)).array.astype(np.float32))
        samples += [(len(images) - 1, box, cls) for box, cls in examples]
    return images, samples


def intensity_curve(image: np.ndarray, rng: np.random.Generator, points: int = 5) -> np.ndarray:
    """Map a [0, 1] image through a random piecewise-linear curve (half the time monotone, either direction).

    Parameters
    ----------
    image : numpy.ndarray
        Values in [0, 1].
    rng : numpy.random.Generator
    points : int
        Control points, evenly spaced on the input axis.

    Returns
    -------
    numpy.ndarray
        float32, values in [0, 1].
    """
    ys = rng.uniform(0.0, 1.0, points)
    if rng.random() < 0.5:
        ys = np.sort(ys)[::-1] if rng.random() < 0.5 else np.sort(ys)
    return np.interp(image, np.linspace(0.0, 1.0, points), ys).astype(np.float32)


def _batch(images: list[np.ndarray], samples: list, rng: np.random.Generator | None,
           other_sequences: bool = False) -> torch.Tensor:
    """Context windows of ``samples``, augmented when ``rng`` is given."""
    crops = []
    for idx, box, _ in samples:
        img = images[idx]
        span = CONTEXT_SPAN
        if rng is not None:
            box = jitter_box(box, 0.1, rng)
            span *= float(rng.uniform(0.85, 1.15))
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / max(hi - lo, 1e-6)
            if other_sequences and rng.random() < 0.7:
                img = intensity_curve(img, rng)
            else:
                img = img ** float(np.exp(rng.uniform(-0.5, 0.5)))
                if rng.random() < 0.25:
                    img = 1.0 - img
            if other_sequences and rng.random() < 0.5:
                img = img + rng.normal(0.0, rng.uniform(0.0, 0.08), img.shape).astype(np.float32)
            if rng.random() < 0.3:  # a field of view ending near the body: the image edge must not tell L5
                img = img.copy()
                h = box[3] - box[1]
                if rng.random() < 0.5:
                    img[max(0, int(box[3] + rng.uniform(0.2, 1.5) * h)):] = 0.0
                else:
                    img[:max(0, int(box[1] - rng.uniform(0.2, 1.5) * h))] = 0.0
        crop = context_crop(img, box, size=CONTEXT_SIZE, span=span)
        if rng is not None and rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops.append(np.ascontiguousarray(crop))
    return torch.from_numpy(np.stack(crops)[:, None])


def _balanced_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    recalls = [float((pred[target == c] == c).mean()) for c in np.unique(target)]
    return float(np.mean(recalls)) if recalls else 0.0


def train_anchor(manifest: Any, run_dir: str | PathLike[str], *, epochs: int = 40, patience: int = 12,
                 batch_size: int = 64, lr: float = 2e-3, seed: int = 0, device: str | None = None,
                 quick: bool | None = None, max_minutes: float | None = 6.0,
                 init_checkpoint: str | PathLike[str] | None = None, overwrite: bool = False,
                 other_sequences: bool = False, beyond: bool = False) -> AnchorRun | None:
    """Train the anchor classifier on the ``train`` split, keeping the epoch of best ``val`` balanced accuracy
    (of equals, the lowest ``val`` loss).

    Parameters
    ----------
    manifest : Manifest
        With ``split`` and ``levels`` columns.
    run_dir : str or PathLike
        This stage writes ``run_dir/anchor/`` (``model.pt``, ``config.json``).
    epochs, patience : int
        Maximum epochs; stop after ``patience`` epochs without a better validation score.
    batch_size : int
    lr : float
        AdamW learning rate (cosine schedule).
    seed : int
    device : str, optional
    quick : bool, optional
        Quick mode (default :func:`cervkit.core.config.quick_mode`): 2 epochs.
    max_minutes : float, optional
        Stop after the epoch that passes this wall time (None: no cap).
    init_checkpoint : str or PathLike, optional
        Fine-tune: start from this anchor classifier (``RUN/anchor/model.pt``) at a tenth of ``lr``.
    overwrite : bool
        Replace an existing ``anchor/``; otherwise FileExistsError.
    other_sequences : bool
        Random intensity curves and noise (:func:`intensity_curve`), for sources never seen in training.
    beyond : bool
        The windows just beyond each landmark (C1, S2) as ``other`` examples.

    Returns
    -------
    AnchorRun or None
        None when no training image annotates C2 or L5 (nothing to anchor on).
    """
    from cervkit.core.config import quick_mode
    from cervkit.core.device import resolve_device
    from cervkit.models.anchor import AnchorNet, save_anchor
    from cervkit.runs.folder import versions
    from cervkit.training.segmenter import seed_everything

    quick = quick_mode() if quick is None else bool(quick)
    epochs = min(epochs, 2) if quick else epochs
    out = Path(run_dir).resolve() / STAGE_DIR
    if (out / MODEL_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / MODEL_FILE} exists; pass overwrite=True to replace it")
    train_images, train = anchor_samples(manifest, "train", beyond=beyond)
    val_images, val = anchor_samples(manifest, "val", beyond=beyond)
    landmarks = {ANCHOR_CLASSES.index("C2"), ANCHOR_CLASSES.index("L5")}
    if not any(cls in landmarks for _, _, cls in train):
        print("anchor: no training image annotates C2 or L5; no anchor classifier trained")
        return None
    if not val:
        val_images, val = train_images, train
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)
    net = AnchorNet(len(ANCHOR_CLASSES))
    if init_checkpoint is not None:
        from cervkit.models.anchor import load_anchor

        net, _ = load_anchor(init_checkpoint)
        lr /= 10
    net = net.to(dev)
    counts = np.bincount([c for *_, c in train], minlength=len(ANCHOR_CLASSES)).astype(np.float64)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32, device=dev)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    val_x = _batch(val_images, val, None).to(dev)
    val_y = np.array([c for *_, c in val])
    val_t = torch.tensor(val_y, device=dev)
    best = {"score": -1.0, "loss": float("inf"), "epoch": 0,
            "state": {k: v.clone() for k, v in net.state_dict().items()}}
    print(f"anchor: {len(train)} training windows ({', '.join(f'{n} {int(c)}' for n, c in zip(ANCHOR_CLASSES, counts))})"
          f", at most {epochs} epochs, patience {patience}, time cap {max_minutes} min")
    start, rows, stop_reason = time.perf_counter(), [], "epochs_done"
    for epoch in range(1, epochs + 1):
        net.train()
        order = rng.permutation(len(train))
        total = 0.0
        for i in range(0, len(order), batch_size):
            part = [train[j] for j in order[i:i + batch_size]]
            x = _batch(train_images, part, rng, other_sequences).to(dev)
            y = torch.tensor([c for *_, c in part], device=dev)
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(part)
        scheduler.step()
        net.eval()
        with torch.no_grad():
            logits = net(val_x)
            val_loss = float(loss_fn(logits, val_t))
            pred = logits.argmax(1).cpu().numpy()
        score = _balanced_accuracy(pred, val_y)
        rows.append({"epoch": epoch, "train_loss": total / len(train), "val_balanced_accuracy": score,
                     "val_loss": val_loss})
        # a tie in accuracy goes to the lower validation loss: a fine-tune's few windows are all right after one
        # epoch, and keeping that epoch kept the classifier it started from
        if score > best["score"] or (score == best["score"] and val_loss < best["loss"]):
            best = {"score": score, "loss": val_loss, "epoch": epoch,
                    "state": {k: v.clone() for k, v in net.state_dict().items()}}
        if epoch - best["epoch"] >= patience:
            stop_reason = "early_stop"
            break
        if max_minutes is not None and time.perf_counter() - start > 60 * max_minutes:
            stop_reason = "time_cap"
            break
    seconds = time.perf_counter() - start
    net.load_state_dict(best["state"])
    settings = {"classes": list(ANCHOR_CLASSES), "size": CONTEXT_SIZE, "span": CONTEXT_SPAN,
                "best_epoch": int(best["epoch"]), "val_balanced_accuracy": round(float(best["score"]), 4)}
    model_path = save_anchor(out / MODEL_FILE, net.cpu(), settings)
    config = {"arguments": {"epochs": epochs, "patience": patience, "batch_size": batch_size, "lr": lr, "seed": seed,
                            "quick": quick, "max_minutes": max_minutes, "other_sequences": other_sequences,
                            "beyond": beyond,
                            "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint)},
              "data": {"train_windows": len(train), "val_windows": len(val),
                       "train_classes": dict(zip(ANCHOR_CLASSES, counts.astype(int).tolist()))},
              "history": rows, "stop_reason": stop_reason, "device": str(dev), "versions": versions(),
              "result": {**settings, "epochs_run": len(rows), "seconds": round(seconds, 2)}}
    config_json = out / "config.json"
    config_json.write_text(json.dumps(config, indent=2) + "\n")
    print(f"anchor: best epoch {best['epoch']}, val balanced accuracy {best['score']:.3f}, {seconds:.0f} s")
    return AnchorRun(out, model_path, config_json, len(rows), int(best["epoch"]), float(best["score"]), seconds)
