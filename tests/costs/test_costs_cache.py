"""Trustworthy costs (issue 30 item 3): the CPU latency by torch.utils.benchmark (median and IQR,
in ms), the content-addressed cache that gives one block at one input the same number in every
study, and the noisy flag a report prints instead of a precise-looking number."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ablate.costs import blocks as costs
from ablate.costs.blocks import Cost, cell_costs
from ablate.costs.measure import NOISY, autorange_ms, cache_dir, cost_key, is_noisy
from ablate.report.costs import Reused, latency_text


class _Sleeper(nn.Module):
    """Identity whose forward sleeps ``ms`` milliseconds: a known step time."""

    def __init__(self, ms: float):
        super().__init__()
        self.ms, self.w = ms, nn.Parameter(torch.ones(1))

    def forward(self, x):
        time.sleep(self.ms / 1e3)
        return x * self.w


def test_autorange_reports_milliseconds_of_one_step():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    median, iqr, blocks = autorange_ms(_Sleeper(4.0), x, torch.ones_like(x), min_run_time=0.1)
    assert 4.0 <= median < 4.0 + 3.0  # sleep's floor, plus a scheduler's slack on a busy machine
    assert iqr >= 0 and blocks >= 2


def test_the_key_is_one_per_block_shape_device_and_threads():
    base = ("nonlocal", {"reduction": 2}, (2, 8, 8, 8), "cpu (x)", 1)
    assert cost_key(*base) == cost_key("nonlocal", {"reduction": 2}, [2, 8, 8, 8], "cpu (x)", 1)
    others = [("glore", *base[1:]), (base[0], {"reduction": 4}, *base[2:]), (*base[:2], (2, 8, 8, 16), *base[3:]),
              (*base[:3], "cuda:0 (y)", 1), (*base[:4], 2)]
    assert len({cost_key(*o) for o in others} | {cost_key(*base)}) == len(others) + 1


def test_the_cache_gives_the_same_number_for_the_same_block_and_input(monkeypatch):
    calls = []
    real = costs.measure
    monkeypatch.setattr(costs, "measure", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    small, large = (1, 8, 4, 4), (1, 8, 6, 6)
    first = cell_costs([("a", "nonlocal", (), small)], device="cpu")
    again = cell_costs([("b", "nonlocal", (), small), ("c", "nonlocal", (), large)], device="cpu")
    assert calls == [small, large]  # b is a's block at a's input: read from the cache, not measured
    assert again["b"][0] == first["a"][0] and again["b"][1] == first["a"][1]
    assert again["c"][0].shape == large and again["c"][0].latency_ms != first["a"][0].latency_ms
    assert len(list(cache_dir().glob("*.json"))) == 2


def test_a_spread_above_the_threshold_is_noisy_and_printed_as_such():
    assert NOISY == 0.2 and is_noisy(10.0, 2.01) and not is_noisy(10.0, 1.99) and is_noisy(0.0, 0.0)
    quiet = Cost(1, 1, 1, 12.345, 0.5, 1, "cpu", 1, (1, 1, 1, 1), 5, 1)
    loud = Cost(1, 1, 1, 12.345, 6.0, 1, "cpu", 1, (1, 1, 1, 1), 5, 1)
    assert not quiet.noisy and loud.noisy
    assert latency_text(quiet) == "12.35 (IQR 0.50)"
    assert latency_text(loud) == "noisy: ~12 (IQR 6)"
    old = Reused(12.345, 0)  # a JSON from before the IQR was kept: the median alone, never noisy
    assert math.isnan(old.latency_iqr_ms) and not old.noisy and latency_text(old) == "12.35"
