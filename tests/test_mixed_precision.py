"""Mixed precision: the float16 autocast + GradScaler path the trainers take on CUDA, and CPU's bfloat16.

PyTorch supports float16 autocast and GradScaler on CPU, so these tests exercise the same code the CUDA
path runs (autocast, scaled backward, unscale, inf check, skipped step, scale update) with an explicit
``dtype=torch.float16``. None of them depends on how many float16 steps a given CPU overflows: overflows are
forced (a loss × 1e35 is inf in float32 whatever the CPU), and the trainers' own AMP runs on CPU take
bfloat16, which has float32's range and no loss scaling. Only the CUDA kernels themselves need a GPU.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cervkit.training.mixed_precision import MixedPrecision, amp_dtype, resolve_amp


class TwoHeads(nn.Module):
    """A tiny deep-supervision network: a list of two logit maps, like U-Net3+ in training."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)
        self.side = nn.Conv2d(4, 1, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.relu(self.body(x))
        self.seen.append(h.dtype)
        return [self.head(h), self.side(h)]


def _bce(outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    assert all(o.dtype == torch.float32 for o in outputs)  # the loss always sees float32
    return sum(nn.functional.binary_cross_entropy_with_logits(o, targets) for o in outputs) / len(outputs)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4, 1, 16, 16, generator=g)
    return images, (images > 0.3).float()


def test_resolve_amp_defaults_to_cuda_only() -> None:
    assert resolve_amp(None, "cuda") is True and resolve_amp(None, torch.device("cuda:0")) is True
    assert resolve_amp(None, "cpu") is False
    assert resolve_amp(True, "cpu") is True and resolve_amp(False, "cuda") is False


def test_autocast_dtype_follows_the_device() -> None:
    assert amp_dtype("cuda") is torch.float16 and amp_dtype(torch.device("cuda:0")) is torch.float16
    assert amp_dtype("cpu") is torch.bfloat16
    cpu, cuda_recipe = MixedPrecision("cpu", True), MixedPrecision("cpu", True, dtype=torch.float16)
    assert cpu.dtype is torch.bfloat16 and not cpu.scaled and not cpu.scaler.is_enabled()
    assert cuda_recipe.scaled and cuda_recipe.scaler.is_enabled()
    assert not MixedPrecision("cpu", False, dtype=torch.float16).scaled
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        MixedPrecision("cpu", True, dtype=torch.float64)


def test_amp_step_runs_float16_and_matches_the_float32_step() -> None:
    images, targets = _batch()
    net_amp, net_fp32 = TwoHeads(), TwoHeads()
    opt_amp = torch.optim.SGD(net_amp.parameters(), lr=0.1)
    opt_fp32 = torch.optim.SGD(net_fp32.parameters(), lr=0.1)
    amp, fp32 = MixedPrecision("cpu", True, dtype=torch.float16), MixedPrecision("cpu", False)
    loss_amp = amp.step(net_amp, images, targets, _bce, opt_amp)
    loss_fp32 = fp32.step(net_fp32, images, targets, _bce, opt_fp32)
    assert net_amp.seen == [torch.float16] and net_fp32.seen == [torch.float32]
    assert loss_amp == pytest.approx(loss_fp32, rel=1e-2)
    # gradients were unscaled before the step: with SGD a forgotten unscale would move weights 65536× further
    if amp.skipped_steps:  # this CPU's float16 overflowed at scale 2**16: step again at the halved scale
        amp.step(net_amp, images, targets, _bce, opt_amp)
        assert amp.skipped_steps == 1, "float16 overflowed at scale 2**15 too"
    for p, q, p0 in zip(net_amp.parameters(), net_fp32.parameters(), TwoHeads().parameters()):
        step_amp, step_fp32 = (p - p0).detach(), (q - p0).detach()
        assert float(step_fp32.abs().max()) > 0
        torch.testing.assert_close(step_amp, step_fp32, rtol=0.05, atol=2e-3)
    summary = amp.summary()
    assert summary["enabled"] is True and summary["dtype"] == "float16" and summary["loss_scaling"] is True
    assert summary["steps"] == 1 and summary["final_scale"] in (65536.0, 32768.0)  # the step taken or skipped
    assert summary["skipped_steps"] == (summary["final_scale"] == 32768.0)
    assert fp32.summary() == {"enabled": False, "dtype": "float32", "loss_scaling": False, "steps": 1,
                              "skipped_steps": 0, "final_scale": None}


def test_disabled_amp_is_exactly_the_plain_float32_step() -> None:
    images, targets = _batch()
    net, plain = TwoHeads(), TwoHeads()
    opt, opt_plain = (torch.optim.AdamW(n.parameters(), lr=1e-2) for n in (net, plain))
    precision = MixedPrecision("cpu", False)
    for _ in range(3):
        precision.step(net, images, targets, _bce, opt)
        opt_plain.zero_grad()
        _bce(plain(images), targets).backward()
        opt_plain.step()
    for p, q in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_overflow_skips_the_step_and_halves_the_scale() -> None:
    images, targets = _batch()
    net = TwoHeads()
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    precision = MixedPrecision("cpu", True, dtype=torch.float16)

    def huge(outputs: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        return _bce(outputs, t) * 1e35  # × 65536 overflows float32: inf gradients

    loss = precision.step(net, images, targets, huge, opt)
    assert np.isfinite(loss)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)  # the step was skipped
    assert precision.skipped_steps == 1 and precision.summary()["final_scale"] == 32768.0
    precision.step(net, images, targets, huge, opt)  # a second overflow halves it again
    assert precision.skipped_steps == 2 and precision.summary()["final_scale"] == 16384.0
    assert precision.steps == 2
    with pytest.warns(RuntimeWarning, match="skipped 2 of 2 optimizer steps.*amp=False"):
        precision.warn_if_unstable()


def test_a_clean_float16_step_moves_the_weights() -> None:
    """A loss that cannot overflow at a small initial scale: the scaled step is taken on any CPU."""
    images, targets = _batch()
    net = TwoHeads()
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    precision = MixedPrecision("cpu", True, dtype=torch.float16)
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)  # BCE gradients are < 1: no overflow at 1
    precision.step(net, images, targets, _bce, opt)
    assert precision.skipped_steps == 0 and precision.summary()["final_scale"] == 1.0
    assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.warn_if_unstable()  # nothing skipped: no warning


