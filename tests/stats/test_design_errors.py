"""Error rates of the comparison designs (issue 29): a ladder (each rung against the one before),
every pair, and a 2^k factorial's main effects and two-factor interactions as paired contrasts over
seeds, all through the decisive engine (outcome kind -> test -> the family's correction -> verdict).

Each simulation runs a vectorised replica of the engine's path over thousands of seeded data sets:
the outcome kind from the pooled values, the exact permutation test (:func:`exact.perm_pvalues`)
on two-valued outcomes, the paired t (Yuen's paired trimmed t for a cell with an outlier and n >= 5)
on unimodal ones, Holm (or BH) across the family, and "better"/"worse" wherever the adjusted p is
below alpha on a comparison that is not at the floor. The replica is first checked against the
engine itself (:func:`decide.decide_family`, :func:`factorial.decide_effects`) on the first
repetitions: same p-values, same calls. A rate is accepted within alpha + 3 Monte-Carlo standard
errors (``MARGIN``); the numbers are printed with ``-s``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from ablate.stats import decide as D
from ablate.stats import exact, factorial as F
from ablate.stats.outcomes import Threshold
from ablate.stats.robust import yuen_arrays

ALPHA, REPS, CHECKED = 0.05, 4000, 40
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)  # 0.0103 at 4,000 repetitions
FLOOR, LEARNED = 0.42, 0.89
THR = Threshold(0.655, "declared learned_above")


# -- data ------------------------------------------------------------------------------------------

def _two_valued(rng, reps: int, cells: int, n: int, rate, rho: float) -> np.ndarray:
    """(reps, cells, n) values: each seed learns with probability ``rate`` (a number, or one per
    cell), the learn events of one seed correlated across cells by a Gaussian copula (rho)."""
    shared = rng.standard_normal((reps, 1, n))
    z = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal((reps, cells, n))
    cut = sst.norm.ppf(np.broadcast_to(np.asarray(rate, float), (cells,)))[None, :, None]
    noise = rng.standard_normal((reps, cells, n))
    return np.where(z < cut, LEARNED + 0.01 * noise, FLOOR + 0.007 * noise)


def _normal(rng, reps: int, means, n: int, sd: float = 0.01, seed_sd: float = 0.01) -> np.ndarray:
    """(reps, cells, n) unimodal values: cell means, a seed effect shared by every cell, noise."""
    means = np.asarray(means, float)[None, :, None]
    return means + seed_sd * rng.standard_normal((reps, 1, n)) + sd * rng.standard_normal((reps, means.shape[1], n))


# -- the engine, vectorised ------------------------------------------------------------------------

def _kind(pooled: np.ndarray) -> np.ndarray:
    """Per row: the outcome kind of the pooled values (:func:`outcome_kind`)."""
    learned = pooled >= THR.value
    return np.where(learned.all(axis=1), "learned", np.where(~learned.any(axis=1), "floor", "two_valued"))


def _outliers(x: np.ndarray) -> np.ndarray:
    """Per row: a value more than :data:`D.OUTLIER_Z` robust s.d. from the median (:func:`D.has_outlier`)."""
    med = np.median(x, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(x - med), axis=1, keepdims=True)
    return ((mad > 0) & (np.abs(x - med) > D.OUTLIER_Z * mad)).any(axis=1)


def _pvalues(a: np.ndarray, b: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Per row, the p-value of the test the engine picks for a paired comparison of a and b (R, n)."""
    n = a.shape[1]
    p = np.empty(len(a))
    two = kind == "two_valued"
    if two.any():
        p[two] = exact.perm_pvalues(a[two], b[two])
    d = a - b
    se = d.std(axis=1, ddof=1) / math.sqrt(n)
    p[~two] = 2 * sst.t.sf(np.abs(d.mean(axis=1)[~two] / se[~two]), n - 1)
    trimmed = ~two & (_outliers(a) | _outliers(b)) if n >= 5 else np.zeros(len(a), bool)
    if trimmed.any():
        dt, tse, df, _ = yuen_arrays(a[trimmed], b[trimmed], paired=True)
        p[trimmed] = 2 * sst.t.sf(np.abs(dt / tse), df)
    return p


