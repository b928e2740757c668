"""The preset table: every mechanism by family, one line from its name to its block.

A preset is a name, a block and the values where the mechanism differs from the block's
defaults; the factors (what a study may change, and the valid values) are the block's
``FACTORS``, declared beside the class. The table names each block by where it is
(:func:`.manifest.block`), its factors read from the manifest, so that reading a study imports no
torch; a preset's ``block`` imports the class when something builds it. To add a mechanism: write
its block in a module named after it (its paper and official code in the module docstring,
``FACTORS`` beside the class, each factor's default as the block's keyword default), name it
below and add one ``Preset`` line to its family; run ``python -m ablate.attention.presets``
(``tests/attention/test_manifest.py`` asks for it); ``tests/project/test_architecture.py`` asks
for the new preset to be pinned (``python tests/pins.py``) and ``tests/attention/test_attention.py``
checks every preset builds.
"""
from __future__ import annotations

import dataclasses

from ..config.vocab import Preset
from .manifest import PATH, block, generate

FAMILIES = ("none", "pairwise", "lowrank", "gating")

# each block by where it is (its module imports torch, imported when a preset builds it) with its
# factors from the manifest (.manifest), so that reading a study imports no torch
A2Block = block("a2net", "A2Block")
APCBlock = block("apcnet", "APCBlock")
GCUBlock = block("beyond_grids", "GCUBlock")
CBAMBlock = block("cbam", "CBAMBlock")
CGNLBlock = block("cgnl", "CGNLBlock")
CCNetBlock = block("criss_cross", "CCNetBlock")
DANetBlock = block("danet", "DANetBlock")
DGMNBlock = block("dgmn", "DGMNBlock")
DisentangledNonLocalBlock = block("dnl", "DisentangledNonLocalBlock")
EMABlock = block("ema", "EMABlock")
GlobalContextBlock = block("gcnet", "GlobalContextBlock")
LowRankBlock = block("glore", "LowRankBlock")
ISABlock = block("interlaced", "ISABlock")
LatentGNNBlock = block("latentgnn", "LatentGNNBlock")
LocalRelationBlock = block("local_relation", "LocalRelationBlock")
NonLocalBlock = block("non_local", "NonLocalBlock")
NoAttention = block("none", "NoAttention")
OCNetBlock = block("ocnet", "OCNetBlock")
PSANetBlock = block("psanet", "PSANetBlock")
SEBlock = block("senet", "SEBlock")
SGRBlock = block("sgr", "SGRBlock")
STNBlock = block("stn", "STNBlock")

NONLOCAL = "Non-local Neural Networks (Wang et al., CVPR 2018)"
DANET = "Dual Attention Network for Scene Segmentation (Fu et al., CVPR 2019)"
OCNET = "OCNet: Object Context Network for Scene Parsing (Yuan & Wang, arXiv 2018)"

# the Non-local forms besides the embedded Gaussian (the block's defaults); non_local.py's docstring
_GAUSSIAN = {"theta": False, "phi": False, "scale": False}
_DOT = {"normalization": "mean", "scale": False}
_CONCAT = {"affinity": "concat", "normalization": "mean", "scale": False}

def _stamped(table: dict[str, tuple[Preset, ...]]) -> dict[str, tuple[Preset, ...]]:
    """Each preset with ``family`` set to the group it is listed under."""
    return {family: tuple(dataclasses.replace(p, family=family) for p in presets) for family, presets in table.items()}


