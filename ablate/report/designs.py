"""The report's part of a study's comparison design (``comparisons:``, :mod:`ablate.study.designs`)
and of its matched controls (``controls:``): which pairs the table's rows show (a ladder's rung
against the rung before it), a factorial's main effects and two-factor interactions decided as
paired contrasts over seeds (:func:`ablate.stats.factorial.decide_effects`), the list of every pair
of an ``all_pairs`` study, and the warning under the verdicts when a comparison changes the
attention block's parameter count by more than 5% without a declared matched control. Nothing
here reads storage: it works on the collected data and the table of :mod:`ablate.report.rows`."""
from __future__ import annotations

import math

from ..stats import ALPHA
from ..stats.factorial import decide_effects
from ..study.records import fmt_value
from ..study.designs import PARAMS_TOLERANCE, controls_of, design_of, factorial_effects, factorial_runs
from .rows import label_text, method_text

MAX_PARAM_LINES = 20  # parameter lines listed under the verdicts; the rest counted
CORRECTION_NAMES = {"none": "no correction", "holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg"}


def with_design(study, data: dict, tab: dict) -> dict:
    """``tab`` with ``design`` (the factorial's decided effects, or None) and the factorial's runs
    marked ``role: factorial`` (they have no pairwise comparison). Idempotent."""
    if "design" in tab:
        return tab
    tab["design"] = None
    if design_of(study) == "factorial" and not study.search:
        runs = factorial_runs(study, tab["cells"])
        keys = {c.key for c, _ in runs}
        for r in tab["rows"]:
            if r["key"] in keys and r["role"] != "compared":
                r["role"] = "factorial"
        tab["design"] = _factorial(study, data, tab, runs)
    return tab


def _factorial(study, data: dict, tab: dict, runs: list) -> dict:
    """The effects decided over the seeds every run finished (none yet: ``decisions`` empty)."""
    vals = [data["values"].get(c.key, {}) for c, _ in runs]
    effects = factorial_effects(study)
    out = {"effects": effects, "runs": runs, "decisions": [], "seeds": 0,
           "missing": [c.title() for (c, _), v in zip(runs, vals) if not v]}
    if out["missing"]:
        return out
    seeds = set.intersection(*(set(v) for v in vals))
    out["seeds"] = len(seeds)
    if len(seeds) < 2:
        return out
    thr = {tab["info"]["thresholds"].get(c.key) for c, _ in runs} - {None}
    threshold = next(iter(thr)) if len(thr) == 1 else None
    if threshold is None:
        from ..stats.outcomes import Threshold

        threshold = Threshold(None, "no classification (the runs have different thresholds)")
    test = (study.analysis or {}).get("two_valued_test", "perm")
    out["decisions"] = decide_effects(vals, [lv for _, lv in runs], effects, threshold, study.margin / 100, ALPHA,
                                      study.correction, test)
    return out


def lines(study, data: dict, tab: dict) -> list[str]:
    """The design's sections (ladder summary, every pair, factorial effects) and the parameter
    warnings, as Markdown lines to put under the verdicts."""
    with_design(study, data, tab)
    design = design_of(study)
    out = []
    if design == "ladder":
        out += _ladder_lines(study, tab)
    elif design == "all_pairs":
        out += _all_pairs_lines(study, tab)
    elif design == "factorial" and tab.get("design"):
        out += _factorial_lines(study, tab["design"])
    return out + param_lines(study, data, tab)


def _pts(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _interval(dec) -> str:
    if dec.interval is None:
        return "[—]"
    return f"[{_pts(dec.interval[0])}, {_pts(dec.interval[1])}]{'†' if dec.clipped else ''}"


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.2g}"


def _pair_text(x: dict, margin: float) -> str:
    dec = x["decision"]
    return (f"{x['cell'].title()} vs {x['base'].title()}: Δ = {_pts(dec.d.mean)} {_interval(dec)}; "
            f"{method_text(dec.d, dec.test)}, p = {_p(dec.p)}, p̃ = {_p(dec.p_adj)}; **{label_text(x, margin)}**")


