"""The single measurements :func:`ablate.costs.measure` combines, one function each: a training
step of a block (forward, then backward from a given upstream gradient), its wall time, its peak
live memory on the CPU (profiler memory events) or CUDA (the allocator's peak), its FLOPs
(``FlopCounterMode`` with the CPU flash-attention formula torch lacks), its parameter count, and
a quiet stderr for torch's profiler; the CPU latency by ``torch.utils.benchmark``
(:func:`autorange_ms`, median and IQR) and a content-addressed cache of measured blocks
(:func:`cost_key`, :func:`cache_get`, :func:`cache_put`) so one block at one input gets one number
in every report.

What each number counts, and what it leaves out, is :mod:`ablate.costs`' docstring's. Everything
here is re-exported by :mod:`ablate.costs`; :mod:`ablate.costs.scaling` uses the same helpers through
:func:`ablate.costs.measure_budgeted`.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils import flop_counter

from .noise import NOISY, is_noisy  # noqa: F401 - part of this module's interface


def _cpu_flash_fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_flash_bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


_aten = torch.ops.aten
# FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel.
_EXTRA_FLOP_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_fwd,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_bwd,
}


def step(block: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    """One training step's worth of block work: forward, then backward from ``grad``."""
    y = block(x)
    y.backward(grad)


def clear_grads(block: nn.Module, x: torch.Tensor) -> None:
    """Gradients of the block's parameters and of the input set to None."""
    block.zero_grad(set_to_none=True)
    x.grad = None


def cpu_peak_bytes(block: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> int:
    """Peak of live CPU allocator bytes during one step, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    clear_grads(block, x)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(block, x, grad)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())  # stable: same-time events keep recording order
    live = peak = 0
    for e in events:
        live += e.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, live)
    return peak


def cuda_peak_bytes(block: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> int:
    """Peak CUDA allocator bytes during one step, over what was allocated before it."""
    clear_grads(block, x)
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    step(block, x, grad)
    torch.cuda.synchronize(x.device)
    return torch.cuda.max_memory_allocated(x.device) - base


def count_flops(block: nn.Module, x: torch.Tensor, grad: torch.Tensor, backward: bool) -> int:
    """FLOPs of one forward (and, with ``backward``, the backward from ``grad``) of ``block`` on ``x``."""
    clear_grads(block, x)
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        y = block(x)
        if backward:
            y.backward(grad)
    return int(counter.get_total_flops())


def time_ms(block: nn.Module, x: torch.Tensor, grad: torch.Tensor, cuda: bool) -> float:
    """Wall time (ms) of one step: CUDA events on CUDA, ``time.perf_counter`` on the CPU."""
    clear_grads(block, x)
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(block, x, grad)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    step(block, x, grad)
    return (time.perf_counter() - t0) * 1e3


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    """Median and inter-quartile range (inclusive quartiles); IQR 0 for one value."""
    if len(values) == 1:
        return float(values[0]), 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return float(statistics.median(values)), float(q3 - q1)


def param_count(module: nn.Module) -> int:
    """The number of elements of ``module.parameters()`` (a parameter two submodules share counts once)."""
    return sum(p.numel() for p in module.parameters())


def forward_flops(block: nn.Module, shape: Sequence[int]) -> int:
    """Forward FLOPs of ``block`` on one input of ``shape`` (a copy in eval mode; no grad)."""
    probe = copy.deepcopy(block).eval()
    x = torch.randn(*shape)
    with torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        probe(x)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def quiet_native_stderr():
    """Send file descriptor 2 to /dev/null for a while: torch's profiler prints lines from C++
    (one pair per memory measurement) that Python cannot filter."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# -- latency by torch.utils.benchmark, and a cache of measured blocks ----------------------------------

MIN_RUN_S = 0.2  # blocked_autorange measures for at least this long (after its own warm-up)
MIN_BLOCKS = 5  # at least this many timed blocks: one or two slow steps give no spread to judge the load by
MAX_RUN_S = 20.0  # ... unless that would take longer than this
METHOD = "fwd+bwd train float32, torch.utils.benchmark blocked_autorange, >= 5 blocks"  # part of the cache key


def autorange_ms(block: nn.Module, x: torch.Tensor, grad: torch.Tensor, min_run_time: float = MIN_RUN_S
                 ) -> tuple[float, float, int]:
    """(median ms, IQR ms, number of timed blocks) of one training step (gradients cleared, forward,
    backward) on the CPU, by :meth:`torch.utils.benchmark.Timer.blocked_autorange`: it picks a
    number of steps per block that makes a block long against the timer's resolution, then times
    blocks until ``min_run_time`` seconds are spent; median and IQR are over the blocks' per-step
    means, with torch's intra-op threads as they are. A step so slow that fewer than
    :data:`MIN_BLOCKS` blocks fit is timed again for long enough to give that many (up to
    :data:`MAX_RUN_S`), so that a spread exists to say whether the machine was loaded."""
    from torch.utils import benchmark

    def run() -> None:
        clear_grads(block, x)
        step(block, x, grad)

    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    if len(m.times) < MIN_BLOCKS:
        per_block = sum(m.times) * m.number_per_run / len(m.times)
        m = timer.blocked_autorange(min_run_time=min(MAX_RUN_S, 1.2 * MIN_BLOCKS * per_block))
    return float(m.median) * 1e3, float(m.iqr) * 1e3, len(m.times)


def cache_dir() -> Path:
    """Where measured block costs are kept: ``$ABLATE_CACHE/costs``, else ``~/.cache/ablate/costs``."""
    root = os.environ.get("ABLATE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ablate") / "costs"


def cost_key(mechanism: str, args, shape: Sequence[int], device: str, threads: int) -> str:
    """The content address of one measurement: a SHA-256 of the block's preset and resolved
    arguments, the input shape, the device in words, torch's version, the thread count and
    :data:`METHOD`. The same block at the same input on the same machine has one key in every study."""
    content = {"mechanism": mechanism, "args": sorted(dict(args).items()), "shape": [int(s) for s in shape],
               "device": device, "torch": torch.__version__, "threads": int(threads), "method": METHOD}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_get(key: str) -> dict | None:
    """The cached record of ``key``, or None (none, or unreadable: it is measured again)."""
    try:
        return json.loads((cache_dir() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def cache_put(key: str, record: dict) -> None:
    """Keep ``record`` under ``key`` (atomically; a cache that cannot be written is skipped)."""
    from ..config.atomic import write_text

    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_text(cache_dir() / f"{key}.json", json.dumps(record, sort_keys=True))
    except OSError:
        pass
