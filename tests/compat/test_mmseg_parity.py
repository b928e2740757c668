"""Parity with mmsegmentation 1.2.2: our block and mmseg's module, the same weights, the same output.

Every mmseg head that implements one of our mechanisms is built (through the mmcv.ops stand-in
of ``ablate.compat.mmcv_ops`` where mmcv-lite lacks the compiled ops), its weights, BatchNorm
running statistics included, are drawn at random, copied into our block through an explicit
name map that must use every tensor on both sides, and both run in float64, eval mode, on a
random 9 x 11 map (other sizes where a head needs them). The outputs must agree to a relative
error (max |ours - theirs| / max |theirs|) of 1e-5. Each comparison also checks that it can
fail: the output is not the input (the attention term counts) and a 1e-3 perturbation of our
weights is detected.

Where a head wraps the mechanism in convs that our blocks leave to the segmenter, the test
compares the exactly corresponding sub-computation and its docstring says which.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("mmcv")
pytest.importorskip("mmseg")

from ablate.compat.mmcv_ops import PSAMask as StandinPSAMask  # noqa: E402
from ablate.compat.mmcv_ops import install, is_standin  # noqa: E402

install()

with warnings.catch_warnings():  # mmcv-lite's own notice that MultiScaleDeformableAttention is missing
    warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention", category=UserWarning)
    import mmcv.ops  # noqa: E402
    from mmcv.cnn import ContextBlock, NonLocal2d  # noqa: E402
    from mmseg.models.decode_heads import (  # noqa: E402
        APCHead, CCHead, DAHead, DNLHead, EMAHead, GCHead, ISAHead, NLHead, PSAHead,
    )

from ablate.attention.apcnet import AdaptiveContext, APCBlock  # noqa: E402
from ablate.attention.criss_cross import CCNetBlock  # noqa: E402
from ablate.attention.danet import DANetBlock  # noqa: E402
from ablate.attention.dnl import DisentangledNonLocalBlock  # noqa: E402
from ablate.attention.ema import EMABlock  # noqa: E402
from ablate.attention.gcnet import GlobalContextBlock  # noqa: E402
from ablate.attention.interlaced import ISABlock  # noqa: E402
from ablate.attention.non_local import NonLocalBlock  # noqa: E402
from ablate.attention.psanet import PSANetBlock  # noqa: E402

pytestmark = [  # mmseg's notices when building a head's (unused) loss
    pytest.mark.filterwarnings("ignore:``build_loss`` would be deprecated:UserWarning"),
    pytest.mark.filterwarnings("ignore:Default ``avg_non_ignore``:UserWarning"),
]

TOL = 1e-5
C = 32
BN = dict(type="BN", requires_grad=True)
F64 = torch.float64




# --- helpers -------------------------------------------------------------------------------

def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Random weights of a sane scale and random BN running statistics; float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() <= 1 and p.numel() == 1:  # gammas (mmcv Scale, our scalars): clearly non-zero
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=F64))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) / math.sqrt(fan_in))
        for m in module.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g, dtype=F64))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=F64))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g, dtype=F64))
    return module


def transfer(theirs: nn.Module, ours: nn.Module, names: dict[str, str], ignore: tuple[str, ...] = (),
             derived: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Copy ``theirs``' state into ``ours``. ``names`` maps our key prefixes to theirs (longest
    prefix wins); every tensor of ours must be found and every tensor of theirs used, except
    keys starting with an ``ignore`` prefix. ``derived`` adds tensors computed from theirs."""
    ours = ours.double().eval()
    src, dst = {**theirs.state_dict(), **(derived or {})}, ours.state_dict()
    used = set()
    prefixes = sorted(names, key=len, reverse=True)
    with torch.no_grad():
        for key, tensor in dst.items():
            mapped = key
            for p in prefixes:
                if key.startswith(p):
                    mapped = names[p] + key[len(p):]
                    break
            assert mapped in src, f"our {key!r} -> {mapped!r}: not in mmseg's state dict {sorted(src)}"
            assert src[mapped].numel() == tensor.numel(), f"{key} {tuple(tensor.shape)} vs {mapped} {tuple(src[mapped].shape)}"
            tensor.copy_(src[mapped].reshape(tensor.shape))
            used.add(mapped)
    unused = [k for k in src if k not in used and not k.startswith(ignore)]
    assert not unused, f"mmseg tensors not mapped to ours: {unused}"
    return ours


