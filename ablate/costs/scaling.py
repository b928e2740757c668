"""How each mechanism's cost grows with the feature map: a CPU scaling benchmark.

``python -m ablate.costs.scaling`` builds the attention block of each mechanism
(``ablate.attention.get_preset(name).build(C, **args)``), runs it as :mod:`ablate.costs` does (train
mode, forward + backward from a fixed upstream gradient, on square maps of side s, N = s^2)
and records the median wall time, the peak of live CPU allocator bytes and the counted FLOPs
at every side. It then fits ``log y = a + b log N`` by least squares per mechanism and prints
the fitted exponents ``b`` beside the theoretical ones:

* non-local, ``nonlocal`` (pattern full): time 2, memory 2 (*)
* criss-cross, ``ccnet`` with R = 1 (the einsum reference on the CPU): time 1.5, memory 1.5
* EMA, ``emanet`` (K = 64, T = 3): time 1, memory 1
* A2, ``a2net``: time 1, memory 1
* local window, ``local_relation`` (7 x 7, the unfold reference on the CPU): time 1, memory 1
* interlaced, ``nonlocal`` with pattern interlaced and down_factor 4: see below

(*) on the CPU PyTorch's ``scaled_dot_product_attention`` takes its math backend for this
block (it stores the N x N softmax for the backward), so its memory is quadratic; the flash
and memory-efficient GPU backends keep it linear.

Interlaced (one softmax over the pixel's own df x df block and its stride-df lattice) costs
``N * (N / df^2 + df^2)``: quadratic for a fixed df as N grows, linear while ``N < df^4``
(256 for df = 4). We assume df fixed at 4, so the asymptotic exponent is 2; at the sides
measured the model's own local slope is lower, and the table prints it for the fitted sides.

Every block also has 1x1 convolutions, BN and element-wise work linear in N, and at small
sides fixed per-call overheads (Python, dispatch, allocation) dominate. Both pull fitted
exponents below the attention term's, so by default the fit uses only the largest sides
(``--fit-last``); the exponent over all sides is printed too. The defaults (C = 32, batch 1,
sides 16 to 96) keep the linear terms small beside the attention terms where it matters most
(criss-cross: band FLOPs / 1x1-conv FLOPs is about 1.8 s / C) while the largest non-local
point (N = 9216, an 85M-element softmax kept for the backward) still takes seconds per call.
The counted-FLOPs exponent of the same fit is printed as a noise-free check: where it sits
below the theory, the block's linear terms still matter at these sides.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class Mechanism:
    label: str
    preset: str
    args: dict
    time_theory: float
    mem_theory: float
    note: str = ""


def _interlaced_model(df: int):
    return lambda n: n * (n / df**2 + df**2)


MECHANISMS: dict[str, Mechanism] = {m.label: m for m in (
    Mechanism("nonlocal", "nonlocal", {}, 2.0, 2.0, "full pattern, SDPA (math backend on CPU: N x N stored)"),
    Mechanism("criss_cross", "ccnet", {"R": 1}, 1.5, 1.5, "CCNet R=1, einsum reference (N x (H+W) band)"),
    Mechanism("ema", "emanet", {}, 1.0, 1.0, "EMANet K=64, T=3"),
    Mechanism("a2", "a2net", {}, 1.0, 1.0, "A2Net double attention"),
    Mechanism("local_window", "local_relation", {}, 1.0, 1.0, "Local Relation 7x7, unfold reference"),
    Mechanism("interlaced", "nonlocal", {"pattern": "interlaced", "down_factor": 4}, 2.0, 2.0,
              "non-local, interlaced pattern, df=4: N*(N/16+16)"),
)}
DEFAULT_SIDES = (16, 24, 32, 48, 64, 96)


@dataclass
class Point:
    side: int
    ms: float  # median
    min_ms: float
    peak_bytes: int
    flops: int


@dataclass
class Result:
    mechanism: Mechanism
    points: list[Point] = field(default_factory=list)
    error: str = ""

    def n(self) -> list[int]:
        return [p.side**2 for p in self.points]


def fit_exponent(n: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``log y = a + b log n``; returns ``(b, a)``. Needs two distinct n, y > 0."""
    if len(n) != len(y) or len(n) < 2:
        raise ValueError("need at least two (n, y) pairs")
    if min(n) <= 0 or min(y) <= 0:
        raise ValueError("n and y must be positive to take logs")
    xs = [math.log(v) for v in n]
    ys = [math.log(v) for v in y]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("need at least two distinct n")
    b = sum((x - mx) * (v - my) for x, v in zip(xs, ys)) / sxx
    return b, my - b * mx


