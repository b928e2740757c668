"""Properties of the cost measurements: exact FLOPs, honest memory, sane timings."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ablate.attention import MECHANISMS
from ablate.costs import blocks as costs
from ablate.costs.blocks import Cost, cell_costs, main, measure, measure_budgeted, measure_preset

FLOAT = 4  # bytes




def test_conv1x1_flops_exact_and_backward_is_twice_forward():
    b, c, h, w = 2, 8, 5, 7
    cost = measure(nn.Conv2d(c, c, 1), (b, c, h, w), repeats=1, warmup=0)
    assert cost.flops_fwd == 2 * b * c * c * h * w
    # backward = grad of the input + grad of the weight, each as many multiply-adds as the forward
    assert cost.flops_fwd_bwd == 3 * cost.flops_fwd
    assert cost.params == c * c + c


def test_nonlocal_flops_match_a_hand_count():
    b, c, h, w = 2, 16, 6, 5
    block = MECHANISMS["nonlocal"].build(c)
    n, d = h * w, c // 2  # the paper's inner width C/2 for theta, phi and g
    assert (block.qk_dim, block.v_dim) == (d, d)
    convs = 3 * (2 * b * n * c * d) + 2 * b * n * d * c  # theta, phi, g: C -> C/2; W: C/2 -> C
    matmuls = 2 * b * n * n * d + 2 * b * n * n * d  # theta phi^T (N x N), then the affinity times g
    cost = measure(block, (b, c, h, w), repeats=1, warmup=0)
    assert cost.flops_fwd == convs + matmuls
    # on the CPU the attention runs as two bmm's; every product's backward costs twice its forward
    assert cost.flops_fwd_bwd == 3 * (convs + matmuls)


def test_nonlocal_dot_flops_are_linear_in_pixels():
    """The 1/N form is computed as q (k^T v) / N: no N x N product."""
    b, c, h, w = 2, 16, 6, 5
    block = MECHANISMS["nonlocal_dot"].build(c)
    n, d = h * w, c // 2
    cost = measure(block, (b, c, h, w), repeats=1, warmup=0)
    assert cost.flops_fwd == 3 * (2 * b * n * c * d) + 2 * b * n * d * c + 2 * (2 * b * d * n * d)


def test_params_are_the_sum_of_parameter_numels():
    for name in ("nonlocal", "glore", "danet", "emanet", "none"):
        block = MECHANISMS[name].build(16)
        cost = measure(block, (1, 16, 4, 4), repeats=1, warmup=0)
        assert cost.params == sum(p.numel() for p in block.parameters())
    shared = MECHANISMS["nonlocal"].build(16, shared_qk=True)
    separate = MECHANISMS["nonlocal"].build(16)
    conv = 16 * 8 + 8
    # a shared theta/phi is one conv, counted once
    assert measure(separate, (1, 16, 4, 4), repeats=1, warmup=0).params - \
        measure(shared, (1, 16, 4, 4), repeats=1, warmup=0).params == conv


def _peak(block: nn.Module, shape) -> int:
    return measure(block, shape, repeats=1, warmup=1).peak_mem_bytes


def test_peak_memory_grows_quadratically_for_nonlocal_linearly_for_conv():
    c = 16
    small, large = (2, c, 16, 16), (2, c, 16, 32)  # twice the pixels
    nonlocal_ratio = _peak(MECHANISMS["nonlocal"].build(c), large) / _peak(MECHANISMS["nonlocal"].build(c), small)
    conv_ratio = _peak(nn.Conv2d(c, c, 1), large) / _peak(nn.Conv2d(c, c, 1), small)
    assert nonlocal_ratio > 2.5  # the N x N affinity (and its gradient) dominate at N = 256
    assert 1.8 < conv_ratio < 2.2


def test_peak_memory_holds_at_least_the_output_and_the_attention_map():
    b, c, h, w = 2, 16, 12, 12
    n = h * w
    out_bytes = b * c * h * w * FLOAT
    assert _peak(nn.Conv2d(c, c, 1), (b, c, h, w)) >= out_bytes
    # the softmaxed N x N affinity is saved for backward, next to the output
    assert _peak(MECHANISMS["nonlocal"].build(c), (b, c, h, w)) >= out_bytes + b * n * n * FLOAT


def test_latency_positive_iqr_nonnegative_and_the_block_is_left_alone():
    block = MECHANISMS["nonlocal"].build(8)
    state = {k: v.clone() for k, v in block.state_dict().items()}
    cost = measure(block, (2, 8, 6, 6), repeats=4, warmup=1)
    assert isinstance(cost, Cost)
    assert cost.latency_ms > 0 and cost.latency_iqr_ms >= 0
    assert cost.threads == 1 and cost.shape == (2, 8, 6, 6) and cost.device.startswith("cpu")
    # measured on a copy: BN running statistics are untouched, no gradients are left behind
    assert all(torch.equal(v, block.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in block.parameters())


def test_shape_changing_block_is_refused():
    with pytest.raises(ValueError, match="shape-preserving"):
        measure(nn.Conv2d(4, 8, 1), (1, 4, 3, 3), repeats=1, warmup=0)


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_every_preset_can_be_measured(name):
    cost = measure_preset(name, channels=16, size=12, batch=2, repeats=1, warmup=0)
    assert cost.params >= 0 and cost.flops_fwd_bwd >= cost.flops_fwd >= 0
    assert cost.latency_ms > 0 and cost.peak_mem_bytes >= 0


def test_cli_prints_one_table_with_its_provenance(capsys):
    assert main(["--size", "8", "--channels", "8", "--batch", "1", "--repeats", "2",
                 "--mechanisms", "none,nonlocal"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2  # header, rule, one row per mechanism
    assert table[2].startswith("| none | none |") and table[3].startswith("| nonlocal | pairwise |")
    assert "threads" in out and "(1, 8, 8, 8)" in out and "FlopCounterMode" in out
    assert "python -m ablate.costs --size 8 --channels 8 --batch 1 --repeats 2 --mechanisms none,nonlocal" in out


def test_cli_unknown_mechanism_lists_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--mechanisms", "nonlocal,nope"])
    err = capsys.readouterr().err
    assert "nope" in err and "glore" in err


def test_cell_costs_measure_each_distinct_block_once_and_subtract_the_input_gradient(monkeypatch):
    calls = []
    real = costs.measure
    monkeypatch.setattr(costs, "measure", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    small, large = (1, 8, 4, 4), (1, 8, 6, 6)
    out = cell_costs([("a", "none", (), small), ("b", "none", (), small), ("c", "nonlocal", (), small),
                      ("d", "nonlocal", (), large), ("e", "nonlocal", (("reduction", 4),), small)],
                     device="cpu", repeats=1, warmup=0)
    assert calls == [small, small, large, small]  # a and b share one block; d differs by shape, e by args
    assert out["a"] is out["b"] and out["c"] is not out["d"]
    assert out["a"][1] == 0  # no block adds nothing over the input's gradient the backbone needs anyway
    cost, extra = out["c"]
    assert extra == cost.peak_mem_bytes - 8 * 4 * 4 * FLOAT > 0
    assert out["_device"].startswith("cpu") and out["_threads"] == torch.get_num_threads()


def test_measure_budgeted_stops_after_three_runs_once_its_budget_is_spent():
    b, c, h, w = 2, 8, 5, 7
    spent = measure_budgeted(nn.Conv2d(c, c, 1), (b, c, h, w), repeats=10, warmup=0, budget_s=0.0)
    assert len(spent.times_ms) == 3 and spent.min_ms <= spent.median_ms <= max(spent.times_ms)
    assert len(measure_budgeted(nn.Conv2d(c, c, 1), (b, c, h, w), 2, 0, budget_s=0.0).times_ms) == 2
    block = nn.Conv2d(c, c, 1)
    full = measure_budgeted(block, (b, c, h, w), repeats=5, warmup=1, budget_s=1e9)
    assert len(full.times_ms) == 5
    assert full.flops_fwd_bwd == measure(nn.Conv2d(c, c, 1), (b, c, h, w), repeats=1, warmup=0).flops_fwd_bwd
    assert full.peak_mem_bytes >= b * c * h * w * FLOAT  # at least the output
    assert block.weight.grad is not None  # it runs the block itself (scaling reuses one block across sides)
    assert measure_budgeted(nn.Conv2d(c, c, 1), (b, c, h, w), 1, 0, 1e9, flops=False).flops_fwd_bwd == 0
