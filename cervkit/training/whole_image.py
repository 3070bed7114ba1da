"""Train a whole-image baseline (U-Net3+ or DeepLabV3+) into ``run_dir/model/``.

:func:`train_whole_image` trains on the manifest's ``train`` split with
:class:`cervkit.training.whole_image.WholeImageDataset` (whole images resized to ``size``, the paper's geometric
augmentations + intensity augmentation, binary "any vertebra" target), the paper's
``alpha · BCE + (1 − alpha) · Dice`` loss (deep supervision over every U-Net3+ side output; DeepLabV3+
has one output), AdamW with a cosine schedule. After each epoch it re-estimates the BatchNorm statistics
on the un-augmented training images (:func:`recalibrate_batchnorm`), measures the mean per-image IoU and
Dice (threshold 0.5, at the network size) on the ``val`` images, keeps the best weights and stops after
``patience`` epochs without improvement or once ``max_minutes`` have passed (by default :data:`CPU_MAX_MINUTES`
on a CPU, no cap on CUDA; see :mod:`cervkit.training.limits`). It prints the limits in force at its start and
writes::

    model.pt      weights + architecture + size/normalisation (cervkit.models.save_checkpoint)
    config.json   every argument, versions, data summary, result, limits (cap in force, stop_reason)
    history.csv   epoch, train_loss, val_iou, val_dice, lr, seconds
    curves.png    loss and validation IoU / Dice per epoch

Why the BatchNorm recalibration: a whole-image run on 48 images makes only 6 optimizer steps per epoch,
and the running statistics (momentum 0.1) lag far behind the weights. Measured on the real MRI split
(DeepLabV3+ and U-Net3+, 128 px, first epochs): validation IoU in eval mode stayed exactly 0 while the
same weights with batch statistics reached 0.1–0.35; recalibrated statistics gave 0.1–0.5 (about 1 s
per epoch on 2 CPU cores for 24 images).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from cervkit.core.device import resolve_device
from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_write_bytes, check_writable
from cervkit.inference.whole_image import (
    MODEL_FILE,
    NORMALISATION,
    STAGE_DIR,
    WHOLE_IMAGE_MODELS,
    prepare_image,
)
from cervkit.io.resize import resize
from cervkit.training.crop_dataset import intensity_pipeline
from cervkit.training.limits import (
    AUTO,
    EpochLimits,
    MaxMinutes,
    announce_limits,
    limits_record,
    resolve_max_minutes,
)
from cervkit.training.mixed_precision import MixedPrecision, resolve_amp
from cervkit.training.segmenter import (
    initial_weights,
    overlap_scores,
    plot_history,
    seed_everything,
)
from cervkit.transforms.augment import (
    augment_sample,
    item_seed,
    paper_pipeline,
    seed_transform,
)

DEFAULT_MODEL_OPTIONS: dict[str, dict[str, Any]] = {"unet3plus": {"cat_channels": 16, "fast_upsample": True},
                                                    "deeplabv3plus": {}}
"""Extra model keywords per architecture unless ``model_options`` says otherwise (CPU-sized U-Net3+)."""


class WholeImageDataset(Dataset):
    """Whole images and binary "any vertebra" targets at ``size`` × ``size``, optionally augmented.

    Item ``i`` is ``(image (1, S, S) normalised, target (1, S, S) in {0, 1})``. With ``augment`` the paper's
    geometric pipeline (:func:`cervkit.transforms.augment.paper_pipeline`) runs on the full-resolution pair, then the
    intensity pipeline on the image, then both are resized (image bilinear/area, target nearest) exactly as
    inference resizes. Every draw of item ``i`` depends only on ``(seed, epoch, i)``.

    Parameters
    ----------
    samples : sequence of (image, labels)
        float32 (H, W) images in [0, 1] and label maps (or binary masks) of the same shape.
    size : int
        Side of the network input.
    augment : bool
        Geometric and intensity augmentation (training) or none (validation).
    seed : int
        Base seed.
    """

    def __init__(self, samples: Sequence[tuple[np.ndarray, np.ndarray]], *, size: int = 256,
                 augment: bool = True, seed: int = 0) -> None:
        self.samples = [(np.asarray(im, np.float32), np.asarray(lab).astype(np.uint8)) for im, lab in samples]
        for image, labels in self.samples:
            if image.shape != labels.shape or image.ndim != 2:
                raise CervkitInputError(f"image {image.shape} and mask {labels.shape} must be 2D and equal")
        if not self.samples:
            raise CervkitInputError("no images to train on")
        self.size = int(size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        self._geometric = paper_pipeline() if self.augment else None
        self._intensity = intensity_pipeline() if self.augment else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the following items use.

        Parameters
        ----------
        epoch : int
            The epoch number (0-based).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` as NumPy: normalised image and binary target, both float32 (S, S).

        Parameters
        ----------
        index : int
            The item's position.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            The image and the target.
        """
        image, labels = self.samples[index]
        target = labels > 0
        if self._geometric is not None and self._intensity is not None:
            seed = item_seed(self.seed, self.epoch, index)
            out = augment_sample(image, labels, transform=self._geometric, seed=seed)
            image, target = out.image, out.labels > 0
            seed_transform(self._intensity, seed ^ 0x5EED)
            image = np.asarray(self._intensity(image=np.clip(image, 0.0, 1.0))["image"], np.float32)
            image = image.reshape(target.shape)
        side = (self.size, self.size)
        return prepare_image(image, self.size), resize(target, side, nearest=True).astype(np.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.arrays(index)
        return torch.from_numpy(image[None].copy()), torch.from_numpy(target[None].copy())


QUICK_EPOCHS = 2
QUICK_SIZE = 128
CPU_MAX_MINUTES = 15.0
"""The whole-image baselines' default cap on a CPU (``max_minutes="auto"``); on CUDA the default is no cap."""
HISTORY_COLUMNS = ("epoch", "train_loss", "val_iou", "val_dice", "lr", "seconds")


@dataclass
class WholeImageRun:
    """What :func:`train_whole_image` wrote.

    Attributes
    ----------
    run_dir : pathlib.Path
        ``<run_dir>/model``.
    model_path, config_json, history_csv, curves_png : pathlib.Path
        The files written.
    epochs_run, best_epoch : int
        Epochs trained and the 1-based epoch whose weights were kept.
    val_iou, val_dice : float
        Mean per-image validation IoU / Dice of the kept weights.
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


def load_pairs(manifest: Any, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode the (image, mask) pairs of one split of a manifest.

    Parameters
    ----------
    manifest : Manifest or path
        With a ``split`` column.
    split : str
        ``train``, ``val`` or ``test``.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        float32 images in [0, 1] and uint8 masks.
    """
    from cervkit.data.manifest import load_manifest
    from cervkit.io.images import read_image, read_mask

    m = load_manifest(manifest, check_files=False) if isinstance(manifest, (str, PathLike)) else manifest
    if "split" not in m.df.columns:
        raise CervkitInputError("the manifest has no split column: use cervkit.data.manifest.ensure_split first",
                                getattr(m, "path", None))
    part = m.subset(split=split)
    if len(part) == 0:
        raise CervkitInputError(f"the manifest has no {split!r} rows", getattr(m, "path", None))
    pairs = []
    for row in part.rows():
        if row.mask is None:
            raise CervkitInputError("row has no mask to train on", row.image)
        pairs.append((read_image(row.image).array, read_mask(row.mask)))
    return pairs


def recalibrate_batchnorm(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> int:
    """Replace every BatchNorm layer's running statistics by their average over ``loader`` ("precise BN").

    Parameters
    ----------
    model : torch.nn.Module
        The network (left in eval mode).
    loader : DataLoader
        Yields (images, targets) batches; only the images are used (no gradients).
    device : torch.device
        Where the model is.

    Returns
    -------
    int
        Number of BatchNorm layers recalibrated.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for images, _ in loader:
            model(images.to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.eval()
    return len(layers)


def _evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean per-image IoU and Dice of the top output over a loader."""
    model.eval()
    ious, dices = [], []
    with torch.inference_mode():
        for images, targets in loader:
            iou, dice = overlap_scores(model(images.to(device)).float().cpu(), targets)
            ious.append(iou)
            dices.append(dice)
    return float(torch.cat(ious).mean()), float(torch.cat(dices).mean())


def train_whole_image(manifest: Any, run_dir: str | PathLike[str], *, model: str = "unet3plus",
                      encoder_name: str = "mobilenet_v2", size: int = 256, alpha: float = 0.5, epochs: int = 100,
                      patience: int = 15, batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 1e-4,
                      seed: int = 0, device: str | None = None, quick: bool | None = None, num_workers: int = 0,
                      encoder_weights: str | PathLike[str] | None = None,
                      model_options: dict[str, Any] | None = None, max_minutes: MaxMinutes = AUTO,
                      cpu_max_minutes: float | None = CPU_MAX_MINUTES,
                      init_checkpoint: str | PathLike[str] | None = None, amp: bool | None = None,
                      overwrite: bool = False) -> WholeImageRun:
    """Train a whole-image segmenter on ``train``, early-stopping on ``val`` IoU.

    Parameters
    ----------
    manifest : Manifest or path
        Manifest with a ``split`` column (:func:`cervkit.data.manifest.ensure_split`).
    run_dir : str or PathLike
        The run folder; this writes ``run_dir/model/``.
    model : {"unet3plus", "deeplabv3plus"}
        Architecture.
    encoder_name : str
        smp encoder.
    size : int
        Side of the square network input (images are plainly resized to it).
    alpha : float
        BCE weight of the loss (``1 − alpha`` for Dice).
    epochs, patience : int
        Maximum epochs; stop after ``patience`` epochs without a better validation IoU.
    batch_size, lr, weight_decay : float
        AdamW settings (cosine schedule over ``epochs``).
    seed : int
        Seeds torch, NumPy, Python and the augmentations.
    device : str, optional
        Default CUDA when available, else CPU.
    amp : bool, optional
        Mixed precision (:mod:`cervkit.training.mixed_precision`): default on for CUDA, off for CPU.
    quick : bool, optional
        Quick mode (default :func:`cervkit.core.config.quick_mode`): at most 2 epochs, size at most 128.
    num_workers : int
        DataLoader workers.
    encoder_weights : str or PathLike, optional
        Local or cached encoder weights (never downloaded); default from scratch.
    model_options : dict, optional
        Extra model keywords (default :data:`DEFAULT_MODEL_OPTIONS`).
    max_minutes : float, "auto" or None
        Stop after the epoch that exceeds this wall time in minutes (best weights kept); None: no cap.
        ``"auto"`` (default): ``cpu_max_minutes`` on a CPU, no cap on CUDA. The limits in force are printed at
        the start and recorded in ``config.json`` (``limits``: ``max_minutes``, ``stop_reason``, ``epochs_run``).
    cpu_max_minutes : float, optional
        The cap ``"auto"`` means on a CPU (default :data:`CPU_MAX_MINUTES`; fine-tuning passes its own).
    init_checkpoint : str or PathLike, optional
        Fine-tune: start from this ``model.pt`` (same architecture, checked; see :mod:`cervkit.training.finetune`);
        ``config.json`` records ``init.state_sha256`` of the weights the first epoch starts from.
    overwrite : bool
        Replace an existing ``run_dir/model``; otherwise FileExistsError.

    Returns
    -------
    WholeImageRun
        Paths and summary.
    """
    from cervkit.core.config import quick_mode
    from cervkit.models.factory import build_segmentation_model, save_checkpoint
    from cervkit.models.losses import deep_supervision_loss
    from cervkit.runs.folder import versions

    if model not in WHOLE_IMAGE_MODELS:
        raise CervkitInputError(f"whole-image model must be one of {WHOLE_IMAGE_MODELS}, got {model!r}")
    quick = quick_mode() if quick is None else bool(quick)
    if quick:
        epochs, size = min(epochs, QUICK_EPOCHS), min(size, QUICK_SIZE)
    out = Path(run_dir).resolve() / STAGE_DIR
    for name in (MODEL_FILE, "config.json", "history.csv", "curves.png"):
        check_writable(out / name, overwrite)
    arguments = {"manifest": str(getattr(manifest, "path", manifest)), "run_dir": str(run_dir), "model": model,
                 "encoder_name": encoder_name, "size": size, "alpha": alpha, "epochs": epochs,
                 "patience": patience, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                 "seed": seed, "quick": quick, "num_workers": num_workers, "max_minutes": max_minutes,
                 "cpu_max_minutes": cpu_max_minutes,
                 "encoder_weights": None if encoder_weights is None else str(encoder_weights),
                 "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint), "amp": amp}
    dev = resolve_device(device)
    cap, cap_source = resolve_max_minutes(max_minutes, cpu_max_minutes, dev)
    announce_limits(model, epochs, patience, cap, cap_source)
    seed_everything(seed)
    train_ds = WholeImageDataset(load_pairs(manifest, "train"), size=size, augment=True, seed=seed)
    val_ds = WholeImageDataset(load_pairs(manifest, "val"), size=size, augment=False, seed=seed)
    calib_loader = DataLoader(WholeImageDataset(train_ds.samples, size=size, augment=False), batch_size=batch_size,
                              num_workers=num_workers)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              generator=generator, drop_last=len(train_ds) > batch_size)
    val_loader = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)

    options = dict(DEFAULT_MODEL_OPTIONS[model]) | dict(model_options or {})
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
    bar = tqdm(range(1, epochs + 1), desc=model, disable=None)
    for epoch in bar:
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        net.train()
        total, count = 0.0, 0
        for images, targets in train_loader:
            images, targets = images.to(dev), targets.to(dev)
            loss = precision.step(net, images, targets, loss_fn, optimizer)
            total += loss * len(images)
            count += len(images)
        current_lr = optimizer.param_groups[0]["lr"]
        precision.step_scheduler(scheduler)
        recalibrate_batchnorm(net, calib_loader, dev)
        val_iou, val_dice = _evaluate(net, val_loader, dev)
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
    curves = plot_history(history, out / "curves.png", loss_title=f"{model}: training loss (BCE+Dice)",
                          val_title="validation images")
    ckpt_config = {"size": int(size), "normalisation": NORMALISATION, "model": model, "kind": "whole-image",
                   "best_epoch": int(best["epoch"]), "val_iou": float(best["iou"]), "val_dice": float(best["dice"])}
    model_path = save_checkpoint(out / MODEL_FILE, net.cpu(), ckpt_config, overwrite=True)
    data = {"train": {"images": len(train_ds)}, "val": {"images": len(val_ds)}}
    limits_json = limits_record(epochs, patience, cap, cap_source, limits.stop_reason, len(rows))
    config = {"arguments": arguments, "model_options": options, "init": init, "device": str(dev),
              "amp": precision.summary(), "limits": limits_json,
              "normalisation": NORMALISATION, "resize": "plain (no letterbox)", "versions": versions(),
              "data": data, "result": {"epochs_run": len(rows), "best_epoch": int(best["epoch"]),
                                       "val_iou": float(best["iou"]), "val_dice": float(best["dice"]),
                                       "seconds": round(seconds, 2)}}
    config_json = atomic_write_bytes(out / "config.json", json.dumps(config, indent=2, default=str).encode(),
                                     overwrite=True)
    return WholeImageRun(out, model_path, config_json, history_csv, curves, len(rows), int(best["epoch"]),
                         float(best["iou"]), float(best["dice"]), seconds, limits.stop_reason, cap)
