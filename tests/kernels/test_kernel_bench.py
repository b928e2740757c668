"""The kernel benchmark and the CPU scaling benchmark: tiny sizes, seconds on a CPU."""
from __future__ import annotations

import math

import pytest
import torch

from ablate.costs import scaling
from ablate_kernels import bench, dispatch

TINY = "1,16,4,4"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path runs only without CUDA")
def test_cpu_bench_prints_reference_rows_and_says_the_kernels_were_not_timed(capsys):
    assert bench.main(["--sizes", TINY, "--cpu-scale", "1", "--repeats", "1", "--warmup", "0", "--window", "3",
                       "--ops", ",".join(bench.OPS)]) == 0  # the rows ablate adds: tests/costs/test_bench_cases.py
    out = capsys.readouterr().out
    assert bench.NO_GPU_NOTICE in out
    for impl in ("einsum reference", "dense SDPA (all N)", "em_iterations (T=3, K=64)", "unfold reference"):
        assert impl in out
    assert "triton kernel" not in out and "fused kernel" not in out
    assert "OOM" not in out and "error" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path runs only without CUDA")
def test_cpu_sizes_are_scaled_down_and_markdown_is_one_table(capsys):
    assert bench.cpu_sizes([(2, 512, 97, 97), (1, 512, 128, 256)], 4) == [(2, 512, 24, 24), (1, 512, 32, 64)]
    bench.main(["--sizes", "1,16,8,8", "--cpu-scale", "2", "--ops", "em", "--repeats", "1", "--warmup", "0",
                "--markdown"])
    out = capsys.readouterr().out
    assert "1,16,8,8 -> 1,16,4,4" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| op | size B,C,H,W | impl | ms (median) | peak MiB")
    assert len(table) == 2 + 1  # header, rule, the em reference row
    assert "| em | 1,16,4,4 | em_iterations" in table[2]


@pytest.mark.skipif(not dispatch.interpreting(), reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
def test_forced_kernels_run_under_the_interpreter_and_fill_the_ratio_and_floor_columns():
    rows, info = bench.run([(1, 16, 4, 4)], ops=("criss_cross", "em", "local_window"), device="cpu",
                           force_kernels=True, repeats=1, warmup=0, window=3)
    assert info["kernels"] and info["bandwidth"] > 0
    kernels = [r for r in rows if r.is_kernel]
    assert {r.op for r in kernels} == {"criss_cross", "em", "local_window"}
    for r in rows:
        assert r.status == "ok", r.status
        assert r.ms > 0 and r.time_ratio is not None and r.mem_ratio is not None
    for r in kernels:
        assert r.floor_ms > 0 and r.over_floor == pytest.approx(r.ms / r.floor_ms)
    assert all(r.time_ratio == 1.0 for r in rows if r.is_reference)
    line = next(l for l in bench.format_table(rows, markdown=True).splitlines() if "triton kernel" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert all(cells), cells  # every column filled for a kernel row, ratio and floor included


def test_a_row_that_runs_out_of_memory_says_oom_and_the_table_goes_on():
    def boom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    case = bench.Case("criss_cross", "triton kernel", boom, is_kernel=True, bytes_moved=1000)
    row = bench._measure(case, (1, 8, 2, 2), torch.device("cpu"), repeats=1, warmup=0, bandwidth=1e9)
    assert row.status == "OOM" and row.ms is None
    assert "OOM" in bench.format_table([row])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        bench.parse_sizes("2,512,97")
    assert bench.parse_sizes("2,512,97,97;1,512,128,256") == [(2, 512, 97, 97), (1, 512, 128, 256)]


@pytest.mark.parametrize("b", [1.0, 1.5, 2.0])
def test_exponent_fit_recovers_a_known_power_law(b):
    n = [s * s for s in (16, 24, 32, 48, 64)]
    fitted, a = scaling.fit_exponent(n, [3 * v**b for v in n])
    assert fitted == pytest.approx(b, abs=1e-9) and a == pytest.approx(math.log(3), abs=1e-9)


def test_fit_on_the_largest_sides_ignores_a_fixed_overhead_that_dominates_small_ones():
    sides = (4, 8, 16, 32, 64, 128)
    time = {s: 50.0 + 1e-2 * (s * s) ** 1.5 for s in sides}
    res = scaling.Result(scaling.MECHANISMS["criss_cross"],
                         [scaling.Point(s, ms=time[s], min_ms=0.9 * time[s], peak_bytes=10 * s**3, flops=7 * s**3)
                          for s in sides])
    e = scaling.exponents(res, fit_last=2)
    assert e["time_all"] < 1.0 < 1.4 < e["time"] < 1.5  # overhead pulls the all-sides fit down
    assert e["time_min"] == pytest.approx(e["time"])
    assert e["mem"] == pytest.approx(1.5) and e["flops"] == pytest.approx(1.5)


def test_interlaced_model_exponent_lies_between_one_and_two():
    mech = scaling.MECHANISMS["interlaced"]
    assert 1.0 < scaling.model_exponent(mech, (24, 32, 48, 64)) < 2.0
    assert scaling.model_exponent(mech, (1024, 2048)) == pytest.approx(2.0, abs=0.01)
    assert scaling.model_exponent(scaling.MECHANISMS["nonlocal"], (16, 32)) == 2.0


def test_scaling_at_two_tiny_sides_gives_rows_for_every_mechanism():
    results = scaling.run(list(scaling.MECHANISMS), sides=(4, 8), channels=16, batch=1, repeats=1, warmup=0)
    assert [r.mechanism.label for r in results] == list(scaling.MECHANISMS)
    for r in results:
        assert not r.error, (r.mechanism.label, r.error)
        assert [p.side for p in r.points] == [4, 8]
        assert all(p.ms >= p.min_ms > 0 and p.peak_bytes > 0 and p.flops > 0 for p in r.points)
    text = scaling.table(results, (4, 8), fit_last=2, markdown=True)
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 1 + len(results)
