"""Properties of the attention blocks on random inputs (no training)."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from ablate.attention import MECHANISMS, Factor, LowRankBlock, NonLocalBlock, get_preset

# the paper's four forms; the blocks defined in the files under test
NONLOCAL_FORMS = ["nonlocal", "nonlocal_gaussian", "nonlocal_dot", "nonlocal_concat"]
CORE = NONLOCAL_FORMS + ["glore", "none"]
C, H, W = 8, 5, 7  # H != W so a transposed reshape would show




def _x(dtype=torch.float32, batch=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, C, H, W, generator=g, dtype=dtype).requires_grad_(requires_grad)


def _randomize_norm(norm: torch.nn.BatchNorm2d, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (norm.weight, norm.bias, norm.running_mean):
            t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=g, dtype=norm.running_var.dtype) + 0.5)


def test_core_presets_are_registered():
    assert set(CORE) <= set(MECHANISMS)
    for name in NONLOCAL_FORMS:
        assert MECHANISMS[name].block is NonLocalBlock
    assert MECHANISMS["glore"].block is LowRankBlock


# --------------------------------------------------------------------------------------------
# every preset
# --------------------------------------------------------------------------------------------

# Parameters that receive no gradient on purpose: EMANet runs its EM iterations without
# gradient, so its input conv only shapes the bases and responsibilities (as in the official
# code; ablate/attention/ema.py explains).
NO_GRAD_BY_DESIGN = {"emanet": {"conv_in.weight", "conv_in.bias"}}


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_preset_builds_channels_first_and_keeps_shape(name):
    """Every registered preset, with its defaults: channels first, shape kept, gradients flow."""
    preset = MECHANISMS[name]
    first = next(iter(inspect.signature(preset.block).parameters))
    assert first == "channels"
    torch.manual_seed(0)
    block = preset.build(16)
    x = torch.randn(2, 16, 6, 8, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    weight = torch.randn_like(y)
    (y * weight).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        if not p.requires_grad or pname in NO_GRAD_BY_DESIGN.get(name, ()):
            continue
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", CORE)
def test_every_parameter_gets_a_nonzero_gradient(name):
    """With the zero-initialised output gamma off, the gradient reaches every weight."""
    preset = MECHANISMS[name]
    overrides = {"zero_init": False} if "zero_init" in preset.defaults else {}
    torch.manual_seed(0)
    block = preset.build(C, **overrides)
    y = block(_x(requires_grad=True))
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient on {pname}"


# --------------------------------------------------------------------------------------------
# Non-local
# --------------------------------------------------------------------------------------------

def _raw_scores(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    q, k, _ = block._qkv(x)
    return block._scores(q, k)


@pytest.mark.parametrize("name", ["nonlocal", "nonlocal_dot", "nonlocal_gaussian"])
@pytest.mark.parametrize("scale", [False, True])
def test_shared_qk_gives_symmetric_affinity(name, scale):
    torch.manual_seed(0)
    block = MECHANISMS[name].build(C, shared_qk=True, scale=scale).double()
    assert block.phi is block.theta
    s = _raw_scores(block, _x(torch.float64))
    assert s.shape == (2, H * W, H * W)
    torch.testing.assert_close(s, s.transpose(1, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["nonlocal", "nonlocal_dot"])
def test_separate_theta_phi_give_asymmetric_affinity(name):
    torch.manual_seed(0)
    block = MECHANISMS[name].build(C, shared_qk=False).double()
    assert block.phi is not block.theta
    s = _raw_scores(block, _x(torch.float64))
    assert (s - s.transpose(1, 2)).abs().max() > 1e-3


def test_softmax_attention_map_is_row_stochastic():
    torch.manual_seed(0)
    block = MECHANISMS["nonlocal"].build(C).double()
    a = block.attention_map(_x(torch.float64))
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, H * W, dtype=torch.float64))


@pytest.mark.parametrize("name", NONLOCAL_FORMS)
@pytest.mark.parametrize("train", [True, False])
def test_zero_init_block_is_identity(name, train):
    torch.manual_seed(0)
    block = MECHANISMS[name].build(C)
    assert block.out[1].weight.abs().sum() == 0
    block.train(train)
    x = _x()
    with torch.no_grad():
        assert torch.equal(block(x), x)
        # the control: without zero_init the block changes its input (PyTorch's init: at the
        # official N(0, 0.01^2) init and C = 8 the dot-product branch is below BN's eps)
        torch.manual_seed(0)
        other = MECHANISMS[name].build(C, zero_init=False, init_std=0).train(train)
        assert not torch.allclose(other(x), x, atol=1e-3)


def _explicit_forward(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """x + W(A v) with the N x N map A materialised."""
    b, _, h, w = x.shape
    _, _, v = block._qkv(x)
    y = block.attention_map(x) @ v
    return x + block.out(y.transpose(1, 2).reshape(b, block.v_dim, h, w))


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("qk", [dict(), dict(shared_qk=True), dict(theta=False, phi=False),
                                dict(theta=True, phi=False), dict(sigma=False)],
                         ids=["separate", "shared", "identity_qk", "theta_only", "identity_v"])
def test_sdpa_path_equals_explicit_softmax(scale, qk):
    torch.manual_seed(0)
    block = MECHANISMS["nonlocal"].build(C, zero_init=False, scale=scale, **qk).double().eval()
    _randomize_norm(block.out[1])
    assert block.affinity == "dot" and block.normalization == "softmax"
    x = _x(torch.float64)
    with torch.no_grad():
        fast, ref = block(x), _explicit_forward(block, x)
    assert (fast - x).abs().max() > 1e-3  # the attention branch contributes
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("qk", [dict(), dict(shared_qk=True), dict(theta=False, phi=False)],
                         ids=["separate", "shared", "identity_qk"])
def test_linear_mean_path_equals_explicit_n_by_n(scale, qk):
    torch.manual_seed(0)
    block = MECHANISMS["nonlocal_dot"].build(C, zero_init=False, scale=scale, **qk).double().eval()
    _randomize_norm(block.out[1])
    assert block.affinity == "dot" and block.normalization == "mean"
    x = _x(torch.float64)
    with torch.no_grad():
        fast, ref = block(x), _explicit_forward(block, x)
        # and the explicit map itself is (q k^T [/ sqrt d]) / N, written out here
        q, k, _ = block._qkv(x)
        n = q.shape[1]
        s = torch.einsum("bid,bjd->bij", q, k) * (block.qk_dim ** -0.5 if scale else 1.0)
        torch.testing.assert_close(block.attention_map(x), s / n, rtol=0, atol=1e-12)
    assert (fast - x).abs().max() > 1e-3
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)


def test_sdpa_path_equals_hand_written_softmax():
    """The fast path against softmax(q k^T / sqrt(d)) v written out from the module's own convs."""
    torch.manual_seed(0)
    block = MECHANISMS["nonlocal"].build(C, zero_init=False).double().eval()
    _randomize_norm(block.out[1])
    x = _x(torch.float64)
    with torch.no_grad():
        q = F.conv2d(x, block.theta.weight, block.theta.bias).flatten(2)  # B, d, N
        k = F.conv2d(x, block.phi.weight, block.phi.bias).flatten(2)
        v = F.conv2d(x, block.sigma.weight, block.sigma.bias).flatten(2)  # B, dv, N
        assert block.scale  # the embedded Gaussian preset scales, as the official code
        a = torch.softmax(torch.einsum("bdi,bdj->bij", q, k) / math.sqrt(q.shape[1]), dim=-1)
        y = torch.einsum("bij,bdj->bdi", a, v).reshape(2, -1, H, W)
        z = F.conv2d(y, block.out[0].weight)
        bn = block.out[1]
        z = (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
            * bn.weight[:, None, None] + bn.bias[:, None, None]
        torch.testing.assert_close(block(x), x + z, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# GloRe (low-rank)
# --------------------------------------------------------------------------------------------

def _glore_by_hand(block: LowRankBlock, x: torch.Tensor, gcn: bool) -> torch.Tensor:
    """Reduce, project to K nodes ([divided by N]), [GCN], reproject with the same B, extend, BN (eval)."""
    b, c, h, w = x.shape
    n = h * w
    xs = torch.einsum("oc,bcn->bon", block.reduce.weight[:, :, 0, 0], x.flatten(2)) + block.reduce.bias[None, :, None]
    proj = torch.einsum("kc,bcn->bkn", block.project.weight[:, :, 0, 0], x.flatten(2)) + block.project.bias[None, :, None]
    v = torch.einsum("bsn,bkn->bsk", xs, proj) / (n if block.normalize else 1)  # B, C_s, K
    if gcn:
        a, a_bias = block.reason.node_conv.weight[:, :, 0], block.reason.node_conv.bias
        ws = block.reason.state_conv.weight[:, :, 0]
        hidden = v + torch.einsum("kl,bsl->bsk", a, v) + a_bias[None, None, :]
        if block.reason.relu == "between":  # official: W_s relu(V + A_g V)
            v = torch.einsum("ts,bsk->btk", ws, torch.relu(hidden))
        else:
            v = torch.relu(torch.einsum("ts,bsk->btk", ws, hidden))
    y = torch.einsum("bsk,bkn->bsn", v, proj)
    z = torch.einsum("cs,bsn->bcn", block.extend.weight[:, :, 0, 0], y).reshape(b, c, h, w)
    bn = block.norm
    z = (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps) \
        * bn.weight[:, None, None] + bn.bias[:, None, None]
    return x + z


def _glore(gcn: bool, K: int = 4, **kw) -> LowRankBlock:
    torch.manual_seed(0)
    block = MECHANISMS["glore"].build(C, K=K, gcn=gcn, **kw).double().eval()
    _randomize_norm(block.norm)
    return block


def test_glore_without_gcn_is_projection_then_reprojection():
    block = _glore(gcn=False)
    x = _x(torch.float64)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out, _glore_by_hand(block, x, gcn=False), rtol=0, atol=1e-10)
    assert (out - x).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [{}, {"gcn_relu": "after"}, {"normalize": True}], ids=["official", "relu_after", "normalize"])
