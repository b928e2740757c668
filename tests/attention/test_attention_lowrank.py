"""Low-rank and gating presets, the EM functions, A2Net = EMA(T=1, learned), mappings."""
from __future__ import annotations

import pytest
import torch

from ablate.attention import MECHANISMS
from ablate.attention.a2net import A2Block, a2_from_ema
from ablate.attention.apcnet import APCBlock, parse_scales
from ablate.attention.cbam import CBAMBlock
from ablate.attention.ema import EMABlock, em_iterations, em_step, init_bases
from ablate.attention.glore import LowRankBlock
from ablate.attention.projection import (EMProjection, LearnedProjection, PooledProjection, make_projection,
                                         pooling_matrices)
from ablate.attention.senet import SEBlock
from ablate.attention.stn import STNBlock

C = 16
PRESETS = [p for p in MECHANISMS.values() if p.family in ("lowrank", "gating") and p.name != "glore"]  # beyond GloRe
NAMES = [p.name for p in PRESETS]
BY_NAME = {p.name: p for p in PRESETS}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _x(b=2, c=C, h=13, w=11, dtype=torch.float32):
    return torch.randn(b, c, h, w, dtype=dtype)


# ------------------------------------------------------------------------------ registry
def test_preset_names_families_and_factors():
    assert NAMES == ["emanet", "a2net", "sgr", "beyond_grids", "latentgnn", "apcnet", "senet", "cbam", "stn"]
    for p in PRESETS:
        assert p.family in ("lowrank", "gating")
        assert p.paper and p.summary
        for f in p.factors:
            assert f.coerce(f.default) == f.default  # defaults are valid values
    assert {"K", "T", "T_eval", "momentum"} <= {f.name for f in BY_NAME["emanet"].factors}
    for name in ("sgr", "beyond_grids", "latentgnn"):
        assert BY_NAME[name].factor("gcn").default is True
    with pytest.raises(KeyError):
        BY_NAME["senet"].resolve({"K": 4})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(8, 8), (13, 11)])
