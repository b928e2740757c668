"""DGMN: each pixel aggregates K sampled pixels with node-predicted weights.

Paper: *Dynamic Graph Message Passing Networks*, Li Zhang, Dan Xu, Anurag Arnab, Philip H.S. Torr,
CVPR 2020, https://arxiv.org/abs/1908.06955.
Official code consulted: lzrobots/dgmn (``maskrcnn_benchmark/layers/dynamic_weight.py``,
``DynamicWeightsCat11``) -- the authors' release for the detection experiments.

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

Ours -- a plain simplification, said plainly
--------------------------------------------
**The sampling is not dynamic.** Instead of learned, input-dependent offsets we draw one
fixed random set of ``samples`` integer offsets (seeded, ``seed=0``) uniformly from the
``(2 radius + 1)^2`` square, the centre always included; the same offsets serve every pixel
and every image, and they are not trained. What remains of DGMN is the message passing over a
sparse, long-range-reaching neighbour set with **node-predicted** aggregation weights (a 3x3
conv over the reduced features predicts ``groups x samples`` logits, softmax over the samples),
the C/4 reduction, the concat-fuse and the residual. Other differences: one softmax over all K
samples instead of one per dilation grid; BatchNorm instead of GroupNorm (the harness runs small
channel counts that GN(32) cannot split); samples that fall outside the image are excluded from
the softmax instead of being read as zeros. Defaults: ``samples = 36`` and ``radius = 12``
match the official K and largest dilation. The residual is the paper's; no zero init (the
official code has none).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _draw_offsets(samples: int, radius: int, seed: int) -> torch.Tensor:
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


class DGMNBlock(nn.Module):
    """Message passing over K fixed random neighbours with node-predicted weights, residual."""

    def __init__(self, channels: int, samples: int = 36, radius: int = 12, groups: int = 1, seed: int = 0):
        super().__init__()
        inner = max(1, channels // 4)
        if inner % groups:
            raise ValueError(f"groups={groups} must divide the {inner} reduced channels (channels // 4)")
        self.channels, self.inner, self.groups, self.samples = channels, inner, groups, samples
        self.register_buffer("offsets", _draw_offsets(samples, radius, seed), persistent=False)
        self.reduce = nn.Sequential(*_bn_relu(channels, inner))
        self.weights = nn.Conv2d(inner, groups * samples, 3, padding=1, bias=False)
        self.fuse = nn.Sequential(*_bn_relu(2 * inner, inner), *_bn_relu(inner, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = self.reduce(x)
        b, c, h, w = xd.shape
        nbr, inside = sample_neighbours(xd, self.offsets)  # B, c, K, H, W
        logits = self.weights(xd).view(b, self.groups, self.samples, h, w)
        attn = torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=2)
        msg = (nbr.view(b, self.groups, c // self.groups, self.samples, h, w) * attn.unsqueeze(2)).sum(3)
        return x + self.fuse(torch.cat([xd, msg.reshape(b, c, h, w)], dim=1))