def test_glore_with_gcn_differs_from_plain_reprojection(kw):
    block = _glore(gcn=True, **kw)
    x = _x(torch.float64)
    with torch.no_grad():
        out = block(x)
        plain = _glore_by_hand(block, x, gcn=False)
        assert (out - plain).abs().max() > 1e-3
        # and it is the GloRe GCN W_s relu(V + A_g V) (or the named alternative) in between
        torch.testing.assert_close(out, _glore_by_hand(block, x, gcn=True), rtol=0, atol=1e-10)


def test_glore_gcn_factor_adds_exactly_the_gcn_weights():
    on, off = _glore(gcn=True), _glore(gcn=False)
    n_on = sum(p.numel() for p in on.parameters())
    n_off = sum(p.numel() for p in off.parameters())
    k, s = on.K, on.state
    assert n_on - n_off == k * k + k + s * s


# --------------------------------------------------------------------------------------------
# presets and factors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["glore", "nonlocal"])
def test_unknown_factor_raises_keyerror_naming_valid_factors(name):
    preset = MECHANISMS[name]
    with pytest.raises(KeyError) as e:
        preset.build(C, not_a_factor=1)
    msg = str(e.value)
    assert "not_a_factor" in msg and repr(name) in msg
    for f in preset.defaults:
        assert f in msg
    with pytest.raises(KeyError):
        preset.factor("not_a_factor")


