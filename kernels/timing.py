"""Timing and memory measurement for :mod:`.bench`: CUDA events or ``perf_counter``, peak memory,
the device-to-device copy bandwidth, and the device in words."""
from __future__ import annotations

import gc
import platform
import statistics
import time
from typing import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(call: Callable[[], None], reset: Callable[[], None], device: torch.device,
            repeats: int, warmup: int) -> float:
    """Median milliseconds of ``call`` over ``repeats`` runs after ``warmup`` (reset untimed)."""
    for _ in range(warmup):
        reset()
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        reset()
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def peak_bytes(call: Callable[[], None], reset: Callable[[], None], device: torch.device) -> int:
    """Bytes allocated at the peak of one ``call`` beyond what was live before it.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the profiler's
    allocation and free events summed in time order, as ``ablate.costs.measure`` does.
    """
    reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return int(peak)


def copy_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 20) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted: 2 x size / time)."""
    if nbytes is None:
        nbytes = 1 << 30 if device.type == "cuda" else 64 << 20
    while True:
        try:
            src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
            dst = torch.empty_like(src)
            break
        except (torch.cuda.OutOfMemoryError, RuntimeError):
            if nbytes <= 1 << 20:
                raise
            nbytes //= 2
    ms = time_ms(lambda: dst.copy_(src), lambda: None, device, repeats=repeats, warmup=3)
    del src, dst
    return 2 * nbytes / (ms / 1e3)


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError))


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe_device(device: torch.device | str) -> str:
    """The device in words: CUDA's device name, or the CPU's model name (ablate.costs, its reports and the kernel bench all print this one)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{device.type} ({name})"