def test_scheduler_after_a_skipped_first_step_does_not_warn() -> None:
    images, targets = _batch()
    net = TwoHeads()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    precision = MixedPrecision("cpu", True, dtype=torch.float16)
    precision.step(net, images, targets, lambda o, t: _bce(o, t) * 1e35, opt)
    assert precision.skipped_steps == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.step_scheduler(scheduler)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_cpu_bfloat16_amp_reduces_the_loss_over_steps() -> None:
    """CPU's AMP (bfloat16, no scaler) cannot overflow, so training under it is checked on any CPU."""
    images, targets = _batch()
    net = TwoHeads()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-2)
    precision = MixedPrecision("cpu", True)
    losses = [precision.step(net, images, targets, _bce, opt) for _ in range(30)]
    assert net.seen[0] == torch.bfloat16
    assert losses[-1] < 0.7 * losses[0] and precision.skipped_steps == 0
    assert precision.summary() == {"enabled": True, "dtype": "bfloat16", "loss_scaling": False, "steps": 30,
                                   "skipped_steps": 0, "final_scale": None}


def test_segmenter_and_whole_image_training_with_amp(tmp_path: Path, one_thread) -> None:
    """Both trainers take the AMP path when asked (the CUDA default), record it and save usable models.

    On CPU that path autocasts to bfloat16 (no loss scaling), so no step can overflow and the outcome does not
    depend on the processor; every warning is an error (no scheduler-order or "most steps skipped" warning).
    """
    from cervkit.data.manifest import ensure_split
    from cervkit.data.synth.dataset import write_phantom_dataset
    from cervkit.data.synth.phantom import make_phantom
    from cervkit.inference.segmenter import Segmenter
    from cervkit.inference.whole_image import WholeImageModel
    from cervkit.training.segmenter import train_segmenter
    from cervkit.training.whole_image import train_whole_image

    data = write_phantom_dataset(tmp_path / "ph", 8, style="mri", size=(96, 96), n_patients=8)
    split = ensure_split(data / "manifest.csv" if data.is_dir() else data, tmp_path / "split.csv",
                         ratios=(0.5, 0.25, 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scheduler-order warning even when the first AMP step overflows
        train_segmenter(split, tmp_path / "crop", epochs=2, crop_size=32, batch_size=4, cat_channels=8,
                        quick=False, device="cpu", amp=True)
        train_whole_image(split, tmp_path / "whole", size=64, epochs=3, batch_size=2, quick=False,
                          device="cpu", amp=True)
    phantom = make_phantom("mri", seed=11, size=(96, 96))
    for stage, loader in (("crop/segmenter", Segmenter), ("whole/model", WholeImageModel)):
        config = json.loads((tmp_path / stage / "config.json").read_text())
        assert config["arguments"]["amp"] is True
        amp = config["amp"]
        assert amp == {"enabled": True, "dtype": "bfloat16", "loss_scaling": False, "steps": amp["steps"],
                       "skipped_steps": 0, "final_scale": None} and amp["steps"] >= 2
        model = loader.load(tmp_path / stage.split("/")[0], device="cpu")
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.model.parameters())
    probs = Segmenter.load(tmp_path / "crop", device="cpu").predict_crops(phantom.image, np.array([[30, 30, 60, 50]]))
    assert np.isfinite(probs[0].prob).all()
