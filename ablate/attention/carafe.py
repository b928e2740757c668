"""CARAFE, content-aware reassembly of features (Wang et al., ICCV 2019), as the head's upsampler.

``model.head.upsample: carafe`` replaces the bilinear resize of the head's output by CARAFE
stages on the head's features, before its dropout and 1x1 classifier. From the paper:

1. **Kernel prediction.** A 1x1 conv compresses the C input channels to ``compressed`` (C_m); a
   ``k_enc`` x ``k_enc`` conv (padding ``k_enc // 2``) turns them into sigma^2 * k_up^2 channels,
   which a pixel shuffle by sigma rearranges into one k_up^2-vector per *output* pixel; a
   softmax over those k_up^2 entries normalises each kernel.
2. **Reassembly.** Output pixel (i, j) takes its source location (i // sigma, j // sigma) (the
   nearest source pixel of each sigma x sigma block) and sums the k_up x k_up neighbourhood of
   the input around it, weighted by its kernel; neighbours outside the map count as zero (their
   weights are not renormalised), as in mmcv's op.

Each stage upsamples by sigma = 2 (:data:`SCALE`); a head whose features are at output stride
2^n runs n stages, then the classifier at the input's resolution (a bilinear resize remains
only where the input's side is not a multiple of the stride). Defaults as the paper's:
``k_up`` 5, ``k_enc`` 3, ``compressed`` 64.

Parity with mmcv (``mmcv/ops/carafe.py``, ``csrc/common/cuda/carafe_naive_cuda_kernel.cuh``):
:class:`CARAFEPack` has ``CARAFEPack``'s structure, parameter names and initialisation (convs
Xavier-uniform, bias 0; the content encoder normal with std 0.001), and :func:`carafe` is the
op's definition, mask channel ``(group * k + dy) * k + dx`` for a channel in contiguous group
``group`` (``up_group`` groups; the segmenter uses 1). ``tests/attention/test_carafe.py`` checks both,
values and gradients in float64, against a transcription of the CUDA kernels and against mmcv's
own ``CARAFEPack`` Python code running on that transcription. The settings (``model.head.upsample``:
:class:`UpsampleSpec`) and the counts are in the torch-free :mod:`ablate.attention.carafe_spec`,
re-exported here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .carafe_spec import (DESCRIPTIONS, PAPER, SCALE, SETTINGS, UPSAMPLERS, UpsampleSpec,  # noqa: F401 (re-exported)
                          carafe_flops, stages_for)


def carafe(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> torch.Tensor:
    """mmcv's ``carafe(features, masks, kernel_size, group_size, scale_factor)`` in PyTorch.

    ``features`` (N, C, h, w); ``masks`` (N, group_size * k^2, h * s, w * s), already
    normalised. Output (N, C, h * s, w * s)::

        out[n, c, y, x] = sum_{dy, dx} masks[n, (g * k + dy) * k + dx, y, x]
                          * features[n, c, y // s + dy - r, x // s + dx - r]

    with r = (k - 1) // 2, g = c // (C / group_size), and features outside the map taken as 0.
    Differentiable in both inputs (autograd; no custom backward).
    """
    n, c, h, w = features.shape
    k, g, s = int(kernel_size), int(group_size), int(scale_factor)
    if s < 1 or k < 1 or k % 2 == 0:
        raise ValueError(f"carafe: kernel_size must be odd and >= 1 and scale_factor >= 1, got {k} and {s}")
    if g < 1 or c % g:
        raise ValueError(f"carafe: {c} channels do not split into {g} groups")
    if tuple(masks.shape) != (n, g * k * k, h * s, w * s):
        raise ValueError(f"carafe: masks must be {(n, g * k * k, h * s, w * s)} for features "
                         f"{tuple(features.shape)}, got {tuple(masks.shape)}")
    # every source pixel's k x k neighbourhood (zero outside), channel-major: (N, g, C/g, k*k, h, w)
    cols = F.unfold(features, k, padding=(k - 1) // 2).view(n, g, c // g, k * k, h, w)
    # output (y, x) = (s * i + a, s * j + b) reads source (i, j): split the masks the same way
    m = masks.view(n, g, k * k, h, s, w, s)
    out = torch.einsum("ngckhw,ngkhawb->ngchawb", cols, m)
    return out.reshape(n, c, h * s, w * s)


carafe_naive = carafe  # mmcv's naive and fast kernels compute the same function


class CARAFEPack(nn.Module):
    """mmcv's ``CARAFEPack``: channel compressor (1x1), content encoder (``encoder_kernel``,
    dilation ``encoder_dilation``), kernel normaliser (pixel shuffle, softmax over each k^2 kernel)
    and :func:`carafe` reassembly, with mmcv's argument names, parameter names and init."""

    def __init__(self, channels: int, scale_factor: int, up_kernel: int = 5, up_group: int = 1,
                 encoder_kernel: int = 3, encoder_dilation: int = 1, compressed_channels: int = 64):
        super().__init__()
        self.channels, self.scale_factor = channels, scale_factor
        self.up_kernel, self.up_group = up_kernel, up_group
        self.encoder_kernel, self.encoder_dilation = encoder_kernel, encoder_dilation
        self.compressed_channels = compressed_channels
        self.channel_compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(compressed_channels, up_kernel * up_kernel * up_group * scale_factor ** 2,
                                         encoder_kernel, padding=(encoder_kernel - 1) * encoder_dilation // 2,
                                         dilation=encoder_dilation)
        self.init_weights()

    def init_weights(self) -> None:
        for conv in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.content_encoder.weight, std=0.001)

    def kernel_normalizer(self, mask: torch.Tensor) -> torch.Tensor:
        """(N, g k^2 s^2, h, w) -> (N, g k^2, h s, w s), each k^2-vector softmax-normalised."""
        mask = F.pixel_shuffle(mask, self.scale_factor)
        n, mc, h, w = mask.shape
        mask = F.softmax(mask.view(n, mc // self.up_kernel ** 2, -1, h, w), dim=2)
        return mask.view(n, mc, h, w)

    def feature_reassemble(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.kernel_normalizer(self.content_encoder(self.channel_compressor(x)))
        return self.feature_reassemble(x, mask)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, scale_factor={self.scale_factor}, up_kernel={self.up_kernel}, "
                f"encoder_kernel={self.encoder_kernel}, compressed_channels={self.compressed_channels}")


class CarafeUpsampler(nn.Module):
    """``stages`` CARAFE x2 stages on ``channels``-wide features (one :class:`CARAFEPack` each)."""

    def __init__(self, channels: int, stages: int, k_up: int = 5, k_enc: int = 3, compressed: int = 64):
        super().__init__()
        self.stages = nn.ModuleList(
            CARAFEPack(channels, SCALE, up_kernel=k_up, encoder_kernel=k_enc, compressed_channels=compressed)
            for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def build_upsampler(spec: UpsampleSpec, channels: int, stride: int) -> CarafeUpsampler | None:
    """The head's feature upsampler for ``spec`` (None: bilinear, on the logits as before)."""
    problem = spec.problem()
    if problem:
        raise ValueError(f"model.head.{problem[0]}: {problem[1]}")
    if spec.upsample == "bilinear":
        return None
    return CarafeUpsampler(channels, stages_for(stride), spec.k_up, spec.k_enc, spec.compressed)


__all__ = ["CARAFEPack", "CarafeUpsampler", "DESCRIPTIONS", "PAPER", "SCALE", "SETTINGS", "UPSAMPLERS", "UpsampleSpec", "build_upsampler", "carafe",
           "carafe_flops", "carafe_naive", "stages_for"]
