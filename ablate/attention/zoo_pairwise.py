"""Presets of the pairwise family beyond Non-local: one per mechanism of the survey.

``PRESETS`` is imported by the registry (``ablate.attention.MECHANISMS``). Every factor's
default is the paper's (or its official code's) setting; where a block deviates from the paper
its module docstring says how and why.
"""
from __future__ import annotations

from .cgnl import CGNLBlock
from .context import DisentangledNonLocalBlock, GlobalContextBlock
from .criss_cross import CCNetBlock
from .danet import DANetBlock
from .dgmn import DGMNBlock
from .interlaced import ISABlock
from .local_relation import LocalRelationBlock
from .ocnet import OCNetBlock
from .psanet import PSANetBlock
from .vocab import Factor, Preset

_BOOL = dict(kind="bool")

_DANET = "Dual Attention Network for Scene Segmentation (Fu et al., CVPR 2019)"
_OCNET = "OCNet: Object Context Network for Scene Parsing (Yuan & Wang, arXiv 2018)"
_CCNET = "CCNet: Criss-Cross Attention for Semantic Segmentation (Huang et al., ICCV 2019)"
_ISA = "Interlaced Sparse Self-Attention for Semantic Segmentation (Huang et al., arXiv 2019)"
_LR = "Local Relation Networks for Image Recognition (Hu et al., ICCV 2019)"
_GC = "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond (Cao et al., ICCVW 2019)"
_DNL = "Disentangled Non-Local Neural Networks (Yin et al., ECCV 2020)"
_CGNL = "Compact Generalized Non-local Network (Yue et al., NeurIPS 2018)"
_PSA = "PSANet: Point-wise Spatial Attention Network for Scene Parsing (Zhao et al., ECCV 2018)"
_DGMN = "Dynamic Graph Message Passing Networks (Zhang et al., CVPR 2020)"


def _danet(branch: str) -> tuple[Factor, ...]:
    return (
        Factor("branch", branch, "choice", choices=("both", "position", "channel"),
               help="position attention (PAM), channel attention (CAM) or both summed"),
        Factor("qk_reduction", 8, "int", minimum=1, help="PAM query/key width C/qk_reduction (paper: 8)"),
        Factor("cam_max_minus", True, **_BOOL, help="CAM softmax(max - X X^T) as the official code (off: softmax(X X^T))"),
    )


def _ocnet(variant: str) -> tuple[Factor, ...]:
    return (
        Factor("variant", variant, "choice", choices=("base", "pyramid", "asp"),
               help="base object context, pyramid (regions 1,2,3,6) or ASP-OC (atrous branches + OC)"),
        Factor("shared_qk", True, **_BOOL, help="query and key share one transform (official: shared)"),
    )


