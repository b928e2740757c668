"""EMANet at T = 1 against A2Net: the equivalence in value and in gradient, and the five switches.

The A2Net equations are written out here from the paper (A = phi(X), B = theta(X), V = rho(X);
G = A softmax_N(B)^T; Z = G softmax_K(V); X + BN(expand(Z))), not taken from ``a2net.py``.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ablate.attention.a2net import a2_from_ema
from ablate.attention.ema import EMABlock
from ablate.attention import MECHANISMS

C, K = 16, 6
BY_NAME = MECHANISMS
# The five switches, EMANet's value -> A2Net's value, in the order of the em_iterations ladder.
SWITCHES = [("gather", "em", "softmax"), ("shared_maps", True, False), ("descriptor_norm", "l2", "none"),
            ("out_relu", True, False), ("reduction", 1, 4)]
A2NET = {name: a2 for name, _, a2 in SWITCHES}


def _x(seed: int = 1, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, C, 7, 5, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


def _ema(train: bool = True, **kw) -> EMABlock:
    """A float64 EMA block with one iteration and non-trivial BN state (so eval mode is a real check)."""
    torch.manual_seed(0)
    block = EMABlock(C, K=K, T=1, T_eval=1, **kw).double()
    with torch.no_grad():
        block.norm.running_mean.uniform_(-0.5, 0.5)
        block.norm.running_var.uniform_(0.5, 2.0)
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    return block.train(train)


def _grad_x(block, x: torch.Tensor, cotangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = block(x)
    (g,) = torch.autograd.grad((out * cotangent).sum(), x)
    return out, g


# ------------------------------------------------------------------ value and gradient
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("switches", [{}, A2NET, {"gather": "softmax", "shared_maps": False}],
                         ids=["emanet", "a2net", "two"])
def test_learned_bases_equal_the_a2_form_in_value_and_gradient(train, switches):
    ema = _ema(train, bases="learned", **switches)
    a2 = a2_from_ema(ema)  # weights copied before any forward
    x = _x(requires_grad=True)
    w = torch.randn(2, C, 7, 5, dtype=torch.float64)
    out_e, g_e = _grad_x(ema, x, w)
    out_a, g_a = _grad_x(a2, x, w)
    torch.testing.assert_close(out_e, out_a, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_e, g_a, rtol=1e-10, atol=1e-10)
    # The bases are the map conv's weight in disguise (W_map = mu^T W_in): their gradient is
    # the map conv's gradient pulled back through that product.
    (gm,) = torch.autograd.grad((ema(x) * w).sum(), ema.em.mu)
    gw, gb = torch.autograd.grad((a2(x) * w).sum(), (a2.gather_maps.weight, a2.gather_maps.bias))
    pulled = ema.conv_in.weight.flatten(1) @ gw.flatten(1).T + ema.conv_in.bias[:, None] * gb[None, :]
    torch.testing.assert_close(gm[0], pulled, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_moving_average_bases_equal_a2_in_value_but_not_in_gradient(train):
    ema = _ema(train)  # EMANet: moving-average bases, no grad through the iterations
    a2, before = a2_from_ema(ema), copy.deepcopy(ema)  # a forward in train mode moves the bases
    x = _x(requires_grad=True)
    w = torch.randn(2, C, 7, 5, dtype=torch.float64)
    out_a, g_a = _grad_x(a2, x, w)
    out_e, g_e = _grad_x(ema, x, w)
    torch.testing.assert_close(out_e, out_a, rtol=1e-10, atol=1e-10)
    assert (g_e - g_a).abs().max() > 1e-2 * g_a.abs().max()
    # What EMANet's gradient is: the attention branch held constant, only the residual path.
    with torch.no_grad():
        x_hat = before.reconstruct(x)[0].reshape(2, C, 7, 5)
    branch = before.norm(before.conv_out(torch.relu(x_hat)))
    (g_const,) = torch.autograd.grad((torch.relu(x + branch) * w).sum(), x)
    torch.testing.assert_close(g_e, g_const, rtol=1e-10, atol=1e-10)


def test_a2_from_ema_needs_one_iteration():
    with pytest.raises(ValueError, match="T = T_eval = 1"):
        a2_from_ema(EMABlock(C, K=K, T=3, T_eval=1))


# ------------------------------------------------------------------ the switches
def _a2net_equations(ema: EMABlock, x: torch.Tensor) -> torch.Tensor:
    """A2Net's block from its equations, with phi = conv_in, theta = mu^T conv_in,
    rho = nu^T conv_in, expand = conv_out and the block's BN."""
    w_in, b_in = ema.conv_in.weight.flatten(1), ema.conv_in.bias
    mu, nu = ema.em.mu[0], ema.distribute[0]  # m, K each
    xf = x.flatten(2)  # b, C, N
    a = torch.einsum("mc,bcn->bmn", w_in, xf) + b_in[:, None]
    b_maps = torch.einsum("mk,bmn->bkn", mu, a)  # theta(X) = mu^T (W_in X + b_in)
    v_maps = torch.einsum("mk,bmn->bkn", nu, a)
    g = torch.einsum("bmn,bkn->bmk", a, torch.softmax(b_maps, dim=2))  # gather: softmax over positions
    z = torch.einsum("bmk,bkn->bmn", g, torch.softmax(v_maps, dim=1))  # distribute: softmax over K
    y = torch.einsum("cm,bmn->bcn", ema.conv_out.weight.flatten(1), z).reshape(x.shape)
    n = ema.norm
    return x + F.batch_norm(y, n.running_mean.clone(), n.running_var.clone(), n.weight, n.bias,
                            training=n.training, eps=n.eps)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("bases", ["learned", "moving_average"])
