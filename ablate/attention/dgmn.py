"""DGMN: each pixel aggregates K sampled pixels with node-predicted weights.

Paper: *Dynamic Graph Message Passing Networks*, Li Zhang, Dan Xu, Anurag Arnab, Philip H.S. Torr,
CVPR 2020, https://arxiv.org/abs/1908.06955.
Official code compared against: lzrobots/dgmn (``maskrcnn_benchmark/layers/dynamic_weight.py``,
``DynamicWeightsCat11``; ``maskrcnn_benchmark/layers/dcn/deform_unfold_func.py`` for the
deformable sampling) -- the authors' release for the detection experiments.

What the paper does
-------------------
A fully connected graph over pixels is too expensive, so every node exchanges messages with a
small set of **sampled** nodes. In the official layer the input is reduced to C/4 channels
(1x1 conv, GroupNorm, ReLU); for each of four dilation rates (1, 4, 8, 12) a 3x3 grid of
neighbours is sampled around each node and moved by **learned, input-conditioned offsets**
(deformable sampling, bilinear interpolation), i.e. K = 4 x 9 = 36 samples per node; a 3x3
conv on the node's features **predicts** the aggregation weights (the "dynamic filters"/
affinity) for its samples, softmax over the 9 samples of each grid (channels can be split in
groups that share weights); the messages of the four grids are concatenated with the reduced
input, fused (1x1 conv 5C/4 -> C/4, then C/4 -> C, each with GN + ReLU) and added to the input.

Ours
----
Factor ``offsets``:

* ``learned`` (default): the sampling is dynamic. Each node's K sampling positions are a base
  set of offsets plus offsets predicted from the reduced features by a 3x3 conv (2 per sample,
  (dy, dx) in pixels, shared by all channel groups as the official ``deformable_groups = 1``),
  read with bilinear interpolation (``grid_sample``; positions outside the image read zeros, as
  the official deformable unfold does). The offset conv is zero-initialised (weights and bias;
  the usual deformable-conv start, mmcv's ``conv_offset``), so at initialisation the block
  samples exactly its base set and computes what ``fixed`` computes with the same weights.
  The official code predicts the offsets with the same (dilated, default-initialised) conv
  that predicts the weights; a separate zero-initialised conv is our choice.
* ``fixed``: the base set only, never moved (the form this harness had before): the same for
  every pixel and image.

The base set is ``samples`` distinct integer offsets drawn at random (seeded, ``seed=0``) from
the ``(2 radius + 1)^2`` square, the centre always included, not the official four dilated
3x3 grids. Weights: a 3x3 conv over the reduced features predicts ``groups x samples`` logits,
and each pixel's weights are a softmax over its sampled set (base positions outside the image
are excluded from it). Other differences from the official layer: one softmax over all K
samples instead of one per 3x3 grid, and so one message concatenated with the reduced input
(fuse 2C/4 -> C/4) instead of four (5C/4 -> C/4); BatchNorm instead of GroupNorm (the harness
runs small channel counts that GN(32) cannot split); no ``deformatt`` modulation (the official
option that also predicts a sigmoid weight per sample). Defaults: ``samples = 36`` and
``radius = 12`` match the official K and largest dilation, ``groups = 1`` the official
default. The residual is the paper's; no zero init (the official code has none).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import choice, integer


def draw_offsets(samples: int, radius: int, seed: int) -> torch.Tensor:
    """(samples, 2) integer (dy, dx) offsets: the centre, then distinct random ones (seeded)."""
    side = 2 * radius + 1
    if samples > side * side:
        raise ValueError(f"cannot draw {samples} distinct offsets within radius {radius} ({side * side} positions)")
    gen = torch.Generator().manual_seed(seed)
    centre = radius * side + radius
    others = torch.tensor([i for i in range(side * side) if i != centre], dtype=torch.long)
    pick = others[torch.randperm(len(others), generator=gen)[: samples - 1]]
    flat = torch.cat([torch.tensor([centre], dtype=torch.long), pick])
    return torch.stack([flat // side - radius, flat % side - radius], dim=1)


def _bn_relu(cin: int, cout: int, k: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def sample_neighbours(x: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features at ``p + offset`` for every pixel p: (B, C, K, H, W) and a (1, 1, K, H, W) inside-image mask."""
    b, c, h, w = x.shape
    r = int(offsets.abs().max()) if offsets.numel() else 0
    xp = F.pad(x, (r, r, r, r))
    inside = F.pad(x.new_ones(1, 1, h, w), (r, r, r, r))
    feats, masks = [], []
    for dy, dx in offsets.tolist():
        feats.append(xp[:, :, r + dy:r + dy + h, r + dx:r + dx + w])
        masks.append(inside[:, :, r + dy:r + dy + h, r + dx:r + dx + w])
    return torch.stack(feats, dim=2), torch.stack(masks, dim=2) > 0.5


