"""The report's transfer section: does this study order its cells as a committed study did?

A study with ``transfer:`` (:mod:`ablate.study.transfer`) names a reference study whose report
table (``reports/<reference>.csv``, one row per trial) is committed. Cells are matched by the value
of one factor both studies have (``by``, the mechanism by default); for each setting of the
reference's other factors (or only those ``where`` selects) the section gives Kendall's tau-b
between the two studies' cell means over the values both ran, with a percentile bootstrap
interval that resamples seeds within each cell on both sides (:func:`ablate.stats.rank.bootstrap_tau`),
and each side's noise-to-spacing ratio (:func:`ablate.stats.rank.noise_to_spacing`), with a
warning where seed noise is large enough against the spacing of the means to pull tau toward 0.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..stats.rank import NOISY_SPACING, bootstrap_tau, noise_to_spacing


def _csv_form(v) -> str:
    """A factor value as the report table writes it (:func:`ablate.report.formats.trials_csv`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def read_reference(spec: dict, metric: str) -> dict:
    """``{"groups": {setting text: {by value: [points, ...]}}, "table": path}`` from the reference's
    table, complete trials of its cells only; ``{"error": ...}`` when the table cannot be used."""
    path = Path(spec["table"])
    if not path.is_file():
        return {"error": f"the reference table `{path}` is not here (run from the repository's root, or set "
                         "transfer.table to its path)", "table": str(path)}
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0] if rows else []
    col = f"{metric}_pts" if f"{metric}_pts" in head else "val_miou_pts"
    if not {"mechanism", "eval", "state", "cell", col} <= set(head):
        return {"error": f"`{path}` is not a report table (no mechanism, eval, state, cell and {col} columns)",
                "table": str(path)}
    factors = head[head.index("mechanism"):head.index("eval")]
    by, sel = spec["by"], {k: _csv_form(v) for k, v in spec["where"].items()}
    missing = [k for k in [by, *sel] if k not in factors]
    if missing:
        return {"error": f"the reference table `{path}` has no factor {', '.join(missing)} (its factors: "
                         f"{', '.join(factors)})", "table": str(path)}
    groups: dict[str, dict[str, list[float]]] = {}
    for r in rows[1:]:
        rec = dict(zip(head, r))
        if rec["state"] != "complete" or not rec["cell"] or not rec[col] or any(rec[k] != v for k, v in sel.items()):
            continue
        name = ", ".join(f"{k}={rec[k]}" for k in factors if k != by and k not in sel and rec[k]) or "(all)"
        groups.setdefault(name, {}).setdefault(rec[by], []).append(float(rec[col]))
    return {"groups": groups, "table": str(path), "column": col}


def this_study(study, data: dict, by: str) -> dict[str, list[float]]:
    """by value -> this study's finished seeds' metric in points (the first cell with that value)."""
    out: dict[str, list[float]] = {}
    for cell in study.cells():
        value = cell.mechanism if by == "mechanism" else cell.label_dict.get(by)
        name = _csv_form(value)
        seeds = (data.get("values") or {}).get(cell.key) or {}
        if value is None or name in out or not seeds:
            continue
        out[name] = [100 * seeds[s] for s in sorted(seeds)]
    return out