TABLE: dict[str, tuple[Preset, ...]] = _stamped({
    "none": (
        Preset("none", NoAttention, summary="no attention block (control)"),
    ),
    "pairwise": (
        Preset("nonlocal", NonLocalBlock, paper=NONLOCAL,
               summary="embedded Gaussian: softmax(theta_i . phi_j / sqrt(d)) over all pixels"),
        Preset("nonlocal_gaussian", NonLocalBlock, _GAUSSIAN, paper=NONLOCAL,
               summary="Gaussian: softmax(x_i . x_j), theta and phi are the identity"),
        Preset("nonlocal_dot", NonLocalBlock, _DOT, paper=NONLOCAL, summary="dot product: (theta_i . phi_j) / N"),
        Preset("nonlocal_concat", NonLocalBlock, _CONCAT, paper=NONLOCAL,
               summary="concatenation: ReLU(w . [theta_i; phi_j]) / N"),
        Preset("danet", DANetBlock, paper=DANET,
               summary="position attention over all pixels plus channel attention, zero-init gammas, one residual"),
        Preset("danet_position", DANetBlock, {"branch": "position"}, paper=DANET,
               summary="DANet position attention module only: softmax(q_i . k_j) at C/8, gamma 0"),
        Preset("danet_channel", DANetBlock, {"branch": "channel"}, paper=DANET,
               summary="DANet channel attention module only: C x C affinity with the max-minus trick, gamma 0"),
        Preset("ocnet", OCNetBlock, paper=OCNET,
               summary="base object context: shared-key/query self-attention, concat with input, 1x1 fuse"),
        Preset("ocnet_pyramid", OCNetBlock, {"variant": "pyramid"}, paper=OCNET,
               summary="pyramid object context: self-attention inside 1x1, 2x2, 3x3, 6x6 regions, concat-fuse"),
        Preset("ocnet_asp", OCNetBlock, {"variant": "asp"}, paper=OCNET,
               summary="ASP-OC: atrous branches (dilations scaled for small maps) plus an object-context branch"),
        Preset("ccnet", CCNetBlock,
               paper="CCNet: Criss-Cross Attention for Semantic Segmentation (Huang et al., ICCV 2019)",
               summary="criss-cross attention: each pixel attends to its row and column, applied R times"),
        Preset("isa", ISABlock,
               paper="Interlaced Sparse Self-Attention for Semantic Segmentation (Huang et al., arXiv 2019)",
               summary="interlaced sparse self-attention: long-range groups, then short-range groups"),
        Preset("local_relation", LocalRelationBlock,
               paper="Local Relation Networks for Image Recognition (Hu et al., ICCV 2019)",
               summary="attention inside a k x k window: key/query per channel group plus a geometry prior"),
        Preset("gcnet", GlobalContextBlock,
               paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond (Cao et al., ICCVW 2019)",
               summary="query-independent attention: one softmax map pools a global context added to every pixel"),
        Preset("dnl", DisentangledNonLocalBlock,
               paper="Disentangled Non-Local Neural Networks (Yin et al., ECCV 2020)",
               summary="non-local split into a whitened pairwise term and a query-independent unary term"),
        Preset("cgnl", CGNLBlock, paper="Compact Generalized Non-local Network (Yue et al., NeurIPS 2018)",
               summary="compact generalized non-local: affinity over channels and positions, linear cost"),
        Preset("psanet", PSANetBlock,
               paper="PSANet: Point-wise Spatial Attention Network for Scene Parsing (Zhao et al., ECCV 2018)",
               summary="point-wise spatial attention: each pixel predicts an over-complete mask, cropped "
                       "PSAMask-style"),
        Preset("dgmn", DGMNBlock, paper="Dynamic Graph Message Passing Networks (Zhang et al., CVPR 2020)",
               summary="message passing over K sampled neighbours (seeded base offsets moved by input-predicted "
                       "offsets, bilinear) with predicted weights"),
    ),
    "lowrank": (
        Preset("glore", LowRankBlock,
               paper="Graph-Based Global Reasoning Networks (Chen et al., CVPR 2019)",
               summary="project to K nodes, GCN over nodes, reproject with the same projection"),
        Preset("emanet", EMABlock,
               paper="Expectation-Maximization Attention Networks for Semantic Segmentation (Li et al., ICCV 2019)",
               summary="T EM iterations of K bases (softmax E-step, normalised M-step), reconstruct x = mu z^T"),
        Preset("a2net", A2Block, paper="A^2-Nets: Double Attention Networks (Chen et al., NeurIPS 2018)",
               summary="gather K descriptors by softmax-over-positions pooling, distribute by softmax over K "
                       "per pixel"),
        Preset("sgr", SGRBlock, paper="Symbolic Graph Reasoning Meets Convolutions (Liang et al., NeurIPS 2018)",
               summary="pixels vote onto K nodes, GCN over a learned graph with node embeddings, map back by "
                       "compatibility"),
        Preset("beyond_grids", GCUBlock,
               paper="Beyond Grids: Learning Graph Representations for Visual Recognition (Li & Gupta, NeurIPS 2018)",
               summary="soft-assign pixels to K anchors (with variances), GCN, reproject with the same assignment"),
        Preset("latentgnn", LatentGNNBlock,
               paper="LatentGNN: Learning Efficient Non-local Relations for Visual Recognition (Zhang et al., "
                     "ICML 2019)",
               summary="visible-to-latent by ReLU kernels, dense latent graph, latent-to-visible, zero-init gamma"),
        Preset("apcnet", APCBlock,
               paper="Adaptive Pyramid Context Network for Semantic Segmentation (He et al., CVPR 2019)",
               summary="per-pixel sigmoid affinities to s x s pooled regions for s in scales, fused with the input"),
    ),
    "gating": (
        Preset("senet", SEBlock, paper="Squeeze-and-Excitation Networks (Hu et al., CVPR 2018)",
               summary="x * sigmoid(MLP(global average pool(x))): channel gate"),
        Preset("cbam", CBAMBlock, paper="CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018)",
               summary="channel gate then spatial gate, x * Mc * Ms"),
        Preset("stn", STNBlock, paper="Spatial Transformer Networks (Jaderberg et al., NeurIPS 2015)",
               summary="resample the features on an affine grid predicted from them (identity at init)"),
    ),
})