def test_all_five_switches_compute_a2net(train, bases):
    ema = _ema(train, bases=bases, **A2NET)
    assert ema.width == C // 4 and ema.conv_in.out_channels == C // 4 and ema.em.mu.shape == (1, C // 4, K)
    a2 = a2_from_ema(ema)
    x = _x()
    want = _a2net_equations(ema, x)
    torch.testing.assert_close(a2(x), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ema(x), want, rtol=1e-10, atol=1e-10)
    # ... and that A2Block is the a2net preset's configuration (the switches at its defaults).
    preset = BY_NAME["a2net"].defaults
    assert (a2.m, a2.shared_maps, a2.gather, a2.descriptor_norm, a2.out_relu) == (
        C // preset["reduction"], preset["shared_maps"], preset["gather"], preset["descriptor_norm"],
        preset["out_relu"])


@pytest.mark.parametrize("name, emanet, a2net", SWITCHES, ids=[s[0] for s in SWITCHES])
def test_each_switch_changes_the_output(name, emanet, a2net):
    base = _ema(bases="learned")
    flipped = _ema(bases="learned", **{name: a2net})
    x = _x()
    if name == "reduction":  # a different width: no shared weights to compare with
        assert (base.width, flipped.width) == (C, C // a2net)
    else:  # the same weights (a switch to separate maps adds the distribution bases nu)
        missing, unexpected = flipped.load_state_dict(base.state_dict(), strict=False)
        assert missing == ([] if name != "shared_maps" else ["distribute"]) and not unexpected
        if name == "shared_maps":
            assert not torch.allclose(flipped.distribute, flipped.em.mu)
    assert (base(x) - flipped(x)).abs().max() > 1e-3, name


def test_presets_carry_the_switches_with_opposite_defaults():
    emanet, a2net = BY_NAME["emanet"], BY_NAME["a2net"]
    for name, ema_value, a2_value in SWITCHES:
        assert emanet.defaults[name] == ema_value and a2net.defaults[name] == a2_value, name
        # added to emanet after its results were stored: at EMANet's value, out of the cell identity
        assert emanet.factor(name).added
    assert emanet.identity(emanet.resolve({})) == {"K": 64, "T": 3, "T_eval": 3, "momentum": 0.9,
                                                   "bases": "moving_average"}


def test_defaults_rebuild_the_official_unit():
    # No switch at its default may change the block: same parameters, same values, same output.
    torch.manual_seed(0)
    plain = EMABlock(C, K=K)
    torch.manual_seed(0)
    explicit = EMABlock(C, K=K, gather="em", shared_maps=True, descriptor_norm="l2", out_relu=True, reduction=1)
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    for k, v in plain.state_dict().items():
        assert torch.equal(v, explicit.state_dict()[k]), k
    assert not hasattr(plain, "distribute")
    x = torch.randn(2, C, 6, 4)
    assert torch.equal(plain.eval()(x), explicit.eval()(x))


def test_separate_maps_train_the_input_conv_even_with_moving_average_bases():
    x = _x().float()
    for shared, reaches in ((True, False), (False, True)):
        torch.manual_seed(0)
        block = EMABlock(C, K=K, T=2, shared_maps=shared)
        block(x).square().mean().backward()
        assert (block.conv_in.weight.grad is not None) is reaches
        assert block.em.mu.grad is None  # the bases themselves stay a moving average
