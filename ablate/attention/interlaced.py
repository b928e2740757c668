"""ISA: interlaced sparse self-attention (long-range groups, then short-range groups).

Paper: *Interlaced Sparse Self-Attention for Semantic Segmentation*, Lang Huang, Yuhui Yuan,
Jianyuan Guo, Chao Zhang, Xilin Chen, Jingdong Wang, arXiv 2019, https://arxiv.org/abs/1907.12273.
Official code consulted: openseg-group/openseg.pytorch, ``lib/models/modules/isa_block.py``
(``SelfAttentionBlock2D``, ``ISA_Block``, ``ISA_Module``); mmsegmentation's ``ISAHead``.

What the paper does
-------------------
The dense N x N affinity is factorised into two sparse ones. With partition size
``P_h x P_w`` (``down_factor``; the map is seen as ``Q_h x Q_w`` partitions of that size):

1. **long-range**: pixels at the *same offset* inside every partition form a group
   (``P_h * P_w`` groups of ``Q_h * Q_w`` pixels, spaced ``P`` apart); self-attention runs
   inside each group;
2. **short-range**: the pixels of one partition (a contiguous ``P_h x P_w`` block) form a group;
   self-attention runs inside each group on the output of step 1.

Two hops connect any pixel to any other. Each self-attention is the official
``SelfAttentionBlock2D``: key and query each two (1x1 conv, BN, ReLU) layers to C/2 channels,
value a 1x1 conv, scores scaled by ``key_channels ** -0.5``, softmax, output 1x1 conv + BN +
ReLU. When H or W is not divisible by P the map is zero-padded (split evenly on both sides,
the padded pixels take part in attention as in the official code and mmseg) and cropped after.
The module output is ``fuse(concat[x, context])`` (1x1 conv 2C -> C, BN, ReLU): the paper's
"residual" is this concatenation, not an addition.

Ours
----
``ISABlock(channels, down_factor=8)`` with a square partition (``down_factor`` applies to both
axes; the official default is (8, 8)); key channels C/``key_reduction`` (2 in the paper's
512 -> 256). One ``down_factor`` only (``ISA_Module`` accepts a list; the paper's results use
one). No dropout (the official default is 0).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import integer


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class GroupSelfAttention(nn.Module):
    """Full self-attention over every position of its input map (one ISA group per batch item)."""

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.key = nn.Sequential(*_conv_bn_relu(channels, key_channels), *_conv_bn_relu(key_channels, key_channels))
        self.query = nn.Sequential(*_conv_bn_relu(channels, key_channels), *_conv_bn_relu(key_channels, key_channels))
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.out = nn.Sequential(*_conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2).transpose(1, 2)
        sim = torch.softmax((q @ k) * self.key_channels ** -0.5, dim=-1)
        maps.record("group", sim, grid=(h, w))  # ISABlock reads it and records it over the whole grid
        ctx = (sim @ v).transpose(1, 2).reshape(b, c, h, w)
        return self.out(ctx)


class ISABlock(nn.Module):
    """Interlaced sparse self-attention with square partitions of side ``down_factor``."""

    FACTORS = (
        integer("down_factor", 1, "partition side P: long-range groups are pixels P apart, short-range groups "
                "P x P blocks"),
        integer("key_reduction", 1, "key/query width C/key_reduction (paper: 2)"),
    )

    def __init__(self, channels: int, down_factor: int = 8, key_reduction: int = 2):
        super().__init__()
        if down_factor < 1:
            raise ValueError(f"down_factor must be >= 1, got {down_factor}")
        self.channels, self.down_factor = channels, down_factor
        kc = max(1, channels // key_reduction)
        self.long_range = GroupSelfAttention(channels, kc)
        self.short_range = GroupSelfAttention(channels, kc)
        self.fuse = nn.Sequential(*_conv_bn_relu(2 * channels, channels))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        ph = pw = self.down_factor  # partition (short-range group) size
        qh, qw = math.ceil(h / ph), math.ceil(w / pw)  # partitions per axis = long-range group size
        pad_h, pad_w = qh * ph - h, qw * pw - w
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        # pixel (a * ph + i, b * pw + j): partition (a, b), offset (i, j)
        t = x.view(n, c, qh, ph, qw, pw)
        # long range: fix the offset (i, j), attend over partitions (a, b)
        t = t.permute(0, 3, 5, 1, 2, 4).reshape(n * ph * pw, c, qh, qw)
        with self._recorded("long_range", n, (h, w), (pad_h // 2, pad_w // 2)):
            t = self.long_range(t)
        # short range: fix the partition (a, b), attend over offsets (i, j)
        t = t.view(n, ph, pw, c, qh, qw).permute(0, 4, 5, 3, 1, 2).reshape(n * qh * qw, c, ph, pw)
        with self._recorded("short_range", n, (h, w), (pad_h // 2, pad_w // 2)):
            t = self.short_range(t)
        t = t.view(n, qh, qw, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, qh * ph, qw * pw)
        if pad_h or pad_w:
            t = t[:, :, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
        return t

    @contextlib.contextmanager
    def _recorded(self, stage: str, n: int, size: tuple[int, int], pad: tuple[int, int]):
        """While recording, the stage's group softmaxes recorded as one map over the image's
        pixels (padding pixels left out); otherwise nothing."""
        if not maps.active():
            yield
            return
        with maps.recording() as got:
            yield
        with torch.no_grad():
            maps.record(stage, self._dense(stage, got[0].tensor, n, size, pad), grid=size)

    def _dense(self, stage: str, sim: torch.Tensor, n: int, size: tuple[int, int], pad: tuple[int, int]):
        """(n, h*w, h*w) from one stage's group softmaxes (groups*n, Q, Q) on the padded grid."""
        (h, w), p = size, self.down_factor
        qh, qw = math.ceil(h / p), math.ceil(w / p)
        a, bb, i, j = torch.meshgrid(torch.arange(qh), torch.arange(qw), torch.arange(p), torch.arange(p),
                                     indexing="ij")
        pixel = (a * p + i) * (qw * p) + (bb * p + j)  # [a, b, i, j] -> padded pixel id
        ids = pixel.permute(2, 3, 0, 1).reshape(p * p, qh * qw) if stage == "long_range" else \
            pixel.reshape(qh * qw, p * p)
        dense = maps.scatter_groups(sim.reshape(n, *ids.shape, ids.shape[1]), ids, qh * qw * p * p)
        ys, xs = torch.arange(h) + pad[0], torch.arange(w) + pad[1]
        keep = (ys[:, None] * (qw * p) + xs[None, :]).flatten()
        return dense[:, keep][:, :, keep]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, self.context(x)], dim=1))
