"""Pairwise-family mechanisms: every preset builds and trains, and the sparse patterns equal
their dense masked definitions."""
from __future__ import annotations

import math

import pytest
import torch

from ablate.attention.cgnl import CGNLBlock, cgnl_kernel
from ablate.attention.dnl import DisentangledNonLocalBlock
from ablate.attention.criss_cross import CCNetBlock, CrissCrossAttention, criss_cross_reference
from ablate.attention.danet import DANetBlock
from ablate.attention.dgmn import DGMNBlock, draw_offsets
from ablate.attention.gcnet import GlobalContextBlock
from ablate.attention.interlaced import ISABlock
from ablate.attention.local_relation import local_window_reference
from ablate.attention.ocnet import ObjectContext
from ablate.attention.psanet import PSANetBlock, psa_mask
from ablate.attention import MECHANISMS

from support import psamask_reference

EXPECTED = {
    "danet", "danet_position", "danet_channel", "ocnet", "ocnet_pyramid", "ocnet_asp", "ccnet", "isa",
    "local_relation", "gcnet", "dnl", "cgnl", "psanet", "dgmn",
}
C = 16
PRESETS = [p for p in MECHANISMS.values() if p.name in EXPECTED]  # the pairwise zoo beyond Non-local


def _preset(name):
    return MECHANISMS[name]


# --- registry ------------------------------------------------------------------------------

def test_presets_are_the_pairwise_zoo():
    names = [p.name for p in MECHANISMS.values() if p.family == "pairwise" and not p.name.startswith("nonlocal")]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED
    for p in PRESETS:
        assert p.family == "pairwise"
        assert p.paper and p.summary and p.factors
        assert len({f.name for f in p.factors}) == len(p.factors)
        for f in p.factors:
            assert f.coerce(f.default) == f.default


def test_unknown_or_invalid_factor_is_an_error():
    with pytest.raises(KeyError, match="has no factor"):
        _preset("ccnet").build(C, T=3)
    with pytest.raises(ValueError, match="expected"):
        _preset("danet").build(C, branch="spatial")
    with pytest.raises(ValueError):
        _preset("ccnet").build(C, R=0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("size", [(13, 11), (8, 8)])
def test_preset_builds_keeps_shape_and_backpropagates(name, size):
    torch.manual_seed(0)
    block = _preset(name).build(C)
    x = torch.randn(2, C, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in block.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name,overrides", [
    ("danet", {"cam_max_minus": False, "qk_reduction": 4}),
    ("ocnet", {"shared_qk": False}),
    ("ccnet", {"R": 1}),
    ("isa", {"down_factor": 4}),
    ("isa", {"down_factor": 20}),
    ("local_relation", {"window": 3, "geometry": False, "composability": "squared_diff"}),
    ("gcnet", {"fusion": "mul", "pooling": "avg", "reduction": 4}),
    ("dnl", {"unary": False, "whiten": False, "scale": False, "temperature": 1.0}),
    ("cgnl", {"kernel": "gaussian", "groups": 4}),
    ("psanet", {"branch": "collect", "grid": 6}),
    ("psanet", {"branch": "distribute", "grid": 6}),
    ("dgmn", {"samples": 5, "radius": 2, "groups": 2}),
])
def test_factor_overrides_build_and_run(name, overrides):
    block = _preset(name).build(C, **overrides)
    x = torch.randn(1, C, 9, 7)
    assert block(x).shape == x.shape


# --- CCNet ---------------------------------------------------------------------------------

def _dense_masked_attention(q, k, v, mask, bias=None):
    """softmax over allowed j of q_i . k_j (+ bias_ij), dense N x N; q,k: (B,d,N), v: (B,c,N)."""
    s = q.transpose(1, 2) @ k
    if bias is not None:
        s = s + bias
    a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    return v @ a.transpose(1, 2)