PRESETS: tuple[Preset, ...] = (
    Preset("danet", "pairwise", DANetBlock, _danet("both"), _DANET,
           "position attention over all pixels plus channel attention, zero-init gammas, one residual"),
    Preset("danet_position", "pairwise", DANetBlock, _danet("position"), _DANET,
           "DANet position attention module only: softmax(q_i . k_j) at C/8, gamma 0"),
    Preset("danet_channel", "pairwise", DANetBlock, _danet("channel"), _DANET,
           "DANet channel attention module only: C x C affinity with the max-minus trick, gamma 0"),
    Preset("ocnet", "pairwise", OCNetBlock, _ocnet("base"), _OCNET,
           "base object context: shared-key/query self-attention, concat with input, 1x1 fuse"),
    Preset("ocnet_pyramid", "pairwise", OCNetBlock, _ocnet("pyramid"), _OCNET,
           "pyramid object context: self-attention inside 1x1, 2x2, 3x3, 6x6 regions, concat-fuse"),
    Preset("ocnet_asp", "pairwise", OCNetBlock, _ocnet("asp"), _OCNET,
           "ASP-OC: atrous branches (dilations scaled for small maps) plus an object-context branch"),
    Preset("ccnet", "pairwise", CCNetBlock, (
        Factor("R", 2, "int", minimum=1, help="recurrences of the same criss-cross module (paper: 2)"),
        Factor("qk_reduction", 8, "int", minimum=1, help="query/key width C/qk_reduction (paper: 8)"),
    ), _CCNET, "criss-cross attention: each pixel attends to its row and column, applied R times"),
    Preset("isa", "pairwise", ISABlock, (
        Factor("down_factor", 8, "int", minimum=1,
               help="partition side P: long-range groups are pixels P apart, short-range groups P x P blocks"),
        Factor("key_reduction", 2, "int", minimum=1, help="key/query width C/key_reduction (paper: 2)"),
    ), _ISA, "interlaced sparse self-attention: long-range groups, then short-range groups"),
    Preset("local_relation", "pairwise", LocalRelationBlock, (
        Factor("window", 7, "choice", choices=(1, 3, 5, 7, 9, 11, 13, 15),
               help="odd side k of the k x k window (paper: 7)"),
        Factor("channels_per_group", 8, "int", minimum=1,
               help="channels sharing one aggregation weight, m (paper: 8); key/query have C/m channels"),
        Factor("geometry", True, **_BOOL, help="learned geometry prior over relative positions"),
        Factor("composability", "dot", "choice", choices=("dot", "squared_diff"),
               help="appearance term: q*k or -(q-k)^2 per group"),
    ), _LR, "attention inside a k x k window: key/query per channel group plus a geometry prior"),
    Preset("gcnet", "pairwise", GlobalContextBlock, (
        Factor("reduction", 16, "int", minimum=1, help="bottleneck ratio r: C -> C/r (paper: 16)"),
        Factor("fusion", "add", "choice", choices=("add", "mul"), help="broadcast add or sigmoid-gated multiply"),
        Factor("pooling", "att", "choice", choices=("att", "avg"),
               help="query-independent attention pooling or global average pooling (SE-like)"),
        Factor("min_width", 4, "int", minimum=1,
               help="bottleneck floor: max(C // r, min_width) channels (1: the paper's C // r)"),
    ), _GC, "query-independent attention: one softmax map pools a global context added to every pixel"),
    Preset("dnl", "pairwise", DisentangledNonLocalBlock, (
        Factor("unary", True, **_BOOL, help="query-independent unary term softmax(w . x_j)"),
        Factor("whiten", True, **_BOOL, help="subtract the spatial means of query and key (whitened pairwise)"),
        Factor("temperature", 0.05, "float", minimum=1e-6, help="softmax temperature tau (official: 0.05)"),
        Factor("scale", True, **_BOOL, help="divide dot products by sqrt(d) (official segmentation: on)"),
        Factor("reduction", 2, "int", minimum=1, help="inner width C/reduction (paper: 2)"),
    ), _DNL, "non-local split into a whitened pairwise term and a query-independent unary term"),
    Preset("cgnl", "pairwise", CGNLBlock, (
        Factor("kernel", "dot", "choice", choices=("dot", "gaussian"),
               help="dot product or Taylor-expanded Gaussian RBF kernel"),
        Factor("groups", 8, "int", minimum=1, help="channel groups with their own compact kernel (paper: 8)"),
        Factor("order", 3, "int", minimum=0, help="Taylor order of the Gaussian kernel (official: 3)"),
        Factor("scale", False, **_BOOL, help="divide by sqrt(C_g H W) (paper's models: off)"),
        Factor("reduction", 2, "int", minimum=1, help="inner width C/reduction (paper: 2)"),
    ), _CGNL, "compact generalized non-local: affinity over channels and positions, linear cost"),
    Preset("psanet", "pairwise", PSANetBlock, (
        Factor("branch", "both", "choice", choices=("both", "collect", "distribute"),
               help="collect, distribute or both (bi-direction)"),
        Factor("grid", 16, "int", minimum=2,
               help="side of the attention map; masks are (2*grid-1)^2 channels (default 31x31 = 961)"),
        Factor("reduction", 4, "int", minimum=1, help="reduced width C/reduction (paper: 2048 -> 512)"),
    ), _PSA, "point-wise spatial attention: each pixel predicts an over-complete mask, cropped PSAMask-style"),
    Preset("dgmn", "pairwise", DGMNBlock, (
        Factor("samples", 36, "int", minimum=1, help="sampled neighbours K per pixel (official: 4 grids x 9)"),
        Factor("radius", 12, "int", minimum=0, help="base offsets drawn from [-radius, radius]^2 (official max dilation: 12)"),
        Factor("groups", 1, "int", minimum=1, help="channel groups with their own aggregation weights (official: 1)"),
        Factor("offsets", "learned", "choice", choices=("learned", "fixed"),
               help="sampling positions moved by offsets predicted from the input (paper), or the fixed base set"),
    ), _DGMN, "message passing over K sampled neighbours (seeded base offsets moved by input-predicted "
              "offsets, bilinear) with predicted weights"),
)

__all__ = ["PRESETS"]