def _inside(offsets: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(1, 1, K, H, W): whether pixel p + offset_k lies in the image, for every pixel p."""
    ys = torch.arange(h, device=offsets.device).view(1, h, 1) + offsets[:, 0].view(-1, 1, 1)
    xs = torch.arange(w, device=offsets.device).view(1, 1, w) + offsets[:, 1].view(-1, 1, 1)
    return (((ys >= 0) & (ys < h)) & ((xs >= 0) & (xs < w))).unsqueeze(0).unsqueeze(0)


def sample_at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` (B, C, H, W) at ``positions`` (B, K, H, W, 2), absolute (y, x)
    pixel coordinates (pixel (i, j) is at (i, j)); returns (B, C, K, H, W), zeros outside."""
    b, c, h, w = x.shape
    k = positions.shape[1]
    # grid_sample with align_corners=False puts pixel centre j at (2 j + 1) / W - 1.
    gy = (2 * positions[..., 0] + 1) / h - 1
    gx = (2 * positions[..., 1] + 1) / w - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(b, k * h, w, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.view(b, c, k, h, w)


OFFSETS = ("learned", "fixed")


class DGMNBlock(nn.Module):
    """Message passing over K sampled neighbours (a base set moved by learned offsets, or the
    base set only) with node-predicted weights, residual."""

    FACTORS = (
        integer("samples", 1, "sampled neighbours K per pixel (official: 4 grids x 9)"),
        integer("radius", 0, "base offsets drawn from [-radius, radius]^2 (official max dilation: 12)"),
        integer("groups", 1, "channel groups with their own aggregation weights (official: 1)"),
        choice("offsets", OFFSETS, "sampling positions moved by offsets predicted from the input (paper), or "
               "the fixed base set"),
    )

    def __init__(self, channels: int, samples: int = 36, radius: int = 12, groups: int = 1,
                 offsets: str = "learned", seed: int = 0):
        super().__init__()
        inner = max(1, channels // 4)
        if inner % groups:
            raise ValueError(f"groups={groups} must divide the {inner} reduced channels (channels // 4)")
        if offsets not in OFFSETS:
            raise ValueError(f"offsets must be one of {', '.join(OFFSETS)}, got {offsets!r}")
        self.channels, self.inner, self.groups, self.samples = channels, inner, groups, samples
        self.sampling = offsets
        self.register_buffer("offsets", draw_offsets(samples, radius, seed), persistent=False)
        self.reduce = nn.Sequential(*_bn_relu(channels, inner))
        self.weights = nn.Conv2d(inner, groups * samples, 3, padding=1, bias=False)
        self.fuse = nn.Sequential(*_bn_relu(2 * inner, inner), *_bn_relu(inner, channels))
        if offsets == "learned":  # created last: the fixed form's parameters draw the same numbers
            self.offset_conv = nn.Conv2d(inner, 2 * samples, 3, padding=1)
            nn.init.zeros_(self.offset_conv.weight)
            nn.init.zeros_(self.offset_conv.bias)

    def neighbours(self, xd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled features (B, c, K, H, W) of the reduced map and the (1, 1, K, H, W) mask of
        base positions inside the image (the set each pixel's softmax runs over)."""
        b, _, h, w = xd.shape
        if self.sampling == "fixed":
            return sample_neighbours(xd, self.offsets)
        delta = self.offset_conv(xd).view(b, self.samples, 2, h, w).permute(0, 1, 3, 4, 2)
        ys, xs = torch.meshgrid(torch.arange(h, device=xd.device), torch.arange(w, device=xd.device),
                                indexing="ij")
        base = torch.stack([ys, xs], dim=-1).to(xd.dtype)  # H, W, 2
        positions = base + self.offsets.to(xd.dtype).view(-1, 1, 1, 2) + delta  # B, K, H, W, 2
        return sample_at(xd, positions), _inside(self.offsets, h, w)

    def positions(self, xd: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W, 2): each pixel's K sampling positions, absolute (y, x) pixel coordinates."""
        b, _, h, w = xd.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=xd.device), torch.arange(w, device=xd.device),
                                indexing="ij")
        pos = torch.stack([ys, xs], dim=-1).to(xd.dtype) + self.offsets.to(xd.dtype).view(-1, 1, 1, 2)
        if self.sampling == "fixed":
            return pos.expand(b, -1, -1, -1, -1)
        return pos + self.offset_conv(xd).view(b, self.samples, 2, h, w).permute(0, 1, 3, 4, 2)

    def attention(self, xd: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """(B, groups, K, H, W) aggregation weights: a softmax over each pixel's sampled set."""
        b, _, h, w = xd.shape
        logits = self.weights(xd).view(b, self.groups, self.samples, h, w)
        return torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = self.reduce(x)
        b, c, h, w = xd.shape
        nbr, inside = self.neighbours(xd)  # B, c, K, H, W
        attn = self.attention(xd, inside)
        if maps.active():  # the weights at the sampled positions, as one map (mean over the groups)
            with torch.no_grad():
                maps.record("samples", maps.splat(attn.mean(1), self.positions(xd)), grid=(h, w))
        msg = (nbr.view(b, self.groups, c // self.groups, self.samples, h, w) * attn.unsqueeze(2)).sum(3)
        return x + self.fuse(torch.cat([xd, msg.reshape(b, c, h, w)], dim=1))