def _ladder_lines(study, tab: dict) -> list[str]:
    steps = [x for x in tab["info"].get("pairs", []) if x["decision"].family.startswith("ladder")]
    if not steps:
        return []
    m = steps[0]["decision"].m
    out = ["", "## Ladder", "", f"Each rung against the rung before it, in the order the study lists them; the "
           f"steps are one family (m = {m}, {CORRECTION_NAMES[study.correction]}), so a step's verdict says whether "
           "that one switch moved the score given the switches before it (a fixed order: an interaction between "
           "switches shows as steps that undo each other, and only a factorial separates it). A rung's Δ in the table above is "
           "this step, against the rung before it, not against the baseline.", ""]
    out += [f"{i + 1}. {_pair_text(x, study.margin)}" for i, x in enumerate(steps)]
    return out


def _all_pairs_lines(study, tab: dict) -> list[str]:
    allx = tab["info"].get("pairs", [])
    if not allx:
        return []
    out = ["", "## Every pair", "", f"Every pair of cells, one family (m = {allx[0]['decision'].m}, "
           f"{CORRECTION_NAMES[study.correction]}); the table shows each cell against its baseline.", ""]
    return out + [f"- {_pair_text(x, study.margin)}" for x in allx]


def _design_words(study, d: dict) -> str:
    gens = (study.comparisons or {}).get("generators") or ()
    k, n_runs = len(study.factors), len(d["runs"])
    levels = ", ".join(f"{f} ({fmt_value(v[0])} → {fmt_value(v[1])})" for f, v in study.factors.items())
    if not gens:
        return f"A full 2^{k} factorial ({n_runs} runs) over {levels}: no effect is aliased."
    from ..stats.factorial import defining_relation, resolution

    words = " = ".join(f"{'-' if s < 0 else ''}{'×'.join(w)}" for s, w in defining_relation(list(study.factors), gens))
    gtext = "; ".join(f"{g} = {'-' if s < 0 else ''}{'×'.join(frm)}" for g, frm, s in gens)
    res = resolution(list(study.factors), gens)
    return (f"A 2^({k}-{len(gens)}) fraction ({n_runs} runs) over {levels}; generators {gtext}; defining relation "
            f"I = {words}; resolution {res}: each main effect is aliased with interactions of {res - 1} or more "
            f"factors and each two-factor interaction with interactions of {res - 2} or more (listed per effect): "
            "an estimate is the effect plus its aliases, read as the effect only if they are negligible.")


def _factorial_lines(study, d: dict) -> list[str]:
    out = ["", "## Factorial effects", "", _design_words(study, d)]
    if d["missing"]:
        return out + ["", f"Not decided yet: runs without a finished seed: {', '.join(d['missing'])}."]
    if not d["decisions"]:
        return out + ["", f"Not decided yet: {d['seeds']} seed(s) finished in every run; a contrast needs 2."]
    dec0 = d["decisions"][0]
    out += ["", f"Each effect is the mean over the runs at its + sign minus the mean at its - sign (a main effect: "
            "the factor's second value minus its first, averaged over the others; an interaction A×B: half of A's "
            "effect at B's second value minus A's effect at B's first), computed per seed over the "
            f"{d['seeds']} seeds every run finished and tested as a paired contrast of the two half-means "
            f"(`ablate.stats.factorial`), its test chosen by the outcome kind of every run's values pooled: "
            f"{dec0.reason}. One "
            f"family, factorial (m = {dec0.m}), corrected by {CORRECTION_NAMES[study.correction]} at level "
            f"{ALPHA:g}; intervals at {100 * dec0.level:.2f}% († = clipped to ±100).", "",
            "| effect | aliased with | Δ points [corrected CI] | test | p | p̃ | verdict |", "|---|---|---|---|---|---|---|"]
    for e, dec in zip(d["effects"], d["decisions"]):
        x = {"decision": dec, "limited": False}
        verdict = label_text(x, study.margin)
        if dec.label in ("better", "worse"):
            verdict = f"**{verdict}**"
        out.append(f"| {e.name} | {e.alias_text().removeprefix('= ') or '—'} | {_pts(dec.d.mean)} {_interval(dec)} | "
                   f"{method_text(dec.d, dec.test)} | {_p(dec.p)} | {_p(dec.p_adj)} | {verdict} |")
    return out


# -- parameters and matched controls ---------------------------------------------------------------------

def _params(tab: dict) -> dict:
    return {r["key"]: r["attn_params"] for r in tab["rows"] if isinstance(r.get("attn_params"), (int, float))}


def _change(new: float, old: float) -> float:
    return math.inf if old == 0 else (new - old) / old