def model_exponent(mech: Mechanism, sides: Sequence[int]) -> float:
    """The exponent the theoretical cost model itself has over these sides (differs from
    ``time_theory`` only for interlaced, whose model is not a pure power)."""
    if mech.preset == "nonlocal" and mech.args.get("pattern") == "interlaced":
        model = _interlaced_model(int(mech.args.get("down_factor", 4)))
        n = [s * s for s in sides]
        return fit_exponent(n, [model(v) for v in n])[0]
    return mech.time_theory


def measure_point(block: torch.nn.Module, shape: tuple[int, int, int, int], repeats: int, warmup: int,
                  budget_s: float, flops: bool = True) -> Point:
    """Median and minimum forward+backward ms over up to ``repeats`` calls (stops early, after at
    least 3, once ``budget_s`` seconds are spent), peak live CPU bytes and forward+backward FLOPs
    (:func:`ablate.costs.measure_budgeted`)."""
    from .blocks import measure_budgeted

    s = measure_budgeted(block, shape, repeats, warmup, budget_s, flops)
    return Point(shape[2], s.median_ms, s.min_ms, s.peak_mem_bytes, s.flops_fwd_bwd)


def run(mechanisms: Sequence[str], sides: Sequence[int] = DEFAULT_SIDES, channels: int = 32, batch: int = 1,
        repeats: int = 20, warmup: int = 1, budget_s: float = 2.0, flops: bool = True,
        progress=None) -> list[Result]:
    """Measure every mechanism at every side (blocks built once per mechanism, seeded)."""
    from ..attention import get_preset

    results = []
    for label in mechanisms:
        mech = MECHANISMS[label]
        res = Result(mech)
        torch.manual_seed(0)
        try:
            block = get_preset(mech.preset).build(channels, **mech.args)
            for side in sides:
                res.points.append(measure_point(block, (batch, channels, side, side), repeats, warmup, budget_s, flops))
                if progress:
                    p = res.points[-1]
                    progress(f"{label} side {side}: {p.ms:.1f} ms, {p.peak_bytes / 2**20:.1f} MiB")
        except Exception as err:  # noqa: BLE001 - report the mechanism, keep the others
            res.error = f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"
        results.append(res)
    return results


def exponents(res: Result, fit_last: int) -> dict[str, Any]:
    """Fitted exponents of time, memory and FLOPs on the largest ``fit_last`` sides, and of time on all."""
    pts = sorted(res.points, key=lambda p: p.side)
    out: dict[str, Any] = dict(time=None, time_min=None, time_all=None, mem=None, flops=None)
    if len(pts) < 2:
        return out
    last = pts[-fit_last:] if fit_last >= 2 else pts
    n = [p.side**2 for p in last]
    out["time"] = fit_exponent(n, [p.ms for p in last])[0]
    out["time_min"] = fit_exponent(n, [p.min_ms for p in last])[0]
    out["time_all"] = fit_exponent([p.side**2 for p in pts], [p.ms for p in pts])[0]
    if min(p.peak_bytes for p in last) > 0:
        out["mem"] = fit_exponent(n, [p.peak_bytes for p in last])[0]
    if min(p.flops for p in last) > 0:
        out["flops"] = fit_exponent(n, [p.flops for p in last])[0]
    return out


def _f(x: float | None, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec)