def _rejected(p: np.ndarray, correction: str) -> np.ndarray:
    """(R, m) p-values -> which the family's correction rejects at ALPHA (as :func:`adjust`)."""
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    ps = np.take_along_axis(p, order, axis=1)
    if correction == "holm":  # step-down: the first j whose (m - j)·p_(j) >= alpha stops it
        n_rej = np.cumprod(ps * (m - np.arange(m)) < ALPHA, axis=1).sum(axis=1)
    else:  # bh, step-up: the largest j with m·p_(j)/j < alpha
        ok = ps * m / np.arange(1, m + 1) < ALPHA
        n_rej = np.where(ok.any(axis=1), m - np.argmax(ok[:, ::-1], axis=1), 0)
    ranks = np.argsort(order, axis=1)
    return ranks < n_rej[:, None]


def _calls(pairs: list[tuple[np.ndarray, np.ndarray]], kinds: list[np.ndarray], correction: str = "holm"):
    """(R, m) better/worse calls of a family of paired comparisons, and its p-values."""
    p = np.stack([_pvalues(a, b, k) for (a, b), k in zip(pairs, kinds)], axis=1)
    live = np.stack([k != "floor" for k in kinds], axis=1)
    return _rejected(p, correction) & live, p


def _engine_calls(pairs_row: list[tuple[np.ndarray, np.ndarray]], correction: str = "holm"):
    comps = [D.Comparison(f"c{i}", "b", dict(enumerate(a)), dict(enumerate(b)), "f", THR)
             for i, (a, b) in enumerate(pairs_row)]
    out = D.decide_family(comps, margin=0.01, correction=correction, advice=False)
    return [d.label in ("better", "worse") for d in out], [d.p for d in out]


# -- ladder and every pair -------------------------------------------------------------------------

def _ladder(vals: np.ndarray):
    return [(vals[:, i], vals[:, i - 1]) for i in range(1, vals.shape[1])]


def _all_pairs(vals: np.ndarray):
    k = vals.shape[1]
    return [(vals[:, j], vals[:, i]) for i in range(k) for j in range(i + 1, k)]


def _family_error(pairs, correction="holm", check_engine=True) -> float:
    kinds = [_kind(np.hstack([a, b])) for a, b in pairs]
    calls, p = _calls(pairs, kinds, correction)
    if check_engine:
        for r in range(CHECKED):
            eng_calls, eng_p = _engine_calls([(a[r], b[r]) for a, b in pairs], correction)
            assert eng_p == pytest.approx(list(p[r]), rel=1e-9, abs=1e-12)
            assert eng_calls == list(calls[r])
    return float(calls.any(axis=1).mean())


@pytest.mark.parametrize("rungs,n,rate,rho", [(6, 5, 0.5, 0.0), (6, 6, 0.5, 0.5), (4, 6, 0.3, 0.0)])
def test_a_ladder_keeps_the_family_wise_error_under_two_valued_nulls(rungs, n, rate, rho):
    rng = np.random.default_rng(1000 * rungs + 10 * n + int(10 * rho))
    fwer = _family_error(_ladder(_two_valued(rng, REPS, rungs, n, rate, rho)))
    print(f"ladder, {rungs} rungs (m = {rungs - 1}), n = {n}, learn rate {rate}, rho {rho}: "
          f"FWER {fwer:.4f} (bound {ALPHA + MARGIN:.4f}, {REPS} reps)")
    assert fwer <= ALPHA + MARGIN


def test_a_ladder_keeps_the_family_wise_error_under_a_normal_null():
    rng = np.random.default_rng(7)
    fwer = _family_error(_ladder(_normal(rng, REPS, [0.88] * 6, 5)))
    print(f"ladder, 6 rungs, n = 5, every seed learned, normal null: FWER {fwer:.4f} (bound {ALPHA + MARGIN:.4f})")
    assert fwer <= ALPHA + MARGIN


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_every_pair_as_one_family_keeps_the_error_under_the_complete_null(correction):
    """Under the complete null every call is false, so BH's false discovery rate is its FWER."""
    rng = np.random.default_rng(11 if correction == "holm" else 12)
    fwer = _family_error(_all_pairs(_two_valued(rng, REPS, 5, 6, 0.5, 0.3)), correction, check_engine=False)
    print(f"all pairs of 5 cells (m = 10), {correction}, n = 6: FWER {fwer:.4f} (bound {ALPHA + MARGIN:.4f})")
    assert fwer <= ALPHA + MARGIN


