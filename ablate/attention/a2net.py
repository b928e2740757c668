"""A2Net's double attention block: low-rank family, gather to K descriptors, distribute back.

A^2-Nets: Double Attention Networks, Yunpeng Chen, Yannis Kalantidis, Jianshu Li, Shuicheng
Yan, Jiashi Feng, NeurIPS 2018, https://arxiv.org/abs/1810.11579. The authors did not release
code that we could find; the paper's equations are the reference (third-party PyTorch
re-implementations, e.g. the ``DoubleAttention`` modules with ``convA/convB/convV``, were read
only to confirm the reading of the equations).

What the paper does. From the input X (C x N) three 1x1 convs give A = phi(X) (m x N, the
features), B = theta(X) (n x N, the gathering attention maps) and V = rho(X) (n x N, the
distribution attention vectors). Here n is ``K``.

* gather (second-order attention pooling): ``G = A softmax_N(B)^T`` (m x K): each of the K
  maps, softmax-normalised over the N positions, pools A into one global descriptor;
* distribute: ``Z = G softmax_K(V)`` (m x N): every pixel takes a convex combination of the
  K descriptors, the weights softmax-normalised over K;
* a 1x1 conv expands m back to C and the result is added to X (residual).

The relation to EMANet ("A2Net is EMA with T = 1 and bases learned by backprop"),
precisely. EMA with T = 1 on x = conv_in(X) computes

    z = softmax_K(x^T mu)                  (N x K)   E-step
    mu1 = l2_C(x l1_N(z))                  (m x K)   M-step
    x_hat = mu1 z^T                        (m x N)   reconstruction

so with ``A = x`` and ``B = V = mu^T x`` (one conv for both maps, whose weight is
mu^T W_in and bias mu^T b_in):

* the **distribution** weights coincide exactly: A2's softmax over K of V *is* EMA's E-step
  softmax over K;
* the **gathering** weights do not: A2 softmaxes B over the N positions, EMA softmaxes the
  same logits over K and then L1-normalises each column over N. The two agree only when the
  per-pixel partition function sum_k exp(B_kn) is the same for every pixel;
* EMA L2-normalises the descriptors (the M-step's normalisation); A2 does not;
* EMA's output stage is ``ReLU -> conv -> BN -> + X -> ReLU``; A2's is ``conv -> + X``;
* EMANet keeps m = C; A2Net's descriptors are narrower (m = C/reduction).

Both blocks expose these five switches under the same names (``gather``, ``shared_maps``,
``descriptor_norm``, ``out_relu``, ``reduction``), each at its own paper's value by default.
:func:`a2_from_ema` builds the A2Block with an EMA block's switches and copies its weights
(a map conv's weight is mu^T W_in, or nu^T W_in for EMA's separate distribution bases nu);
for T = 1 the two agree in value whichever way the bases are kept, and in gradient only with
``bases: learned``: EMANet's moving-average iterations run without grad, so neither the maps
nor the input conv get a gradient through the attention in EMA, while they do in A2.
``tests/attention/test_em_a2.py`` checks both, and that with all five switches at A2Net's values the
EMA block computes A2Net's equations.

What the switches do not close. The map weights are factored through the bases, mu^T W_in:
with reduction their rank is at most m, a restriction whenever K > m (with m = C and K <= C
every K x C weight can be written mu^T W_in for an invertible W_in, a reparametrisation), and
the maps' biases are tied to A's (mu^T b_in). Initialisation differs too (EMA: Kaiming fan-out
convs and unit-norm bases; here PyTorch's default convs). So the last rung of the
``em_iterations`` ladder and the ``a2net`` preset compute the same equations from differently
parametrised, differently initialised weights; the gap between them in a study measures that.

Where ours differs from the paper: the expansion conv is followed by BatchNorm (the paper
shows a 1x1 conv; the BN is the one every residual block in this harness has, and EMANet's
output stage has it, which the equivalence needs). Defaults m = C/4 and K = 64 are ours: the
paper sizes m and n relative to the host layer; K = 64 matches EMANet so the two presets are
comparable.
"""
from __future__ import annotations

import torch
from torch import nn

from . import maps
from .ema import EMABlock, l1_over, l2_normalise
from ..config.vocab import choice, nodes, reduction, switch


