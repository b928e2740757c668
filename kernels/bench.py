"""Kernel vs reference: time and peak memory of the Triton kernels beside their PyTorch references.

``python -m ablate_kernels.bench`` prints one table. Rows, per size ``B,C,H,W``:

* ``criss_cross`` -- forward + backward of CCNet's attention with q, k at C/8 and v at C:
  the Triton kernel (:func:`ablate_kernels.criss_cross.criss_cross`), the einsum reference
  (:func:`ablate_kernels.reference.criss_cross_reference`, the formulation mmcv's
  ``CrissCrossAttention`` uses) and, for scale, dense non-local attention over all N = H*W
  pixels with the same q, k, v (:func:`dense_attention`, i.e.
  ``F.scaled_dot_product_attention(..., scale=1.0)``, the Non-local block's ``full`` pattern: CCNet's affinity is the unscaled dot
  product, so SDPA's default 1/sqrt(d) is overridden).
* ``em`` -- EMANet's T EM iterations on x (B, C, H*W) with K bases, forward only under
  ``torch.no_grad`` as EMANet runs them: the fused kernel
  (:func:`ablate_kernels.em.em_iterations_fused`) vs :func:`ablate_kernels.reference.em_iterations`.
* rows that installed packages add through the entry-point group ``ablate_kernels.bench``
  (:func:`extra_ops`; each entry a function ``(size, device, dtype) -> list[Case]`` named as
  ``--ops`` names it): ablate adds ``carafe`` (the head's CARAFE upsampler against the bilinear
  resize) and ``eval_path`` (a trained model's evaluation: whole image at two T_eval, sliding
  windows, six scales + flip), ``ablate/costs/bench_cases.py``. They run wherever the references
  run, on the CPU too, and are timed with every default run.
* ``local_window`` -- forward + backward of Local Relation's aggregation, window k, C/G value
  channels per group and one query/key channel per group (the Local Relation layer's shapes:
  G = C / channels_per_group, d = 1); geometry bias (G, k*k) learned, so it gets a gradient too:
  :func:`ablate_kernels.local_window.local_window` vs
  :func:`ablate_kernels.reference.local_window_reference`.

Columns: median milliseconds, peak MiB (memory allocated during one call beyond what was live
before it: inputs and the upstream gradient are not counted; outputs, saved activations,
temporaries and the new ``.grad`` tensors are), time and memory as a ratio to the reference row
of the same op and size, and for the kernels the bandwidth floor ``bytes_moved / bandwidth``
(each kernel module's :func:`bytes_moved`: every compulsory element read or written once) with
the bandwidth measured in the same run by a large device-to-device copy, and measured / floor.

On CUDA: CUDA events around each call, median of ``--repeats`` calls after ``--warmup``;
peak memory from ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
On the CPU (no CUDA) the kernels are *not* timed (they are GPU kernels; the output says so):
only the references and dense SDPA run, at the sizes divided by ``--cpu-scale`` in H and W,
timed with ``time.perf_counter`` and with peak memory from the profiler's allocation events
(the method of ``ablate.costs``). ``--force-kernels`` runs the kernels on CPU tensors too,
which needs Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is imported); that
checks the harness end to end and says nothing about GPU speed.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from . import dispatch
from .reference import criss_cross_reference, em_iterations, l2_normalise, local_window_reference
from .bench_table import Row  # noqa: F401 - one row of the table, defined with it
from .bench_table import HEADER, INTERPRETER_NOTICE, NO_GPU_NOTICE, format_table, report_text  # noqa: F401
from .timing import copy_bandwidth, describe_device, free, is_oom, peak_bytes, time_ms

OPS = ("criss_cross", "dense", "em", "local_window")
ENTRY_GROUP = "ablate_kernels.bench"  # entry points of installed packages that add rows (:func:`extra_ops`)
GPU_SIZES = ((2, 512, 97, 97), (1, 512, 128, 256), (2, 512, 64, 64))
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
#: default divisor of H and W on the CPU: (2,512,97,97) -> (2,512,24,24), (1,512,128,256) -> (1,512,32,64)
CPU_SCALE = 4
@dataclass
class Case:
    """One implementation at one size: ``call()`` runs it once; ``reset()`` runs before each call."""

    op: str
    impl: str
    call: Callable[[], None]
    reset: Callable[[], None] = lambda: None
    is_reference: bool = False
    is_kernel: bool = False
    bytes_moved: int | None = None
    keep: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# cases
# ------------------------------------------------------------------------------------------

def _randn(shape, device, dtype, gen, grad=False):
    t = torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return t.requires_grad_(grad)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax of unscaled ``q . k`` over all N pixels (SDPA), for scale: what the sparse patterns avoid."""
    b, _, h, w = q.shape
    flat = [t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (q, k, v)]  # B, 1, N, d
    y = torch.nn.functional.scaled_dot_product_attention(*flat, scale=1.0)
    return y.squeeze(1).transpose(1, 2).reshape(b, v.shape[1], h, w)


