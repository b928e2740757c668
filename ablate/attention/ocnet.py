"""OCNet: object context (base, pyramid and ASP variants).

Paper: *OCNet: Object Context Network for Scene Parsing*, Yuhui Yuan, Jingdong Wang, arXiv 2018,
https://arxiv.org/abs/1809.00916 (the later journal version, Yuan, Huang, Guo, Zhang, Chen,
Wang, IJCV 2021, folds ISA into it; the variants here are the 2018 ones).
Official code consulted: openseg-group/OCNet.pytorch, ``oc_module/base_oc_block.py``,
``pyramid_oc_block.py``, ``asp_oc_block.py``.

What the paper does
-------------------
* **Object context** = self-attention: key and query come from **one shared** transform
  (1x1 conv + BN + activation; ``f_query = f_key`` in the code), value from a 1x1 conv, scores
  scaled by ``key_channels ** -0.5``, softmax over positions, then an output 1x1 conv ``W``
  initialised to **zero**. It returns the context only, no residual.
* **Base-OC**: ``fuse(concat[context, x])``, fuse = 1x1 conv (2C -> C) + BN + activation +
  Dropout2d(0.05). Key channels C/2, value channels C/2.
* **Pyramid-OC**: the map is split into s x s regions for s in (1, 2, 3, 6) (region size
  ``h // s``, the last region takes the remainder) and self-attention runs inside each region
  (key C/2, value C); the input is lifted by ``up_dr`` (1x1 conv C -> 4C + BN) and
  ``fuse(concat[up_dr(x), ctx_1, ctx_2, ctx_3, ctx_6])`` (8C -> C).
* **ASP-OC**: ASPP with the image-pooling branch replaced by object context: branches
  (3x3 conv + BN, then object context on a 2x max-pooled map, upsampled back, then 1x1 conv +
  BN), 1x1 conv, and three 3x3 convs with dilations 12, 24, 36; ``fuse(concat of 5)``
  (5C -> 2C in the code, Dropout2d 0.1).
* The official BN is InPlaceABNSync, i.e. BN followed by leaky ReLU (slope 0.01).

Ours
----
``OCNetBlock(channels, variant=...)`` with ``variant`` in {base, pyramid, asp}; every variant
maps C -> C (the ASP fuse outputs C, not 2C, so the block keeps the shape). BN + LeakyReLU(0.01)
stands in for InPlaceABNSync. The ASP dilations default to (4, 8, 12) instead of
(12, 24, 36): the paper's rates are about 1/8, 1/4 and 3/8 of the side of its 97-pixel
feature maps (769 crops at stride 8); 4/8/12 keep those ratios for ~32-pixel maps, which is what
this harness trains on. Pyramid regions use ``s = min(s, H, W)`` so maps smaller than 6 pixels
do not produce empty regions. ``shared_qk=False`` gives query its own transform (ablation).
There is no residual: the paper fuses by concatenation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import choice, switch


def _bn_act(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.LeakyReLU(0.01)]


class ObjectContext(nn.Module):
    """Self-attention with a (shared) key/query transform; returns the context only.

    ``regions``: split the map into regions x regions blocks and attend inside each (the pyramid
    stages); ``pool``: max-pool the input by this factor before attending and upsample the
    context back (the ASP-OC context branch, ``scale=2`` in the official code).
    """

    def __init__(self, channels: int, key_channels: int, value_channels: int, shared_qk: bool = True,
                 regions: int = 1, pool: int = 1, map_name: str = "affinity"):
        super().__init__()
        self.map_name = map_name  # the name its softmax is recorded under (ablate.attention.maps)
        self.key_channels, self.value_channels = key_channels, value_channels
        self.regions, self.pool = regions, pool
        self.key = nn.Sequential(nn.Conv2d(channels, key_channels, 1), *_bn_act(key_channels))
        self.query = self.key if shared_qk else nn.Sequential(nn.Conv2d(channels, key_channels, 1),
                                                               *_bn_act(key_channels))
        self.value = nn.Conv2d(channels, value_channels, 1)
        self.out = nn.Conv2d(value_channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The context (B, c, h, w) and the softmax (B, hw, hw) it was pooled with."""
        b, _, h, w = q.shape
        qf = q.flatten(2).transpose(1, 2)
        sim = torch.softmax((qf @ k.flatten(2)) * self.key_channels ** -0.5, dim=-1)
        return (sim @ v.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w), sim

    def _record(self, sims: list, fh: int, fw: int) -> None:
        """The regions' softmaxes as one map over the (pooled) grid, zero across regions."""
        name = self.map_name
        if len(sims) == 1:
            maps.record(name, sims[0][0], grid=(fh, fw))
            return
        dense = sims[0][0].new_zeros(sims[0][0].shape[0], fh * fw, fh * fw)
        for sim, (r0, r1, c0, c1) in sims:
            ids = (torch.arange(r0, r1)[:, None] * fw + torch.arange(c0, c1)[None, :]).flatten().to(sim.device)
            dense[:, ids[:, None], ids[None, :]] = sim
        maps.record(name, dense, grid=(fh, fw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        feats = x
        if self.pool > 1 and min(h, w) >= self.pool:
            feats = F.max_pool2d(x, self.pool)
        q, k, v = self.query(feats), self.key(feats), self.value(feats)
        s = min(self.regions, feats.shape[2], feats.shape[3])
        fh, fw = feats.shape[2:]
        sims = []  # (softmax, region) for the recording
        if s == 1:
            ctx, sim = self._attend(q, k, v)
            sims.append((sim, (0, fh, 0, fw)))
        else:
            sh, sw = fh // s, fw // s
            rows = []
            for i in range(s):
                r0, r1 = i * sh, (fh if i == s - 1 else (i + 1) * sh)
                cols = []
                for j in range(s):
                    c0, c1 = j * sw, (fw if j == s - 1 else (j + 1) * sw)
                    part, sim = self._attend(q[..., r0:r1, c0:c1], k[..., r0:r1, c0:c1], v[..., r0:r1, c0:c1])
                    cols.append(part)
                    sims.append((sim, (r0, r1, c0, c1)))
                rows.append(torch.cat(cols, dim=3))
            ctx = torch.cat(rows, dim=2)
        if maps.active():
            with torch.no_grad():
                self._record(sims, fh, fw)
        ctx = self.out(ctx)
        if ctx.shape[2:] != (h, w):
            ctx = F.interpolate(ctx, size=(h, w), mode="bilinear", align_corners=True)
        return ctx


class OCNetBlock(nn.Module):
    """Object context block; ``variant`` in {base, pyramid, asp}."""

    FACTORS = (
        choice("variant", ("base", "pyramid", "asp"),
               "base object context, pyramid (regions 1,2,3,6) or ASP-OC (atrous branches + OC)"),
        switch("shared_qk", "query and key share one transform (official: shared)"),
    )

    def __init__(self, channels: int, variant: str = "base", shared_qk: bool = True,
                 sizes: tuple[int, ...] = (1, 2, 3, 6), dilations: tuple[int, int, int] = (4, 8, 12)):
        super().__init__()
        c = channels
        self.channels, self.variant = c, variant
        half = max(1, c // 2)
        if variant == "base":
            self.context = ObjectContext(c, half, half, shared_qk)
            self.fuse = nn.Sequential(nn.Conv2d(2 * c, c, 1), *_bn_act(c), nn.Dropout2d(0.05))
        elif variant == "pyramid":
            self.stages = nn.ModuleList(ObjectContext(c, half, c, shared_qk, regions=s, map_name=f"affinity_{s}x{s}")
                                        for s in sizes)
            g = len(sizes)
            self.up_dr = nn.Sequential(nn.Conv2d(c, c * g, 1), nn.BatchNorm2d(c * g), nn.LeakyReLU(0.01))
            self.fuse = nn.Sequential(nn.Conv2d(2 * c * g, c, 1), *_bn_act(c), nn.Dropout2d(0.05))
        elif variant == "asp":
            self.context = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1), *_bn_act(c),
                ObjectContext(c, half, c, shared_qk, pool=2),
                nn.Conv2d(c, c, 1), *_bn_act(c),
            )
            self.branches = nn.ModuleList(
                [nn.Sequential(nn.Conv2d(c, c, 1, bias=False), *_bn_act(c))]
                + [nn.Sequential(nn.Conv2d(c, c, 3, padding=d, dilation=d, bias=False), *_bn_act(c))
                   for d in dilations]
            )
            self.fuse = nn.Sequential(nn.Conv2d(5 * c, c, 1, bias=False), *_bn_act(c), nn.Dropout2d(0.1))
        else:
            raise ValueError(f"variant must be 'base', 'pyramid' or 'asp', got {variant!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "base":
            return self.fuse(torch.cat([self.context(x), x], dim=1))
        if self.variant == "pyramid":
            return self.fuse(torch.cat([self.up_dr(x)] + [stage(x) for stage in self.stages], dim=1))
        feats = [self.context(x)] + [branch(x) for branch in self.branches]
        return self.fuse(torch.cat(feats, dim=1))