def _registry(table: dict[str, tuple[Preset, ...]]) -> dict[str, Preset]:
    """Name -> preset, in the table's order; names are unique and families known."""
    out: dict[str, Preset] = {}
    for family, presets in table.items():
        if family not in FAMILIES:
            raise RuntimeError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
        for p in presets:
            if p.name in out:
                raise RuntimeError(f"duplicate mechanism preset {p.name!r}")
            out[p.name] = p
    return out


class Registry(dict):
    """The built-in presets by name (iterating, ``len`` and ``items`` see these alone, so pins and
    listings never depend on what is installed); a lookup (``[name]``) or ``name in`` also finds a
    plugin's preset: ``module:attr`` or a name an installed package declares (:mod:`ablate.plugins`).
    A plugin that names something broken raises ``ablate.plugins.PluginError`` from both, so the
    user hears why rather than "unknown mechanism"."""

    def __missing__(self, name):
        from ..plugins.mechanisms import mechanism

        return mechanism(name, self)

    def __contains__(self, name) -> bool:
        if dict.__contains__(self, name):
            return True
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True


MECHANISMS: Registry = Registry(_registry(TABLE))


def resolve_mechanism(name: str, base=None) -> Preset:
    """The preset ``name`` names (built-in, ``module:attr`` with the study's folder ``base``
    importable, or installed); KeyError for an unknown name, ``ablate.plugins.PluginError`` for a
    plugin that cannot be used. The study loader calls this once per name it reads."""
    from ..plugins.mechanisms import mechanism

    return mechanism(name, MECHANISMS, base)


def installed_presets() -> list[Preset]:
    """The presets installed packages declare (entry points ``ablate.mechanisms``), each with its
    ``package``; ``ablate.plugins.PluginError`` for a broken one."""
    from ..plugins.mechanisms import installed_presets as installed

    return installed(MECHANISMS)


def get_preset(name: str) -> Preset:
    try:
        return MECHANISMS[name]
    except KeyError:
        raise KeyError(f"unknown mechanism {name!r}; valid: {', '.join(sorted(MECHANISMS))}") from None


if __name__ == "__main__":  # rewrite the manifest of the table's blocks (ablate/attention/factors.json)
    PATH.write_text(generate(MECHANISMS.values()))
    print(f"wrote {PATH}")
