"""Tests of cervkit.models: U-Net3+ structure and outputs, losses, factory, checkpoints, offline weights."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cervkit.core.errors import CervkitInputError
from cervkit.models.encoders import EncoderWeightsError, build_encoder
from cervkit.models.factory import (
    build_segmentation_model,
    load_checkpoint,
    model_summary,
    save_checkpoint,
)
from cervkit.models.losses import bce_dice_loss, deep_supervision_loss, dice_loss
from cervkit.models.unet3plus import FullScaleBranch, UNet3Plus, pad_to_multiple

SIZES = [(128, 128), (130, 130), (96, 160), (381, 381)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> object:
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes 2 threads several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def small_cgm_model() -> UNet3Plus:
    torch.manual_seed(0)
    return UNet3Plus("resnet18", cat_channels=8, cgm=True)


@pytest.mark.parametrize("size", SIZES)
def test_output_shapes_train_and_eval(small_cgm_model: UNet3Plus, size: tuple[int, int]) -> None:
    model = small_cgm_model
    batch = 2 if size[0] < 200 else 1
    x = torch.rand(batch, 1, *size)
    model.train()
    side_outputs, cls_logit = model(x)
    assert len(side_outputs) == 5  # 4 decoder stages + deepest encoder stage
    assert all(tuple(o.shape) == (batch, 1, *size) for o in side_outputs)
    assert tuple(cls_logit.shape) == (batch, 1)
    model.eval()
    with torch.no_grad():
        top = model(x)
    assert isinstance(top, torch.Tensor) and tuple(top.shape) == (batch, 1, *size)


def test_output_variants_without_cgm_or_deep_supervision() -> None:
    x = torch.rand(1, 1, 70, 90)
    plain = UNet3Plus("resnet18", cat_channels=4, classes=2).train()
    outs = plain(x)
    assert isinstance(outs, list) and len(outs) == 5 and tuple(outs[0].shape) == (1, 2, 70, 90)
    single = UNet3Plus("resnet18", cat_channels=4, deep_supervision=False).train()
    outs = single(x)
    assert isinstance(outs, list) and len(outs) == 1 and tuple(outs[0].shape) == (1, 1, 70, 90)
    shallow = UNet3Plus("resnet18", cat_channels=4, encoder_depth=4).train()
    outs = shallow(x)
    assert shallow.size_multiple == 16 and len(outs) == 4
    assert all(tuple(o.shape) == (1, 1, 70, 90) for o in outs)
    with pytest.raises(CervkitInputError, match="expects a tensor"):
        plain(torch.rand(1, 3, 64, 64))


def test_padding_is_centered_and_cropped_back() -> None:
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7) + 1
    padded, (top, left) = pad_to_multiple(x, 4)
    assert tuple(padded.shape) == (1, 1, 8, 8) and (top, left) == (1, 0)
    assert torch.equal(padded[..., top:top + 5, left:left + 7], x)
    assert padded.sum() == x.sum()  # zero padding only
    same, offset = pad_to_multiple(torch.zeros(1, 1, 32, 64), 32)
    assert tuple(same.shape) == (1, 1, 32, 64) and offset == (0, 0)


def test_outputs_stay_aligned_with_odd_inputs(small_cgm_model: UNet3Plus) -> None:
    # a 130x100 input is zero-padded to 160x128 inside forward: its output must equal the centre crop of the
    # output for that padded image given directly (padding 15 rows and 14 columns on each side)
    model = small_cgm_model.eval()
    model.cgm, cgm = None, model.cgm
    try:
        x = torch.rand(1, 1, 130, 100)
        with torch.no_grad():
            direct = model(x)
            padded = model(F.pad(x, (14, 14, 15, 15)))
    finally:
        model.cgm = cgm
    torch.testing.assert_close(direct, padded[..., 15:145, 14:114])


def test_full_scale_skips_take_all_five_scales(small_cgm_model: UNet3Plus) -> None:
    model = small_cgm_model.eval()
    assert [stage.level for stage in model.stages] == [3, 2, 1, 0]
    for stage in model.stages:
        i = stage.level
        assert len(stage.branches) == 5
        assert [b.source for b in stage.branches] == [0, 1, 2, 3, 4]
        for b in stage.branches:
            j = b.source
            expected = ("pool", 2 ** (i - j)) if j < i else ("same", 1) if j == i else ("up", 2 ** (j - i))
            assert (b.kind, b.factor) == expected
        assert stage.fuse[0].in_channels == stage.fuse[0].out_channels == 5 * model.cat_channels
    # run it: every branch of every stage sees its source scale and emits the stage's scale
    seen: list[tuple[int, int, int, int]] = []

    def hook(module: FullScaleBranch, inputs: tuple, output: torch.Tensor) -> None:
        seen.append((module.source, inputs[0].shape[-1], output.shape[-1], output.shape[1]))

    handles = [b.register_forward_hook(hook) for s in model.stages for b in s.branches]
    try:
        with torch.no_grad():
            model(torch.rand(1, 1, 256, 256))
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 4 * 5
    for k, stage in enumerate(model.stages):
        for source, in_width, out_width, channels in seen[5 * k:5 * k + 5]:
            assert in_width == 256 // 2 ** (source + 1)  # the source map's own scale
            assert out_width == 256 // 2 ** (stage.level + 1)  # resampled to the stage's scale
            assert channels == model.cat_channels


def test_fast_upsample_keeps_structure_and_shapes() -> None:
    model = UNet3Plus("resnet18", cat_channels=4, fast_upsample=True).train()
    ups = [b for s in model.stages for b in s.branches if b.kind == "up"]
    assert len(ups) == 4 + 3 + 2 + 1 and all(b.conv_first for b in ups)
    outs = model(torch.rand(1, 1, 100, 60))
    assert all(tuple(o.shape) == (1, 1, 100, 60) for o in outs)


def test_gradients_reach_every_side_head_and_only_their_own(small_cgm_model: UNet3Plus) -> None:
    model = small_cgm_model.train()
    side_outputs, cls_logit = model(torch.rand(2, 1, 64, 64))
    head_params = [h.weight for h in model.heads]
    for k, out in enumerate(side_outputs):
        grads = torch.autograd.grad(out.sum(), head_params, retain_graph=True, allow_unused=True)
        for j, g in enumerate(grads):
            if j == k:
                assert g is not None and g.abs().sum() > 0
            else:
                assert g is None
    loss = sum(o.mean() for o in side_outputs) + cls_logit.mean()
    model.zero_grad()
    loss.backward()
    for head in model.heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert model.cgm[1].weight.grad.abs().sum() > 0
    first_conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


def test_cgm_gates_eval_output(small_cgm_model: UNet3Plus) -> None:
    model = small_cgm_model.eval()
    x = torch.rand(2, 1, 64, 64)
    cgm, bias = model.cgm, model.cgm[1].bias
    original = bias.detach().clone()
    try:
        with torch.no_grad():
            model.cgm = None
            ungated = model(x)
            model.cgm = cgm
            bias.fill_(100.0)  # organ surely present: output untouched
            present = model(x)
            bias.fill_(-100.0)  # surely absent: everything background
            absent = model(x)
    finally:
        model.cgm = cgm
        with torch.no_grad():
            bias.copy_(original)
    assert torch.equal(present, ungated)
    assert torch.sigmoid(absent).max() < 1e-6


def _numpy_dice(probs: np.ndarray, target: np.ndarray, eps: float) -> float:
    losses = []
    for p, t in zip(probs.reshape(-1, probs.shape[-2] * probs.shape[-1]),
                    target.reshape(-1, target.shape[-2] * target.shape[-1])):
        losses.append(1 - (2 * float(np.sum(p * t)) + eps) / (float(np.sum(p) + np.sum(t)) + eps))
    return float(np.mean(losses))


def test_dice_loss_matches_independent_formula_and_limits() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 16, 16, generator=gen)
    target = (torch.rand(3, 1, 16, 16, generator=gen) > 0.6).float()
    probs = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    assert dice_loss(logits, target, eps=1.0).item() == pytest.approx(_numpy_dice(probs, target.numpy(), 1.0),
                                                                      rel=1e-5)
    perfect = 30.0 * (2 * target - 1)
    assert dice_loss(perfect, target).item() < 1e-4
    assert dice_loss(-perfect, target).item() > 0.95
    assert dice_loss(perfect, target[:, 0]).item() < 1e-4  # (N, H, W) target accepted
    with pytest.raises(ValueError, match="does not match"):
        dice_loss(logits, target[:, :, :8])


def test_bce_dice_weights() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 20, 20, generator=gen)
    target = (torch.rand(2, 1, 20, 20, generator=gen) > 0.5).float()
    bce = torch.nn.BCEWithLogitsLoss()(logits, target)
    probs = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    dice = _numpy_dice(probs, target.numpy(), 1.0)
    assert bce_dice_loss(logits, target, alpha=1.0).item() == pytest.approx(bce.item(), rel=1e-6)
    assert bce_dice_loss(logits, target, alpha=0.0).item() == pytest.approx(dice, rel=1e-5)
    assert bce_dice_loss(logits, target, alpha=0.3).item() == pytest.approx(0.3 * bce.item() + 0.7 * dice,
                                                                            rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        bce_dice_loss(logits, target, alpha=1.5)


def test_deep_supervision_loss_sums_sides_and_cls_term() -> None:
    gen = torch.Generator().manual_seed(3)
    target = torch.zeros(2, 1, 16, 16)
    target[0, 0, 4:10, 5:12] = 1.0  # sample 1 stays empty
    outs = [torch.randn(2, 1, 16, 16, generator=gen) for _ in range(3)]
    cls_logit = torch.tensor([[0.7], [-1.2]])
    parts = [bce_dice_loss(o, target, 0.4).item() for o in outs]
    assert deep_supervision_loss(outs, target, 0.4).item() == pytest.approx(np.mean(parts), rel=1e-6)
    weights = [0.5, 0.3, 0.2]
    weighted = sum(w * p for w, p in zip(weights, parts))
    assert deep_supervision_loss(outs, target, 0.4, weights).item() == pytest.approx(weighted, rel=1e-6)
    cls_bce = F.binary_cross_entropy_with_logits(cls_logit[:, 0], torch.tensor([1.0, 0.0])).item()
    total = deep_supervision_loss(outs, target, 0.4, weights, cls_logit=cls_logit).item()
    assert total == pytest.approx(weighted + cls_bce, rel=1e-6)
    assert deep_supervision_loss((outs, cls_logit), target, 0.4, weights).item() == pytest.approx(total, rel=1e-6)
    assert deep_supervision_loss(outs[0], target, 0.4).item() == pytest.approx(parts[0], rel=1e-6)
    with pytest.raises(ValueError, match="weights"):
        deep_supervision_loss(outs, target, 0.4, [1.0])


def test_tiny_overfit_on_a_disc() -> None:
    torch.manual_seed(0)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 30) ** 2 + (xx - 35) ** 2 <= 14 ** 2).astype(np.float32)
    noise = 0.05 * np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    image = torch.from_numpy(0.2 + 0.6 * disc + noise)[None, None]
    target = torch.from_numpy(disc)[None, None]
    model = UNet3Plus("resnet18", cat_channels=8, fast_upsample=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        loss = deep_supervision_loss(model(image), target, alpha=0.5)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = (model(image) > 0).float()
    dice = 2 * float((pred * target).sum()) / float(pred.sum() + target.sum())
    assert dice > 0.9


@pytest.mark.parametrize("name, kw", [("unet3plus", {"cat_channels": 8, "cgm": True}), ("deeplabv3plus", {})])
def test_checkpoint_round_trip(tmp_path: Path, name: str, kw: dict) -> None:
    torch.manual_seed(0)
    model = build_segmentation_model(name, encoder_name="resnet18", **kw)
    model.train()
    model(torch.rand(2, 1, 64, 64))  # move BN running stats away from their init
    model.eval()
    x = torch.rand(2, 1, 130, 97)
    with torch.no_grad():
        expected = model(x)
    assert tuple(expected.shape) == (2, 1, 130, 97)
    config = {"alpha": 0.5, "epochs": 3, "crop": [128, 128]}
    path = save_checkpoint(tmp_path / "run" / "segmenter.pt", model, config)
    with pytest.raises(FileExistsError):
        save_checkpoint(path, model, config)
    save_checkpoint(path, model, config, overwrite=True)
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config and not loaded.training
    assert loaded.build_config == model.build_config
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


def test_load_checkpoint_rejects_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CervkitInputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CervkitInputError, match="not a cervkit"):
        load_checkpoint(foreign)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CervkitInputError, match="junk.pt"):
        load_checkpoint(junk)


def test_factory_and_summary() -> None:
    with pytest.raises(ValueError, match="unknown segmentation model"):
        build_segmentation_model("segformer")
    small = build_segmentation_model("unet3plus", encoder_name="resnet18", cat_channels=4)
    larger = build_segmentation_model("unet3plus", encoder_name="resnet18", cat_channels=8)
    s_small, s_larger = model_summary(small), model_summary(larger)
    from segmentation_models_pytorch.encoders import get_encoder

    reference = sum(p.numel() for p in get_encoder("resnet18", in_channels=1, depth=5, weights=None).parameters())
    assert s_small["encoder_params"] == s_larger["encoder_params"] == reference
    assert s_small["params"] == s_small["encoder_params"] + s_small["decoder_params"]
    assert s_larger["decoder_params"] > s_small["decoder_params"] > 0
    assert s_small["config"]["cat_channels"] == 4 and s_small["config"]["name"] == "unet3plus"


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    import socket

    import huggingface_hub
    import huggingface_hub.file_download

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_imagenet_without_cache_raises_clear_error_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    _block_network(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(EncoderWeightsError, match="encoder_weights=None") as info:
        UNet3Plus("resnet18", encoder_weights="imagenet")
    assert "local" in str(info.value) and "download" in str(info.value)
    with pytest.raises(EncoderWeightsError, match="encoder_weights=None"):
        build_segmentation_model("deeplabv3plus", encoder_name="resnet18", encoder_weights="imagenet")
    with pytest.raises(EncoderWeightsError, match="not found"):
        UNet3Plus("resnet18", encoder_weights=tmp_path / "nothing.pth")


def test_cached_or_local_weights_are_used_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders as smp_encoders
    from segmentation_models_pytorch.encoders import get_encoder

    _block_network(monkeypatch)
    torch.manual_seed(5)
    rgb = get_encoder("resnet18", in_channels=3, depth=5, weights=None)
    rgb_state = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    settings = smp_encoders["resnet18"]["pretrained_settings"]["imagenet"]
    repo_dir = tmp_path / "hub" / ("models--" + settings["repo_id"].replace("/", "--"))
    snapshot = repo_dir / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    save_file(rgb_state, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    expected_conv1 = rgb_state["conv1.weight"].sum(dim=1, keepdim=True)  # smp's RGB -> grey rule

    cached = UNet3Plus("resnet18", encoder_weights="imagenet", cat_channels=4)
    assert torch.equal(cached.encoder.conv1.weight, expected_conv1)
    assert torch.equal(cached.encoder.layer4[1].conv2.weight, rgb_state["layer4.1.conv2.weight"])

    local = tmp_path / "resnet18_rgb.pth"
    torch.save(rgb_state, local)
    from_file = build_segmentation_model("deeplabv3plus", encoder_name="resnet18", encoder_weights=local)
    assert torch.equal(from_file.model.encoder.conv1.weight, expected_conv1)
    # a saved 1-channel model's encoder loads as it is
    grey = tmp_path / "grey_model.pt"
    torch.save(cached.state_dict(), grey)
    again = build_encoder("resnet18", in_channels=1, weights=grey)
    assert torch.equal(again.conv1.weight, expected_conv1)


def test_importing_models_package_is_cheap() -> None:
    code = "import sys, cervkit.models; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
