"""The decision layer: outcome classification, the test each comparison gets, families and their
correction, the labels, and the family-wise error of the whole procedure by simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from ablate.stats import adjust
from ablate.stats import decide as D
from ablate.stats.outcomes import Threshold, clopper_pearson, learn_threshold, outcome_kind

FLOOR, LEARNED = 0.42, 0.89


def _thr() -> Threshold:
    return learn_threshold({"none": {0: 0.41, 1: 0.42, 2: 0.43}, "x": {0: 0.90}}, "none")


def test_threshold_is_half_way_from_the_floor_to_the_best_seed_when_one_is_ten_points_up():
    thr = _thr()
    assert thr.value == pytest.approx(0.42 + (0.90 - 0.42) / 2)
    low = learn_threshold({"none": {0: 0.42}, "x": {0: 0.51}}, "none")
    assert low.value is None  # no seed 10 points above the floor: nothing to classify
    assert learn_threshold({"x": {0: 0.9}}, None).value is None
    # no floor cell: the middle of the widest gap between the seeds, when it is 10 points or more
    gap = learn_threshold({"x": {0: 0.42, 1: 0.43}, "y": {0: 0.88, 1: 0.90}}, None)
    assert gap.value == pytest.approx((0.43 + 0.88) / 2)
    assert learn_threshold({"x": {0: 0.42, 1: 0.47}, "y": {0: 0.50, 1: 0.55}}, None).value is None
    assert learn_threshold({"x": {0: 0.9}}, None, declared=0.7).value == 0.7


def test_outcome_kinds():
    thr = _thr()
    assert outcome_kind([0.9, 0.42], [0.41, 0.43], thr) == "two_valued"
    assert outcome_kind([0.9, 0.88], [0.89, 0.91], thr) == "learned"
    assert outcome_kind([0.42, 0.43], [0.41, 0.44], thr) == "floor"
    assert outcome_kind([0.9], [0.4], Threshold(None, "none")) == "unclassified"


@pytest.mark.parametrize("k,n", [(0, 5), (2, 5), (5, 5), (7, 10)])
def test_clopper_pearson_matches_statsmodels(k, n):
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
    assert clopper_pearson(k, n) == pytest.approx((lo, hi), abs=1e-12)


def test_benjamini_hochberg_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(3).uniform(0, 0.2, 40)
    assert adjust(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1], abs=1e-15)
    assert adjust([0.01, math.nan, 0.04], "bh") == pytest.approx([0.02, math.nan, 0.04], nan_ok=True)


def _comp(key, a, b, family="q", thr=None):
    return D.Comparison(key, "base", dict(enumerate(a)), dict(enumerate(b)), family, thr or _thr())


def test_two_valued_comparison_uses_the_exact_permutation_test_and_its_inverted_interval():
    a = [0.90, 0.89, 0.91, 0.88, 0.90]
    b = [0.42, 0.43, 0.90, 0.41, 0.89]
    (dec,) = D.decide_family([_comp("x", a, b)], margin=0.01, advice=False)
    ref = sst.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                               n_resamples=np.inf, alternative="two-sided").pvalue
    assert dec.kind == "two_valued" and dec.test == "perm" and dec.p == pytest.approx(ref)
    assert dec.counts == (5, 5, 2, 5)
    # the printed interval inverts the same test: it excludes 0 exactly when the test rejects at its level
    lo, hi = dec.interval
    assert (lo > 0) == (dec.p_adj < 0.05)


def test_two_floor_cells_are_neither_learned_never_equivalent():
    a, b = [0.420, 0.421, 0.419, 0.420, 0.4205], [0.4201, 0.4209, 0.4191, 0.4202, 0.4203]
    (dec,) = D.decide_family([_comp("x", a, b)], margin=0.05, advice=False)
    assert dec.kind == "floor" and dec.label == "neither learned"


def test_a_detected_difference_inside_the_margin_says_both():
    base = np.array([0.880, 0.890, 0.885, 0.895, 0.884, 0.889])
    a = base + np.array([0.003, 0.0031, 0.0029, 0.0030, 0.0032, 0.0028])
    (dec,) = D.decide_family([_comp("x", a, base)], margin=0.02, advice=False)
    assert dec.label == "better" and dec.note == "within ±2"


def test_families_are_corrected_separately():
    rng = np.random.default_rng(0)
    base = 0.88 + rng.normal(0, 0.005, 6)
    comps = [_comp(f"q{i}", base + 0.01 + rng.normal(0, 0.002, 6), base, "question") for i in range(2)]
    comps += [_comp(f"r{i}", base + rng.normal(0, 0.005, 6), base, "references") for i in range(5)]
    out = D.decide_family(comps, margin=0.01, advice=False)
    q = [d for d in out if d.family == "question"]
    assert all(d.m == 2 for d in q) and all(d.m == 5 for d in out if d.family == "references")
    assert [d.p_adj for d in q] == pytest.approx(adjust([d.p for d in q], "holm"))


def _simulate_fwer(n: int, m: int, rate: float, rho: float, reps: int, seed: int, test_override=None) -> float:
    """Family-wise error of decide_family under a two-valued null: every cell learns with the same
    probability; a floor cell sets the threshold; the seed's learn event is shared across cells
    with correlation rho (a Gaussian copula). Returns the fraction of repetitions with any call."""
    rng = np.random.default_rng(seed)
    cut = sst.norm.ppf(rate)
    floor = {s: FLOOR + 0.007 * rng.standard_normal() for s in range(n)}
    hits = 0
    for _ in range(reps):
        shared = rng.standard_normal(n)
        cells = []
        for _c in range(m + 1):  # the baseline and m cells
            z = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(n)
            learned = z < cut
            vals = np.where(learned, LEARNED + 0.01 * rng.standard_normal(n), FLOOR + 0.007 * rng.standard_normal(n))
            cells.append(dict(enumerate(vals)))
        everything = {f"c{i}": v for i, v in enumerate(cells)} | {"none": floor}
        thr = learn_threshold(everything, "none")
        comps = [D.Comparison(f"c{i}", "c0", cells[i], cells[0], "q", thr) for i in range(1, m + 1)]
        out = D.decide_family(comps, margin=0.01, advice=False)
        hits += any(d.label in ("better", "worse") for d in out)
    return hits / reps


@pytest.mark.parametrize("n,m,rate,rho", [(5, 1, 0.5, 0.0), (5, 3, 0.5, 0.5), (6, 3, 0.3, 0.0)])
def test_the_whole_procedure_holds_alpha_under_two_valued_nulls(n, m, rate, rho):
    reps = 1500
    fwer = _simulate_fwer(n, m, rate, rho, reps, seed=n * 100 + m)
    margin = 3 * math.sqrt(0.05 * 0.95 / reps)  # three Monte-Carlo standard errors
    print(f"FWER n={n} m={m} rate={rate} rho={rho}: {fwer:.4f} (alpha 0.05 + {margin:.4f})")
    assert fwer <= 0.05 + margin


def test_forcing_the_paired_t_back_on_two_valued_outcomes_breaks_the_error_rate(monkeypatch):
    real = D.choose_test

    def t_always(kind, paired, n, outliers, test="perm"):
        if kind == "two_valued":
            return "paired_t", "forced"
        return real(kind, paired, n, outliers, test)

    monkeypatch.setattr(D, "choose_test", t_always)
    reps = 1500
    fwer = _simulate_fwer(3, 3, 0.5, 0.0, reps, seed=7)
    print(f"FWER with the paired t forced on two-valued outcomes, n=3 m=3: {fwer:.4f}")
    assert fwer > 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