def param_lines(study, data: dict, tab: dict) -> list[str]:
    """Under the verdicts: each comparison (or factorial main effect) whose two sides' attention
    parameters differ by more than 5%, with its declared matched control or a warning that none is."""
    if study.search:  # sampled points against the best: no designed contrast to check
        return []
    params, titles = _params(tab), {c.key: c.title() for c in tab["cells"]}
    ctrl = controls_of(study)
    said = []
    for x in tab["info"].get("pairs", list(tab["comps"].values())):
        c, b = x["cell"], x["base"]
        if not params.get(c.key) or not params.get(b.key):  # unknown, or a block against no block at all
            continue
        if abs(_change(params[c.key], params[b.key])) <= PARAMS_TOLERANCE:
            continue
        head = (f"{c.title()} vs {b.title()}: the block's parameters change by "
                f"{100 * _change(params[c.key], params[b.key]):+.1f}% ({params[b.key]:,} → {params[c.key]:,})")
        said.append(_controlled(head, [k for k in (c.key, b.key) if k in ctrl], ctrl, params, titles))
    d = tab.get("design") or {}
    for e in d.get("effects", [])[:len(study.factors)]:  # the main effects
        (f,) = e.factors
        lo = [params.get(c.key) for c, lv in d["runs"] if lv[f] < 0]
        hi = [params.get(c.key) for c, lv in d["runs"] if lv[f] > 0]
        if None in lo + hi or not lo or not hi:
            continue
        a, b = sum(hi) / len(hi), sum(lo) / len(lo)
        if abs(_change(a, b)) > PARAMS_TOLERANCE:
            said.append(f"- ⚠ main effect of {f}: its second value changes the block's parameters by "
                        f"{100 * _change(a, b):+.1f}% on average ({b:,.0f} → {a:,.0f}) and no matched control is "
                        "declared: the effect mixes the switch with the capacity it changes.")
    if not said:
        return []
    more = [f"- and {len(said) - MAX_PARAM_LINES} more such comparisons."] if len(said) > MAX_PARAM_LINES else []
    return ["", "**Parameters.** Comparisons that change the attention block's parameter count by more than "
            f"{100 * PARAMS_TOLERANCE:g}% (the attn params column; a block against no block is not listed): a "
            "difference may come from capacity (or a nonlinearity the switch removes) rather than from the "
            "mechanism. A matched control keeps the parameters without the mechanism (`controls:` in the study "
            "file, docs/study_files.md).", ""] + said[:MAX_PARAM_LINES] + more


def _controlled(head: str, sides: list, ctrl: dict, params: dict, titles: dict) -> str:
    """One parameter line: the declared matched controls of either side, or the warning."""
    if not sides:
        return (f"- ⚠ {head}, and no matched control is declared: Δ mixes the switch with the capacity it "
                "changes.")
    parts = []
    for k in sides:
        for ck in ctrl[k]:
            p = params.get(ck)
            if p is None:
                parts.append(f"{titles.get(ck, ck)} for {titles[k]} (no finished trial yet)")
            elif abs(_change(p, params[k])) <= PARAMS_TOLERANCE:
                parts.append(f"{titles.get(ck, ck)} for {titles[k]} ({p:,} vs {params[k]:,} parameters; its own "
                             "comparison above separates the mechanism from the parameters)")
            else:
                parts.append(f"⚠ {titles.get(ck, ck)} for {titles[k]}, but it has {p:,} parameters against "
                             f"{params[k]:,}: not matched within {100 * PARAMS_TOLERANCE:g}%")
    return f"- {head}; matched control declared: " + "; ".join(parts) + "."


def design_json(study, tab: dict) -> dict:
    """The design for the report's JSON: its name, every pair decided (cell and partner keys, Δ and
    its interval in points, adjusted p, family, verdict) and a factorial's effects."""
    def pts(v):
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(100 * v, 4)

    def entry(dec) -> dict:
        iv = None if dec.interval is None else [pts(v) for v in dec.interval]
        return {"delta": pts(dec.d.mean), "delta_ci": iv, "test": dec.test, "p": dec.p, "p_adjusted": dec.p_adj,
                "family": dec.family, "m": dec.m, "verdict": dec.label}

    out = {"design": design_of(study), "pairs": [{"cell": x["cell"].key, "vs": x["base"].key, **entry(x["decision"])}
                                                 for x in tab["info"].get("pairs", [])]}
    d = tab.get("design") or {}
    if d.get("decisions"):
        out["effects"] = [{"effect": e.name, "aliases": e.alias_text(), **entry(dec)}
                          for e, dec in zip(d["effects"], d["decisions"])]
    return out
