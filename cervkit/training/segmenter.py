"""Train the stage-2 crop segmenter (U-Net3+ or DeepLabV3+) into ``run_dir/segmenter/``.

:func:`train_segmenter` trains on the manifest's ``train`` split with :class:`cervkit.training.crop_dataset.CropDataset`
(paper augmentations + intensity augmentation + jittered ground-truth windows), the paper's
``alpha · BCE + (1 − alpha) · Dice`` loss with deep supervision over every side output, AdamW and a
cosine learning-rate schedule. After each epoch it measures IoU and Dice of the top output (threshold
0.5) on the ``val`` crops (ground-truth boxes with a fixed jitter), keeps the best weights and stops
after ``patience`` epochs without improvement, or once ``max_minutes`` have passed (by default
:data:`CPU_MAX_MINUTES` on a CPU, no cap on CUDA; see :mod:`cervkit.training.limits`). It prints the
limits in force at its start and writes::

    model.pt      weights + architecture + crop settings (cervkit.models.save_checkpoint)
    config.json   every argument, versions, data summary, result, limits (cap in force, stop_reason)
    history.csv   epoch, train_loss, val_iou, val_dice, lr, seconds
    curves.png    loss and validation IoU / Dice per epoch

See ``benchmarks/bench_segmenter.py`` for the measurements behind the defaults.
"""

from __future__ import annotations

import copy
import io
import json
import random
import time
from dataclasses import dataclass
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cervkit.core.device import resolve_device
from cervkit.core.files import atomic_write_bytes, check_writable
from cervkit.inference.segmenter import MODEL_FILE, STAGE_DIR
from cervkit.labels.crops import NORMALISATION
from cervkit.training.crop_dataset import INVERT_P, CropDataset
from cervkit.training.limits import (
    AUTO,
    EpochLimits,
    MaxMinutes,
    announce_limits,
    limits_record,
    resolve_max_minutes,
)
from cervkit.training.mixed_precision import MixedPrecision, resolve_amp

DEFAULT_MODEL_OPTIONS: dict[str, Any] = {"fast_upsample": True}
"""Extra U-Net3+ keywords used unless ``model_options`` says otherwise (see the benchmark)."""
QUICK_EPOCHS = 2
QUICK_CROP = 64
CPU_MAX_MINUTES = 12.0
"""The crop segmenter's default cap on a CPU (``max_minutes="auto"``): keeps a CPU run of the whole cascade within
30 minutes (100 epochs take about 10 on 2 cores). On CUDA the default is no cap."""
HISTORY_COLUMNS = ("epoch", "train_loss", "val_iou", "val_dice", "lr", "seconds")