def test_get_preset_unknown_lists_valid_names():
    with pytest.raises(KeyError) as e:
        get_preset("nope")
    msg = str(e.value)
    assert "'nope'" in msg
    for name in MECHANISMS:
        assert name in msg
    assert get_preset("glore") is MECHANISMS["glore"]


@pytest.mark.parametrize("text,value", [("on", True), ("off", False), ("ON", True), ("Off", False),
                                        (True, True), (False, False)])
def test_bool_factor_accepts_on_off(text, value):
    f = MECHANISMS["glore"].factor("gcn")
    assert f.kind == "bool"
    assert f.coerce(text) is value


@pytest.mark.parametrize("bad", ["maybe", 1, 0, None, "1"])
def test_bool_factor_rejects_other_values(bad):
    with pytest.raises(ValueError) as e:
        MECHANISMS["glore"].factor("gcn").coerce(bad)
    assert "gcn" in str(e.value)


@pytest.mark.parametrize("mech,name", [("glore", "K"), ("glore", "state_reduction"), ("nonlocal", "reduction")])
def test_int_factor_rejects_out_of_range_and_non_ints(mech, name):
    f = MECHANISMS[mech].factor(name)
    assert f.kind == "int" and f.minimum == 1
    assert f.coerce(1) == 1 and f.coerce(7) == 7
    for bad in (0, -3, 2.5, True, "4"):
        with pytest.raises(ValueError) as e:
            f.coerce(bad)
        assert name in str(e.value) and ">= 1" in str(e.value)


