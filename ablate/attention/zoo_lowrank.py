"""Presets of the low-rank and gating families, for the registry in ``__init__.py`` to import.

``PRESETS`` binds each mechanism name to its block and factors; defaults are the papers'
(where a paper gives no number that transfers, the block's docstring says what we chose).
Low-rank presets use the shared slot names ``K``, ``T``, ``T_eval``, ``momentum``, ``gcn``
where they apply; the ``mapping`` slot's alternatives live in ``projection.py`` for
LowRankBlock. CARAFE is not here: it is a head upsampler (``ablate/models/carafe.py``).
"""
from __future__ import annotations

from .a2net import A2Block
from .apcnet import SCALE_CHOICES, APCBlock
from .ema import EMABlock
from .gating import CBAMBlock, SEBlock, STNBlock
from .graph_reasoning import GCUBlock, LatentGNNBlock, SGRBlock
from .vocab import Factor, Preset

_BOOL = dict(kind="bool")


def _K(default: int, help: str = "number of nodes / bases") -> Factor:
    return Factor("K", default, "int", minimum=1, help=help)


def _gcn(help: str) -> Factor:
    return Factor("gcn", True, **_BOOL, help=help)


PRESETS: tuple[Preset, ...] = (
    Preset("emanet", "lowrank", EMABlock, (
        _K(64, "number of bases (paper: 64)"),
        Factor("T", 3, "int", minimum=1, help="EM iterations in training (paper: 3)"),
        Factor("T_eval", 3, "int", minimum=1, help="EM iterations in evaluation"),
        Factor("momentum", 0.9, "float", minimum=0.0, help="moving average of the bases, in [0, 1] (paper: 0.9)"),
        Factor("bases", "moving_average", "choice", choices=("moving_average", "learned"),
               help="no-grad EM + moving average (paper), or bases learned by backprop through the EM"),
        # A2Net's five switches (ema.py, a2net.py): at EMANet's values by default, rebuilding the block as before.
        Factor("gather", "em", "choice", choices=("em", "softmax"), added=True,
               help="M-step pooling: softmax over K then L1 over positions (paper), or A2Net's softmax over positions"),
        Factor("shared_maps", True, **_BOOL, added=True,
               help="the responsibilities gather and distribute (paper); off: A2Net's separate distribution map"),
        Factor("descriptor_norm", "l2", "choice", choices=("l2", "none"), added=True,
               help="L2-normalise the bases after each M-step (paper), or not (A2Net)"),
        Factor("out_relu", True, **_BOOL, added=True,
               help="ReLU on the reconstruction and after the residual (paper); off: A2Net's plain residual"),
        Factor("reduction", 1, "int", minimum=1, added=True,
               help="bases width m = C/reduction (paper: 1; A2Net's descriptors are narrower)"),
    ), "Expectation-Maximization Attention Networks for Semantic Segmentation (Li et al., ICCV 2019)",
        "T EM iterations of K bases (softmax E-step, normalised M-step), reconstruct x = mu z^T"),
    Preset("a2net", "lowrank", A2Block, (
        _K(64, "number of global descriptors n"),
        Factor("reduction", 4, "int", minimum=1, help="descriptor width m = C/reduction"),
        Factor("shared_maps", False, **_BOOL, help="gather and distribute maps from one conv (EMA form)"),
        Factor("gather", "softmax", "choice", choices=("softmax", "em"),
               help="gather weights: softmax over positions (paper) or EMA's softmax over K then L1 over positions"),
        Factor("descriptor_norm", "none", "choice", choices=("none", "l2"),
               help="L2-normalise the K descriptors (EMA's M-step)"),
        Factor("out_relu", False, **_BOOL, help="EMANet's ReLUs before the output conv and after the residual"),
    ), "A^2-Nets: Double Attention Networks (Chen et al., NeurIPS 2018)",
        "gather K descriptors by softmax-over-positions pooling, distribute by softmax over K per pixel"),
    Preset("sgr", "lowrank", SGRBlock, (
        _K(16, "number of symbolic nodes"),
        Factor("state_reduction", 2, "int", minimum=1, help="node feature width C/state_reduction"),
        _gcn("graph reasoning over the (learned) node graph"),
        Factor("vote_norm", "sum", "choice", choices=("sum", "mean"),
               help="node features: sum of votes over pixels (paper) or their mean"),
    ), "Symbolic Graph Reasoning Meets Convolutions (Liang et al., NeurIPS 2018)",
        "pixels vote onto K nodes, GCN over a learned graph with node embeddings, map back by compatibility"),
    Preset("beyond_grids", "lowrank", GCUBlock, (
        _K(16, "number of graph vertices"),
        _gcn("graph convolution with the node-similarity adjacency"),
    ), "Beyond Grids: Learning Graph Representations for Visual Recognition (Li & Gupta, NeurIPS 2018)",
        "soft-assign pixels to K anchors (with variances), GCN, reproject with the same assignment"),
    Preset("latentgnn", "lowrank", LatentGNNBlock, (
        _K(100, "number of latent nodes"),
        Factor("reduction", 4, "int", minimum=1, help="visible features C/reduction"),
        _gcn("latent-to-latent message passing"),
        Factor("symmetric", False, **_BOOL, help="one kernel for visible-to-latent and latent-to-visible"),
    ), "LatentGNN: Learning Efficient Non-local Relations for Visual Recognition (Zhang et al., ICML 2019)",
        "visible-to-latent by ReLU kernels, dense latent graph, latent-to-visible, zero-init gamma"),
    Preset("apcnet", "lowrank", APCBlock, (
        Factor("scales", "1,2,3,6", "choice", choices=SCALE_CHOICES, help="pooling scales of the ACMs"),
        Factor("reduction", 4, "int", minimum=1, help="ACM width C/reduction"),
        Factor("fusion", True, **_BOOL, help="fusion conv after each ACM"),
    ), "Adaptive Pyramid Context Network for Semantic Segmentation (He et al., CVPR 2019)",
        "per-pixel sigmoid affinities to s x s pooled regions for s in scales, fused with the input"),
    Preset("senet", "gating", SEBlock, (
        Factor("reduction", 16, "int", minimum=1, help="MLP hidden width max(4, C/reduction)"),
    ), "Squeeze-and-Excitation Networks (Hu et al., CVPR 2018)",
        "x * sigmoid(MLP(global average pool(x))): channel gate"),
    Preset("cbam", "gating", CBAMBlock, (
        Factor("reduction", 16, "int", minimum=1, help="MLP hidden width max(4, C/reduction)"),
        Factor("channel", True, **_BOOL, help="channel gate (avg+max pool, shared MLP)"),
        Factor("spatial", True, **_BOOL, help="spatial gate (7x7 conv on channel max/mean)"),
    ), "CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018)",
        "channel gate then spatial gate, x * Mc * Ms"),
    Preset("stn", "gating", STNBlock, (), "Spatial Transformer Networks (Jaderberg et al., NeurIPS 2015)",
           "resample the features on an affine grid predicted from them (identity at init)"),
)

__all__ = ["PRESETS"]
