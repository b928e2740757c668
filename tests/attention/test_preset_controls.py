"""The presets' matched controls: Non-local's ``dropped_qk: matched`` (theta and phi dropped, their
parameters kept outside the affinity) and EMANet's ``refit: off`` (the EM iterations run, the
output does not use the bases they re-estimate)."""
from __future__ import annotations

import pytest
import torch

from ablate.attention import MECHANISMS
from ablate.config.vocab import FactorConflict


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("channels", [16, 32, 64])
def test_the_matched_qk_control_has_the_full_blocks_parameter_count(channels):
    nl = MECHANISMS["nonlocal"]
    full = _params(nl.build(channels))
    dropped = _params(nl.build(channels, theta=False, phi=False))
    assert dropped < 0.6 * full  # the drop the control exists for removes about half the block
    assert _params(nl.build(channels, theta=False, phi=False, dropped_qk="matched")) == full
    assert _params(nl.build(channels, theta=False, phi=False, sigma=False, dropped_qk="matched")) == \
        _params(nl.build(channels, sigma=False))


def test_the_matched_qk_control_leaves_the_affinity_alone_and_reaches_the_output():
    torch.manual_seed(0)
    nl = MECHANISMS["nonlocal"]
    ctrl = nl.build(16, theta=False, phi=False, dropped_qk="matched", zero_init=False).double().eval()
    full = nl.build(16, zero_init=False).double().eval()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    a, y = ctrl.attention_map(x), ctrl(x)
    a_full = full.attention_map(x)
    with torch.no_grad():
        ctrl.matched.weight.add_(torch.randn_like(ctrl.matched.weight))
        full.theta.weight.add_(torch.randn_like(full.theta.weight))
    # the control's parameters never enter the affinity (x_i . x_j, the Gaussian form's) ...
    assert torch.equal(ctrl.attention_map(x), a)
    q = x.flatten(2).transpose(1, 2)
    assert torch.allclose(a, (q @ q.transpose(1, 2) * 16 ** -0.5).softmax(-1))
    # ... but they reach the output (learned capacity), while the query transform moves the affinity
    assert (ctrl(x) - y).abs().max() > 1e-3
    assert (full.attention_map(x) - a_full).abs().max() > 1e-6


def test_the_matched_qk_control_starts_as_the_identity_and_is_refused_where_it_cannot_match():
    ctrl = MECHANISMS["nonlocal"].build(16, theta=False, phi=False, dropped_qk="matched").eval()
    x = torch.randn(1, 16, 4, 4)
    assert torch.allclose(ctrl(x), x)
    nl = MECHANISMS["nonlocal"]
    for bad in ({"theta": False}, {"theta": False, "phi": False, "reduction": 4}, {}):
        with pytest.raises(FactorConflict) as e:
            nl.resolve({**bad, "dropped_qk": "matched"})
        assert e.value.key == "dropped_qk"
    nl.resolve({"theta": False, "shared_qk": True, "dropped_qk": "matched"})  # shared and off: both dropped


def _ema(T: int, refit: bool, **kw):
    torch.manual_seed(0)
    return MECHANISMS["emanet"].build(16, K=4, T=T, T_eval=T, refit=refit, **kw).double()


def test_the_no_refit_control_has_the_same_parameters_and_an_output_free_of_T():
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    for bases in ("moving_average", "learned"):
        assert _params(_ema(3, False, bases=bases)) == _params(_ema(3, True, bases=bases))
        outs = [_ema(T, False, bases=bases).eval()(x) for T in (1, 3, 6)]
        assert all(torch.equal(outs[0], o) for o in outs[1:]), bases
        refit = [_ema(T, True, bases=bases).eval()(x) for T in (1, 3)]
        assert (refit[0] - refit[1]).abs().max() > 1e-6  # T moves the block it controls


def test_the_no_refit_control_learns_its_bases_by_emanets_rule():
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    for T in (1, 3):
        ctrl, ema = _ema(T, False).train(), _ema(T, True).train()
        before = ctrl.em.mu.clone()
        y_ctrl = ctrl(x)
        ema(x)
        assert torch.equal(ctrl.em.mu, ema.em.mu)  # the same moving average of the T-step bases
        assert not torch.equal(ctrl.em.mu, before)
        # and its output is built from the bases before that update, with one E-step
        feats = ctrl.conv_in(x).flatten(2)
        z0 = torch.softmax(feats.transpose(1, 2) @ before, dim=2)
        x_hat = (before @ z0.transpose(1, 2)).reshape(2, 16, 6, 6)
        expected = torch.relu(x + ctrl.norm(ctrl.conv_out(torch.relu(x_hat))))
        assert torch.allclose(y_ctrl, expected)
