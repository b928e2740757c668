"""What a mechanism costs: parameters, FLOPs, latency and peak memory of one block.

``measure(block, shape)`` runs the block as it runs inside a network being trained: train
mode, an input that needs its gradient (the block sits after the backbone), forward then
backward with a given upstream gradient. It works on a deep copy, so the caller's block
(BN running statistics, EMA's moving-average bases) is left as it was.

* **params**: the number of elements of ``block.parameters()`` (a parameter shared between
  two submodules, e.g. ``shared_qk``, counts once).
* **FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode`, one forward
  (``flops_fwd``) and one forward + backward (``flops_fwd_bwd``). A multiply-add is 2
  FLOPs. It counts only the ops it has a formula for: matrix products (``mm``, ``addmm``,
  ``bmm``, ``baddbmm``; ``matmul``, ``einsum`` and ``linear`` decompose into these),
  convolutions and their backward, and the fused attention kernels; the CPU flash-attention
  kernel is added here, because torch has no formula for it. Element-wise ops, softmax,
  normalisation, pooling, interpolation, ``grid_sample``, sorting and reductions count as
  0, so blocks built mostly from those (gating, pooling) are undercounted; bias additions
  are not counted either.
* **latency**: wall time of forward + backward (gradients set to ``None`` first), median
  and inter-quartile range. On the CPU by ``torch.utils.benchmark.Timer.blocked_autorange``
  (:func:`ablate.costs.measure.autorange_ms`: blocks of several steps, timed for at least
  0.2 s; median and IQR over the blocks); on CUDA over ``repeats`` runs after ``warmup``
  runs, with CUDA events. The intra-op thread count is what ``torch.get_num_threads()``
  says and is reported with the result. A latency whose IQR is more than
  :data:`~ablate.costs.measure.NOISY` (20%) of its median is ``noisy`` (measured under
  load, most likely): a report prints it with its spread, never as a precise number.
  :func:`cell_costs` keeps each measurement in a content-addressed cache
  (:func:`ablate.costs.measure.cost_key`: preset, arguments, input shape, device, torch
  version, threads), so the same block at the same input reads the same number in every
  study's report.
* **peak memory**: the peak of live tensor memory during one forward + backward, over
  what was live before it started (parameters, the input and the upstream gradient are
  already allocated and not counted; the output, the activations autograd saves, the
  temporaries inside kernels and the new ``.grad`` tensors are). On CUDA:
  ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` before the pass,
  after ``reset_peak_memory_stats()`` (the caching allocator's block sizes, rounded to
  512 bytes). On the CPU: :mod:`torch.profiler` with ``profile_memory=True`` records
  every allocation and free of c10's CPU allocator (the one every CPU tensor and ATen
  temporary goes through) with its size and time; summed in time order they give the
  live bytes, whose maximum is the peak. Not counted on the CPU: memory that libraries
  allocate behind c10's back (oneDNN/MKL scratch space, OpenMP thread stacks), Python
  objects, and allocator overhead (the CPU allocator has no cache; sizes are the
  requested bytes).

The single measurements (a step, its time, peak memory, FLOPs) are in :mod:`ablate.costs.measure`;
this module combines them: :func:`measure` (one block at one shape), :func:`cell_costs` (a
study's cells, once per distinct block, for the report), :func:`measure_budgeted` (repeated
timings within a time budget, for :mod:`ablate.costs.scaling`) and the ``python -m ablate.costs`` table.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import shlex
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ablate_kernels.timing import describe_device  # one description of the device for costs, reports and the kernel bench

from .measure import (
    NOISY,
    autorange_ms,
    cache_get,
    cache_put,
    clear_grads,
    cost_key,
    count_flops,
    cpu_peak_bytes,
    cuda_peak_bytes,
    forward_flops,
    is_noisy,
    median_iqr,
    param_count,
    quiet_native_stderr,
    step,
    time_ms,
)
from ..config.errors import StudyError, exit_with

__all__ = ["Cost", "measure", "measure_preset", "cell_costs", "Sample", "measure_budgeted", "forward_flops",
           "param_count", "quiet_native_stderr", "describe_device", "main"]

@dataclass(frozen=True)
class Cost:
    """The measured cost of one block at one input shape (forward + backward, float32)."""

    params: int
    flops_fwd: int
    flops_fwd_bwd: int
    latency_ms: float  # median forward + backward
    latency_iqr_ms: float
    peak_mem_bytes: int
    device: str  # e.g. "cpu (AMD EPYC ...)" or "cuda:0 (NVIDIA H100 ...)"
    threads: int  # torch.get_num_threads() during the measurement
    shape: tuple[int, int, int, int]
    repeats: int
    warmup: int

    @property
    def peak_mem_mib(self) -> float:
        return self.peak_mem_bytes / 2**20

    @property
    def noisy(self) -> bool:
        """IQR / median above :data:`~ablate.costs.measure.NOISY`: the median is not to be read precisely."""
        return is_noisy(self.latency_ms, self.latency_iqr_ms, NOISY)


def measure(
    block: nn.Module,
    shape: tuple[int, int, int, int] = (8, 32, 32, 32),
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Cost:
    """Measure ``block`` (a module mapping (B,C,H,W) to the same shape) at input ``shape``.

    Runs on a deep copy of ``block`` in train mode; see the module docstring for what
    each number counts.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W), got {shape}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    block = copy.deepcopy(block).to(device).train()
    params = param_count(block)

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(device).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(device)  # the gradient arriving from the layers above
    with torch.no_grad():
        out_shape = tuple(block(x).shape)
    if out_shape != shape:
        raise ValueError(f"block maps {shape} to {out_shape}; measure() needs a shape-preserving block")

    for _ in range(warmup):
        clear_grads(block, x)
        step(block, x, grad)
    if cuda:
        torch.cuda.synchronize(device)
    if cuda:
        latency, iqr = median_iqr([time_ms(block, x, grad, cuda) for _ in range(repeats)])
    else:
        latency, iqr, repeats = autorange_ms(block, x, grad)
    peak = cuda_peak_bytes(block, x, grad) if cuda else cpu_peak_bytes(block, x, grad)
    flops_fwd = count_flops(block, x, grad, backward=False)
    flops_fwd_bwd = count_flops(block, x, grad, backward=True)
    return Cost(
        params=params,
        flops_fwd=flops_fwd,
        flops_fwd_bwd=flops_fwd_bwd,
        latency_ms=latency,
        latency_iqr_ms=iqr,
        peak_mem_bytes=int(peak),
        device=describe_device(device),
        threads=torch.get_num_threads(),
        shape=shape,  # type: ignore[arg-type]
        repeats=repeats,
        warmup=warmup,
    )