@dataclass
class SegmenterRun:
    """What :func:`train_segmenter` wrote.

    Attributes
    ----------
    run_dir : pathlib.Path
        ``<run_dir>/segmenter``.
    model_path, config_json, history_csv, curves_png : pathlib.Path
        The files written.
    epochs_run, best_epoch : int
        Epochs trained and the 1-based epoch whose weights were kept.
    val_iou, val_dice : float
        Mean per-crop validation IoU / Dice of the kept weights.
    seconds : float
        Training wall time.
    stop_reason : str
        ``early_stop``, ``epochs_done`` or ``time_cap`` (:data:`cervkit.training.limits.STOP_REASONS`).
    max_minutes : float or None
        The wall-clock cap that was in force (None: none).
    """

    run_dir: Path
    model_path: Path
    config_json: Path
    history_csv: Path
    curves_png: Path
    epochs_run: int
    best_epoch: int
    val_iou: float
    val_dice: float
    seconds: float
    stop_reason: str = "epochs_done"
    max_minutes: float | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Parameters
    ----------
    seed : int
        The seed (NumPy gets it modulo 2**32).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def overlap_scores(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample IoU and Dice of ``logits > 0`` against a binary target (1 when both are empty).

    Parameters
    ----------
    logits, target : torch.Tensor
        (N, 1, H, W).

    Returns
    -------
    tuple of torch.Tensor
        (N,) IoU and (N,) Dice.
    """
    pred = (logits > 0).flatten(1)
    gt = target.flatten(1) > 0.5
    tp = (pred & gt).sum(1).float()
    fp = (pred & ~gt).sum(1).float()
    fn = (~pred & gt).sum(1).float()
    empty = (tp + fp + fn) == 0
    iou = torch.where(empty, torch.ones_like(tp), tp / (tp + fp + fn).clamp(min=1))
    dice = torch.where(empty, torch.ones_like(tp), 2 * tp / (2 * tp + fp + fn).clamp(min=1))
    return iou, dice


def evaluate_crops(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean per-crop IoU and Dice of the model's top output over a loader of (image, target) batches.

    Parameters
    ----------
    model : torch.nn.Module
        Segmentation model (put in eval mode here).
    loader : DataLoader
        Yields (N, 1, S, S) images and targets.
    device : torch.device
        Where the model is.

    Returns
    -------
    tuple of float
        (mean IoU, mean Dice).
    """
    model.eval()
    ious, dices = [], []
    with torch.inference_mode():
        for images, targets in loader:
            logits = model(images.to(device)).float().cpu()
            iou, dice = overlap_scores(logits, targets)
            ious.append(iou)
            dices.append(dice)
    return float(torch.cat(ious).mean()), float(torch.cat(dices).mean())


def plot_history(history: pd.DataFrame, out_png: Path, *,
                 loss_title: str = "training loss (BCE+Dice, deep supervision)",
                 val_title: str = "validation crops") -> Path:
    """Plot training loss and validation IoU / Dice per epoch (matplotlib, no pyplot state).

    Parameters
    ----------
    history : pandas.DataFrame
        Per-epoch rows with ``epoch``, ``train_loss``, ``val_iou`` and ``val_dice``.
    out_png : pathlib.Path
        Destination PNG (replaced if it exists).
    loss_title, val_title : str
        Titles of the two panels.

    Returns
    -------
    pathlib.Path
        The written PNG.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100)
    ax_loss, ax_val = fig.subplots(1, 2)
    ax_loss.plot(history["epoch"], history["train_loss"], marker=".")
    ax_loss.set(title=loss_title, xlabel="epoch")
    ax_val.plot(history["epoch"], history["val_iou"], marker=".", label="IoU")
    ax_val.plot(history["epoch"], history["val_dice"], marker=".", label="Dice")
    ax_val.set(title=val_title, xlabel="epoch", ylim=(0, 1))
    ax_val.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(out_png, buf.getvalue(), overwrite=True)


def _split_part(manifest: Any, split: str) -> Any:
    """The rows of one split, or raise when the manifest has none."""
    from cervkit.core.errors import CervkitInputError
    from cervkit.data.manifest import load_manifest

    m = load_manifest(manifest, check_files=False) if isinstance(manifest, (str, PathLike)) else manifest
    if "split" not in m.df.columns:
        raise CervkitInputError("the manifest has no split column: use cervkit.data.manifest.ensure_split first",
                                getattr(m, "path", None))
    part = m.subset(split=split)
    if len(part) == 0:
        raise CervkitInputError(f"the manifest has no {split!r} rows", getattr(m, "path", None))
    return part


def initial_weights(net: torch.nn.Module, init_checkpoint: str | PathLike[str] | None) -> dict[str, Any]:
    """Load ``init_checkpoint`` into ``net`` when given (fine-tuning); say what the first epoch starts from.

    Parameters
    ----------
    net : torch.nn.Module
        A freshly built segmentation model.
    init_checkpoint : str or PathLike, optional
        A cervkit ``model.pt`` of the same architecture; None keeps the fresh initialisation.

    Returns
    -------
    dict
        ``checkpoint`` (path or None) and ``state_sha256`` (:func:`cervkit.training.finetune.state_checksum`).
    """
    from cervkit.training.finetune import load_initial_weights, state_checksum

    if init_checkpoint is not None:
        return load_initial_weights(net, init_checkpoint)
    return {"checkpoint": None, "state_sha256": state_checksum(net.state_dict())}


def train_segmenter(manifest: Any, run_dir: str | PathLike[str], *, model: str = "unet3plus",
                    encoder_name: str = "mobilenet_v2", cat_channels: int = 16, crop_size: int = 64,
                    margin: float = 0.15, jitter: float = 0.1, edge_cut: float = 0.0, alpha: float = 0.5,
                    other_sequences: float = 0.0, epochs: int = 100,
                    patience: int = 30, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4,
                    seed: int = 0, device: str | None = None, quick: bool | None = None, num_workers: int = 0,
                    encoder_weights: str | PathLike[str] | None = None,
                    model_options: dict[str, Any] | None = None, max_minutes: MaxMinutes = AUTO,
                    cpu_max_minutes: float | None = CPU_MAX_MINUTES,
                    init_checkpoint: str | PathLike[str] | None = None, amp: bool | None = None,
                    overwrite: bool = False) -> SegmenterRun:
    """Train the crop segmenter on the ``train`` split, early-stopping on ``val`` crop IoU.

    Parameters
    ----------
    manifest : Manifest or path
        Manifest with a ``split`` column (:func:`cervkit.data.manifest.ensure_split`).
    run_dir : str or PathLike
        The run folder; this stage writes ``run_dir/segmenter/``.
    model : {"unet3plus", "deeplabv3plus"}
        Architecture (DeepLabV3+ for the YOLO-DeepLab baseline; ``cat_channels`` is then ignored).
    encoder_name : str
        smp encoder (``mobilenet_v2``, ``resnet18``, ``efficientnet-b0``, ``resnet34`` …).
    cat_channels : int
        U-Net3+ channels per full-scale branch.
    crop_size : int
        Side of the square crops.
    margin, jitter : float
        Window margin and training edge jitter (fractions of the box size).
    edge_cut : float
        Share of training crops whose body the image border cuts
        (:func:`cervkit.training.crop_dataset.cut_at_border`): bodies at the edge of a narrow or zoomed field
        of view.
    alpha : float
        BCE weight of the loss (``1 − alpha`` for Dice).
    other_sequences : float
        Share of training crops remapped by a random intensity curve
        (:func:`cervkit.training.crop_dataset.intensity_pipeline`): sequences never seen in training.
    epochs, patience : int
        Maximum epochs; stop after ``patience`` epochs without a better validation IoU. Defaults from
        the real MRI validation split: with the cosine schedule over 100 epochs val IoU kept rising
        until epoch 97 (0.911, vs 0.909 after 60 epochs), with stalls of 13 and 15 epochs on the way
        in two runs; patience 15 stopped one of them at epoch 52 (val IoU 0.910).
    batch_size, lr, weight_decay : float
        AdamW settings (cosine schedule over ``epochs``).
    seed : int
        Seeds torch, NumPy, Python and the augmentations.
    device : str, optional
        Default CUDA when available, else CPU.
    amp : bool, optional
        Mixed precision (:mod:`cervkit.training.mixed_precision`): default on for CUDA, off for CPU.
    quick : bool, optional
        Quick mode (default :func:`cervkit.core.config.quick_mode`): at most 2 epochs and 64-pixel crops.
    num_workers : int
        DataLoader workers.
    encoder_weights : str or PathLike, optional
        Local or cached encoder weights (never downloaded); default from scratch.
    model_options : dict, optional
        Extra model keywords (default :data:`DEFAULT_MODEL_OPTIONS` for U-Net3+).
    max_minutes : float, "auto" or None
        Stop after the epoch that exceeds this wall time in minutes (the best weights are kept); None: no cap.
        ``"auto"`` (default): ``cpu_max_minutes`` on a CPU, no cap on CUDA. The limits in force are printed at
        the start and recorded in ``config.json`` (``limits``: ``max_minutes``, ``stop_reason``, ``epochs_run``).
    cpu_max_minutes : float, optional
        The cap ``"auto"`` means on a CPU (default :data:`CPU_MAX_MINUTES`; fine-tuning passes its own).
    init_checkpoint : str or PathLike, optional
        Fine-tune: start from this ``model.pt`` (same architecture, checked; see :mod:`cervkit.training.finetune`).
        ``config.json`` records ``init.state_sha256``, the checksum of the weights the first epoch starts from.
    overwrite : bool
        Replace an existing ``run_dir/segmenter``; otherwise FileExistsError.

    Returns
    -------
    SegmenterRun
        Paths and summary.
    """
    from cervkit.core.config import quick_mode
    from cervkit.models.factory import build_segmentation_model, save_checkpoint
    from cervkit.models.losses import deep_supervision_loss
    from cervkit.runs.folder import versions

    quick = quick_mode() if quick is None else bool(quick)
    if quick:
        epochs, crop_size = min(epochs, QUICK_EPOCHS), min(crop_size, QUICK_CROP)
    out = Path(run_dir).resolve() / STAGE_DIR
    for name in (MODEL_FILE, "config.json", "history.csv", "curves.png"):
        check_writable(out / name, overwrite)
    arguments = {"manifest": str(getattr(manifest, "path", manifest)), "run_dir": str(run_dir), "model": model,
                 "encoder_name": encoder_name, "cat_channels": cat_channels, "crop_size": crop_size,
                 "margin": margin, "jitter": jitter, "edge_cut": edge_cut, "alpha": alpha,
                 "other_sequences": other_sequences, "epochs": epochs, "patience": patience,
                 "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
                 "quick": quick, "num_workers": num_workers, "max_minutes": max_minutes,
                 "cpu_max_minutes": cpu_max_minutes,
                 "encoder_weights": None if encoder_weights is None else str(encoder_weights),
                 "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint), "amp": amp}
    dev = resolve_device(device)
    cap, cap_source = resolve_max_minutes(max_minutes, cpu_max_minutes, dev)
    announce_limits(STAGE_DIR, epochs, patience, cap, cap_source)
    seed_everything(seed)
    train_part, val_part = _split_part(manifest, "train"), _split_part(manifest, "val")
    crop_args = {"crop_size": crop_size, "margin": margin, "jitter": jitter, "seed": seed}
    train_ds = CropDataset(train_part, augment=True, edge_cut=edge_cut, other_sequences=other_sequences,
                           **crop_args)
    val_ds = CropDataset(val_part, augment=False, **crop_args)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              generator=generator, drop_last=len(train_ds) > batch_size)
    val_loader = DataLoader(val_ds, batch_size=max(batch_size, 64), shuffle=False, num_workers=num_workers)

    options = dict(DEFAULT_MODEL_OPTIONS if model == "unet3plus" else {}) | dict(model_options or {})
    if model == "unet3plus":
        options.setdefault("cat_channels", cat_channels)
    net = build_segmentation_model(model, encoder_name=encoder_name, encoder_weights=encoder_weights,
                                   in_channels=1, classes=1, **options)
    init = initial_weights(net, init_checkpoint)
    net = net.to(dev)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=lr * 0.01)
    precision = MixedPrecision(dev, resolve_amp(amp, dev))
    loss_fn = partial(deep_supervision_loss, alpha=alpha)
    from tqdm.auto import tqdm

    rows: list[dict[str, float]] = []
    best = {"iou": -1.0, "dice": 0.0, "epoch": 0}
    best_state = copy.deepcopy(net.state_dict())
    limits = EpochLimits(epochs, patience, cap)
    start = time.perf_counter()
    limits.start()
    bar = tqdm(range(1, epochs + 1), desc="segmenter", disable=None)
    for epoch in bar:
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        net.train()
        total, count = 0.0, 0
        for images, targets in train_loader:
            images, targets = images.to(dev, non_blocking=True), targets.to(dev, non_blocking=True)
            loss = precision.step(net, images, targets, loss_fn, optimizer)
            total += loss * len(images)
            count += len(images)
        current_lr = optimizer.param_groups[0]["lr"]
        precision.step_scheduler(scheduler)
        val_iou, val_dice = evaluate_crops(net, val_loader, dev)
        rows.append({"epoch": epoch, "train_loss": total / max(1, count), "val_iou": val_iou,
                     "val_dice": val_dice, "lr": current_lr, "seconds": time.perf_counter() - t0})
        if val_iou > best["iou"]:
            best = {"iou": val_iou, "dice": val_dice, "epoch": epoch}
            best_state = copy.deepcopy(net.state_dict())
        bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", val_iou=f"{val_iou:.3f}")
        if limits.stop_after(epoch, int(best["epoch"])):
            break
    seconds = time.perf_counter() - start
    precision.warn_if_unstable()
    net.load_state_dict(best_state)
    net.eval()

    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    history_csv = atomic_write_bytes(out / "history.csv", history.to_csv(index=False).encode(), overwrite=True)
    curves = plot_history(history, out / "curves.png")
    ckpt_config = {"crop_size": int(crop_size), "margin": float(margin), "jitter": float(jitter),
                   "normalisation": NORMALISATION, "model": model, "best_epoch": int(best["epoch"]),
                   "val_iou": float(best["iou"]), "val_dice": float(best["dice"])}
    model_path = save_checkpoint(out / MODEL_FILE, net.cpu(), ckpt_config, overwrite=True)
    data = {name: {"images": len(ds.samples), "crops": len(ds),
                   "patients": int(part.df["patient_id"].nunique())}
            for name, ds, part in (("train", train_ds, train_part), ("val", val_ds, val_part))}
    limits_json = limits_record(epochs, patience, cap, cap_source, limits.stop_reason, len(rows))
    config = {"arguments": arguments, "model_options": options, "init": init, "device": str(dev),
              "amp": precision.summary(), "limits": limits_json,
              "normalisation": NORMALISATION, "intensity_invert_p": INVERT_P, "versions": versions(),
              "data": data, "result": {"epochs_run": len(rows), "best_epoch": int(best["epoch"]),
                                       "val_iou": float(best["iou"]), "val_dice": float(best["dice"]),
                                       "seconds": round(seconds, 2)}}
    config_json = atomic_write_bytes(out / "config.json", json.dumps(config, indent=2, default=str).encode(),
                                     overwrite=True)
    return SegmenterRun(out, model_path, config_json, history_csv, curves, len(rows), int(best["epoch"]),
                        float(best["iou"]), float(best["dice"]), seconds, limits.stop_reason, cap)
