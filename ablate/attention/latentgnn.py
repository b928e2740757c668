"""LatentGNN: visible pixels to K latent nodes, message passing, back (low-rank family).

LatentGNN: Learning Efficient Non-local Relations for Visual Recognition, Songyang Zhang,
Shipeng Yan, Xuming He, ICML 2019, https://arxiv.org/abs/1905.11634. Official code consulted:
latentgnn/LatentGNN-V1-PyTorch (``lib/latentgnn_v1.py``), followed closely:

* the input is reduced to C/4 channels (1x1 conv + BN) and L2-normalised over channels, one
  reduction for visible-to-latent and one for latent-to-visible (``asymmetric`` mode, the
  default; ``symmetric: on`` shares one reduction and one kernel);
* visible-to-latent: kernel psi = ReLU(BN(1x1 conv)) gives (K x N) weights, L2-normalised
  over the pixels; latent features = weights @ x (K x C/4);
* latent-to-latent (``gcn``): the latent features, L2-normalised, give a dense affinity
  ``softmax(Z_n Z_n^T)`` over the K latent nodes, which mixes them;
* latent-to-visible: a second kernel's (K x N) weights, L2-normalised over the K nodes,
  spread the latent features back; 1x1 conv + BN to C channels; ``x + gamma * out`` with
  gamma a zero-initialised scalar (the block starts as the identity).

Defaults: K = 100 latent nodes (the official code's example), reduction 4 (the official
default), one kernel (the official default; more kernels are concatenated there, not
exposed here), the optional graph-conv weight of the official code off (its default).
Compared line by line with ``lib/latentgnn_v1.py`` (``LatentGNNV1``, ``LatentGNN_Kernel``):
no further difference found except ``gcn: off``, which the official code does not offer
(its latent-to-latent step always runs); convs and BNs keep PyTorch's init, as there.

``gcn: off`` removes the reasoning step, as in GloRe's preset, leaving projection and
reprojection (the ``gcn_effect`` study). The latent-to-latent step is the official parameter-free
``softmax(Z_n Z_n^T) Z`` (no ReLU); the C/4 width follows the shared floor of :mod:`.widths`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from ..config.vocab import gcn, nodes, reduction, switch
from .widths import reduced


def _conv_bn(cin: int, cout: int, relu: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel_size=1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LatentGNNBlock(nn.Module):
    """LatentGNN (V1): visible -> K latent nodes -> latent message passing -> visible."""

    FACTORS = (
        nodes("number of latent nodes"),
        reduction("visible features C/reduction"),
        gcn("latent-to-latent message passing"),
        switch("symmetric", "one kernel for visible-to-latent and latent-to-visible"),
    )

    def __init__(self, channels: int, K: int = 100, reduction: int = 4, gcn: bool = True,
                 symmetric: bool = False):
        super().__init__()
        inter = reduced(channels, reduction)
        self.K, self.gcn, self.symmetric = K, gcn, symmetric
        self.widths = {"inner": inter, "nodes": K}
        self.down_v2l = _conv_bn(channels, inter)
        self.psi_v2l = _conv_bn(inter, K, relu=True)
        if not symmetric:
            self.down_l2v = _conv_bn(channels, inter)
            self.psi_l2v = _conv_bn(inter, K, relu=True)
        self.up = _conv_bn(inter, channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v2l = F.normalize(self.down_v2l(x), dim=1)  # B, C', H, W
        w_v2l = self.psi_v2l(v2l).flatten(2)  # B, K, N
        if self.symmetric:
            w_v2l = w_l2v = F.normalize(w_v2l, dim=1)  # official symmetric mode: over K
            l2v = v2l
        else:
            l2v = F.normalize(self.down_l2v(x), dim=1)
            w_l2v = F.normalize(self.psi_l2v(l2v).flatten(2), dim=1)  # over the K nodes
            w_v2l = F.normalize(w_v2l, dim=2)  # over the pixels
        maps.record("visible_to_latent", w_v2l, kind="maps", grid=x.shape[-2:])
        maps.record("latent_to_visible", w_l2v, kind="maps", grid=x.shape[-2:])
        latent = w_v2l @ v2l.flatten(2).transpose(1, 2)  # B, K, C'
        if self.gcn:
            zn = F.normalize(latent, dim=2)
            latent = torch.softmax(zn @ zn.transpose(1, 2), dim=2) @ latent
        visible = (latent.transpose(1, 2) @ w_l2v).reshape(x.shape[0], -1, *x.shape[2:])
        return x + self.gamma * self.up(visible)
