"""U-Net3+ (Huang et al. 2020) on a segmentation-models-pytorch encoder.

Scales. An smp encoder of depth ``d`` (default 5) gives feature maps ``E0 … E(d-1)`` at strides
``2, 4, …, 2**d``. The decoder builds ``D(d-2) … D0`` (``D(d-1) = E(d-1)``, the deepest encoder map). Each
decoder stage ``Di`` concatenates **full-scale skips**, one branch per scale, each a 3×3 conv
(``cat_channels``) + BN + ReLU:

* shallower encoder maps ``Ej`` (``j < i``), max-pooled by ``2**(i-j)``;
* the same-scale encoder map ``Ei``;
* deeper decoder maps ``Dj`` (``j > i``, ``D(d-1) = E(d-1)``), bilinearly upsampled by ``2**(j-i)``;

then fuses the ``d`` branches with a 3×3 conv to ``d · cat_channels`` + BN + ReLU.

Outputs. Each ``Di`` (and ``E(d-1)``) has a side head (3×3 conv → ``classes``) whose logits are bilinearly
upsampled to the input size. ``D0`` sits at stride 2, so the top output is upsampled ×2 (the paper's
encoder starts at stride 1; smp encoders start at stride 2, which keeps 384×384 inputs affordable on CPU).

* ``model.train()``: ``forward`` returns the list of side outputs, top first
  ``[D0, D1, …, D(d-2), E(d-1)]`` (one element when ``deep_supervision=False``), and, when ``cgm=True``, the
  tuple ``(side_outputs, cls_logit)`` with ``cls_logit`` of shape (N, 1) for a BCE term against "mask
  non-empty" (see :func:`cervkit.models.losses.deep_supervision_loss`).
* ``model.eval()``: ``forward`` returns only the top logits (N, classes, H, W). With the classification-guided
  module (CGM: dropout + 1×1 conv + adaptive max pool + sigmoid on ``E(d-1)``), outputs of samples whose
  organ probability is below 0.5 are gated off, the paper's "multiply by the argmax": on logits this means
  a large negative logit (all background).

Any input size works: ``forward`` pads (zeros, split evenly on both sides) to a multiple of ``2**d`` and crops
the outputs back, so outputs always have the input's height and width.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cervkit.core.errors import CervkitInputError
from cervkit.models.encoders import EncoderWeights, build_encoder

GATED_LOGIT = 1.0e4
"""Magnitude of the logit given to pixels of samples the CGM gates off (fits float16)."""

BranchKind = Literal["pool", "same", "up"]


class ConvBNReLU(nn.Sequential):
    """3×3 (or ``kernel``) convolution without bias, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class FullScaleBranch(nn.Module):
    """One input of a decoder stage: resample a map to the stage's scale, then conv + BN + ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the source map and of the branch output (``cat_channels``).
    kind : {"pool", "same", "up"}
        Max-pool a shallower map, take the same-scale map, or bilinearly upsample a deeper one.
    factor : int
        The resampling factor (1 for ``"same"``).
    source : int
        Level of the source map (kept for introspection and tests).
    conv_first : bool
        For ``"up"`` branches: convolve at the source's coarser scale, then upsample (cheaper; the paper
        upsamples first). Ignored for other kinds.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: BranchKind, factor: int, source: int,
                 conv_first: bool = False) -> None:
        super().__init__()
        self.kind: BranchKind = kind
        self.factor = factor
        self.source = source
        self.conv_first = conv_first and kind == "up"
        self.conv = ConvBNReLU(in_channels, out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resample ``x`` to ``size`` (pool or upsample) and convolve it.

        Parameters
        ----------
        x : torch.Tensor
            The source map (N, in_channels, h, w).
        size : (int, int)
            The stage's (H, W), the target of ``"up"`` branches.

        Returns
        -------
        torch.Tensor
            (N, out_channels, H, W).
        """
        if self.kind == "pool":
            return self.conv(F.max_pool2d(x, kernel_size=self.factor, stride=self.factor, ceil_mode=True))
        if self.kind == "up":
            if self.conv_first:
                return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.conv(x)