@pytest.mark.parametrize("h,w", [(5, 7), (6, 6), (1, 4)])
def test_criss_cross_reference_equals_dense_masked_softmax(h, w):
    g = torch.Generator().manual_seed(1)
    b, d, c = 2, 3, 4
    q, k = (torch.randn(b, d, h, w, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    mask = (ys[:, None] == ys[None, :]) | (xs[:, None] == xs[None, :])  # row + column, centre once
    assert int(mask[0].sum()) == h + w - 1
    dense = _dense_masked_attention(q.flatten(2), k.flatten(2), v.flatten(2), mask).view(b, c, h, w)
    torch.testing.assert_close(criss_cross_reference(q, k, v), dense, rtol=1e-10, atol=1e-10)


def test_ccnet_and_danet_are_identity_at_init():
    x = torch.randn(2, C, 7, 5)
    torch.testing.assert_close(CCNetBlock(C)(x), x, rtol=0, atol=0)
    for branch in ("both", "position", "channel"):
        torch.testing.assert_close(DANetBlock(C, branch=branch)(x), x, rtol=0, atol=0)


def test_ccnet_recurrence_reapplies_the_same_weights():
    torch.manual_seed(0)
    block = CCNetBlock(C, R=3)
    with torch.no_grad():
        block.cca.gamma.fill_(0.7)
    x = torch.randn(1, C, 6, 5)
    expected = block.cca(block.cca(block.cca(x)))
    torch.testing.assert_close(block(x), expected)
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for p in CrissCrossAttention(C).parameters())


def test_danet_channel_attention_is_softmax_of_negative_affinity():
    """The max-minus trick is softmax(max - E) = softmax(-E) (shift invariance)."""
    torch.manual_seed(0)
    block = DANetBlock(C, branch="channel")
    with torch.no_grad():
        block.cam.gamma.fill_(1.0)
    x = torch.randn(1, C, 4, 3, dtype=torch.float64)
    f = x.flatten(2)
    expected = x + (torch.softmax(-(f @ f.transpose(1, 2)), dim=-1) @ f).view_as(x)
    torch.testing.assert_close(block.double()(x), expected)


# --- Local relation ------------------------------------------------------------------------

@pytest.mark.parametrize("composability", ["dot", "squared_diff"])
@pytest.mark.parametrize("window,h,w", [(3, 6, 5), (5, 4, 7), (7, 3, 3)])
def test_local_window_reference_equals_dense_masked(composability, window, h, w):
    gen = torch.Generator().manual_seed(2)
    b, groups, d, c = 2, 2, 3, 4
    q, k = (torch.randn(b, groups * d, h, w, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    bias = torch.randn(groups, window * window, generator=gen, dtype=torch.float64)
    out = local_window_reference(q, k, v, bias, window, composability)

    r = window // 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy, dx = ys[None, :] - ys[:, None], xs[None, :] - xs[:, None]  # offset of key j from query i
    mask = (dy.abs() <= r) & (dx.abs() <= r)
    slot = ((dy + r) * window + (dx + r)).clamp(0, window * window - 1)
    expected = []
    for gi in range(groups):
        qg = q[:, gi * d:(gi + 1) * d].flatten(2)
        kg = k[:, gi * d:(gi + 1) * d].flatten(2)
        vg = v[:, gi * (c // groups):(gi + 1) * (c // groups)].flatten(2)
        geo = bias[gi][slot]
        if composability == "dot":
            expected.append(_dense_masked_attention(qg, kg, vg, mask, geo))
        else:
            s = -((qg.transpose(1, 2)[:, :, None, :] - kg.transpose(1, 2)[:, None, :, :]) ** 2).sum(-1) + geo
            a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
            expected.append(vg @ a.transpose(1, 2))
    expected = torch.cat(expected, dim=1).view(b, c, h, w)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


# --- ISA -----------------------------------------------------------------------------------

def _pointwise(rel, x):
    """A group of one pixel: softmax over a single key is 1, so attention returns out(value(x))."""
    return rel.out(rel.value(x))


def test_isa_partition_covering_the_map_is_full_attention_in_the_short_range_step():
    torch.manual_seed(0)
    block = ISABlock(C, down_factor=6).eval()
    x = torch.randn(2, C, 6, 6)
    # one partition = the whole map: long-range groups are single pixels, the short-range
    # group is every pixel, i.e. full self-attention.
    expected = block.fuse(torch.cat([x, block.short_range(_pointwise(block.long_range, x))], dim=1))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_isa_unit_partition_is_full_attention_in_the_long_range_step():
    torch.manual_seed(0)
    block = ISABlock(C, down_factor=1).eval()
    x = torch.randn(2, C, 5, 7)
    expected = block.fuse(torch.cat([x, _pointwise(block.short_range, block.long_range(x))], dim=1))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_isa_long_range_groups_are_pixels_at_the_same_offset():
    """With P = 2 on a 4x4 map, pixel (0, 0)'s long-range group is {(0,0), (0,2), (2,0), (2,2)}."""
    torch.manual_seed(0)
    block = ISABlock(C, down_factor=2).eval()
    seen = {}
    block.long_range.register_forward_hook(lambda m, inp, out: seen.setdefault("groups", inp[0].detach()))
    x = torch.randn(1, C, 4, 4)
    block(x)
    groups = seen["groups"]  # (P*P, C, Q, Q): group (i, j) = pixels (a*P + i, b*P + j)
    torch.testing.assert_close(groups[0], x[0, :, 0::2, 0::2])
    torch.testing.assert_close(groups[3], x[0, :, 1::2, 1::2])


# --- OCNet ---------------------------------------------------------------------------------

def test_pyramid_object_context_stays_inside_its_region():
    torch.manual_seed(0)
    oc = ObjectContext(C, C // 2, C, regions=2).eval()
    torch.nn.init.normal_(oc.out.weight)
    x = torch.randn(1, C, 8, 6)
    x2 = x.clone()
    x2[..., 0, 0] += 5.0  # a pixel of the top-left region
    y, y2 = oc(x), oc(x2)
    assert not torch.allclose(y[..., :4, :3], y2[..., :4, :3])
    torch.testing.assert_close(y[..., 4:, :], y2[..., 4:, :])
    torch.testing.assert_close(y[..., :, 3:], y2[..., :, 3:])


# --- GCNet / DNL ---------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", ["add", "mul"])
def test_gcnet_context_is_query_independent(fusion):
    torch.manual_seed(0)
    block = GlobalContextBlock(C, reduction=4, fusion=fusion)
    torch.nn.init.normal_(block.transform[-1].weight)
    x = torch.randn(2, C, 7, 5)
    y = block(x)
    effect = y - x if fusion == "add" else y / x  # what the block did at each pixel
    flat = effect.flatten(2)
    torch.testing.assert_close(flat, flat[..., :1].expand_as(flat), rtol=1e-5, atol=1e-5)
    assert flat[..., 0].abs().sum() > 0
    assert block.attention(x).shape == (2, 35)  # one distribution over positions per image


def test_dnl_whitening_ignores_query_and_key_offsets():
    torch.manual_seed(0)
    x = torch.randn(1, C, 5, 4)
    for whiten in (True, False):
        block = DisentangledNonLocalBlock(C, whiten=whiten)
        torch.nn.init.normal_(block.theta.weight)
        torch.nn.init.normal_(block.phi.weight)
        a = block.pairwise(x)
        with torch.no_grad():
            block.theta.bias.add_(3.0)
            block.phi.bias.add_(-2.0)
        same = torch.allclose(a, block.pairwise(x), atol=1e-5)
        assert same == whiten


def test_dnl_unary_term_is_the_same_for_every_query():
    torch.manual_seed(0)
    block = DisentangledNonLocalBlock(C).eval()
    torch.nn.init.normal_(block.out[1].weight)
    x = torch.randn(1, C, 5, 4)
    with_unary = block(x)
    block.unary_mask = None
    diff = (with_unary - block(x)).flatten(2)  # W_z is linear + eval BN (affine): same shift everywhere
    torch.testing.assert_close(diff, diff[..., :1].expand_as(diff), rtol=1e-4, atol=1e-5)


# --- CGNL ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["dot", "gaussian"])
def test_cgnl_compact_kernel_equals_explicit_generalized_nonlocal(kernel):
    gen = torch.Generator().manual_seed(3)
    b, c, h, w, groups, order, gamma = 2, 4, 3, 2, 2, 3, 1e-4
    t, p, g = (torch.randn(b, c, h, w, generator=gen, dtype=torch.float64) for _ in range(3))
    out = cgnl_kernel(t, p, g, groups, kernel, order, gamma)
    cg = c // groups
    expected = torch.empty_like(t)
    for gi in range(groups):
        sl = slice(gi * cg, (gi + 1) * cg)
        tv, pv, gv = (z[:, sl].reshape(b, -1) for z in (t, p, g))  # every (channel, position) element
        if kernel == "dot":
            f = tv[:, :, None] * pv[:, None, :]
        else:
            f = sum(math.exp(-2 * gamma) * (2 * gamma) ** k / math.factorial(k)
                    * tv[:, :, None] ** k * pv[:, None, :] ** k for k in range(order + 1))
        expected[:, sl] = (f @ gv[:, :, None]).view(b, cg, h, w)
    torch.testing.assert_close(out, expected)


def test_cgnl_starts_as_identity_and_checks_groups():
    x = torch.randn(1, C, 4, 4)
    torch.testing.assert_close(CGNLBlock(C)(x), x)
    with pytest.raises(ValueError, match="groups"):
        CGNLBlock(C, groups=3)


# --- PSANet --------------------------------------------------------------------------------

def _psa_mask_loop(mask, mode):
    """The over-complete (2h - 1) x (2w - 1) mask cropped by the loop reference."""
    h, w = mask.shape[-2:]
    return psamask_reference(mask, mode, 2 * h - 1, 2 * w - 1)


@pytest.mark.parametrize("mode", ["collect", "distribute"])
def test_psa_mask_crop_matches_official_loops(mode):
    mask = torch.randn(2, 5 * 7, 3, 4)
    torch.testing.assert_close(psa_mask(mask, mode), _psa_mask_loop(mask, mode))


def test_psanet_over_complete_mask_size():
    block = PSANetBlock(C, grid=5)
    for br in block.branches:
        assert br.predict[-1].out_channels == 9 * 9
    assert PSANetBlock(C).branches[0].predict[-1].out_channels == 31 * 31  # default grid 16


def test_psanet_collect_weights_sum_to_one_per_pixel_and_distribute_per_target():
    torch.manual_seed(0)
    feats = torch.randn(1, 4, 5, 5)
    for mode in ("collect", "distribute"):
        br = PSANetBlock(16, branch=mode, grid=5).branches[0]
        a = br.attention(feats)  # y = x @ A, A[source, target]
        # collect: pixel i's weights over the sources j it gathers from sum to 1;
        # distribute: (official) for each target j, the weights of the sources i sum to 1.
        torch.testing.assert_close(a.sum(dim=1), torch.ones(1, 25))


# --- DGMN ----------------------------------------------------------------------------------

def test_dgmn_offsets_are_seeded_distinct_and_include_the_centre():
    a, b = draw_offsets(10, 3, seed=0), draw_offsets(10, 3, seed=0)
    assert torch.equal(a, b)
    assert a[0].tolist() == [0, 0]
    assert len({tuple(o) for o in a.tolist()}) == 10 and int(a.abs().max()) <= 3
    assert not torch.equal(a, draw_offsets(10, 3, seed=1))


def test_dgmn_single_sample_passes_the_node_itself():
    torch.manual_seed(0)
    block = DGMNBlock(C, samples=1, radius=0).eval()
    x = torch.randn(1, C, 5, 4)
    xd = block.reduce(x)
    torch.testing.assert_close(block(x), x + block.fuse(torch.cat([xd, xd], dim=1)))