def measure_preset(
    name: str,
    channels: int = 32,
    size: int = 32,
    batch: int = 8,
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    **overrides: Any,
) -> Cost:
    """Build mechanism ``name`` from the registry (with factor ``overrides``) and measure it
    on a (batch, channels, size, size) input."""
    from ..attention import get_preset

    block = get_preset(name).build(channels, **overrides)
    return measure(block, (batch, channels, size, size), repeats=repeats, warmup=warmup, device=device)


def cell_costs(blocks: Iterable[tuple[str, str, Mapping, Sequence[int]]], device: str | None = None,
               repeats: int = 5, warmup: int = 1) -> dict:
    """Forward+backward latency and peak memory of each cell's attention block, once per distinct
    (mechanism, args, shape). ``blocks``: (cell key, mechanism, args, input shape) per cell; the
    device is CUDA when there is one. Returns cell key -> (Cost, peak bytes over the input's
    gradient), cells with the same block sharing one tuple; ``"_device"`` -> the device in words
    and ``"_threads"`` -> torch's intra-op threads.

    The input's gradient (B*C*H*W float32) is subtracted from the peak: the backbone needs it
    with or without a block, so the remainder is what the block adds (0 for ``none``). Each block
    is built right after ``torch.manual_seed(0)``."""
    from ..attention import get_preset

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out, seen, skipped = {}, {}, {}
    for key, mechanism, args, shape in blocks:
        shape = tuple(shape)
        what = (mechanism, args, shape)
        if what not in seen:
            seen[what] = _bounded_cost(get_preset(mechanism), dict(args), shape, device, repeats, warmup, mechanism)
        if isinstance(seen[what], str):
            skipped[key] = seen[what]
        else:
            out[key] = seen[what]
    out["_device"] = describe_device(device)
    out["_threads"] = torch.get_num_threads()
    if skipped:
        out["_not_measured"] = skipped  # cell key -> why (the report says so)
    return out