def seq(our: str, their: str, layers: dict[int, str]) -> dict[str, str]:
    """Prefix map for an nn.Sequential of ours: our index -> their sub-module name."""
    return {f"{our}.{i}.": f"{their}{name}." for i, name in layers.items()}


CBR = {0: "conv", 1: "bn"}  # our conv-BN-ReLU Sequential vs mmcv's ConvModule(conv, bn, activate)


def check(label: str, ours: nn.Module, run_ours, ref: torch.Tensor, x: torch.Tensor, residual: bool = True) -> float:
    """Assert parity, that the output is not (close to) the input, and that a perturbation shows."""
    with torch.no_grad():
        out = run_ours(ours)
        err = rel_err(out, ref)
        print(f"{label}: max relative error {err:.1e}")
        assert out.shape == ref.shape
        assert err <= TOL, f"{label}: relative error {err:.2e} > {TOL}"
        if residual and out.shape == x.shape:
            assert rel_err(out, x) > 1e-2, f"{label}: output is the input; the comparison is vacuous"
        bumped = copy.deepcopy(ours)
        g = torch.Generator().manual_seed(99)
        for p in bumped.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        assert rel_err(run_ours(bumped), ref) > 10 * TOL, f"{label}: a weight perturbation is not detected"
    return err


def feature_map(seed: int, c: int = C, h: int = 9, w: int = 11, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=F64)


def head(cls, in_channels: int = C, channels: int = C, **kw):
    torch.manual_seed(0)  # heads draw buffers (EMA bases) at construction
    return cls(in_channels=in_channels, channels=channels, num_classes=3, norm_cfg=BN, dropout_ratio=0.0, **kw)


def body(h: nn.Module, **replace: nn.Module) -> nn.Module:
    """A head whose classifier (and the given sub-modules) are the identity: forward gives features."""
    h.conv_seg = nn.Identity()
    for name, module in replace.items():
        setattr(h, name, module)
    return h


# --- Non-local (NLHead -> mmcv.cnn.NonLocal2d) -------------------------------------------------

NL_MODES = {
    # mmcv mode, use_scale -> our NonLocalBlock keywords
    ("embedded_gaussian", True): dict(affinity="dot", normalization="softmax", scale=True),
    ("embedded_gaussian", False): dict(affinity="dot", normalization="softmax", scale=False),
    ("dot_product", True): dict(affinity="dot", normalization="mean", scale=False),  # mmcv ignores use_scale here
    ("gaussian", True): dict(theta=False, phi=False, affinity="dot", normalization="softmax", scale=False),
    ("concatenation", True): dict(affinity="concat", normalization="mean", scale=False),
}


