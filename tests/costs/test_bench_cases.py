"""The kernel benchmark's rows from ablate (entry points ``ablate_kernels.bench``): CARAFE and the
evaluation-time path run on the CPU beside the references, each against its reference row."""
from __future__ import annotations

import pytest
import torch

from ablate.costs import bench_cases
from ablate_kernels import bench


def test_the_installed_package_adds_carafe_and_the_evaluation_path():
    extras = bench.extra_ops()
    assert {"carafe", "eval_path"} <= set(extras)
    assert extras["carafe"].load() is bench_cases.carafe_cases and extras["eval_path"].load() is bench_cases.eval_cases


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path runs only without CUDA")
def test_cpu_bench_times_carafe_and_the_evaluation_path(capsys):
    assert bench.main(["--sizes", "1,8,2,2", "--cpu-scale", "1", "--ops", "carafe,eval_path", "--repeats", "1",
                       "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("carafe ", "eval_path "))]
    impls = ("bilinear x2", "CARAFEPack x2", "carafe op alone", "whole, T_eval=3 (1x3x16x16)", "whole, T_eval=7",
             "slide 8x8 / 5x5", "6 scales + flip")
    assert len(rows) == len(impls) and all(any(i in r for r in rows) for i in impls)
    assert "error" not in out and "OOM" not in out
    reference = next(r for r in rows if "bilinear x2" in r)
    assert " 1.000 " in reference  # time / ref of the reference row itself


def test_the_evaluation_rows_share_one_set_of_weights():
    cases = bench_cases.eval_cases((1, 16, 2, 2), torch.device("cpu"), torch.float32)
    assert [c.is_reference for c in cases] == [True, False, False, False]
    for c in cases:
        c.call()  # each evaluation runs (no gradients)