# -- factorial -------------------------------------------------------------------------------------

def _runs(factors: list[str], generators=()) -> list[dict]:
    out = []
    for bits in np.ndindex(*(2,) * len(factors)):
        levels = {f: 2 * b - 1 for f, b in zip(factors, bits)}
        if F.in_fraction(levels, generators):
            out.append(levels)
    return out


FIVE = ["A", "B", "C", "D", "E"]
HALF = (("E", ("A", "B", "C", "D"), -1),)  # E = -ABCD: resolution V, 16 runs


def _contrasts(vals: np.ndarray, runs: list[dict], effects: list) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for e in effects:
        col = np.array(F.contrast(runs, e))
        out.append((vals[:, col > 0].mean(axis=1), vals[:, col < 0].mean(axis=1)))
    return out


def _factorial_calls(vals: np.ndarray, runs: list[dict], effects: list, check: int = CHECKED):
    """(R, m) calls and p-values of the effects; the first ``check`` repetitions by the engine too."""
    halves = _contrasts(vals, runs, effects)
    kind = _kind(vals.reshape(len(vals), -1))
    calls, p = _calls(halves, [kind] * len(effects))
    for r in range(check):
        decs = F.decide_effects([dict(enumerate(v)) for v in vals[r]], runs, effects, THR, 0.01)
        assert [d.p for d in decs] == pytest.approx(list(p[r]), rel=1e-9, abs=1e-12)
        assert [d.label in ("better", "worse") for d in decs] == list(calls[r])
    return calls, p


@pytest.mark.parametrize("factors,generators,n,rate,rho", [
    (FIVE, HALF, 6, 0.5, 0.0),            # the em_factorial design: 16 runs, m = 15
    (FIVE, HALF, 6, 0.4, 0.5),            # seeds correlated across runs
    (["A", "B", "C"], (), 6, 0.5, 0.0),   # a full 2^3, m = 6
])
def test_a_factorial_keeps_the_family_wise_error_under_two_valued_nulls(factors, generators, n, rate, rho):
    runs, effects = _runs(factors, generators), F.effects(factors, generators)
    rng = np.random.default_rng(len(runs) * 100 + int(10 * rho) + n)
    calls, _ = _factorial_calls(_two_valued(rng, REPS, len(runs), n, rate, rho), runs, effects,
                                check=CHECKED if len(runs) <= 8 else 15)
    fwer = float(calls.any(axis=1).mean())
    print(f"factorial {len(runs)} runs over {len(factors)} factors (m = {len(effects)}), n = {n}, learn rate {rate}, "
          f"rho {rho}: FWER {fwer:.4f} (bound {ALPHA + MARGIN:.4f})")
    assert fwer <= ALPHA + MARGIN


def test_interaction_contrasts_keep_the_error_when_main_effects_are_real():
    """Normal outcomes with large main effects and no interaction: every interaction call is false."""
    runs, effects = _runs(FIVE, HALF), F.effects(FIVE, HALF)
    means = [0.80 + 0.03 * r["A"] + 0.02 * r["B"] - 0.02 * r["C"] for r in runs]
    rng = np.random.default_rng(5)
    calls, _ = _factorial_calls(_normal(rng, REPS, means, 4), runs, effects, check=10)
    inter = [i for i, e in enumerate(effects) if len(e.factors) == 2]
    fwer = float(calls[:, inter].any(axis=1).mean())
    main = calls[:, [i for i, e in enumerate(effects) if e.factors in (("A",), ("B",), ("C",))]].mean()
    print(f"factorial 2^(5-1), n = 4, main effects 6/4/-4 points, no interaction: interaction FWER {fwer:.4f} "
          f"(bound {ALPHA + MARGIN:.4f}); power on the main effects {main:.3f}")
    assert fwer <= ALPHA + MARGIN and main > 0.9


