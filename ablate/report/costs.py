"""The attention-block latency and memory a report measured, kept in its JSON (``costs``) so a
later report can reuse them with ``python -m ablate.report --reuse-costs``: rewriting a report
on a machine that is busy with other work would otherwise replace quiet timings with loaded ones.

Reuse is all or nothing: every cell with finished trials must have a previous measurement at the
same block input shape, else everything is measured anew (said on stderr). A latency is printed
with its inter-quartile range, and one whose IQR exceeds 20% of its median (:func:`latency_text`)
as noisy, rounded to two significant digits, so that a timing taken under load does not look precise.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reused:
    """What the report reads of a :class:`ablate.costs.Cost`: latency and peak memory."""
    latency_ms: float
    peak_mem_bytes: int
    latency_iqr_ms: float = math.nan  # nan: a JSON from before the IQR was kept

    @property
    def noisy(self) -> bool:
        from ..costs.noise import NOISY, is_noisy

        return not math.isnan(self.latency_iqr_ms) and is_noisy(self.latency_ms, self.latency_iqr_ms, NOISY)


def latency_text(cost) -> str:
    """A latency as a table prints it: ``12.34 (IQR 0.56)``; a noisy one (IQR / median > 20%)
    ``noisy: ~12 (IQR 8.1)`` with two significant digits; the median alone where no IQR is known."""
    ms, iqr = cost.latency_ms, getattr(cost, "latency_iqr_ms", math.nan)
    if iqr is None or math.isnan(iqr):
        return f"{ms:.2f}"
    if cost.noisy:
        return f"noisy: ~{ms:.2g} (IQR {iqr:.2g})"
    return f"{ms:.2f} (IQR {iqr:.2f})"


def costs_json(costs: dict, shapes: dict, measured: str | None = None) -> dict:
    """The ``costs`` block of the JSON: device, threads, when, and per cell key its latency (ms),
    the peak memory the block adds (MiB) and its input shape. ``shapes``: cell key -> shape."""
    cells = {k: {"ms": v[0].latency_ms, "iqr_ms": getattr(v[0], "latency_iqr_ms", None), "noisy": v[0].noisy,
                 "peak_mib": v[1] / 2**20, "shape": list(shapes[k])}
             for k, v in costs.items() if not k.startswith("_") and k in shapes}
    return {"device": costs.get("_device"), "threads": costs.get("_threads"),
            "measured": measured or costs.get("_measured") or dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "cells": cells}


def reuse(path: Path, shapes: dict) -> dict | None:
    """The report's ``costs`` dict from a previous JSON at ``path`` when it has every cell of
    ``shapes`` (cell key -> block input shape) at that shape; None otherwise."""
    try:
        prev = json.loads(Path(path).read_text()).get("costs") or {}
    except (OSError, ValueError) as e:
        print(f"ablate: --reuse-costs: no previous costs in {path} ({e}); measuring them", file=sys.stderr)
        return None
    cells = prev.get("cells") or {}
    missing = [k for k, shape in shapes.items() if k not in cells or tuple(cells[k].get("shape", ())) != tuple(shape)]
    if missing or not prev.get("device"):
        print(f"ablate: --reuse-costs: {path} has no measurement at the current shape for cell(s) "
              f"{', '.join(missing) or '(device unknown)'}; measuring every cell", file=sys.stderr)
        return None
    out = {k: (Reused(cells[k]["ms"], 0, _nan(cells[k].get("iqr_ms"))), round(cells[k]["peak_mib"] * 2**20))
           for k in shapes}
    out.update({"_device": prev["device"], "_threads": prev.get("threads"), "_measured": prev["measured"],
                "_reused": str(path)})
    return out


def _nan(x) -> float:
    return math.nan if x is None else float(x)