def compute(study, data: dict) -> dict | None:
    """The section's numbers (None without ``transfer:``)."""
    spec = (study.analysis or {}).get("transfer")
    if not spec:
        return None
    ref = read_reference(spec, study.metric)
    out = {"spec": spec, **ref}
    if "error" in ref:
        return out
    here = this_study(study, data, spec["by"])
    out["here"], out["results"] = here, []
    for name, cells in ref["groups"].items():
        both = sorted(set(cells) & set(here))
        res = {"setting": name, "cells": both, "only_reference": sorted(set(cells) - set(here)),
               "only_here": sorted(set(here) - set(cells))}
        if len(both) >= 2:
            a, b = [cells[v] for v in both], [here[v] for v in both]
            res.update(bootstrap_tau(a, b, spec["replicates"], spec["level"], spec["seed"]),
                       noise_reference=noise_to_spacing(a), noise_here=noise_to_spacing(b))
        out["results"].append(res)
    return out


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def section_lines(study, data: dict) -> list[str]:
    """The Markdown section (none without ``transfer:``)."""
    t = compute(study, data)
    if t is None:
        return []
    spec = t["spec"]
    lines = ["", f"## Transfer check: rank agreement with `{spec['reference']}`", ""]
    if "error" in t:
        return lines + [f"Not computed: {t['error']}."]
    lvl = f"{100 * spec['level']:g}%"
    where = ", ".join(f"{k}={v}" for k, v in spec["where"].items())
    lines += [f"Does this study order its cells (by `{spec['by']}`) as `{spec['reference']}` did? Kendall's tau-b "
              f"between the two studies' cell means (`{study.metric}`, points) over the `{spec['by']}` values both "
              f"ran, with a {lvl} percentile bootstrap interval ({spec['replicates']} replicates, seeds resampled "
              f"within each cell on both sides, seed {spec['seed']}). Reference: complete trials in `{t['table']}`"
              + (f" with {where}" if where else "") + ", one row per setting of its other factors. The agreement is "
              "between these two studies as run (their backbones, data, schedules and seeds), not a claim about "
              "other settings; the intervals are descriptive (no correction across rows).", "",
              f"| reference setting | cells | tau-b | {lvl} interval | noise/spacing (reference, here) |",
              "|---|---|---|---|---|"]
    noisy = []
    for r in t["results"]:
        if "tau" not in r:
            lines.append(f"| {r['setting']} | {len(r['cells'])} | n/a (fewer than 2 shared cells) | | |")
            continue
        lines.append(f"| {r['setting']} | {r['n']} | {_num(r['tau'])} | [{_num(r['low'])}, {_num(r['high'])}] | "
                     f"{_num(r['noise_reference'])}, {_num(r['noise_here'])} |")
        if max(r["noise_reference"], r["noise_here"]) > NOISY_SPACING:
            noisy.append(r["setting"])
    if noisy:
        lines += ["", f"**Noisy orderings** ({', '.join(noisy)}): a side's seed noise (the mean standard error of a "
                  f"cell mean) exceeds {NOISY_SPACING} of the median gap between neighbouring cell means, where "
                  "tau is pulled toward 0 and the interval is too narrow (simulated in tests/stats/test_rank.py); "
                  "more seeds a cell, not this interval, would settle the agreement there."]
    lines += _cell_lines(t)
    return lines


def _cell_lines(t: dict) -> list[str]:
    """Each shared cell's mean here and in each reference setting; the cells only one side ran."""
    results = [r for r in t["results"] if r["cells"]]
    if not results:
        return ["", "No cell of this study has a finished seed with a value the reference ran."]
    names = sorted({v for r in results for v in r["cells"]})
    groups = t["groups"]
    lines = ["", "| " + t["spec"]["by"] + " | here: mean (seeds) | " + " | ".join(r["setting"] for r in results) + " |",
             "|---" * (2 + len(results)) + "|"]
    for v in names:
        here = t["here"][v]
        ref = [groups[r["setting"]].get(v) for r in results]
        lines.append(f"| {v} | {_num(sum(here) / len(here), 1)} ({len(here)}) | "
                     + " | ".join(f"{_num(sum(x) / len(x), 1)} ({len(x)})" if x else "" for x in ref) + " |")
    only_ref = sorted({v for r in results for v in r["only_reference"]})
    only_here = sorted({v for r in results for v in r["only_here"]})
    if only_ref or only_here:
        lines += ["", "Not compared (one side only): "
                  + "; ".join(p for p in (f"reference only: {', '.join(only_ref)}" if only_ref else "",
                                          f"here only: {', '.join(only_here)}" if only_here else "") if p) + "."]
    return lines
