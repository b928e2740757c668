"""Non-local: every pixel meets every other pixel through an affinity (pairwise family).

Non-local Neural Networks, Wang, Girshick, Gupta, He, CVPR 2018,
https://arxiv.org/abs/1711.07971. Official code compared against:
facebookresearch/video-nonlocal-net (``lib/models/nonlocal_helper.py``, defaults in
``lib/core/config.py``) and mmcv 2.1's ``cnn/bricks/non_local.py`` (``NonLocal2d``, the block
mmsegmentation's ``NLHead`` builds with a BN on its output conv).

The block is written in the survey's slots:

* transforms ``theta`` (query), ``phi`` (key), ``sigma`` (value; the paper's g), each a
  1x1 conv when on and the identity when off; ``shared_qk`` makes phi the same module
  as theta, so the affinity is symmetric;
* ``affinity``: ``dot`` (theta_i . phi_j) or ``concat`` (ReLU(w . [theta_i; phi_j]));
* ``normalization``: ``softmax`` over j, or ``mean`` (divide by N, the paper's choice for
  the dot-product and concatenation forms);
* ``scale``: divide dot products by sqrt(d). The official code does so in the softmax path
  only (``USE_SCALE``; mmcv: ``use_scale`` in ``embedded_gaussian`` only), so the embedded
  Gaussian preset scales and the Gaussian, dot-product and concatenation presets do not;
* ``pattern``: which pixels meet (:mod:`.patterns`): ``full``, ``criss_cross``,
  ``interlaced``, ``local_window`` or ``sampled``, with ``window``, ``down_factor``, ``samples``
  and ``radius``; the sparse patterns need the softmax of a dot product (they choose the set
  the softmax runs over). ``R`` runs the block R times (CCNet's recurrence; with a sparse
  pattern, R = 2 lets every pixel reach every other): the transforms and the output conv are
  shared by the passes, and **each pass has its own output BN** (its own statistics and
  affine), since the passes see differently distributed inputs; CCNet's own module has no BN;
* output transform W (1x1 conv, no bias, + BN) and the residual; ``zero_init`` zeroes every
  BN gamma so the block starts as the identity (official: ``BN_INIT_GAMMA = 0``);
* ``init_std``: the official code draws every conv of the block (theta, phi, g and the output
  conv) from N(0, 0.01^2) with zero biases (``CONV_INIT_STD``); ``init_std: 0`` keeps PyTorch's
  default init instead (this harness's form before). mmcv draws theta, phi, g the same way but
  leaves its output conv at its ConvModule's Kaiming (fan-out) init when a norm follows; with
  the BN gamma at 0 and a BN after it, that conv's scale does not change the output.
  ``pre_conv`` and the concatenation form's w keep PyTorch's default init (neither official
  code initialises them: the first is not in the paper, mmcv leaves the second to ConvModule);
* ``pre_conv``: one 1x1 conv on the block's input before the transforms, the alternative the
  ``drop_transforms`` study offers when theta/phi/sigma are dropped (not in the paper).
* ``dropped_qk``: what stands in for theta and phi when both are dropped. ``identity`` (the
  default, the Gaussian form) leaves nothing; ``matched`` is the parameter-matched control of
  the drop (not in the paper). Dropping one of theta/phi widens the other to C x C (the query
  and key widths must agree), which at ``reduction`` 2 keeps the block's parameter count;
  dropping sigma widens W's input and changes it by C/2 biases (under 1%); dropping *both*
  theta and phi removes 2 (C x C/2 + C/2) = C^2 + C parameters, half the block. ``matched``
  puts exactly those back as one 1x1 conv C -> C with bias on a pointwise branch added to W's
  output inside the output BN: ``x + BN(W y + M x)``, each pass with the same M. The control
  keeps the count, the init (N(0, init_std^2), zero bias) and the identity start (the BN gamma
  is 0), and the parameters are learned and reach the output at every pixel, but they never
  enter the affinity, which stays x_i . x_j: the matched cell differs from the full block in
  *where* the parameters act (shaping which pixels meet vs acting on each pixel alone), so the
  two together say whether the transforms are needed or only their parameters are. A shared
  embedding before the block (``pre_conv``, the same C^2 + C) would not do: it enters the
  affinity as a shared query/key transform (x^T P^T P x). ``matched`` needs both theta and phi
  off and ``reduction`` 2 (elsewhere no C x C conv has the dropped count).

The paper's four forms are presets, each at the official settings above (the tests compare
them with mmcv's ``NonLocal2d`` in the same mode): embedded Gaussian (``nonlocal``) = dot +
softmax with theta/phi on, scaled; Gaussian (``nonlocal_gaussian``) = dot + softmax with
theta/phi off, unscaled; dot product (``nonlocal_dot``) = dot + mean; concatenation
(``nonlocal_concat``) = concat + mean. The paper's text gives none of the scale or the init;
the official code does. Differences from the official code: no max-pool subsampling of phi and
g (``USE_MAXPOOL``; mmcv's ``sub_sample`` default is off too); the output conv has no bias
(video-nonlocal-net's has one, mmcv's has none when a norm follows; a BN follows it here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import maps
from . import patterns as P
from . import rules
from ..config.vocab import FactorConflict, choice, integer, number, reduction, switch
from .widths import reduced


def _conv1x1(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=bias)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class NonLocalBlock(nn.Module):
    """Non-local block with every transform, affinity and normalisation as a switch.

    The defaults are the embedded Gaussian form's; the table's other three forms change
    ``theta``/``phi``, ``affinity``, ``normalization`` and ``scale`` (see the module docstring)."""

    FACTORS = (
        reduction("inner width C/reduction (paper: 2)"),
        switch("theta", "query transform (identity when off)"),
        switch("phi", "key transform (identity when off)"),
        switch("sigma", "value transform g (identity when off)"),
        switch("shared_qk", "phi is theta: symmetric affinity for the dot forms"),
        choice("affinity", ("dot", "concat")),
        choice("normalization", ("softmax", "mean")),
        switch("scale", "divide dot products by sqrt(d) (official: in the embedded Gaussian form only)"),
        switch("zero_init", "zero BN gamma on the output transform (official)"),
        number("init_std", 0.0, "convs drawn from N(0, init_std^2), zero biases (official: 0.01); "
               "0: PyTorch's default init"),
        switch("pre_conv", "one 1x1 conv before the block (with transforms dropped)"),
        choice("dropped_qk", ("identity", "matched"), "with theta and phi both off: nothing in their place "
               "(identity), or their parameter count as a pointwise conv outside the affinity (matched: the "
               "control of the drop)", added=True),
        choice("pattern", P.PATTERNS, "which pixels meet (sparse patterns need the dot affinity with softmax)"),
        integer("R", 1, "passes of the block with shared weights (CCNet's recurrence)", added=True),
        integer("window", 1, "local_window pattern: odd window side", added=True),
        integer("down_factor", 2, "interlaced pattern: lattice stride / block side", added=True),
        integer("samples", 1, "sampled pattern: pixels met, the centre included", added=True),
        integer("radius", 1, "sampled pattern: offsets drawn within this radius", added=True),
    )

    def __init__(self, channels: int, reduction: int = 2, theta: bool = True, phi: bool = True, sigma: bool = True,
                 shared_qk: bool = False, affinity: str = "dot", normalization: str = "softmax", scale: bool = True,
                 pattern: str = "full", zero_init: bool = True, pre_conv: bool = False, R: int = 1, window: int = 7,
                 down_factor: int = 4, samples: int = 36, radius: int = 12, init_std: float = 0.01,
                 dropped_qk: str = "identity"):
        super().__init__()
        self.check_args(dict(affinity=affinity, normalization=normalization, pattern=pattern, R=R,
                             window=window, down_factor=down_factor, samples=samples, radius=radius,
                             init_std=init_std, theta=theta, phi=phi, shared_qk=shared_qk,
                             reduction=reduction, dropped_qk=dropped_qk))
        self.pattern, self.R, self.window, self.down_factor = pattern, R, window, down_factor
        if pattern == "sampled":
            self.register_buffer("offsets", P.offsets(samples, radius), persistent=False)
        inter = reduced(channels, reduction)
        # A transform that is off is the identity, so the query and key widths must agree:
        # if either is the identity both live in the input's C channels.
        qk_dim = inter if (theta and phi) else channels
        if shared_qk:
            phi = theta
            qk_dim = inter if theta else channels
        v_dim = inter if sigma else channels
        self.channels, self.qk_dim, self.v_dim = channels, qk_dim, v_dim
        self.affinity, self.normalization, self.scale = affinity, normalization, scale
        self.shared_qk = shared_qk
        # the drop_transforms ablation's alternative: with theta/phi/sigma off, a single 1x1 conv
        # before the block keeps a learned embedding (the output transform W is the one after)
        self.pre = _conv1x1(channels, channels) if pre_conv else nn.Identity()
        self.theta = _conv1x1(channels, qk_dim) if theta else nn.Identity()
        if shared_qk:
            self.phi = self.theta
        else:
            self.phi = _conv1x1(channels, qk_dim) if phi else nn.Identity()
        self.sigma = _conv1x1(channels, v_dim) if sigma else nn.Identity()
        if affinity == "concat":
            # w . [theta_i; phi_j] split into its query and key halves.
            self.concat_q = nn.Linear(qk_dim, 1, bias=False)
            self.concat_k = nn.Linear(qk_dim, 1, bias=False)
        elif affinity != "dot":
            raise ValueError(f"affinity must be 'dot' or 'concat', got {affinity!r}")
        if normalization not in ("softmax", "mean"):
            raise ValueError(f"normalization must be 'softmax' or 'mean', got {normalization!r}")
        # W and the first pass's BN; passes 2..R share W and have a BN each
        self.out = nn.Sequential(_conv1x1(v_dim, channels, bias=False), nn.BatchNorm2d(channels))
        self.later_norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(R - 1))
        # the matched control of dropping theta and phi: their C^2 + C parameters as a pointwise conv
        self.matched = _conv1x1(channels, channels) if dropped_qk == "matched" else None
        if self.matched is not None and _params(self.matched) != 2 * (channels * inter + inter):
            raise FactorConflict("dropped_qk", f"dropped_qk: matched replaces theta and phi by one C x C conv, which "
                                 f"has their parameter count only when C/reduction = C/2; at C = {channels} the "
                                 f"inner width is {inter}, so use dropped_qk: identity")
        self.widths = {"qk": qk_dim, "value": v_dim}
        self._init_weights(init_std, zero_init)

    def _init_weights(self, init_std: float, zero_init: bool) -> None:
        """The official N(0, init_std^2) conv weights with zero biases (``init_std`` > 0), and
        every output BN's gamma at 0 (``zero_init``), so the block starts as the identity."""
        if init_std > 0:
            for conv in (self.theta, self.phi, self.sigma, self.out[0], self.matched):
                if isinstance(conv, nn.Conv2d):
                    nn.init.normal_(conv.weight, std=init_std)
                    if conv.bias is not None:
                        nn.init.zeros_(conv.bias)
        if zero_init:
            for norm in self.norms:
                nn.init.zeros_(norm.weight)

    @property
    def norms(self) -> list[nn.BatchNorm2d]:
        """The output BN of each pass, in order."""
        return [self.out[1], *self.later_norms]

    check_args = staticmethod(rules.non_local)  # combinations it cannot build, torch-free (.rules)

    def _maps(self, x: torch.Tensor):
        """Query, key and value maps (B, d, H, W), (B, d, H, W), (B, dv, H, W)."""
        x = self.pre(x)
        return self.theta(x), self.phi(x), self.sigma(x)

    def _qkv(self, x: torch.Tensor):
        """The maps as pixel sequences: (B, N, d), (B, N, d), (B, N, dv)."""
        return tuple(t.flatten(2).transpose(1, 2) for t in self._maps(x))

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.affinity == "dot":
            s = q @ k.transpose(1, 2)
            return s * self.qk_dim ** -0.5 if self.scale else s
        return F.relu(self.concat_q(q) + self.concat_k(k).transpose(1, 2))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised N x N affinity (materialised; for inspection and tests)."""
        q, k, _ = self._qkv(x)
        s = self._scores(q, k)
        return s.softmax(-1) if self.normalization == "softmax" else s / s.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            x = self._one_pass(x, norm)
        return x

    def _output(self, y: torch.Tensor, norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        if self.matched is None:
            return norm(self.out[0](y))
        return norm(self.out[0](y) + self.matched(x))  # the control's pointwise branch, outside the affinity

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._maps(x)
        if self.scale:
            q = q * self.qk_dim ** -0.5
        if maps.active():  # the softmax over the pattern's pixels, as one map (the kernels never hold it)
            with torch.no_grad():
                h, w = q.shape[-2:]
                allowed = P.mask(self.pattern, h, w, self.window, self.down_factor,
                                 getattr(self, "offsets", None)).to(q.device)
                s = torch.einsum("bdn,bdm->bnm", q.flatten(2), k.flatten(2))
                maps.record("affinity", maps.masked_softmax(s, allowed), grid=(h, w))
        if self.pattern == "criss_cross":
            return P.criss_cross(q, k, v)
        if self.pattern == "interlaced":
            return P.interlaced(q, k, v, self.down_factor)
        if self.pattern == "local_window":
            return P.local_window(q, k, v, self.window)
        return P.sampled(q, k, v, self.offsets)

    def _one_pass(self, x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
        if self.pattern != "full":
            return x + self._output(self._sparse(x), norm, x)
        b, _, h, w = x.shape
        q, k, v = self._qkv(x)
        if maps.active():  # the normalised N x N affinity (scaled_dot_product_attention never holds it)
            with torch.no_grad():
                s = self._scores(q, k)
                maps.record("affinity", s.softmax(-1) if self.normalization == "softmax" else s / s.shape[-1],
                            grid=(h, w))
        if self.affinity == "dot" and self.normalization == "softmax":
            scale = self.qk_dim ** -0.5 if self.scale else 1.0
            y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale)
            y = y.squeeze(1)
        elif self.affinity == "dot":
            # (q k^T / N) v = q (k^T v) / N: linear in N, no N x N matrix.
            kv = k.transpose(1, 2) @ v
            y = (q @ kv) / k.shape[1]
            if self.scale:
                y = y * self.qk_dim ** -0.5
        else:
            y = self.attention_map(x) @ v
        y = y.transpose(1, 2).reshape(b, self.v_dim, h, w)
        return x + self._output(y, norm, x)