def test_an_interaction_contrast_has_its_stated_coverage():
    """A full 2^3 with main effects, an A×B interaction of 3 points, a seed effect and 4 seeds: the
    engine prints A×B's interval at 1 - alpha/m (m = 6); it covers the true A×B as often as it says."""
    factors = ["A", "B", "C"]
    runs, effects = _runs(factors), F.effects(factors)
    ab = next(i for i, e in enumerate(effects) if e.factors == ("A", "B"))
    true_ab = 0.03  # mean(A×B = +1 runs) - mean(A×B = -1 runs)
    means = [0.70 + 0.05 * r["A"] - 0.02 * r["C"] + true_ab / 2 * r["A"] * r["B"] for r in runs]
    rng = np.random.default_rng(9)
    vals = _normal(rng, REPS, means, 4, sd=0.02, seed_sd=0.03)
    a, b = _contrasts(vals, runs, [effects[ab]])[0]
    n, level = 4, 1 - ALPHA / len(effects)
    d = a - b
    hw = sst.t.ppf(0.5 + level / 2, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
    lo, hi = d.mean(axis=1) - hw, d.mean(axis=1) + hw
    unclassified = Threshold(None, "none")
    for r in range(CHECKED):  # the same interval as the engine's, for the unimodal data the test uses
        dec = F.decide_effects([dict(enumerate(v)) for v in vals[r]], runs, effects, unclassified, 0.01)[ab]
        assert dec.level == pytest.approx(level) and dec.interval == pytest.approx((lo[r], hi[r]), abs=1e-12)
    cover = float(((lo <= true_ab) & (true_ab <= hi)).mean())
    mc = 3 * math.sqrt(level * (1 - level) / REPS)
    d95 = sst.t.ppf(0.975, n - 1) * d.std(axis=1, ddof=1) / math.sqrt(n)
    cover95 = float((np.abs(d.mean(axis=1) - true_ab) <= d95).mean())
    print(f"A×B interval at {level:.4f} (m = 6): coverage {cover:.4f} ± {mc:.4f}; at 0.95 (m = 1): {cover95:.4f}")
    assert abs(cover - level) <= mc
    assert abs(cover95 - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / REPS)


# -- the design itself -----------------------------------------------------------------------------

def test_a_half_fraction_of_five_factors_is_resolution_five_with_the_textbook_aliases():
    assert F.resolution(FIVE, HALF) == 5 and F.resolution(FIVE, ()) is None
    assert F.defining_relation(FIVE, HALF) == [(-1, ("A", "B", "C", "D", "E"))]
    runs = _runs(FIVE, HALF)
    assert len(runs) == 16 and all(math.prod(r.values()) == -1 for r in runs)
    effects = {e.name: e for e in F.effects(FIVE, HALF)}
    assert len(effects) == 15
    assert effects["A"].alias_text() == "= -B×C×D×E" and effects["A×B"].alias_text() == "= -C×D×E"
    # two generators: I = ABD = ACE = BCDE, resolution 3 (Montgomery's 2^(5-2) example)
    two = (("D", ("A", "B"), 1), ("E", ("A", "C"), 1))
    assert F.resolution(FIVE, two) == 3
    assert [w for _, w in F.defining_relation(FIVE, two)] == [("A", "B", "D"), ("A", "C", "E"), ("B", "C", "D", "E")]


def test_contrast_estimates_are_the_textbook_effects():
    """A full 2^2 with cell means: A = mean(A+) - mean(A-), A×B = half A's effect at B+ minus at B-."""
    runs = _runs(["A", "B"])
    mean = {(-1, -1): 0.40, (1, -1): 0.60, (-1, 1): 0.50, (1, 1): 0.90}
    vals = [{0: mean[(r["A"], r["B"])], 1: mean[(r["A"], r["B"])] + 0.01} for r in runs]
    eff = {e.name: e for e in F.effects(["A", "B"])}
    a, b = F.halves(vals, F.contrast(runs, eff["A"]))
    assert a[0] - b[0] == pytest.approx((0.60 + 0.90) / 2 - (0.40 + 0.50) / 2)
    a, b = F.halves(vals, F.contrast(runs, eff["A×B"]))
    assert a[0] - b[0] == pytest.approx(((0.90 - 0.50) - (0.60 - 0.40)) / 2)
