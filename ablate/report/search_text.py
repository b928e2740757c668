"""The Markdown of a point search (:mod:`ablate.report.search`): what the table is, and the
*Search* section, kept apart from the confirmed verdicts."""
from __future__ import annotations

import math

from .rows import judge
from .search import setting


def intro_lines(study, tab: dict) -> list[str]:
    """What the report's table is, for a point search."""
    s, plan = study.search, (tab.get("search") or {}).get("plan")
    seeds = ", ".join(map(str, study.search_seeds()))
    objectives = " and ".join(f"`{o}`" for o in s["objectives"])
    head = (f"Point search: {s['n_trials']} points sampled by the {s['sampler']} sampler, each run on the same "
            f"{s['seeds_per_point']} seed(s) ({seeds}), Optuna told the mean over them of {objectives}.")
    if plan:
        return [head + f" **The table is the confirmation**: the {len(plan['cells'])} best point(s) of the search "
                f"and the baseline, re-run on fresh seeds ({', '.join(map(str, plan['seeds']))}) the search never "
                "used; its deltas and verdicts are computed on those runs only. The search's own scores (optimistic: "
                "the points were selected on the same seeds) are in the section *Search* below.", ""]
    if s.get("confirm"):
        return [head + " The confirmation on fresh seeds has not run yet: the table lists the points best first on "
                "the search seeds, deltas against the best. **These are search scores, optimistic**: selected on "
                "the same seeds.", ""]
    return [head + " Rows are the points, best first, on the search seeds, deltas against the best (search scores: "
            "optimistic, selected on the same seeds).", ""]


def section_lines(study, tab: dict) -> list[str]:
    """The *Search* section: every point (optimistic), and for each confirmed point its search score
    against its confirmed score."""
    info = tab.get("search")
    if not info:
        return []
    lines = ["", "## Search (optimistic: scores on the seeds the points were selected on)", ""]
    names = study.search["objectives"]
    lines += ["| # | point | state | " + " | ".join(f"{n} (mean told)" for n in names) + " | mIoU mean ± std over "
              "search seeds | seeds |", "|---|---|---|" + "---|" * len(names) + "---|---|"]
    for r in info["rows"]:
        told = [_told(n, v) for n, v in zip(names, r["told"])] if r["told"] else ["—"] * len(names)
        sd = "n/a" if math.isnan(r["sd"]) else f"{100 * r['sd']:.1f}"
        spread = "—" if not r["n"] else f"{100 * r['mean']:.1f} ± {sd}"
        state = r["state"] + (f" ({r['stopped']})" if r["stopped"] else "")
        lines.append(f"| {r['number']} | {r['title']} | {state} | {' | '.join(told)} | {spread} | {r['n']} |")
    lines += _confirmation_lines(study, info, tab)
    from .importance import importance_lines

    return lines + importance_lines(study, info)


def _told(name: str, v: float) -> str:
    if name.startswith("attn_flops"):
        return f"{v / 1e6:.3g} MFLOPs"
    if name == "attn_params":
        return f"{v:,.0f}"
    return f"{v:.3g}" if name.startswith("attn_") else f"{100 * v:.1f}"


def _confirmation_lines(study, info: dict, tab: dict) -> list[str]:
    """Each confirmed point: its search mean and its Δ and verdict on the search seeds (optimistic)
    beside its confirmed mean, Δ and verdict on the fresh seeds, and the selection's inflation."""
    plan = info["plan"]
    if not plan:
        return []
    base = study.baseline_point()
    cells = [c for c in tab["cells"] if c.key != base.key]
    optimistic, _ = judge(study, info["on_search_seeds"], [(c, base) for c in cells], [base] + cells)
    by_key = {r["key"]: r for r in tab["rows"]}
    search_mean = {r["key"]: r["mean"] for r in info["rows"]}
    lines = ["", "### Search scores against confirmed verdicts", "",
             "| point | search mean | Δ on search seeds (optimistic) | verdict there | confirmed mean | confirmed Δ | "
             "confirmed verdict | inflation (search − confirmed mean) |", "|---|---|---|---|---|---|---|---|"]
    differ = []
    for key, label in plan["cells"]:
        row, opt = by_key.get(key, {}), optimistic.get(key)
        conf = tab["comps"].get(key)
        sm, cm = search_mean.get(key, math.nan), row.get("mean", math.nan)
        o_lab = opt["decision"].label if opt else "n/a"
        c_lab = conf["decision"].label if conf else "not yet"
        lines.append(f"| {setting(label)} | {_pts(sm)} | {_delta(opt)} | {o_lab} | {_pts(cm)} | {_delta(conf)} | "
                     f"{c_lab} | {_signed(sm - cm)} |")
        if opt and conf and o_lab != c_lab:
            differ.append(f"{setting(label)}: {o_lab} on the search seeds, {c_lab} on fresh seeds")
    n_search = len(plan["search_seeds"])
    lines += ["", f"Search Δs compare each selected point with the baseline on the {n_search} search seed(s), "
              "where the point was chosen because it scored well: they carry the winner's curse and are shown only "
              "to measure it. The verdicts of the table above are the confirmed ones."]
    if differ:
        lines += ["", "**Selection changed the verdict** for " + "; ".join(differ) + "."]
    return lines


def _pts(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _signed(x) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}"


def _delta(x) -> str:
    if not x:
        return "n/a"
    iv = x["interval"]
    return f"{100 * x['d'].mean:+.1f}" + ("" if iv is None else f" [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]")