MEASURE_FRACTION = 0.25  # a measurement may take at most this share of the memory free now


def free_bytes(device: str) -> int:
    """Memory free now on ``device``: CUDA's free bytes, else the kernel's MemAvailable."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def _bounded_cost(preset, args: dict, shape: tuple, device: str, repeats: int, warmup: int, mechanism: str = ""):
    """(Cost, peak bytes over the input's gradient) of one block, measured at ``shape``, or at a
    batch of one at the same resolution when the study's batch would not fit (its input, gradient
    and output alone, x4 for what the block keeps, would take more than :data:`MEASURE_FRACTION`
    of the free memory; the Cost's shape says so); a block that cannot be built or run in memory
    there gives the reason as text instead ("not measured: ..."). A block measured before at the
    same shape, device, torch and threads (any study) is read from the cache, not measured again."""
    per_image = 4 * shape[1] * shape[2] * shape[3]
    if 4 * 3 * per_image * shape[0] > MEASURE_FRACTION * free_bytes(device):
        shape = (1, *shape[1:])
        if 4 * 3 * per_image > MEASURE_FRACTION * free_bytes(device):
            return f"one image's block input {tuple(shape)} would not fit in the memory free on {device}"
    key = cost_key(mechanism or preset.name, args, shape, describe_device(device), torch.get_num_threads())
    cached = _cached_cost(key)
    if cached is not None:
        return cached, max(0, cached.peak_mem_bytes - per_image * shape[0])
    try:
        torch.manual_seed(0)
        block = preset.build(shape[1], **args)
        with quiet_native_stderr():  # torch's profiler prints two lines per memory measurement
            cost = measure(block, shape, repeats=repeats, warmup=warmup, device=device)
        cache_put(key, {**asdict(cost), "measured": dt.datetime.now().strftime("%Y-%m-%d %H:%M")})
    except (MemoryError, torch.OutOfMemoryError) as e:
        return f"out of memory at {shape} ({type(e).__name__})"
    except RuntimeError as e:
        first = (str(e).splitlines() or [""])[0]
        if "out of memory" in first.lower() or "can't allocate memory" in first.lower():
            return f"out of memory at {shape} ({first[:120]})"
        raise
    return cost, max(0, cost.peak_mem_bytes - per_image * shape[0])


def _cached_cost(key: str) -> Cost | None:
    """The :class:`Cost` the cache holds under ``key``, or None (absent, or from another version of the record)."""
    rec = cache_get(key)
    try:
        return None if rec is None else Cost(**{f.name: rec[f.name] for f in fields(Cost)} | {"shape": tuple(rec["shape"])})
    except (KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Sample:
    """Repeated forward+backward timings of one block at one shape (CPU), with the step's peak live
    memory and its FLOPs (0 when not counted)."""

    times_ms: tuple[float, ...]
    peak_mem_bytes: int
    flops_fwd_bwd: int

    @property
    def median_ms(self) -> float:
        return median_iqr(self.times_ms)[0]

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)


def measure_budgeted(block: nn.Module, shape: tuple[int, int, int, int], repeats: int, warmup: int,
                     budget_s: float, flops: bool = True) -> Sample:
    """Forward+backward of ``block`` itself (no copy; train mode) on the CPU: up to ``repeats``
    timed steps after ``warmup`` untimed ones, stopping early, after at least 3, once ``budget_s``
    seconds are spent; then the peak live CPU bytes of one step and, with ``flops``, its FLOPs.
    The input and upstream gradient are drawn from a generator seeded 0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_(True)
    grad = torch.randn(shape, generator=gen)
    block.train()
    for _ in range(warmup):
        clear_grads(block, x)
        step(block, x, grad)
    times: list[float] = []
    spent = 0.0
    for i in range(repeats):
        t = time_ms(block, x, grad, cuda=False)
        times.append(t)
        spent += t / 1e3
        if i + 1 >= min(3, repeats) and spent > budget_s:
            break
    peak = cpu_peak_bytes(block, x, grad)
    n_flops = count_flops(block, x, grad, backward=True) if flops else 0
    return Sample(tuple(times), int(peak), int(n_flops))


FLOPS_NOTE = (
    "FLOPs are from torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs), which counts "
    "only ops it has a formula for: matrix products (mm/addmm/bmm/baddbmm, incl. matmul/einsum/linear), "
    "convolutions and their backward, and attention kernels (SDPA). Element-wise ops, softmax, "
    "normalisation, pooling, interpolation, grid_sample, sorting and biases count as 0, so blocks made "
    "mostly of those (gating, pooling) are undercounted."
)


def _memory_note(cuda: bool) -> str:
    if cuda:
        return ("Peak memory: torch.cuda.max_memory_allocated() during one forward+backward minus the "
                "allocated bytes before it (parameters, input and upstream gradient not counted).")
    return ("Peak memory: peak of live bytes of c10's CPU allocator during one forward+backward "
            "(torch.profiler profile_memory=True allocation/free events summed in time order), over what "
            "was live before it (parameters, input and upstream gradient not counted); counts outputs, "
            "saved activations, kernel temporaries and new .grad tensors, not oneDNN/MKL internal "
            "scratch space.")


def table(names: Sequence[str], costs: Sequence[Cost], families: Sequence[str]) -> str:
    rows = [
        "| mechanism | family | params | GFLOPs fwd | GFLOPs fwd+bwd | latency ms (median) | latency ms (IQR) | peak memory MiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, family, c in zip(names, families, costs):
        rows.append(
            f"| {name} | {family} | {c.params:,} | {c.flops_fwd / 1e9:.4f} | {c.flops_fwd_bwd / 1e9:.4f} "
            f"| {c.latency_ms:.2f} | {c.latency_iqr_ms:.2f} | {c.peak_mem_mib:.2f} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from ..attention import MECHANISMS, get_preset

    parser = argparse.ArgumentParser(
        prog="python -m ablate.costs",
        description="Params, FLOPs, latency and peak memory of every attention mechanism, as a Markdown table.",
    )
    parser.add_argument("--size", type=int, default=32, help="input height = width")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--mechanisms", default="", help="comma-separated preset names (default: all)")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward+backward runs")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    names = [n.strip() for n in args.mechanisms.split(",") if n.strip()] or list(MECHANISMS)
    try:
        presets = [get_preset(n) for n in names]
    except KeyError as err:
        parser.error(err.args[0])
    except StudyError as err:  # a plugin that cannot be used (ablate.plugins.PluginError)
        exit_with(err)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    shape = (args.batch, args.channels, args.size, args.size)
    with quiet_native_stderr():
        costs = [
            measure(p.build(args.channels), shape, repeats=args.repeats, warmup=args.warmup, device=args.device)
            for p in presets
        ]
    device = torch.device(args.device)
    command = "python -m ablate.costs " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(
        f"Device: {describe_device(device)}; torch {torch.__version__}, torch intra-op threads: "
        f"{torch.get_num_threads()}; input (B, C, H, W) = {shape}, float32, train mode; latency = forward+backward, median "
        f"and IQR of {args.repeats} runs after {args.warmup} warm-up runs. Command: `{command.strip()}`"
    )
    print()
    print(table(names, costs, [p.family for p in presets]))
    print()
    print(FLOPS_NOTE)
    print(_memory_note(device.type == "cuda"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
