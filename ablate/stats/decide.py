"""Verdicts that fit the outcomes: per comparison the test the data's shape calls for, Holm (or
Benjamini-Hochberg) within each family of comparisons that answers one question, and the seeds
that would decide an open one.

One comparison is a cell against its baseline, each given as {seed: value} (fractions 0-1).
:func:`choose_test` picks the test from the outcome kind (:mod:`ablate.stats.outcomes`) and the
design, and says why:

- two-valued outcomes (some seeds learned, some stayed at the floor): the exact two-sample
  permutation test of the difference of means (``perm``, all C(2n, n) relabelings), or, when the
  study asks for it, the exact sign-flip test on the paired differences (``signflip``) or
  Boschloo's exact test on the learned counts (``boschloo``);
- unimodal outcomes (every seed learned, none did, or no floor to classify against): the paired
  t test over shared seeds (Welch's t otherwise); Yuen's 20%-trimmed test when a cell has an
  outlier (a value more than 3.5 robust standard deviations from its median) and at least 5
  seeds. Smyth's moderated t (:func:`ablate.stats.robust.moderated_t`) is not chosen: with its
  prior estimated from a handful of comparisons it rejected 1.0-1.3x alpha at 0.05 and up to 6.5x
  at 0.05/112 in our simulations (tests/stats/test_robust.py), and a procedure that exceeds alpha
  is not used for a verdict.

:func:`decide_family` adjusts the chosen tests' p-values within each family (``correction``),
adds TOST equivalence for unimodal comparisons and writes the verdict: better / worse /
equivalent / inconclusive / neither learned (both cells at the floor: never "equivalent").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .outcomes import Threshold, count_learned, outcome_kind
from .ttests import Diff, adjust, compare, interval_level, tost

TWO_VALUED_TESTS = ("perm", "signflip", "boschloo")
OUTLIER_Z = 3.5  # robust z (median / 1.4826·MAD) beyond which a value is an outlier
MAX_ADVICE_SEEDS = 50


@dataclass(frozen=True)
class Comparison:
    """One comparison to decide: a cell against its baseline, in a family."""
    key: str
    base: str
    a: Mapping[int, float]  # the cell's {seed: value}
    b: Mapping[int, float]  # the baseline's {seed: value}
    family: str
    threshold: Threshold
    # the outcome kind when the caller knows it better than a and b do (a factorial contrast: the
    # kind of every run's values, :mod:`ablate.stats.factorial`); None: from a and b
    kind: str | None = None


@dataclass
class Decision:
    """One comparison decided (see the module docstring for each field's rule)."""
    key: str
    base: str
    family: str
    m: int  # tests in the family
    d: Diff  # Δ (paired over shared seeds, else Welch) and its t interval, descriptive
    kind: str  # outcome kind: two_valued, learned, floor, unclassified
    test: str
    reason: str
    p: float  # the chosen test's two-sided p
    p_adj: float  # adjusted within the family
    level: float  # the printed interval's level (1 - alpha/m)
    interval: tuple[float, float] | None  # at ``level``, clipped to [-1, 1]: the exact test inverted
    # (:func:`shift_interval`) for perm / signflip, Yuen's own for yuen, else Δ's t interval
    clipped: bool
    p_tost: float = math.nan  # adjusted TOST p (unimodal comparisons only)
    tost_interval: tuple[float, float] | None = None  # at 1 - 2·alpha/m
    counts: tuple | None = None  # (k_a, n_a, k_b, n_b) learned counts
    label: str = "inconclusive"  # better, worse, equivalent, inconclusive, neither learned
    note: str = ""  # "within ±1", "differ at the floor: worse", ...
    seeds: int | None = None  # inconclusive: seeds a cell that would give 80% power
    advice: str = ""  # why seeds is None, or how it was computed
    extra: dict = field(default_factory=dict)


def paired_values(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list, list, bool]:
    """The two cells' values over their shared seeds (paired) when at least two are shared,
    else all values of each (unpaired)."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        return [a[s] for s in common], [b[s] for s in common], True
    return list(a.values()), list(b.values()), False


def has_outlier(vals: Sequence[float]) -> bool:
    """A value more than :data:`OUTLIER_Z` robust standard deviations from the median."""
    x = np.asarray(vals, dtype=float)
    if len(x) < 3:
        return False
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return bool(mad > 0 and np.any(np.abs(x - med) > OUTLIER_Z * mad))


def choose_test(kind: str, paired: bool, n: int, outliers: bool, two_valued_test: str = "perm") -> tuple[str, str]:
    """(test, reason) for one comparison; see the module docstring."""
    if kind == "two_valued":
        why = {"perm": "exact permutation of the 2n values (C(2n, n) relabelings)",
               "signflip": "exact sign-flip of the paired differences (2^n sign vectors)",
               "boschloo": "Boschloo's exact test on the learned counts"}[two_valued_test]
        if two_valued_test == "signflip" and not paired:
            return "perm", "two-valued outcomes, seeds not shared: " + why.replace("sign-flip", "permutation")
        return two_valued_test, f"two-valued outcomes: {why}"
    shape = {"learned": "every seed learned", "floor": "no seed learned",
             "unclassified": "no floor to classify against"}[kind]
    if outliers and n >= 5:
        return "yuen", f"{shape}, an outlier: Yuen's 20%-trimmed t"
    return ("paired_t", f"{shape}: paired t") if paired else ("welch_t", f"{shape}: Welch t")


def _pvalue(test: str, a: list, b: list, paired: bool, counts) -> float:
    from . import exact, robust

    if test == "perm":
        return exact.perm_test(a, b)
    if test == "signflip":
        return exact.signflip_test(np.asarray(a) - np.asarray(b))
    if test == "boschloo":
        return exact.boschloo(counts[0], counts[1], counts[2], counts[3])
    if test == "yuen":
        return float(robust.yuen(a, b, paired=paired).p)
    raise ValueError(f"no p-value rule for test {test!r}")


def _first_pass(comps: Sequence[Comparison], two_valued_test: str) -> list[dict]:
    """Per comparison: the values, the outcome kind, the Δ, and (later) the chosen test."""
    rows = []
    for c in comps:
        a, b, paired = paired_values(c.a, c.b)
        kind = c.kind or (outcome_kind(a, b, c.threshold) if min(len(a), len(b)) else "unclassified")
        ka, kb = count_learned(list(c.a.values()), c.threshold), count_learned(list(c.b.values()), c.threshold)
        counts = None if ka is None or c.kind else (ka[0], ka[1], kb[0], kb[1])  # means over runs: no counts
        rows.append({"c": c, "a": a, "b": b, "paired": paired, "kind": kind, "counts": counts,
                     "d": compare(c.a, c.b, shared=True), "outliers": has_outlier(a) or has_outlier(b)})
    for r in rows:
        n = min(len(r["a"]), len(r["b"]))
        r["test"], r["reason"] = choose_test(r["kind"], r["paired"], n, r["outliers"], two_valued_test)
    return rows


def _pvalues(rows: list[dict]) -> None:
    """Fill each row's raw p-value from its chosen test (nan with fewer than 2 values a cell)."""
    for r in rows:
        if min(len(r["a"]), len(r["b"])) < 2:
            r["p"] = math.nan
        elif r["test"] in ("paired_t", "welch_t"):
            r["p"] = r["d"].p
        else:
            r["p"] = _pvalue(r["test"], r["a"], r["b"], r["paired"], r["counts"])


def decide_family(comps: Sequence[Comparison], margin: float, alpha: float = 0.05, correction: str = "holm",
                  two_valued_test: str = "perm", advice: bool | list = True) -> list[Decision]:
    """Decide every comparison, families adjusted separately (``margin`` in fractions). ``advice``:
    simulate the seeds that would decide each inconclusive one (True), or not (False), or hand the
    simulations to the caller: a list, to which they are appended as one
    :class:`ablate.config.forks.Pending` whose finish writes the advice into the decisions (the
    report runs it beside its figures)."""
    rows = _first_pass(comps, two_valued_test)
    _pvalues(rows)
    out: list[Decision | None] = [None] * len(rows)
    families: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        families.setdefault(r["c"].family, []).append(i)
    for fam, idx in families.items():
        p_adj = adjust([rows[i]["p"] for i in idx], correction)
        tost_raw = [tost(rows[i]["d"], margin, alpha).p if rows[i]["kind"] in ("learned", "unclassified")
                    and math.isfinite(rows[i]["d"].se) else math.nan for i in idx]
        t_adj = adjust(tost_raw, correction)
        m = sum(math.isfinite(rows[i]["p"]) for i in idx)
        level = interval_level(alpha, m, correction)
        for j, i in enumerate(idx):
            out[i] = _decision(rows[i], fam, m, p_adj[j], t_adj[j], level, margin, alpha, correction)
    if advice is True or isinstance(advice, list):
        from . import power as pw

        asks = []
        for dec, r in zip(out, rows):
            m = max(1, dec.m) if correction != "none" else 1
            call = _advice_call(dec, r, alpha, m) if dec.label == "inconclusive" else None
            if call is not None:
                asks.append((dec, r, m, call))
        # every inconclusive comparison's simulation at once: they run side by side on the cores
        from ..config.forks import Pending, run_together

        work = pw.seeds_for_power_pending([call for *_, call in asks])

        def advise(answers: list) -> None:
            for (dec, r, m, call), n in zip(asks, work.finish(answers)):
                _advised(dec, r, m, call["test"], n)

        job = Pending(work.fn, work.items, advise)
        if isinstance(advice, list):
            advice.append(job)
        else:
            run_together([job])
    return out


def shift_interval(test: str, a: Sequence[float], b: Sequence[float], level: float,
                   tol: float = 5e-4) -> tuple[float, float]:
    """The Δ's compatible with the data under an exact test: the shifts δ for which the test of
    (a - δ) against b (``perm``) or of the paired differences minus δ (``signflip``) does not
    reject at 1 - level, found by bisection to ``tol`` (Lehmann 1975, ch. 2: inverting a
    permutation test). It excludes 0 exactly when the test rejects at that level (up to the
    bisection's tolerance), so the printed interval and the verdict agree."""
    from . import exact

    a, b = np.asarray(a, float), np.asarray(b, float)
    cut = 1 - level

    def p_at(delta: float) -> float:
        if test == "signflip":
            return exact.signflip_test(a - b - delta)
        return exact.perm_test(a - delta, b)

    centre = float(np.mean(a) - np.mean(b))
    bounds = []
    for far in (-2.0, 2.0):  # search outwards from the estimate, within the metric's range (±1) and beyond
        inside, outside = centre, far
        if p_at(outside) > cut:  # never rejected: the bound is at least the metric's range
            bounds.append(outside)
            continue
        while abs(outside - inside) > tol:
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if p_at(mid) > cut else (inside, mid)
        bounds.append(inside)
    return bounds[0], bounds[1]


def _decision(r: dict, fam: str, m: int, p_adj: float, t_adj: float, level: float, margin: float, alpha: float,
              correction: str) -> Decision:
    d: Diff = r["d"]
    lo, hi = d.interval(level)
    if r["test"] in ("perm", "signflip") and min(len(r["a"]), len(r["b"])) >= 2:
        if r["test"] == "perm" or r["paired"]:
            lo, hi = shift_interval(r["test"], r["a"], r["b"], level)
    elif r["test"] == "yuen":  # the trimmed test's own interval, so it agrees with its verdict
        from .robust import yuen

        lo, hi = yuen(r["a"], r["b"], paired=r["paired"]).interval(level)
    clipped = math.isfinite(lo) and math.isfinite(hi) and (lo < -1 or hi > 1)
    iv = (max(-1.0, lo), min(1.0, hi)) if math.isfinite(lo) and math.isfinite(hi) else None
    t_iv = d.interval(interval_level(2 * alpha, m, correction)) if math.isfinite(t_adj) else None
    dec = Decision(r["c"].key, r["c"].base, fam, m, d, r["kind"], r["test"], r["reason"], r["p"], p_adj, level, iv,
                   clipped, t_adj, t_iv, r["counts"])
    different = p_adj < alpha
    direction = "better" if d.mean > 0 else "worse"
    if r["kind"] == "floor":
        dec.label = "neither learned"
        dec.note = f"differ at the floor: {direction}" if different else ""
    elif different:
        dec.label = direction
        dec.note = f"within ±{100 * margin:g}" if t_adj < alpha else ""
    elif t_adj < alpha:
        dec.label = "equivalent"
    return dec


def _advice_call(dec: Decision, r: dict, alpha: float, m: int) -> dict | None:
    """Advice for an inconclusive comparison: the seeds a cell at which the chosen test reaches 80%
    power at alpha/m, from the observed learn rates (two-valued) or the observed Δ and spread
    (unimodal), by simulation. Returns the :func:`~ablate.stats.power.seeds_for_power` keywords
    of that simulation, or None with ``dec.advice`` set when there is nothing to simulate."""
    from . import power as pw

    a, b = np.asarray(r["a"], float), np.asarray(r["b"], float)
    if min(len(a), len(b)) < 2:
        dec.advice = "needs ≥ 2 seeds in both cells"
        return None
    if dec.kind == "two_valued" and dec.counts is not None:
        ka, na, kb, nb = dec.counts
        if ka * nb == kb * na:
            dec.advice = "the same learn rate in both cells: no difference to detect"
            return None
        thr = r["c"].threshold.value
        both = np.concatenate([a, b])
        lo_v, hi_v = both[both < thr], both[both >= thr]
        model = pw.TwoValued(ka / na, kb / nb, floor=float(lo_v.mean()), floor_sd=float(max(lo_v.std(), 1e-3)),
                             learned=float(hi_v.mean()), learned_sd=float(max(hi_v.std(), 1e-3)))
        test = dec.test if dec.test in TWO_VALUED_TESTS else "perm"
    else:
        sd = r["d"].sd
        if not (math.isfinite(sd) and sd > 0) or r["d"].mean == 0:
            dec.advice = "no spread or no difference observed"
            return None
        # Normal.sd is one cell's spread; a paired Diff's sd is the differences' (√2 times it at rho 0)
        model = pw.Normal(float(r["d"].mean), float(sd / math.sqrt(2) if r["paired"] else sd))
        test = "paired_t" if r["paired"] else "welch_t"
    return {"test": test, "model": model, "alpha": alpha / m, "target": 0.8, "max_seeds": MAX_ADVICE_SEEDS,
            "reps": 1000}


def _advised(dec: Decision, r: dict, m: int, test: str, n: int | None) -> None:
    """``dec``'s advice from the simulated seeds ``n`` (None: over the cap)."""
    a, b = r["a"], r["b"]
    if n is None:
        dec.advice = f"more than {MAX_ADVICE_SEEDS} seeds a cell at the observed effect"
    else:
        dec.seeds = max(n, min(len(a), len(b)) + 1)
        dec.advice = f"80% power for {test} at α/{m} at the observed effect (simulated)"


def exact_pvalue(a: Mapping[int, float], b: Mapping[int, float]) -> float:
    """The p-value sequential seeding compares with its spending boundaries: the exact sign-flip
    test of the paired differences over the shared seeds (at least 2), else the exact two-sample
    permutation test (nan with fewer than 2 values a cell). Both are exact whatever the outcomes'
    shape (two-valued or not) under the null that the cells are exchangeable within each seed."""
    from . import exact

    x, y, paired = paired_values(a, b)
    if paired:
        return exact.signflip_test(np.asarray(x, float) - np.asarray(y, float))
    if len(x) < 2 or len(y) < 2:
        return math.nan
    return exact.perm_test(x, y)


def spending_kind(name: str) -> str:
    """The study file's ``planning.spending`` name as :mod:`ablate.stats.sequential` takes it."""
    return {"obrien_fleming": "obf", "pocock": "pocock"}.get(name, name)