class UNet3PlusStage(nn.Module):
    """Decoder stage ``Di``: one :class:`FullScaleBranch` per scale, concatenated and fused.

    Parameters
    ----------
    level : int
        This stage's level ``i`` (stride ``2**(i+1)``).
    encoder_channels : list of int
        Channels of ``E0 … E(d-1)``.
    cat_channels : int
        Channels of every branch; the fused output has ``d · cat_channels``.
    fast_upsample : bool
        Convolve deeper maps before upsampling them (see :class:`FullScaleBranch`).
    """

    def __init__(self, level: int, encoder_channels: list[int], cat_channels: int,
                 fast_upsample: bool = False) -> None:
        super().__init__()
        n_levels = len(encoder_channels)
        fused = n_levels * cat_channels
        self.level = level
        branches = []
        for j in range(n_levels):
            if j < level:
                branches.append(FullScaleBranch(encoder_channels[j], cat_channels, "pool", 2 ** (level - j), j))
            elif j == level:
                branches.append(FullScaleBranch(encoder_channels[j], cat_channels, "same", 1, j))
            else:
                source_channels = encoder_channels[j] if j == n_levels - 1 else fused
                branches.append(FullScaleBranch(source_channels, cat_channels, "up", 2 ** (j - level), j,
                                                conv_first=fast_upsample))
        self.branches = nn.ModuleList(branches)
        self.fuse = ConvBNReLU(fused, fused)

    def forward(self, encoder_maps: list[torch.Tensor], decoder_maps: list[torch.Tensor | None]) -> torch.Tensor:
        """Fuse all scales into ``Di`` (encoder maps for levels ≤ i, decoder maps for deeper levels).

        Parameters
        ----------
        encoder_maps : list of torch.Tensor
            ``E0 … E(d-1)``.
        decoder_maps : list of torch.Tensor or None
            Decoder maps by level; every level deeper than this stage must be filled (the deepest is ``E(d-1)``).

        Returns
        -------
        torch.Tensor
            ``Di``, (N, d · cat_channels, H_i, W_i).
        """
        size = (int(encoder_maps[self.level].shape[-2]), int(encoder_maps[self.level].shape[-1]))
        parts = []
        for branch in self.branches:
            j = branch.source
            source = encoder_maps[j] if j <= self.level else decoder_maps[j]
            assert source is not None, "deeper decoder stages must run first"
            parts.append(branch(source, size))
        return self.fuse(torch.cat(parts, dim=1))