@pytest.mark.parametrize("mode,use_scale", list(NL_MODES), ids=[f"{m}-scale{s}" for m, s in NL_MODES])
def test_nonlocal_matches_mmcv_nonlocal2d(mode, use_scale):
    """NLHead's ``nl_block`` (mmcv.cnn.NonLocal2d, residual included) against NonLocalBlock, all
    four paper forms; NLHead's 3x3 convs around it belong to the head."""
    theirs = randomise(head(NLHead, mode=mode, use_scale=use_scale).nl_block, seed=1)
    assert isinstance(theirs, NonLocal2d)
    ours = NonLocalBlock(C, reduction=2, **NL_MODES[(mode, use_scale)])
    names = {"theta.": "theta.conv.", "phi.": "phi.conv.", "sigma.": "g.conv.", "out.0.": "conv_out.conv.",
             "out.1.": "conv_out.bn."}
    ignore, derived = (), {}
    if mode == "concatenation":  # w . [theta_i; phi_j]: the first half of mmcv's 1x1 conv acts on theta
        w = theirs.concat_project.conv.weight.detach().flatten(1)
        ignore, derived = ("concat_project.",), {"concat_q.weight": w[:, :C // 2], "concat_k.weight": w[:, C // 2:]}
    ours = transfer(theirs, ours, names, ignore=ignore, derived=derived)
    x = feature_map(2)
    with torch.no_grad():
        ref = theirs(x)
    check(f"NLHead {mode} use_scale={use_scale}", ours, lambda m: m(x), ref, x)


# --- Disentangled Non-local (DNLHead -> DisentangledNonLocal2d) ----------------------------------

@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_dnl_matches_mmseg(temperature):
    """DNLHead's ``dnl_block`` (whitened pairwise + unary, temperature, residual) against
    DisentangledNonLocalBlock. mmseg divides by sqrt(d) and by the temperature as float32 tensors
    (exact for d = 16; 0.05 in float32 is 0.05 + 7e-10, which leaves an error of about 1e-9)."""
    theirs = randomise(head(DNLHead, temperature=temperature).dnl_block, seed=3)
    ours = DisentangledNonLocalBlock(C, reduction=2, temperature=temperature, scale=True)
    ours = transfer(theirs, ours, {"theta.": "theta.conv.", "phi.": "phi.conv.", "g.": "g.conv.",
                                   "unary_mask.": "conv_mask.", "out.0.": "conv_out.conv.", "out.1.": "conv_out.bn."})
    x = feature_map(4)
    with torch.no_grad():
        ref = theirs(x.clone())  # mmseg whitens theta/phi in place; keep x untouched anyway
    check(f"DNLHead tau={temperature}", ours, lambda m: m(x), ref, x)


# --- GCNet (GCHead -> mmcv.cnn.ContextBlock) ----------------------------------------------------

@pytest.mark.parametrize("pooling", ["att", "avg"])
@pytest.mark.parametrize("fusion", ["add", "mul"])
def test_gc_matches_mmcv_context_block(pooling, fusion):
    """GCHead's ``gc_block`` (mmcv ContextBlock, ratio 1/4) against GlobalContextBlock(reduction=4).
    mmcv can also apply add and mul together; our block has one fusion at a time (the paper
    compares them, it does not combine them), so that combination is not compared."""
    mmcv_fusion = {"add": "channel_add", "mul": "channel_mul"}[fusion]
    theirs = randomise(head(GCHead, ratio=1 / 4, pooling_type=pooling, fusion_types=(mmcv_fusion,)).gc_block, seed=5)
    assert isinstance(theirs, ContextBlock)
    ours = GlobalContextBlock(C, reduction=4, fusion=fusion, pooling=pooling)
    ours = transfer(theirs, ours, {"mask.": "conv_mask.", "transform.": f"{mmcv_fusion}_conv."})
    x = feature_map(6)
    with torch.no_grad():
        ref = theirs(x)
    check(f"GCHead pooling={pooling} fusion={fusion}", ours, lambda m: m(x), ref, x)


# --- CCNet (CCHead -> mmcv.ops.CrissCrossAttention) ----------------------------------------------

@functools.cache
def mmcv_criss_cross_class():
    """mmcv's own CrissCrossAttention: from mmcv.ops when that is real, else from the pure-PyTorch
    source file mmcv-lite ships (``mmcv/ops/cc_attention.py`` needs no compiled extension)."""
    if not is_standin(mmcv.ops):
        return mmcv.ops.CrissCrossAttention
    path = Path(mmcv.__file__).parent / "ops" / "cc_attention.py"
    if not path.exists():
        pytest.skip(f"{path} not shipped by this mmcv")
    spec = importlib.util.spec_from_file_location("_mmcv_ops_cc_attention_source", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CrissCrossAttention


CC_NAMES = {"cca.query.": "query_conv.", "cca.key.": "key_conv.", "cca.value.": "value_conv.", "cca.gamma": "gamma.scale"}


def test_criss_cross_matches_mmcv():
    """CCNetBlock (R = 2, one shared module) against mmcv's CrissCrossAttention applied twice, as
    CCHead's recurrence loop does; the 3x3 convs around the loop belong to the head."""
    theirs = randomise(mmcv_criss_cross_class()(C), seed=7)
    ours = transfer(theirs, CCNetBlock(C, R=2), CC_NAMES)
    x = feature_map(8)
    with torch.no_grad():
        ref = theirs(theirs(x))
    check("CCHead (mmcv CrissCrossAttention x2)", ours, lambda m: m(x), ref, x)


def test_cchead_runs_on_the_standin_and_it_equals_mmcv():
    """CCHead builds through ``mmcv.ops`` (the stand-in under mmcv-lite), and its ``cca`` loads
    mmcv's state dict unchanged and computes what mmcv's module computes."""
    h = head(CCHead, recurrence=2)
    assert isinstance(h.cca, mmcv.ops.CrissCrossAttention)
    real = randomise(mmcv_criss_cross_class()(C), seed=9)
    cca = h.cca.double().eval()
    cca.load_state_dict(real.state_dict())
    x = feature_map(10)
    with torch.no_grad():
        ref = real(x)
    check("mmcv.ops.CrissCrossAttention stand-in", cca, lambda m: m(x), ref, x)
    with torch.no_grad():
        assert randomise(h, seed=11)([x]).shape == (2, 3, 9, 11)


# --- DANet (DAHead -> PAM, CAM) -------------------------------------------------------------

def test_danet_matches_mmseg_pam_and_cam():
    """DAHead's ``pam`` and ``cam`` (each with its gamma residual) against DANetBlock's position and
    channel branches. mmseg runs them on separate head branches (3x3 convs in and out) and sums
    the branch outputs; our ``both`` puts the two terms on one residual, x + gp*PAM + gc*CAM,
    which is checked as pam(x) + cam(x) - x with mmseg's modules."""
    h = randomise(head(DAHead, pam_channels=C // 8), seed=12)
    names = {"pam.query.": "pam.query_project.", "pam.key.": "pam.key_project.",
             "pam.value.": "pam.value_project.", "pam.gamma": "pam.gamma.scale", "cam.gamma": "cam.gamma.scale"}
    x = feature_map(13)
    with torch.no_grad():
        ref_pam, ref_cam = h.pam(x), h.cam(x)
    ours = transfer(h, DANetBlock(C, branch="position", qk_reduction=8), names, ignore=("pam_", "cam", "conv_seg"))
    check("DAHead PAM", ours, lambda m: m(x), ref_pam, x)
    ours = transfer(h, DANetBlock(C, branch="channel"), names, ignore=("pam", "cam_", "conv_seg"))
    check("DAHead CAM", ours, lambda m: m(x), ref_cam, x)
    ours = transfer(h, DANetBlock(C, branch="both", qk_reduction=8), names, ignore=("pam_", "cam_", "conv_seg"))
    check("DAHead PAM + CAM (one residual)", ours, lambda m: m(x), ref_pam + ref_cam - x, x)


# --- ISA (ISAHead -> SelfAttentionBlock, interlacing in the head) ---------------------------------

def _isa_sa(our: str, their: str) -> dict[str, str]:
    names = {f"{our}.value.": f"{their}.value_project."}
    for branch in ("key", "query"):
        names.update(seq(f"{our}.{branch}", f"{their}.{branch}_project.", {0: "0.conv", 1: "0.bn", 3: "1.conv", 4: "1.bn"}))
    names.update(seq(f"{our}.out", f"{their}.output_project.", CBR))
    return names


@pytest.mark.parametrize("size", [(9, 11), (8, 8)])
def test_isa_matches_mmseg(size):
    """ISAHead's body (padding, long-range then short-range attention, un-permute, crop, concat,
    1x1 fuse) with its 3x3 ``in_conv`` and classifier made the identity, against ISABlock.

    Two differences that are not differences of function: (1) mmseg concatenates
    [context, input] before the fuse conv, the official code and ours [input, context]; the
    fuse weight's input halves are swapped when copied. (2) mmseg's value 1x1 conv has a bias,
    the official ``SelfAttentionBlock2D`` and ours do not; since each softmax row sums to 1 the
    bias b only adds W_out b before the output BatchNorm, so it is folded into that BN's running
    mean (in training the batch mean removes it anyway)."""
    h = randomise(body(head(ISAHead, isa_channels=C // 2, down_factor=(4, 4)), in_conv=nn.Identity()), seed=14)
    ours = ISABlock(C, down_factor=4, key_reduction=2)
    names = {**_isa_sa("long_range", "global_relation"), **_isa_sa("short_range", "local_relation"),
             **seq("fuse", "out_conv.", CBR)}
    ours = transfer(h, ours, names, ignore=("global_relation.value_project.bias", "local_relation.value_project.bias"))
    with torch.no_grad():
        w = h.out_conv.conv.weight
        ours.fuse[0].weight.copy_(torch.cat([w[:, C:], w[:, :C]], dim=1))
        for our_sa, their_sa in ((ours.long_range, h.global_relation), (ours.short_range, h.local_relation)):
            b = their_sa.value_project.bias
            w_out = their_sa.output_project.conv.weight.flatten(1)
            our_sa.out[1].running_mean.copy_(their_sa.output_project.bn.running_mean - w_out @ b)
    x = feature_map(15, h=size[0], w=size[1])
    with torch.no_grad():
        ref = h([x])
    check(f"ISAHead {size[0]}x{size[1]}", ours, lambda m: m(x), ref, x, residual=False)


# --- APCNet (APCHead -> ACM) ----------------------------------------------------------------

def _acm(our: str = "", their: str = "") -> dict[str, str]:
    """Names of one ACM; ``our``/``their`` are the prefixes of the module (with a trailing dot)."""
    names = {f"{our}affinity_conv.": f"{their}gla."}
    for o, t in (("pooled_reduce", "pooled_redu_conv"), ("input_reduce", "input_redu_conv"),
                 ("global_info", "global_info"), ("residual", "residual_conv"), ("fusion", "fusion_conv")):
        names.update(seq(f"{our}{o}", f"{their}{t}.", CBR))
    return names


@pytest.mark.parametrize("scale", [1, 2, 3, 6])
def test_apc_acm_matches_mmseg(scale):
    """One of APCHead's ACMs (inner width C/4) against AdaptiveContext at the same pooling scale."""
    h = randomise(head(APCHead, channels=C // 4, pool_scales=(scale,)), seed=16)
    ours = transfer(h.acm_modules[0], AdaptiveContext(C, C // 4, scale), _acm())
    x = feature_map(17)
    with torch.no_grad():
        ref = h.acm_modules[0](x)
    check(f"APCHead ACM s={scale}", ours, lambda m: m(x), ref, x, residual=False)


def test_apc_head_body_matches_apcblock():
    """APCHead's body (input and the four ACMs concatenated, 3x3 bottleneck) with its classifier
    made the identity, against APCBlock. The head's bottleneck outputs its ``channels`` (the ACM
    width), our block maps back to C, so they coincide at ``reduction=1``."""
    h = randomise(body(head(APCHead, channels=C, pool_scales=(1, 2, 3, 6))), seed=18)
    names = {"bottleneck.0.": "bottleneck.conv.", "bottleneck.1.": "bottleneck.bn."}
    for i in range(4):
        names.update(_acm(f"acms.{i}.", f"acm_modules.{i}."))
    ours = transfer(h, APCBlock(C, scales="1,2,3,6", reduction=1), names)
    x = feature_map(19)
    with torch.no_grad():
        ref = h([x])
    check("APCHead body", ours, lambda m: m(x), ref, x, residual=False)


# --- EMANet (EMAHead -> EMAModule) ----------------------------------------------------------

@pytest.mark.parametrize("T", [1, 3])
def test_ema_matches_mmseg(T):
    """EMAHead from ``identity = ema_in_conv(x)`` to ``relu(identity + recon)`` (its 3x3 in-conv,
    bottleneck and classifier made the identity, no concat) against EMABlock in eval mode:
    mid 1x1 conv, T EM steps from the bases, reconstruction, ReLU, 1x1 conv + BN, residual, ReLU.
    mmseg normalises with ``F.normalize`` (divide by max(norm, 1e-12)); the official code and ours
    divide by (1e-6 + norm): a relative difference of about 1e-6 / norm, far below the tolerance.
    The moving average of the bases (training only) is not compared: mmseg re-normalises the
    batch mean before averaging, the official code does not (see ema.py)."""
    h = head(EMAHead, ema_channels=C, num_bases=8, num_stages=T, concat_input=False, momentum=0.1)
    h = randomise(body(h, ema_in_conv=nn.Identity(), bottleneck=nn.Identity()), seed=20)
    ours = EMABlock(C, K=8, T=T, T_eval=T)
    ours = transfer(h, ours, {"conv_in.": "ema_mid_conv.conv.", "em.mu": "ema_module.bases",
                              "conv_out.": "ema_out_conv.conv.", "norm.": "ema_out_conv.bn."})
    x = feature_map(22)
    with torch.no_grad():
        ref = h([x.clone()])
    check(f"EMAHead T={T}", ours, lambda m: m(x), ref, x)


# --- PSANet (PSAHead -> PSAMask) --------------------------------------------------------------

def psamask_loops(mask: torch.Tensor, psa_type: str, hm: int, wm: int) -> torch.Tensor:
    """mmcv's CPU kernel (csrc/pytorch/cpu/psamask.cpp) transcribed loop for loop."""
    m = mask.detach().numpy()
    b, _, h, w = m.shape
    out = np.zeros((b, h * w, h, w))
    half_h, half_w = (hm - 1) // 2, (wm - 1) // 2
    for n in range(b):
        for y in range(h):
            for x in range(w):
                for i in range(max(0, half_h - y), min(hm, h + half_h - y)):
                    for j in range(max(0, half_w - x), min(wm, w + half_w - x)):
                        ty, tx = i + y - half_h, j + x - half_w
                        if psa_type == "collect":
                            out[n, ty * w + tx, y, x] = m[n, i * wm + j, y, x]
                        else:
                            out[n, y * w + x, ty, tx] = m[n, i * wm + j, y, x]
    return torch.from_numpy(out)


@pytest.mark.parametrize("psa_type", ["collect", "distribute"])
@pytest.mark.parametrize("feature,mask", [((5, 6), (9, 11)), ((5, 6), (5, 7)), ((4, 6), (15, 15)), ((5, 4), (4, 6))],
                         ids=["overcomplete", "smaller", "larger", "even"])
def test_psamask_standin_matches_mmcv_kernel(psa_type, feature, mask):
    x = torch.randn(2, mask[0] * mask[1], *feature, generator=torch.Generator().manual_seed(23), dtype=F64)
    got = StandinPSAMask(psa_type, mask)(x)
    assert torch.equal(got, psamask_loops(x, psa_type, *mask))


PSA_TYPES = {"bi-direction": "both", "collect": "collect", "distribute": "distribute"}


def _psa_names(branches: list[str], prefix: str = "branches.") -> dict[str, str]:
    names = {}
    for i, suffix in enumerate(branches):
        names.update(seq(f"{prefix}{i}.reduce", f"reduce{suffix}.", CBR))
        names.update(seq(f"{prefix}{i}.predict", f"attention{suffix}.", {0: "0.conv", 1: "0.bn", 3: "1"}))
    return names


@pytest.mark.parametrize("psa_type", list(PSA_TYPES))
def test_psa_attention_matches_mmseg(psa_type):
    """PSAHead's point-wise spatial attention -- reduce, shrink 2x (14x14 -> 7x7, bilinear), predict
    the 13x13 over-complete masks, PSAMask, softmax over dim 1, aggregate -- against our branches
    with ``grid = 7``: the input of mmseg's ``proj``, captured by a hook, against the concatenated
    outputs of our branches. (Up to there the head is unmodified; see the next test for the rest.)"""
    reduced = C // 4
    h = randomise(body(head(PSAHead, channels=reduced, mask_size=(13, 13), psa_type=psa_type, shrink_factor=2)), seed=24)
    ours = PSANetBlock(C, branch=PSA_TYPES[psa_type], grid=7, reduction=4).double().eval()
    transfer(h, ours.branches, _psa_names(["", "_p"] if psa_type == "bi-direction" else [""], prefix=""),
             ignore=("proj.", "bottleneck."))
    captured = []
    h.proj.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    x = feature_map(25, h=14, w=14)
    with torch.no_grad():
        h([x])
    check(f"PSAHead {psa_type} attention", ours, lambda m: torch.cat([br(x) for br in m.branches], dim=1),
          captured[0], x, residual=False)


def test_psa_head_body_matches_psanetblock():
    """PSAHead's body (attention, proj 1x1 conv, bilinear back to 14x14, concat with the input,
    3x3 bottleneck) with the classifier made the identity, against PSANetBlock(grid=7). One
    change to mmseg's head: its ``proj`` is a 1x1 conv with ``padding=1`` (the official
    hszhao/semseg PSA has none), which adds a ring of constant pixels that the final bilinear
    resize then blends into the map; the test sets that padding to 0. The bottleneck outputs the
    head's ``channels`` (the reduced width), ours maps back to C, so they coincide at reduction 1."""
    h = randomise(body(head(PSAHead, channels=C, mask_size=(13, 13), psa_type="bi-direction", shrink_factor=2)),
                  seed=26)
    assert h.proj.conv.padding == (1, 1)
    h.proj.conv.padding = (0, 0)
    names = {**_psa_names(["", "_p"]), **seq("proj", "proj.", CBR), **seq("fuse", "bottleneck.", CBR)}
    ours = transfer(h, PSANetBlock(C, branch="both", grid=7, reduction=1), names)
    x = feature_map(27, h=14, w=14)
    with torch.no_grad():
        ref = h([x])
    check("PSAHead body (proj padding 0)", ours, lambda m: m(x), ref, x, residual=False)


# --- the stand-in itself ----------------------------------------------------------------------

def test_mmseg_imports_with_the_installed_numpy():
    """mmseg's packages import with the stand-in and the installed numpy (2.x on these machines)."""
    import mmseg.apis  # noqa: F401
    import mmseg.datasets  # noqa: F401
    import mmseg.engine  # noqa: F401
    import mmseg.utils.mask_classification  # noqa: F401  (the unconditional ``from mmcv.ops import``)


def test_standin_is_installed_only_without_real_ops_and_fails_clearly():
    assert install() is is_standin(mmcv.ops)  # idempotent
    if not is_standin(mmcv.ops):
        pytest.skip("the real mmcv.ops is installed")
    from mmcv.ops import DeformConv2d, sigmoid_focal_loss  # imports work ...
    # (point_sample is mmcv's own pure-PyTorch function now: tests/compat/test_mmcv_ops.py checks it)
    with pytest.raises(NotImplementedError, match="sigmoid_focal_loss"):  # ... calls say what is missing
        sigmoid_focal_loss(torch.zeros(1), torch.zeros(1))
    with pytest.raises(NotImplementedError, match="DeformConv2d"):
        DeformConv2d(1, 1, 3)
    assert not isinstance(nn.Conv2d(1, 1, 1), DeformConv2d)