def table(results: Sequence[Result], sides: Sequence[int], fit_last: int, markdown: bool = False) -> str:
    fitted = sorted(sides)[-fit_last:] if fit_last >= 2 else sorted(sides)
    header = (["mechanism", "block"] + [f"s={s}: ms / MiB" for s in sides]
              + ["b time (fit)", "b min time (fit)", "b time (all sides)", "theory time", "b memory (fit)", "theory memory",
                 "b FLOPs (fit)"])
    rows = []
    for res in results:
        m = res.mechanism
        block = m.preset + ("(" + ", ".join(f"{k}={v}" for k, v in m.args.items()) + ")" if m.args else "")
        if res.error:
            rows.append([m.label, block] + ["" for _ in sides] + [res.error, "", "", "", "", "", ""])
            continue
        by_side = {p.side: p for p in res.points}
        cells = [f"{by_side[s].ms:.1f} / {by_side[s].peak_bytes / 2**20:.1f}" if s in by_side else "" for s in sides]
        e = exponents(res, fit_last)
        model = model_exponent(m, fitted)
        def theory(asymptotic: float) -> str:
            if abs(model - m.time_theory) < 1e-9:
                return f"{asymptotic:g}"
            return f"{asymptotic:g} asymptotic; {model:.2f} over the fitted sides"

        rows.append([m.label, block] + cells + [_f(e["time"]), _f(e["time_min"]), _f(e["time_all"]),
                                                 theory(m.time_theory),
                                                 _f(e["mem"]), theory(m.mem_theory), _f(e["flops"])])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "--:|" * (len(header) - 2)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m ablate.costs.scaling",
                                     description="CPU time and peak memory vs feature-map side, with fitted exponents in N.")
    parser.add_argument("--sides", default=",".join(map(str, DEFAULT_SIDES)),
                        help="square feature-map sides, comma-separated (N = side^2)")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS), help=f"subset of {', '.join(MECHANISMS)}")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per point (at most)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget", type=float, default=2.0,
                        help="stop timing a point after 3 calls once this many seconds are spent")
    parser.add_argument("--fit-last", type=int, default=4, help="fit on the largest this many sides (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on a shared machine)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one less pass per point)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    try:
        sides = sorted({int(s) for s in args.sides.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sides must be integers, got {args.sides!r}")
    if len(sides) < 2 or min(sides) < 1:
        parser.error("need at least two positive sides")
    mechs = [m.strip() for m in args.mechanisms.split(",") if m.strip()]
    unknown = [m for m in mechs if m not in MECHANISMS]
    if unknown:
        parser.error(f"unknown mechanism(s) {unknown}; valid: {', '.join(MECHANISMS)}")
    fit_last = args.fit_last if args.fit_last >= 2 else len(sides)
    torch.set_num_threads(args.threads)

    from .blocks import describe_device

    t0 = time.time()
    progress = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    results = run(mechs, sides, args.channels, args.batch, args.repeats, args.warmup, args.budget,
                  flops=not args.no_flops, progress=progress)
    elapsed = time.time() - t0
    fitted = sides[-fit_last:]
    print(f"Device: {describe_device('cpu')}; torch {torch.__version__}; {torch.get_num_threads()} intra-op "
          f"thread(s); float32; input (B, C, s, s) = ({args.batch}, {args.channels}, s, s), train mode, "
          f"forward + backward; median of up to {args.repeats} calls after {args.warmup} warm-up "
          f"(at least 3 once {args.budget:g} s are spent); {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"took {elapsed:.0f} s. Command: `python -m ablate.costs.scaling {shlex.join(argv)}`".rstrip())
    print()
    print(table(results, sides, fit_last, args.markdown))
    print()
    print("Cells: median ms of forward+backward / peak MiB. "
          f"b = least-squares slope of log(y) on log(N), N = s^2, fitted on the largest {len(fitted)} sides "
          f"({', '.join(map(str, fitted))}) on the median times; 'min time' fits each point's fastest call instead (on a loaded "
          "machine a short call can run undisturbed while a long one cannot, so it leans high; the gap between the "
          "two is a measure of the timing noise); 'all sides' fits every side's median. Small sides are dominated by fixed "
          "per-call overheads and by the 1x1 convs / BN / element-wise work linear in N, which pull fitted "
          "exponents down towards 1 (or below); the theory column is the attention term's exponent. "
          "Memory: peak live CPU allocator bytes during one forward+backward beyond the input (ablate.costs); "
          "FLOPs: torch's FlopCounterMode (matrix products and convs only: softmax, unfold and element-wise "
          "work count 0, so local_window's aggregation is not counted). Non-local on the CPU: SDPA's math "
          "backend, which stores the N x N softmax; interlaced: df = 4 fixed, cost N*(N/df^2 + df^2).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
