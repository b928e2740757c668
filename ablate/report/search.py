"""A point search's report (``ablate/study/search.py``): what the search found, kept apart from what
the confirmation on fresh seeds decided.

:func:`view` turns the collected data (every trial of the study plus its points study,
:func:`ablate.storage.points.read_points`) into the data the ordinary table is built from: with a
confirmation, the baseline and the confirmed points on the *fresh seeds only*, so the report's
verdicts (the decisive engine of :mod:`ablate.stats.decide`, families and corrections) are computed
on runs the selection never saw; before the confirmation (or without one), the points best first on
the search seeds, deltas against the best, as a one-seed search always read
(:func:`ablate.report.rows.table` builds from this view). The search itself is a section of its own
(:mod:`ablate.report.search_text`): every point's mean over the search seeds, labelled optimistic
(the top points were selected on those very seeds), the same comparisons computed on the search
seeds (the winner's curse: how far selection inflated them), each confirmed point's search score
against its confirmed score, and the factor importances (:mod:`ablate.report.importance`).
"""
from __future__ import annotations

import json
import math

from ..study.records import fmt_value


def setting(label: dict) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in label.items()) or "(base)"


def restrict(data: dict, keys: set, seeds: set) -> dict:
    """``data`` with the values, records and curves of cells ``keys`` on ``seeds`` only."""
    out = dict(data)
    out["values"] = {k: {s: v for s, v in data["values"].get(k, {}).items() if s in seeds} for k in keys}
    out["values"] = {k: v for k, v in out["values"].items() if v}
    out["records"], out["curves"] = {}, {}
    for k in keys:
        recs, curves = data["records"].get(k, []), (data.get("curves") or {}).get(k, [])
        kept = [(r, c) for r, c in zip(recs, curves or [None] * len(recs)) if r.get("seed") in seeds]
        if kept:
            out["records"][k] = [r for r, _ in kept]
            out["curves"][k] = [c for _, c in kept if c is not None]
    out["pruned"] = [p for p in data.get("pruned", []) if p["key"] in keys and p["seed"] in seeds]
    return out


def point_rows(study, data: dict) -> list[dict]:
    """One row per distinct sampled point: its number, cell, state, its search seeds' values, their
    mean and standard deviation, the objectives Optuna was told; finished points best first."""
    seeds = study.search_seeds()
    rows = []
    for t in (data.get("points") or {}).get("trials", []):
        attrs = t.user_attrs
        if "cell_key" not in attrs or "same_as" in attrs:
            continue
        vals = {s: v for s, v in data["values"].get(attrs["cell_key"], {}).items() if s in seeds}
        xs = list(vals.values())
        mean = sum(xs) / len(xs) if xs else math.nan
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        label = json.loads(attrs["cell"])
        rows.append({"number": t.number, "key": attrs["cell_key"], "label": label, "title": setting(label),
                     "state": t.state.name.lower(), "values": vals, "mean": mean, "sd": sd, "n": len(xs),
                     "told": list(t.values) if t.values else None, "params": dict(t.params),
                     "stopped": attrs.get("stopped")})
    rank = {"complete": 0, "running": 1, "pruned": 2, "fail": 3}
    return sorted(rows, key=lambda r: (rank.get(r["state"], 4), -(r["told"] or [-math.inf])[0], r["number"]))


def view(study, data: dict) -> dict:
    """The data the report's table is built from (see the module docstring); the whole search is
    kept under ``"search"`` for :func:`section_lines` and the figures."""
    plan = (data.get("points") or {}).get("plan")
    rows = point_rows(study, data)
    if plan:
        base = study.baseline_point()
        tops = [study.search_cell(label) for _, label in plan["cells"]]
        cells = [base] + [c for c in tops if c.key != base.key]
        out = restrict(data, {c.key for c in cells}, set(plan["seeds"]))
        out.update(table_cells=cells, table_base=base, planned=len(plan["seeds"]))
        on_search = restrict(data, {c.key for c in cells}, set(plan["search_seeds"]))
    else:
        cells = [study.search_cell(r["label"]) for r in rows if r["n"]]
        out = restrict(data, {c.key for c in cells}, set(study.search_seeds()))
        out.update(table_cells=cells, table_base=cells[0] if cells else None, planned=study.search["seeds_per_point"])
        on_search = None
    out["search"] = {"rows": rows, "plan": plan, "on_search_seeds": on_search,
                     "trials": (data.get("points") or {}).get("trials", []), "all_values": data["values"]}
    return out