class UNet3Plus(nn.Module):
    """U-Net3+ with full-scale skips, deep supervision and an optional classification-guided module.

    Parameters
    ----------
    encoder_name : str
        smp encoder (``"resnet18"``, ``"mobilenet_v2"``, ``"efficientnet-b0"`` …).
    encoder_weights : str, PathLike or None
        None (scratch), a local state-dict file, or an smp pretrained set name already in the local cache;
        see :func:`cervkit.models.encoders.build_encoder`. Never downloads.
    in_channels : int
        Input channels (1 for grey images).
    classes : int
        Output channels (logits; 1 for a binary vertebral-body mask).
    cat_channels : int
        Channels of each full-scale branch (the paper uses 64; 32 or 16 are faster on CPU).
    deep_supervision : bool
        Return every side output in training mode (else only the top one, in a 1-element list).
    cgm : bool
        Add the classification-guided module (organ-present logit; gates outputs at inference).
    encoder_depth : int
        Encoder stages, 3 to 5; inputs are padded to a multiple of ``2**encoder_depth``.
    fast_upsample : bool
        Convolve each deeper decoder map at its own scale and upsample the ``cat_channels`` result, instead
        of upsampling first as in the paper: the same full-scale structure with far fewer FLOPs on CPU.
    """

    def __init__(self, encoder_name: str = "resnet18", encoder_weights: EncoderWeights = None,
                 in_channels: int = 1, classes: int = 1, cat_channels: int = 32,
                 deep_supervision: bool = True, cgm: bool = False, encoder_depth: int = 5,
                 fast_upsample: bool = False) -> None:
        super().__init__()
        if not 3 <= encoder_depth <= 5:
            raise ValueError(f"encoder_depth must be 3, 4 or 5, got {encoder_depth}")
        if cat_channels < 1 or classes < 1 or in_channels < 1:
            raise ValueError("cat_channels, classes and in_channels must be positive")
        self.encoder_name = encoder_name
        self.in_channels = in_channels
        self.classes = classes
        self.cat_channels = cat_channels
        self.deep_supervision = deep_supervision
        self.use_cgm = cgm
        self.encoder_depth = encoder_depth
        self.fast_upsample = fast_upsample
        self.size_multiple = 2 ** encoder_depth
        self.encoder = build_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth,
                                     weights=encoder_weights)
        encoder_channels = [int(c) for c in self.encoder.out_channels[1:]]
        n_levels = len(encoder_channels)
        fused = n_levels * cat_channels
        # stages[k] builds level n_levels - 2 - k (deepest first, the order forward runs them)
        self.stages = nn.ModuleList(
            UNet3PlusStage(level, encoder_channels, cat_channels, fast_upsample) for level in range(n_levels - 2, -1, -1))
        head_channels = [fused] * (n_levels - 1) + [encoder_channels[-1]]
        self.heads = nn.ModuleList(nn.Conv2d(c, classes, 3, padding=1) for c in head_channels)
        self.cgm: nn.Module | None = None
        if cgm:
            self.cgm = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(encoder_channels[-1], 1, 1),
                                     nn.AdaptiveMaxPool2d(1), nn.Flatten())

    @property
    def build_config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (weights excluded), with ``name``."""
        return {"name": "unet3plus", "encoder_name": self.encoder_name, "in_channels": self.in_channels,
                "classes": self.classes, "cat_channels": self.cat_channels,
                "deep_supervision": self.deep_supervision, "cgm": self.use_cgm,
                "encoder_depth": self.encoder_depth, "fast_upsample": self.fast_upsample}

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for tensors that are not (N, in_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise CervkitInputError(
                f"UNet3Plus expects a tensor of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> Any:
        """Segment a batch.

        Parameters
        ----------
        x : torch.Tensor
            (N, in_channels, H, W), any H and W.

        Returns
        -------
        torch.Tensor or list of torch.Tensor or tuple
            Eval mode: top logits (N, classes, H, W). Training mode: list of side-output logits, each
            (N, classes, H, W), top first; with ``cgm`` the tuple ``(side_outputs, cls_logit (N, 1))``.
        """
        self._check_input(x)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        padded, (top, left) = pad_to_multiple(x, self.size_multiple)
        encoder_maps = list(self.encoder(padded))[1:]
        n_levels = len(encoder_maps)
        decoder_maps: list[torch.Tensor | None] = [None] * n_levels
        decoder_maps[-1] = encoder_maps[-1]
        for stage in self.stages:
            decoder_maps[stage.level] = stage(encoder_maps, decoder_maps)
        cls_logit = self.cgm(encoder_maps[-1]) if self.cgm is not None else None
        full_size = (int(padded.shape[-2]), int(padded.shape[-1]))
        n_out = n_levels if (self.training and self.deep_supervision) else 1
        outputs = []
        for level in range(n_out):
            source = decoder_maps[level]
            assert source is not None
            logits = F.interpolate(self.heads[level](source), size=full_size, mode="bilinear",
                                   align_corners=False)
            outputs.append(logits[..., top:top + height, left:left + width])
        if self.training:
            return (outputs, cls_logit) if cls_logit is not None else outputs
        result = outputs[0]
        if cls_logit is not None:
            result = gate_logits(result, torch.sigmoid(cls_logit) >= 0.5)
        return result


def gate_logits(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Turn the logits of samples without the organ into confident background.

    Parameters
    ----------
    logits : torch.Tensor
        (N, C, H, W) segmentation logits.
    present : torch.Tensor
        (N, 1) or (N,) booleans from the CGM.

    Returns
    -------
    torch.Tensor
        ``logits`` where present; elsewhere ``-GATED_LOGIT`` (for C = 1), or background channel 0 at
        ``+GATED_LOGIT`` and the others at ``-GATED_LOGIT`` (C > 1).
    """
    keep = present.reshape(-1, 1, 1, 1).to(torch.bool)
    background = torch.full_like(logits, -GATED_LOGIT)
    if logits.shape[1] > 1:
        background[:, 0] = GATED_LOGIT
    return torch.where(keep, logits, background)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the last two dimensions up to a multiple, splitting the padding evenly.

    Parameters
    ----------
    x : torch.Tensor
        (..., H, W).
    multiple : int
        Target multiple (e.g. 32).

    Returns
    -------
    padded : torch.Tensor
        (..., H', W') with H' and W' the next multiples (unchanged when already multiples).
    offset : tuple of int
        (top, left) padding, to crop outputs back with ``y[..., top:top+H, left:left+W]``.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    extra_h = (-height) % multiple
    extra_w = (-width) % multiple
    if extra_h == 0 and extra_w == 0:
        return x, (0, 0)
    top, left = extra_h // 2, extra_w // 2
    padded = F.pad(x, (left, extra_w - left, top, extra_h - top))
    return padded, (top, left)