def test_choice_and_float_factors():
    choice = Factor("normalization", "softmax", "choice", choices=("softmax", "mean"))
    assert choice.coerce("mean") == "mean"
    with pytest.raises(ValueError, match="'softmax', 'mean'"):
        choice.coerce("sum")
    num = Factor("tau", 1.0, "float", minimum=0.5)
    assert num.coerce(2) == 2.0 and isinstance(num.coerce(2), float)
    with pytest.raises(ValueError):
        num.coerce(0.25)
    with pytest.raises(ValueError):
        num.coerce("x")


def test_resolve_coerces_overrides():
    args = MECHANISMS["glore"].resolve({"gcn": "off", "K": 8})
    assert args["gcn"] is False and args["K"] == 8
    assert set(args) == set(MECHANISMS["glore"].defaults)


def test_lowrank_mappings_reproject_with_their_own_assignment():
    """GloRe's block with mapping em / pooled: nodes and reprojection come from projection.py."""
    from ablate.attention.projection import EMProjection, PooledProjection

    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    for mapping, cls in (("em", EMProjection), ("pooled", PooledProjection)):
        block = MECHANISMS["glore"].build(16, K=4, mapping=mapping, gcn=False).eval()
        assert isinstance(block.mapping, cls)
        v, a = block.mapping(x)
        expected = x + block.norm(block.extend((v @ a).reshape(2, block.state, 8, 8)))
        torch.testing.assert_close(block(x), expected)
    with pytest.raises(ValueError):
        MECHANISMS["glore"].build(16, K=5, mapping="pooled")  # pooled nodes need a square K


def test_pre_conv_gives_dropped_transforms_a_learned_embedding():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, 6)
    plain = MECHANISMS["nonlocal"].build(16, theta=False, phi=False, sigma=False, zero_init=False).eval()
    moved = MECHANISMS["nonlocal"].build(16, theta=False, phi=False, sigma=False, zero_init=False,
                                         pre_conv=True).eval()
    assert sum(p.numel() for p in moved.parameters()) - sum(p.numel() for p in plain.parameters()) == 16 * 16 + 16
    moved.out.load_state_dict(plain.out.state_dict())
    with torch.no_grad():
        moved.pre.weight.copy_(torch.eye(16).view(16, 16, 1, 1))
        moved.pre.bias.zero_()
    torch.testing.assert_close(moved(x), plain(x))  # an identity pre-conv is the plain block