def _fwd_bwd(fn, inputs, grad_out):
    def reset():
        for t in inputs:
            t.grad = None

    def call():
        fn(*inputs).backward(grad_out)

    return call, reset


def criss_cross_cases(size, device, dtype, kernels: bool, dense: bool, reference: bool = True,
                      qk_reduction: int = 8) -> list[Case]:
    B, C, H, W = size
    d = max(1, C // qk_reduction)
    gen = torch.Generator().manual_seed(0)
    # scale q, k down so the band softmax is not saturated (like trained CCNet features)
    q = (_randn((B, d, H, W), device, dtype, gen) * d ** -0.5).detach().requires_grad_(True)
    k = (_randn((B, d, H, W), device, dtype, gen) * d ** -0.5).detach().requires_grad_(True)
    v = _randn((B, C, H, W), device, dtype, gen, grad=True)
    g = _randn((B, C, H, W), device, dtype, gen)
    cases = []
    if kernels:
        from .criss_cross import bytes_moved, criss_cross

        call, reset = _fwd_bwd(criss_cross, (q, k, v), g)
        cases.append(Case("criss_cross", "triton kernel", call, reset, is_kernel=True,
                          bytes_moved=bytes_moved(B, d, C, H, W, q.element_size())))
    if reference:
        call, reset = _fwd_bwd(criss_cross_reference, (q, k, v), g)
        cases.append(Case("criss_cross", "einsum reference", call, reset, is_reference=True))
    if dense:
        call, reset = _fwd_bwd(dense_attention, (q, k, v), g)
        cases.append(Case("criss_cross", "dense SDPA (all N)", call, reset))
    return cases


def em_cases(size, device, dtype, kernels: bool, K: int = 64, T: int = 3) -> list[Case]:
    B, C, H, W = size
    N = H * W
    gen = torch.Generator().manual_seed(0)
    x = torch.relu(_randn((B, C, N), device, dtype, gen))  # EMANet's features follow a ReLU + 1x1 conv
    mu = l2_normalise(torch.empty(1, C, K).normal_(0.0, math.sqrt(2.0 / K)), dim=1)  # EMANet's initial bases
    mu = mu.to(device=device, dtype=dtype).expand(B, C, K).contiguous()
    cases = []
    if kernels:
        from .em import bytes_moved, em_iterations_fused

        def fused():
            with torch.no_grad():
                em_iterations_fused(x, mu, T)

        cases.append(Case("em", f"fused kernel (T={T}, K={K})", fused, is_kernel=True,
                          bytes_moved=bytes_moved(B, C, N, K, T, x.element_size())))

    def reference():
        with torch.no_grad():
            em_iterations(x, mu, T)

    cases.append(Case("em", f"em_iterations (T={T}, K={K})", reference, is_reference=True))
    return cases


def local_window_cases(size, device, dtype, kernels: bool, window: int = 7,
                       channels_per_group: int = 8) -> list[Case]:
    B, C, H, W = size
    G = max(1, C // channels_per_group)
    while C % G:
        G -= 1
    gen = torch.Generator().manual_seed(0)
    q = _randn((B, G, H, W), device, dtype, gen, grad=True)  # one query/key channel per group
    k = _randn((B, G, H, W), device, dtype, gen, grad=True)
    v = _randn((B, C, H, W), device, dtype, gen, grad=True)
    bias = (0.1 * _randn((G, window * window), device, dtype, gen)).detach().requires_grad_(True)
    g = _randn((B, C, H, W), device, dtype, gen)
    label = f"(k={window}, G={G})"
    cases = []
    if kernels:
        from .local_window import bytes_moved, local_window

        call, reset = _fwd_bwd(lambda q_, k_, v_, b_: local_window(q_, k_, v_, b_, window), (q, k, v, bias), g)
        cases.append(Case("local_window", f"triton kernel {label}", call, reset, is_kernel=True,
                          bytes_moved=bytes_moved(B, G, C, H, W, window, q.element_size())))
    call, reset = _fwd_bwd(lambda q_, k_, v_, b_: local_window_reference(q_, k_, v_, b_, window),
                           (q, k, v, bias), g)
    cases.append(Case("local_window", f"unfold reference {label}", call, reset, is_reference=True))
    return cases


def extra_ops() -> dict:
    """op name -> entry point of the rows installed packages add (group :data:`ENTRY_GROUP`);
    loaded only when its op runs, so a broken one is one failed row, not a failed benchmark."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_GROUP) if ep.name not in OPS}


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[tuple[int, int, int, int]]:
    """``"2,512,97,97;1,512,128,256"`` (also ``x`` or spaces between sizes) -> list of 4-tuples."""
    sizes = []
    for chunk in text.replace(" ", ";").replace("x", ";").split(";"):
        if not chunk.strip():
            continue
        parts = [int(p) for p in chunk.split(",")]
        if len(parts) != 4 or min(parts) < 1:
            raise ValueError(f"a size is B,C,H,W (four positive integers), got {chunk!r}")
        sizes.append(tuple(parts))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


def cpu_sizes(sizes: Sequence[tuple[int, int, int, int]], scale: int) -> list[tuple[int, int, int, int]]:
    """H and W divided by ``scale`` (at least 1 each); B and C kept."""
    return [(b, c, max(1, h // scale), max(1, w // scale)) for b, c, h, w in sizes]


def _measure(case: Case, size, device, repeats, warmup, bandwidth) -> Row:
    row = Row(case.op, tuple(size), case.impl, is_reference=case.is_reference, is_kernel=case.is_kernel)
    try:
        row.ms = time_ms(case.call, case.reset, device, repeats, warmup)
        row.peak_mib = peak_bytes(case.call, case.reset, device) / 2**20
    except Exception as err:  # noqa: BLE001 - one failing row must not end the table
        if not is_oom(err):
            row.status = f"error: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
        else:
            row.status = "OOM"
        row.ms = row.peak_mib = None
    finally:
        case.reset()
        free(device)
    if case.is_kernel and case.bytes_moved and bandwidth:
        row.floor_ms = case.bytes_moved / bandwidth * 1e3
    return row


def run(sizes: Sequence[tuple[int, int, int, int]], ops: Sequence[str] = OPS, device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32, repeats: int | None = None, warmup: int | None = None,
        force_kernels: bool = False, em_K: int = 64, em_T: int = 3, window: int = 7,
        channels_per_group: int = 8) -> tuple[list[Row], dict]:
    """Measure every (op, size, impl); returns the rows and a dict describing the run.

    ``sizes`` are used as given (the CLI scales them for the CPU). Kernels run on CUDA, or on
    the CPU when ``force_kernels`` (Triton's interpreter must be on).
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    kernels = cuda or force_kernels
    if kernels and not cuda:
        if not dispatch.interpreting():
            raise RuntimeError("kernels on CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 "
                               "before Triton is imported")
        if not dispatch.triton_available():
            raise RuntimeError("Triton does not import here")
    extras = extra_ops()
    unknown = [o for o in ops if o not in OPS and o not in extras]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; valid: {', '.join([*OPS, *extras])}")
    repeats = repeats if repeats is not None else (50 if cuda else 5)
    warmup = warmup if warmup is not None else (10 if cuda else 1)
    bandwidth = copy_bandwidth(device) if kernels else None

    rows: list[Row] = []
    for size in sizes:
        makers = []
        if "criss_cross" in ops or "dense" in ops:
            makers.append(lambda s=size: criss_cross_cases(
                s, device, dtype, kernels and "criss_cross" in ops, "dense" in ops))
        if "em" in ops:
            makers.append(lambda s=size: em_cases(s, device, dtype, kernels, K=em_K, T=em_T))
        if "local_window" in ops:
            makers.append(lambda s=size: local_window_cases(s, device, dtype, kernels, window, channels_per_group))
        for op in (o for o in ops if o in extras):
            makers.append(lambda s=size, ep=extras[op]: ep.load()(s, device, dtype))
        for make in makers:
            try:
                cases = make()
            except Exception as err:  # noqa: BLE001 - OOM allocating the inputs
                rows.append(Row("?", tuple(size), "inputs", status="OOM" if is_oom(err) else f"error: {err}"))
                free(device)
                continue
            group = [_measure(c, size, device, repeats, warmup, bandwidth) for c in cases]
            ref = next((r for r in group if r.is_reference and r.ms is not None), None)
            for r in group:
                if ref is not None and r.ms is not None:
                    r.time_ratio = r.ms / ref.ms
                    if ref.peak_mib:
                        r.mem_ratio = r.peak_mib / ref.peak_mib
            rows.extend(group)
            del cases
            free(device)
    info = dict(device=describe_device(device), cuda=cuda, kernels=kernels, dtype=str(dtype).replace("torch.", ""),
                repeats=repeats, warmup=warmup, bandwidth=bandwidth, threads=torch.get_num_threads(),
                torch=torch.__version__)
    return rows, info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ablate_kernels.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None,
                        help="B,C,H,W sizes separated by ';' (default: 2,512,97,97;1,512,128,256;2,512,64,64)")
    every = [*OPS, *extra_ops()]
    parser.add_argument("--ops", default=",".join(every), help=f"comma-separated subset of {', '.join(every)} "
                        "(dense = non-local SDPA rows, shown with criss_cross; the others after local_window "
                        f"come from installed packages, entry-point group {ENTRY_GROUP})")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 50 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 10 on CUDA, 1 on CPU)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--cpu-scale", type=int, default=CPU_SCALE,
                        help=f"on the CPU divide H and W of every size by this (default {CPU_SCALE}; 1 = as given)")
    parser.add_argument("--force-kernels", action="store_true",
                        help="run the kernels on CPU tensors too (needs TRITON_INTERPRET=1; checks the harness only)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    parser.add_argument("--em-K", type=int, default=64)
    parser.add_argument("--em-T", type=int, default=3)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--channels-per-group", type=int, default=8,
                        help="local_window: value channels per group, G = C / this (Local Relation: 8)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1 or args.warmup is not None and args.warmup < 0:
        parser.error("need --repeats >= 1 and --warmup >= 0")

    try:
        sizes = parse_sizes(args.sizes) if args.sizes else list(GPU_SIZES)
    except ValueError as err:
        parser.error(str(err))
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scaled = device.type != "cuda" and args.cpu_scale > 1
    run_sizes = cpu_sizes(sizes, args.cpu_scale) if scaled else sizes
    try:
        rows, info = run(run_sizes, ops, device, DTYPES[args.dtype], args.repeats, args.warmup,
                         force_kernels=args.force_kernels, em_K=args.em_K, em_T=args.em_T,
                         window=args.window, channels_per_group=args.channels_per_group)
    except (ValueError, RuntimeError) as err:
        parser.error(str(err))
    scaling = (args.cpu_scale, sizes, run_sizes) if scaled else None
    print(report_text(rows, info, f"python -m ablate_kernels.bench {shlex.join(argv)}", args.markdown, scaling))
    return 0


if __name__ == "__main__":
    sys.exit(main())