def test_preset_builds_keeps_shape_and_backprops(name, size):
    block = BY_NAME[name].build(C)
    x = _x(h=size[0], w=size[1]).requires_grad_(True)
    y = block(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    block.eval()
    with torch.no_grad():
        assert block(x).shape == x.shape


def _flipped(f):
    if f.kind == "bool":
        return not f.default
    if f.kind == "choice":
        return next(c for c in f.choices if c != f.default)
    if f.name == "momentum":
        return 0.5
    return f.default + 1 if f.name != "K" else 9  # 9: a perfect square and small


@pytest.mark.parametrize("name", NAMES)
def test_every_factor_switch_builds_and_runs(name):
    preset = BY_NAME[name]
    for f in preset.factors:
        block = preset.build(C, **{f.name: _flipped(f)})
        y = block(_x(h=7, w=9))
        assert y.shape == (2, C, 7, 9), f.name


def test_factor_validation():
    with pytest.raises(ValueError):
        BY_NAME["emanet"].resolve({"bases": "frozen"})
    with pytest.raises(ValueError):
        BY_NAME["emanet"].build(C, momentum=1.5)
    with pytest.raises(ValueError):
        BY_NAME["apcnet"].resolve({"scales": "5"})
    assert parse_scales("6,1,2") == (1, 2, 6)
    assert [acm.scale for acm in APCBlock(C, scales="2,6").acms] == [2, 6]


# --------------------------------------------------------------------------------- EMA
def test_em_step_bases_are_unit_norm_and_z_is_a_distribution():
    x = torch.randn(2, 8, 30, dtype=torch.float64)
    mu = init_bases(8, 5).double().expand(2, -1, -1)
    assert torch.allclose(mu.norm(dim=1), torch.ones(2, 5, dtype=torch.float64), atol=1e-5)
    new_mu, z = em_step(x, mu)
    assert new_mu.shape == (2, 8, 5) and z.shape == (2, 30, 5)
    assert torch.allclose(new_mu.norm(dim=1), torch.ones(2, 5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(z.sum(dim=2), torch.ones(2, 30, dtype=torch.float64))
    # em_iterations is em_step repeated.
    m2, z2 = em_step(x, new_mu)
    m3, z3 = em_iterations(x, mu, 2)
    assert torch.equal(m2, m3) and torch.equal(z2, z3)
    with pytest.raises(ValueError):
        em_iterations(x, mu, 0)


def test_ema_moving_average_mode_has_no_graph_and_updates_buffer_in_train_only():
    block = EMABlock(C, K=6, T=2, T_eval=2, momentum=0.9)
    assert "em.mu" in dict(block.named_buffers()) and not block.em.mu.requires_grad
    x = _x()
    old = block.em.mu.clone()
    x_hat, mu, z = block.reconstruct(x)
    assert mu.grad_fn is None and z.grad_fn is None and x_hat.grad_fn is None
    assert block.em.mu.grad_fn is None
    with torch.no_grad():  # the expected update from the same input
        ref_mu, _ = em_iterations(block.conv_in(x).flatten(2), old.expand(2, -1, -1), 2)
    assert torch.allclose(block.em.mu, 0.9 * old + 0.1 * ref_mu.mean(0, keepdim=True), atol=1e-6)
    # Forward + backward: the input conv gets no gradient (as the official EMAU), the rest does.
    block.zero_grad()
    block(x).sum().backward()
    assert block.conv_in.weight.grad is None
    assert block.conv_out.weight.grad is not None
    # Eval mode: bases frozen.
    block.eval()
    frozen = block.em.mu.clone()
    with torch.no_grad():
        block(x)
    assert torch.equal(block.em.mu, frozen)


def test_ema_uses_T_eval_in_eval_mode():
    block = EMABlock(C, K=4, T=1, T_eval=3).eval()
    x = _x()
    _, mu, _ = block.reconstruct(x)
    ref, _ = em_iterations(block.conv_in(x).flatten(2), block.em.mu.expand(2, -1, -1), 3)
    assert torch.allclose(mu, ref)


def test_ema_learned_bases_are_a_parameter_with_gradient():
    block = EMABlock(C, K=5, T=2, bases="learned")
    assert "em.mu" in dict(block.named_parameters())
    before = block.em.mu.detach().clone()
    block(_x()).square().mean().backward()
    assert block.em.mu.grad is not None and block.em.mu.grad.abs().sum() > 0
    assert block.conv_in.weight.grad is not None  # gradient through the iterations
    assert torch.equal(block.em.mu.detach(), before)  # never averaged


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("bases", ["learned", "moving_average"])
def test_a2net_equals_ema_with_one_iteration(train, bases):
    ema = EMABlock(C, K=6, T=1, T_eval=1, bases=bases).double()
    with torch.no_grad():  # non-trivial BN state so eval mode is a real check
        ema.norm.running_mean.uniform_(-0.5, 0.5)
        ema.norm.running_var.uniform_(0.5, 2.0)
        ema.norm.weight.uniform_(0.5, 1.5)
        ema.norm.bias.uniform_(-0.5, 0.5)
    ema.train(train)
    a2 = a2_from_ema(ema)  # weights copied before the forward updates any buffer
    x = _x(dtype=torch.float64)
    out_a2 = a2(x)
    out_ema = ema(x)
    assert out_ema.shape == out_a2.shape
    torch.testing.assert_close(out_a2, out_ema, rtol=1e-10, atol=1e-10)


def test_a2net_paper_form_differs_from_em_form():
    a2 = A2Block(C, K=6, reduction=1, shared_maps=True)
    x = _x()
    g_soft, d = a2.attention(x)
    a2.gather = "em"
    g_em, d2 = a2.attention(x)
    assert torch.equal(d, d2)  # distribution: softmax over K in both
    assert torch.allclose(g_soft.sum(2), torch.ones(2, 6)) and torch.allclose(g_em.sum(2), torch.ones(2, 6), atol=1e-5)
    assert not torch.allclose(g_soft, g_em, atol=1e-4)  # gathering: different normalisations
    assert torch.allclose(d.sum(1), torch.ones(2, 13 * 11))


# ------------------------------------------------------------------------------ mappings
def test_learned_mapping_matches_lowrank_block():
    lr = LowRankBlock(C, K=8, state_reduction=2)
    proj = make_projection("learned", C, lr.state, 8)
    assert isinstance(proj, LearnedProjection)
    proj.load_state_dict({k: v for k, v in lr.state_dict().items() if k.split(".")[0] in ("reduce", "project")})
    x = _x()
    v, a = proj(x)
    v_ref, a_ref = lr.nodes(x)
    assert v.shape == (2, lr.state, 8) and a.shape == (2, 8, 13 * 11)
    assert torch.allclose(v, v_ref) and torch.allclose(a, a_ref)


def test_em_mapping_returns_bases_and_responsibilities():
    proj = make_projection("em", C, 8, 5, T=2, T_eval=2)
    assert isinstance(proj, EMProjection)
    v, a = proj(_x())
    assert v.shape == (2, 8, 5) and a.shape == (2, 5, 143)
    assert torch.allclose(v.norm(dim=1), torch.ones(2, 5), atol=1e-5)
    assert torch.allclose(a.sum(1), torch.ones(2, 143), atol=1e-6)
    assert v.grad_fn is None and a.grad_fn is None


@pytest.mark.parametrize("size", [(12, 12), (13, 11), (2, 3)])
def test_pooled_mapping_is_adaptive_average_pooling(size):
    proj = make_projection("pooled", C, 8, 9)
    assert isinstance(proj, PooledProjection)
    x = _x(h=size[0], w=size[1])
    v, a = proj(x)
    n = size[0] * size[1]
    assert v.shape == (2, 8, 9) and a.shape == (2, 9, n)
    pool, member = pooling_matrices(*size, 3)
    xs = proj.reduce(x).flatten(2)
    assert torch.allclose(v, xs @ pool.T, atol=1e-6)
    assert torch.allclose(a.sum(1), torch.ones(2, n))
    with pytest.raises(ValueError):
        PooledProjection(C, 8, 8)
    with pytest.raises(ValueError):
        make_projection("voronoi", C, 8, 9)


# ---------------------------------------------------------------------------------- gating
def test_se_output_is_input_times_gate_in_unit_interval():
    se = SEBlock(C, reduction=16)
    assert se.fc1.out_channels == 4  # clamp: C/16 = 1 -> 4
    x = _x()
    g = se.gate(x)
    assert g.shape == (2, C, 1, 1) and (g > 0).all() and (g < 1).all()
    assert torch.allclose(se(x), x * g)


def test_cbam_output_is_input_times_gates_in_unit_interval():
    cbam = CBAMBlock(C)
    x = _x()
    mc, ms = cbam.gates(x)
    assert mc.shape == (2, C, 1, 1) and ms.shape == (2, 1, 13, 11)
    for g in (mc, ms):
        assert (g > 0).all() and (g < 1).all()
    assert torch.allclose(cbam(x), x * mc * ms)
    assert torch.equal(CBAMBlock(C, channel=False, spatial=False)(x), x)


def test_stn_is_identity_at_init():
    stn = STNBlock(C)
    x = _x()
    assert torch.allclose(stn.theta(x), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, -1, -1))
    torch.testing.assert_close(stn(x), x, rtol=1e-5, atol=1e-5)
