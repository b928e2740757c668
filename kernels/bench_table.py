"""The benchmark's output for :mod:`.bench`: the notices, the table of rows (plain or Markdown)
and the text around it (device, method, command, what the columns mean)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

@dataclass
class Row:
    op: str
    size: tuple[int, int, int, int]
    impl: str
    ms: float | None = None  # median; None when the row failed
    peak_mib: float | None = None
    is_reference: bool = False
    is_kernel: bool = False
    floor_ms: float | None = None
    status: str = "ok"  # "ok", "OOM" or an error message
    time_ratio: float | None = None  # ms / reference ms of the same op and size
    mem_ratio: float | None = None

    @property
    def over_floor(self) -> float | None:
        if self.ms is None or not self.floor_ms:
            return None
        return self.ms / self.floor_ms


NO_GPU_NOTICE = ("NOTE: no CUDA device here, so the Triton kernels were NOT timed (they are GPU "
                 "kernels); the rows below are the PyTorch references and dense SDPA on the CPU only.")
INTERPRETER_NOTICE = ("NOTE: kernels forced on CPU tensors run in Triton's interpreter "
                      "(TRITON_INTERPRET=1): their times check the harness, not GPU speed, and their "
                      "bandwidth floor uses the CPU's copy bandwidth.")


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


HEADER = ("op", "size B,C,H,W", "impl", "ms (median)", "peak MiB", "time / ref", "mem / ref",
          "floor ms", "measured / floor")


def _cells(r: Row) -> list[str]:
    if r.status != "ok":
        return [r.op, ",".join(map(str, r.size)), r.impl, r.status, r.status, "", "", "", ""]
    mib = _fmt(r.peak_mib, ".1f" if r.peak_mib is not None and r.peak_mib >= 10 else ".3f")
    return [r.op, ",".join(map(str, r.size)), r.impl, _fmt(r.ms, ".3f"), mib,
            _fmt(r.time_ratio, ".3f"), _fmt(r.mem_ratio, ".3f"),
            _fmt(r.floor_ms, ".3f") if r.is_kernel else "", _fmt(r.over_floor, ".1f") if r.is_kernel else ""]


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    body = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|---|---|---|--:|--:|--:|--:|--:|--:|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(HEADER)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(HEADER), fmt(["-" * w for w in widths])] + [fmt(c) for c in body])


FOOTNOTE = ("criss_cross and local_window: forward + backward; em: T iterations forward only under no_grad "
            "(as EMANet). q, k at C/8 for criss_cross and dense SDPA (scale=1.0: CCNet's unscaled dot "
            "product); local_window: one q/k channel per group, G = C/channels_per_group. Peak MiB: "
            "allocated during one call beyond the live inputs. time/ref, mem/ref: this row over the "
            "reference row of the same op and size (< 1 is better). floor ms = kernel module's "
            "bytes_moved / copy bandwidth (every compulsory element moved once); measured/floor >= 1. "
            "carafe (from ablate): forward + backward of the head's CARAFE x2 on (B, C, H, W) against the "
            "bilinear x2 resize; eval_path (from ablate): a trained model's evaluation under no_grad (small CNN "
            "width 32 + EMANet K 64, images (B, 3, 8H, 8W)) whole at T_eval 3 (reference) and 7, sliding "
            "windows, six scales + flip.")


def report_text(rows: Sequence[Row], info: dict, command: str, markdown: bool = False, scaling=None) -> str:
    """The printed benchmark: the CPU notices (``scaling``: (cpu_scale, sizes asked, sizes run) when
    the sizes were scaled down), the device and method line, the table and the footnote."""
    out = []
    if not info["cuda"]:
        out.append(NO_GPU_NOTICE if not info["kernels"] else INTERPRETER_NOTICE)
        if scaling:
            scale, sizes, run_sizes = scaling
            out.append(f"CPU sizes: H and W divided by --cpu-scale {scale} "
                       f"({'; '.join(','.join(map(str, s)) for s in sizes)} -> "
                       f"{'; '.join(','.join(map(str, s)) for s in run_sizes)}).")
    bw = info["bandwidth"]
    out.append(f"Device: {info['device']}; torch {info['torch']}; dtype {info['dtype']}; "
               f"{'CUDA events' if info['cuda'] else 'perf_counter, ' + str(info['threads']) + ' intra-op threads'}; "
               f"median of {info['repeats']} calls after {info['warmup']} warm-up"
               + (f"; copy bandwidth {bw / 1e9:.1f} GB/s (device-to-device copy, read + write)" if bw else "")
               + f". Command: `{command}`".rstrip())
    return "\n".join(out + ["", format_table(rows, markdown), "", FOOTNOTE])