class A2Block(nn.Module):
    """Double attention: gather K global descriptors, distribute them to every pixel."""

    FACTORS = (
        nodes("number of global descriptors n"),
        reduction("descriptor width m = C/reduction"),
        switch("shared_maps", "gather and distribute maps from one conv (EMA form)"),
        choice("gather", ("softmax", "em"), "gather weights: softmax over positions (paper) or EMA's softmax "
               "over K then L1 over positions"),
        choice("descriptor_norm", ("none", "l2"), "L2-normalise the K descriptors (EMA's M-step)"),
        switch("out_relu", "EMANet's ReLUs before the output conv and after the residual"),
    )

    def __init__(self, channels: int, K: int = 64, reduction: int = 4, shared_maps: bool = False,
                 gather: str = "softmax", descriptor_norm: str = "none", out_relu: bool = False):
        super().__init__()
        if gather not in ("softmax", "em"):
            raise ValueError(f"gather must be 'softmax' or 'em', got {gather!r}")
        if descriptor_norm not in ("none", "l2"):
            raise ValueError(f"descriptor_norm must be 'none' or 'l2', got {descriptor_norm!r}")
        m = max(1, channels // reduction)
        self.channels, self.m, self.K = channels, m, K
        self.shared_maps, self.gather, self.descriptor_norm, self.out_relu = (
            shared_maps, gather, descriptor_norm, out_relu)
        self.features = nn.Conv2d(channels, m, kernel_size=1)  # phi -> A
        self.gather_maps = nn.Conv2d(channels, K, kernel_size=1)  # theta -> B
        # rho -> V; the same module when shared (as non_local.py shares theta/phi).
        self.distribute_maps = self.gather_maps if shared_maps else nn.Conv2d(channels, K, kernel_size=1)
        self.expand = nn.Conv2d(m, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gather, distribute)``, both (B, K, N): pooling weights per descriptor, mixing per pixel."""
        logits_b = self.gather_maps(x).flatten(2)
        logits_v = logits_b if self.shared_maps else self.distribute_maps(x).flatten(2)
        if self.gather == "softmax":
            g = torch.softmax(logits_b, dim=2)  # over positions (paper)
        else:
            g = l1_over(torch.softmax(logits_b, dim=1), dim=2)  # EMA: over K, then L1 over positions
        return g, torch.softmax(logits_v, dim=1)  # distribute: over K per pixel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x).flatten(2)  # B, m, N
        g, d = self.attention(x)
        maps.record("gather", g, kind="maps", grid=x.shape[-2:])
        maps.record("distribute", d, kind="maps", grid=x.shape[-2:])
        desc = a @ g.transpose(1, 2)  # B, m, K: the K global descriptors
        if self.descriptor_norm == "l2":
            desc = l2_normalise(desc, dim=1)
        y = (desc @ d).reshape(x.shape[0], self.m, *x.shape[2:])
        if self.out_relu:
            y = torch.relu(y)
        out = x + self.norm(self.expand(y))
        return torch.relu(out) if self.out_relu else out


def a2_from_ema(ema: EMABlock) -> A2Block:
    """An :class:`A2Block` that computes what ``ema`` (with T = T_eval = 1) computes.

    Configuration: ``ema``'s five switches (m = its width; the EMANet defaults give m = C,
    shared maps, ``gather='em'``, ``descriptor_norm='l2'``, ``out_relu=True``); weights: A's
    conv is EMA's ``conv_in``, the map convs are ``mu^T conv_in`` (and ``nu^T conv_in`` for
    separate maps), from the current bases; the expansion conv and BN are EMA's. Equal in
    value whichever way the bases are kept; equal in gradient only with learned bases.
    """
    if ema.em.T != 1 or ema.em.T_eval != 1:
        raise ValueError(f"a2_from_ema needs one EM iteration (T = T_eval = 1), got T={ema.em.T}, T_eval={ema.em.T_eval}")
    c, k = ema.channels, ema.em.K
    a2 = A2Block(c, K=k, reduction=ema.reduction, shared_maps=ema.shared_maps, gather=ema.em.gather,
                 descriptor_norm=ema.em.descriptor_norm, out_relu=ema.out_relu)
    p = next(ema.parameters())
    a2 = a2.to(device=p.device, dtype=p.dtype)
    w_in, b_in = ema.conv_in.weight.flatten(1), ema.conv_in.bias  # m, C_in and m
    with torch.no_grad():
        a2.features.weight.copy_(ema.conv_in.weight)
        a2.features.bias.copy_(b_in)
        maps = [(a2.gather_maps, ema.em.mu[0])]
        if not ema.shared_maps:
            maps.append((a2.distribute_maps, ema.distribute[0]))
        for conv, bases in maps:  # bases: m, K
            bases = bases.to(p.dtype)
            conv.weight.copy_((bases.T @ w_in).reshape(k, c, 1, 1))
            conv.bias.copy_(bases.T @ b_in)
        a2.expand.weight.copy_(ema.conv_out.weight)
    a2.norm.load_state_dict(ema.norm.state_dict())
    a2.train(ema.training)
    return a2
