"""ablate.stats against scipy.stats, hand-computed values, published power tables and properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ablate import stats as S
from ablate.stats import summarize, welch_diff

RNG_SEEDS = range(6)


def _sample(rng, n, loc=0.6, scale=0.05):
    return [float(v) for v in rng.normal(loc, scale, size=n)]


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_summarize_matches_scipy_t_interval(seed, n, level):
    rng = np.random.default_rng(seed)
    x = _sample(rng, n, scale=rng.uniform(0.01, 0.2))
    s = summarize(x, level=level)
    arr = np.asarray(x)
    assert s.n == n
    assert s.mean == pytest.approx(arr.mean(), rel=1e-12, abs=1e-15)
    assert s.std == pytest.approx(arr.std(ddof=1), rel=1e-10)
    lo, hi = stats.t.interval(level, n - 1, loc=arr.mean(), scale=stats.sem(arr))
    assert s.ci[0] == pytest.approx(lo, rel=1e-10)
    assert s.ci[1] == pytest.approx(hi, rel=1e-10)
    assert s.half_width == pytest.approx((hi - lo) / 2, rel=1e-10)


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("na,nb", [(2, 2), (3, 5), (8, 3), (10, 10)])
def test_welch_diff_matches_scipy_ttest(seed, na, nb):
    rng = np.random.default_rng(100 + seed)
    # unequal variances and sizes, so a pooled-variance interval would differ
    a = _sample(rng, na, loc=0.62, scale=0.01)
    b = _sample(rng, nb, loc=0.58, scale=0.08)
    d = welch_diff(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    diff = np.mean(a) - np.mean(b)
    assert d.mean == pytest.approx(diff, rel=1e-10)
    assert d.mean - d.half_width == pytest.approx(lo, rel=1e-9, abs=1e-12)
    assert d.mean + d.half_width == pytest.approx(hi, rel=1e-9, abs=1e-12)
    assert d.ci == pytest.approx((lo, hi), rel=1e-9, abs=1e-12)
    # the standard error: difference over the t statistic
    assert d.std == pytest.approx(diff / res.statistic, rel=1e-9)
    # Welch is not the pooled interval (unless the sizes are equal and the test says so)
    pooled_lo, _ = stats.ttest_ind(a, b, equal_var=True).confidence_interval(0.95)
    if na != nb:
        assert abs(pooled_lo - lo) > 1e-6


def test_welch_diff_sign_and_symmetry():
    rng = np.random.default_rng(7)
    a, b = _sample(rng, 4, loc=0.7), _sample(rng, 6, loc=0.5)
    ab, ba = welch_diff(a, b), welch_diff(b, a)
    assert ab.mean == pytest.approx(-ba.mean)
    assert ab.half_width == pytest.approx(ba.half_width)
    assert ab.mean > 0


def test_single_value_has_nan_half_width():
    s = summarize([0.5])
    assert s.n == 1 and s.mean == 0.5 and s.std == 0.0
    assert math.isnan(s.half_width)
    assert all(math.isnan(v) for v in s.ci)


@pytest.mark.parametrize("a,b", [([0.5], [0.4, 0.45, 0.5]), ([0.4, 0.45, 0.5], [0.5]), ([0.5], [0.4])])
def test_welch_with_a_single_value_has_nan_half_width(a, b):
    d = welch_diff(a, b)
    assert d.n == 1
    assert d.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert math.isnan(d.half_width)


def test_empty_sample_is_nan():
    s = summarize([])
    assert s.n == 0 and math.isnan(s.mean) and math.isnan(s.half_width)


def test_interval_widens_with_level():
    rng = np.random.default_rng(3)
    x = _sample(rng, 20)
    assert summarize(x, 0.99).half_width > summarize(x, 0.95).half_width > summarize(x, 0.8).half_width
    assert math.isfinite(summarize(x[:2]).half_width)


# --- paired and Welch differences --------------------------------------------------------------

def _correlated_cells(rng, n, delta=0.01, seed_sd=0.05, noise=0.004):
    """Two cells sharing a per-seed effect (initialisation, data order), as in a paired design."""
    shared = rng.normal(0.6, seed_sd, size=n)
    return list(shared + delta + rng.normal(0, noise, n)), list(shared + rng.normal(0, noise, n))


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_paired_diff_matches_scipy_ttest_rel(seed, n, level):
    a, b = _correlated_cells(np.random.default_rng(200 + seed), n)
    d = S.paired_diff(a, b, level)
    res = stats.ttest_rel(a, b)
    diffs = np.subtract(a, b)
    assert d.method == "paired" and d.n == n and d.df == n - 1
    assert d.mean == pytest.approx(diffs.mean(), rel=1e-12)
    assert d.sd == pytest.approx(diffs.std(ddof=1), rel=1e-12)
    assert d.t == pytest.approx(res.statistic, rel=1e-9)
    assert d.p == pytest.approx(res.pvalue, rel=1e-9)
    assert d.ci == pytest.approx(res.confidence_interval(level), rel=1e-9, abs=1e-12)
    assert d.interval(0.5 + level / 2) == pytest.approx(res.confidence_interval(0.5 + level / 2), rel=1e-9)


def test_paired_diff_hand_computed():
    # d = (0.02, 0.04, 0.03): mean 0.03, sd 0.01, se 0.01/sqrt(3), t = 3 sqrt(3), df 2
    d = S.paired_diff([0.62, 0.64, 0.63], [0.60, 0.60, 0.60])
    assert d.mean == pytest.approx(0.03) and d.sd == pytest.approx(0.01)
    assert d.t == pytest.approx(3 * math.sqrt(3))
    assert d.p == pytest.approx(2 * stats.t.sf(3 * math.sqrt(3), 2))
    assert d.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3))


def test_pairing_removes_the_shared_seed_effect():
    a, b = _correlated_cells(np.random.default_rng(5), 5, delta=0.01, seed_sd=0.05, noise=0.002)
    paired, welch = S.paired_diff(a, b), S.unpaired_diff(a, b)
    assert paired.mean == pytest.approx(welch.mean)
    assert paired.half_width < welch.half_width / 5
    assert paired.ci[0] > 0 > welch.ci[0]


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("na,nb", [(2, 2), (3, 5), (8, 3)])
def test_unpaired_diff_matches_scipy_welch(seed, na, nb):
    rng = np.random.default_rng(300 + seed)
    a, b = _sample(rng, na, 0.62, 0.01), _sample(rng, nb, 0.58, 0.08)
    d = S.unpaired_diff(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    va, vb = np.var(a, ddof=1) / na, np.var(b, ddof=1) / nb
    assert d.method == "welch" and (d.n_a, d.n_b) == (na, nb)
    assert d.df == pytest.approx((va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)), rel=1e-12)
    assert d.t == pytest.approx(res.statistic, rel=1e-9)
    assert d.p == pytest.approx(res.pvalue, rel=1e-9)
    assert d.ci == pytest.approx(res.confidence_interval(0.95), rel=1e-9, abs=1e-12)
    pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    assert d.sd == pytest.approx(pooled, rel=1e-12)
    w = welch_diff(a, b)
    assert (w.mean, w.std, w.half_width) == pytest.approx((d.mean, d.se, d.half_width), rel=1e-12)


def test_paired_diff_needs_aligned_lists():
    with pytest.raises(ValueError, match="aligned"):
        S.paired_diff([0.1, 0.2], [0.1])


def test_identical_cells_give_zero_delta_and_equivalence():
    a = [0.61, 0.55, 0.58]
    d = S.paired_diff(a, list(a))
    assert (d.mean, d.se, d.half_width, d.t, d.p) == (0.0, 0.0, 0.0, 0.0, 1.0)
    t = S.tost(d, margin=0.01)
    assert t.equivalent and t.p == 0.0 and t.interval == (0.0, 0.0)
    assert S.verdict(d, d.p, t.p, margin=0.01).label == "equivalent"


def test_constant_nonzero_difference_is_certain():
    d = S.paired_diff([0.62, 0.57, 0.60], [0.60, 0.55, 0.58])
    assert d.mean == pytest.approx(0.02) and d.p < 1e-6  # equal up to rounding: se ~ 1e-17
    exact = S.paired_diff([3.0, 5.0, 4.0], [1.0, 3.0, 2.0])  # exact in floating point
    assert exact.se == 0 and exact.t == math.inf and exact.p == 0.0
    assert S.verdict(exact, exact.p, S.tost(exact, 1.0).p, margin=1.0).label == "better"
    assert S.tost(exact, 3.0).equivalent and not S.tost(exact, 2.0).equivalent


@pytest.mark.parametrize("fn", [S.paired_diff, S.unpaired_diff])
def test_one_seed_has_no_interval_and_no_p(fn):
    d = fn([0.6], [0.5])
    assert d.mean == pytest.approx(0.1)
    assert all(math.isnan(v) for v in (d.se, d.sd, d.p, d.half_width, *d.ci))
    t = S.tost(d, 0.01)
    assert math.isnan(t.p) and not t.equivalent
    v = S.verdict(d, d.p, t.p, margin=0.01)
    assert v.label == "inconclusive" and v.seeds is None and v.seeds_text == "n/a"


def test_compare_pairs_by_seed_not_by_order():
    rng = np.random.default_rng(11)
    a, b = _correlated_cells(rng, 4)
    cell_a = dict(zip([0, 1, 2, 3], a))
    cell_b = {s: v for s, v in reversed(list(zip([0, 1, 2, 3], b)))}  # other insertion order
    d = S.compare(cell_a, cell_b)
    assert d.method == "paired"
    assert d.t == pytest.approx(stats.ttest_rel(a, b).statistic, rel=1e-9)


def test_compare_falls_back_to_welch_and_can_pair_shared_seeds():
    rng = np.random.default_rng(12)
    a, b = _correlated_cells(rng, 5)
    cell_a, cell_b = dict(enumerate(a[:3])), dict(enumerate(b))
    d = S.compare(cell_a, cell_b)
    assert d.method == "welch" and (d.n_a, d.n_b) == (3, 5)
    assert d.t == pytest.approx(stats.ttest_ind(a[:3], b, equal_var=False).statistic, rel=1e-9)
    s = S.compare(cell_a, cell_b, shared=True)
    assert s.method == "paired" and s.n == 3
    assert s.t == pytest.approx(stats.ttest_rel(a[:3], b[:3]).statistic, rel=1e-9)
    assert S.compare({0: 0.5, 1: 0.6}, {2: 0.5, 3: 0.4}, shared=True).method == "welch"


# --- TOST --------------------------------------------------------------------------------------

def test_tost_hand_computed():
    # d = (0.2, 0.4, 0.3, 0.5, 0.1): mean 0.3, sd sqrt(0.025), se 0.05 sqrt(2), df 4; margin 1
    d = S.paired_diff([1.2, 1.4, 1.3, 1.5, 1.1], [1.0] * 5)
    se = math.sqrt(0.025 / 5)
    t = S.tost(d, margin=1.0, alpha=0.05)
    assert t.p_lower == pytest.approx(stats.t.sf(1.3 / se, 4), rel=1e-8)
    assert t.p_upper == pytest.approx(stats.t.cdf(-0.7 / se, 4), rel=1e-8)
    assert t.p == max(t.p_lower, t.p_upper) == t.p_upper
    q = stats.t.ppf(0.95, 4)
    assert t.interval == pytest.approx((0.3 - q * se, 0.3 + q * se), rel=1e-9)
    assert t.equivalent
    assert not S.tost(d, margin=0.3 + q * se * 0.99).equivalent  # bound just inside the interval


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("margin", [0.005, 0.01, 0.03])
def test_tost_matches_scipy_one_sided_tests(seed, margin):
    rng = np.random.default_rng(400 + seed)
    a, b = _correlated_cells(rng, 6, delta=rng.uniform(-0.02, 0.02), noise=0.01)
    diffs = np.subtract(a, b)
    t = S.tost(S.paired_diff(a, b), margin)
    assert t.p_lower == pytest.approx(stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue, rel=1e-8)
    assert t.p_upper == pytest.approx(stats.ttest_1samp(diffs, margin, alternative="less").pvalue, rel=1e-8)
    lo90, hi90 = stats.ttest_rel(a, b).confidence_interval(0.90)
    assert t.interval == pytest.approx((lo90, hi90), rel=1e-9)
    assert t.equivalent == (-margin < lo90 and hi90 < margin)
    # Welch form: shifting one cell by the margin turns each bound into an ordinary one-sided test
    x, y = np.asarray(a[:4]), np.asarray(b)
    w = S.tost(S.unpaired_diff(x, y), margin)
    assert w.p_lower == pytest.approx(stats.ttest_ind(x + margin, y, equal_var=False,
                                                      alternative="greater").pvalue, rel=1e-8)
    assert w.p_upper == pytest.approx(stats.ttest_ind(x - margin, y, equal_var=False,
                                                      alternative="less").pvalue, rel=1e-8)
    lo, hi = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.90)
    assert w.equivalent == (-margin < lo and hi < margin)


def test_tost_matches_statsmodels_if_installed():
    sm = pytest.importorskip("statsmodels.stats.weightstats")
    rng = np.random.default_rng(9)
    a, b = _correlated_cells(rng, 7, delta=0.002, noise=0.01)
    p, _, _ = sm.ttost_paired(np.asarray(a), np.asarray(b), -0.01, 0.01)
    assert S.tost(S.paired_diff(a, b), 0.01).p == pytest.approx(p, rel=1e-8)
    p, _, _ = sm.ttost_ind(np.asarray(a), np.asarray(b), -0.01, 0.01, usevar="unequal")
    assert S.tost(S.unpaired_diff(a, b), 0.01).p == pytest.approx(p, rel=1e-8)


def test_tost_rejects_a_nonpositive_margin():
    with pytest.raises(ValueError, match="margin"):
        S.tost(S.paired_diff([1, 2], [1, 1]), 0.0)


# --- corrections -------------------------------------------------------------------------------

def test_adjust_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert S.adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.adjust(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert S.adjust(p, "none") == p
    assert S.adjust([0.3, 0.5], "bonferroni") == pytest.approx([0.6, 1.0])
    assert S.adjust([0.3, 0.5], "holm") == pytest.approx([0.6, 0.6])
    assert S.adjust([0.6, 0.9, 0.7], "holm") == [1.0, 1.0, 1.0]


def test_adjust_leaves_missing_tests_out_of_the_family():
    out = S.adjust([0.01, math.nan, 0.02], "holm")
    assert math.isnan(out[1])
    assert [out[0], out[2]] == pytest.approx([0.02, 0.02])
    assert all(math.isnan(v) for v in S.adjust([math.nan], "bonferroni"))
    assert S.adjust([], "holm") == []


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_adjust_properties(seed):
    rng = np.random.default_rng(500 + seed)
    p = rng.uniform(0, 0.2, size=12) ** 2
    holm, bonf = np.array(S.adjust(p, "holm")), np.array(S.adjust(p, "bonferroni"))
    assert np.all(p <= holm + 1e-15) and np.all(holm <= bonf + 1e-15) and np.all(bonf <= 1)
    order = np.argsort(p)
    assert np.all(np.diff(holm[order]) >= 0)  # monotone in the raw p-values
    perm = rng.permutation(len(p))
    assert np.array(S.adjust(p[perm], "holm")) == pytest.approx(holm[perm])


def test_adjust_matches_statsmodels_if_installed():
    mt = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(3).uniform(0, 0.1, 20)
    for ours, theirs in (("holm", "holm"), ("bonferroni", "bonferroni")):
        assert S.adjust(p, ours) == pytest.approx(mt.multipletests(p, method=theirs)[1])


def test_adjust_and_interval_level_reject_unknown_methods():
    with pytest.raises(ValueError, match="holm"):
        S.adjust([0.1], "fdr")
    with pytest.raises(ValueError, match="bonferroni"):
        S.interval_level(0.05, 3, "sidak")


def test_interval_level():
    assert S.interval_level(0.05, 10, "bonferroni") == pytest.approx(0.995)
    assert S.interval_level(0.05, 10, "holm") == pytest.approx(0.995)
    assert S.interval_level(0.05, 10, "none") == pytest.approx(0.95)
    assert S.interval_level(0.05, 0, "holm") == pytest.approx(0.95)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_bonferroni_interval_excluding_zero_implies_holm_call(seed):
    rng = np.random.default_rng(600 + seed)
    diffs = [S.paired_diff(*_correlated_cells(rng, 4, delta=rng.normal(0, 0.01), noise=0.005))
             for _ in range(8)]
    holm = S.adjust([d.p for d in diffs], "holm")
    level = S.interval_level(0.05, len(diffs), "holm")
    for d, p in zip(diffs, holm):
        lo, hi = d.interval(level)
        if lo > 0 or hi < 0:
            assert p < 0.05


# --- verdicts and seeds needed -----------------------------------------------------------------

@pytest.mark.parametrize("sd,method,expected", [(2.0, "welch", 64), (1.0, "welch", 17),
                                                (2.0, "paired", 34), (1.0, "paired", 10)])
def test_seeds_needed_matches_published_power_tables(sd, method, expected):
    # effect size d = margin/sd: two-sample n = 64 (d = 0.5) and 17 (d = 1), Cohen 1988 table 2.4.1;
    # one-sample/paired n = 34 (d = 0.5) and 10 (d = 1), as G*Power gives; alpha 0.05 two-sided, 80%
    assert S.seeds_needed(sd, 1.0, 0.05, method, max_seeds=200) == expected
    assert S.t_power(expected, sd, 1.0, 0.05, method) >= 0.8 > S.t_power(expected - 1, sd, 1.0, 0.05, method)


@pytest.mark.parametrize("method,n", [("paired", 6), ("welch", 8)])
def test_power_matches_simulated_t_tests(method, n):
    rng = np.random.default_rng(21)
    reps, sd, margin, alpha = 20000, 1.0, 1.0, 0.05
    if method == "paired":
        x = rng.normal(margin, sd, (reps, n))
        p = stats.ttest_1samp(x, 0, axis=1).pvalue
    else:
        p = stats.ttest_ind(rng.normal(margin, sd, (reps, n)), rng.normal(0, sd, (reps, n)), axis=1).pvalue
    assert np.mean(p < alpha) == pytest.approx(S.t_power(n, sd, margin, alpha, method), abs=0.015)


def test_seeds_needed_grows_with_spread_and_with_the_number_of_tests():
    few, more = S.seeds_needed(0.5, 1.0, 0.05), S.seeds_needed(1.0, 1.0, 0.05)
    assert few < more < S.seeds_needed(1.0, 1.0, 0.05 / 20)
    assert S.seeds_needed(10.0, 1.0, 0.05) is None
    assert S.seeds_needed(0.0, 1.0, 0.05) == 2
    with pytest.raises(ValueError):
        S.seeds_needed(math.nan, 1.0, 0.05)


def test_label_rules():
    up, down = S.paired_diff([2, 3, 5], [1, 1, 1]), S.paired_diff([1, 1, 1], [2, 3, 5])
    assert S.label(up, 0.01, 0.5) == "better" and S.label(down, 0.01, 0.5) == "worse"
    assert S.label(up, 0.01, 0.01) == "equivalent"  # detected but inside the margin
    assert S.label(up, 0.2, 0.01) == "equivalent"
    assert S.label(up, 0.2, 0.5) == "inconclusive"
    assert S.label(up, 0.05, 0.05, alpha=0.05) == "inconclusive"  # strict: p < alpha
    assert S.label(up, math.nan, math.nan) == "inconclusive"


def test_verdict_reads_the_adjusted_p_values():
    d = S.paired_diff([0.606, 0.512, 0.559], [0.6, 0.5, 0.55])  # d = 0.006, 0.012, 0.009: t = 3 sqrt(3)
    assert 0.01 < d.p < 0.05  # significant alone ...
    holm = S.adjust([d.p, 0.2, 0.3, 0.4, 0.5], "holm")[0]
    v = S.verdict(d, holm, S.tost(d, 0.01, 0.05).p, margin=0.01, n_tests=5)
    assert holm > 0.05 and v.label == "inconclusive"  # ... not among five
    assert v.seeds is not None and v.seeds > v.n and v.more == v.seeds - 3
    assert v.seeds == max(d.n + 1, S.seeds_needed(d.sd, 0.01, 0.05 / 5, "paired"))


def test_two_seeds_wider_than_the_metric_range_are_inconclusive():
    # mIoU as a fraction (range 1): two seeds 0.2 apart give a 95% interval ~5.7 wide
    d = S.paired_diff([0.30, 0.70], [0.40, 0.40])
    assert not S.printable(d.ci, 1.0) and not S.printable((math.nan, math.nan), 1.0)
    assert S.printable(S.paired_diff([0.5, 0.52, 0.51], [0.5, 0.5, 0.5]).ci, 1.0)
    v = S.verdict(d, d.p, S.tost(d, 0.01).p, margin=0.01)
    assert v.label == "inconclusive" and v.capped and v.seeds is None and v.seeds_text == ">50"
    small = S.paired_diff([0.505, 0.515], [0.50, 0.50])
    w = S.verdict(small, small.p, S.tost(small, 0.01).p, margin=0.01)
    assert w.label == "inconclusive" and not w.capped and 2 < w.seeds <= 50 and w.seeds_text == str(w.seeds)


def test_verdict_never_asks_for_fewer_seeds_than_one_more():
    # the spread is small enough for 80% power at n = 3, yet the interval straddles both 0 and the margin
    d = S.Diff("paired", 3, 3, 0.006, 0.003 / math.sqrt(3), 2, 0.003)
    assert S.seeds_needed(d.sd, 0.01, 0.05) <= 3
    v = S.verdict(d, d.p, S.tost(d, 0.01).p, margin=0.01)
    assert v.label == "inconclusive" and v.seeds == 4


# (the budget rule's tests are in tests/stats/test_budget.py)


# --- sequential seeds --------------------------------------------------------------------------

def test_next_seeds_first_fills_every_cell_to_start():
    out = S.next_seeds({"base": [], "a": [0], "b": [0, 1, 2]}, {("a", "base"): False}, start=3, max_seeds=10)
    assert out == {"base": [0, 1, 2], "a": [1, 2]}


def test_next_seeds_grows_undecided_pairs_only():
    done = {"base": [0, 1, 2], "a": [0, 1, 2], "b": [0, 1, 2], "ref": [0, 1, 2]}
    pairs = {("a", "base"): False, ("b", "base"): True}
    assert S.next_seeds(done, pairs, 3, 10) == {"base": [3], "a": [3]}
    assert S.next_seeds(done, pairs, 3, 10, batch=2) == {"base": [3, 4], "a": [3, 4]}
    assert S.next_seeds(done, {k: True for k in pairs}, 3, 10) == {}


def test_next_seeds_aligns_a_pair_before_growing_it():
    done = {"base": [0, 1, 2, 3, 4], "a": [0, 1, 2]}
    assert S.next_seeds(done, {("a", "base"): False}, 3, 10) == {"a": [3, 4]}
    assert S.next_seeds({"base": [0, 1, 2, 3, 4], "a": [0, 1, 2, 3, 4]}, {("a", "base"): False}, 3, 10) \
        == {"base": [5], "a": [5]}


def test_next_seeds_follows_the_seed_order_and_skips_seeds_done():
    order = [7, 3, 11, 5, 2]
    done = {"x": [7, 3, 11], "y": [3, 7, 11]}
    assert S.next_seeds(done, {("x", "y"): False}, 3, 5, seed_order=order) == {"x": [5], "y": [5]}
    assert S.next_seeds({"x": [3]}, {}, 3, 5, seed_order=order) == {"x": [7, 11]}


def test_sequential_loop_never_exceeds_max_and_stops():
    rng = np.random.default_rng(51)
    cells = ["base", "clear", "null", "noisy"]
    effect = {"base": 0.0, "clear": 0.05, "null": 0.0, "noisy": 0.003}
    noise = {"base": 0.002, "clear": 0.002, "null": 0.002, "noisy": 0.02}
    value = {c: {s: effect[c] + rng.normal(0, noise[c]) for s in range(10)} for c in cells}
    done, rounds, calls = {c: [] for c in cells}, 0, []
    while True:
        pairs = {}
        for c in cells[1:]:
            if min(len(done[c]), len(done["base"])) >= 3:
                d = S.compare({s: value[c][s] for s in done[c]}, {s: value["base"][s] for s in done["base"]},
                              shared=True)
                v = S.verdict(d, d.p, S.tost(d, 0.01).p, margin=0.01)
                pairs[(c, "base")] = S.decided(v, d.half_width, 0.01)
            else:
                pairs[(c, "base")] = False
        new = S.next_seeds(done, pairs, start=3, max_seeds=10)
        assert new == S.next_seeds(done, pairs, start=3, max_seeds=10)  # deterministic
        calls.append(new)
        if not new:
            break
        for c, seeds in new.items():
            assert not set(seeds) & set(done[c])
            done[c] += seeds
        assert all(len(s) <= 10 for s in done.values())
        rounds += 1
        assert rounds <= 10
    assert len(done["clear"]) == 3 and len(done["null"]) == 3  # decided at the start
    assert len(done["noisy"]) == 10 and len(done["base"]) == 10  # undecided until the cap


def test_next_seeds_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not in done"):
        S.next_seeds({"a": [0]}, {("a", "b"): False}, 1, 3)
    with pytest.raises(ValueError, match="start"):
        S.next_seeds({"a": []}, {}, 4, 3)
    with pytest.raises(ValueError, match="seed_order"):
        S.next_seeds({"a": []}, {}, 2, 5, seed_order=[0, 1, 2])


def test_decided_by_verdict_or_precision():
    assert S.decided("better", math.nan, 0.01) and S.decided("equivalent", 0.5, 0.01)
    assert S.decided("inconclusive", 0.009, 0.01)
    assert not S.decided("inconclusive", 0.011, 0.01) and not S.decided("inconclusive", math.nan, 0.01)
    assert S.decided(S.Verdict("worse", 3), 1.0, 0.01)
    assert S.look_alpha(0.05, 3, 10) == pytest.approx(0.05 / 8) and S.look_alpha(0.05, 3, 3) == 0.05


def _sequential_false_calls(alpha, reps, sd, margin=1.0, start=3, max_seeds=10, seed=61):
    """Fraction of null comparisons (true Δ = 0) called better/worse by the sequential rule."""
    rng = np.random.default_rng(seed)
    wrong = 0
    for _ in range(reps):
        d_all = rng.normal(0, sd, max_seeds)
        for n in range(start, max_seeds + 1):
            d = S.paired_diff(d_all[:n], np.zeros(n), level=1 - alpha)
            lab = S.label(d, d.p, S.tost(d, margin, alpha).p, alpha)
            if S.decided(lab, d.half_width, margin) or n == max_seeds:
                wrong += lab in ("better", "worse")
                break
    return wrong / reps


def test_stopping_on_verdicts_needs_the_per_look_alpha():
    # at the same alpha at every look the false calls rise well above alpha; at look_alpha they do not
    assert _sequential_false_calls(0.05, 800, sd=4.0) > 0.1
    assert _sequential_false_calls(S.look_alpha(0.05, 3, 10), 800, sd=4.0) <= 0.05


# --- bootstrap over images ---------------------------------------------------------------------

def _counts(rng, n_images, n_classes=4):
    u = rng.integers(50, 500, size=(n_images, n_classes))
    i = (u * rng.uniform(0.2, 0.9, size=(n_images, n_classes))).astype(int)
    return i, u


def test_bootstrap_of_identical_images_has_zero_width():
    i, u = _counts(np.random.default_rng(71), 1)
    b = S.bootstrap_miou(np.repeat(i, 20, 0), np.repeat(u, 20, 0), n_boot=500, seed=3)
    assert b.lo == b.hi == b.miou == pytest.approx(np.mean(i[0] / u[0]), rel=1e-12)


def test_bootstrap_point_estimate_is_the_miou_of_summed_counts():
    i = np.array([[10, 0, 5], [30, 2, 0]])
    u = np.array([[20, 0, 10], [40, 8, 0]])
    # class 0: 40/60, class 1: 2/8, class 2: 5/10 -> mean of the three
    expect = (40 / 60 + 2 / 8 + 5 / 10) / 3
    assert S.miou_from_counts(i, u) == pytest.approx(expect)
    assert S.bootstrap_miou(i, u, n_boot=200).miou == pytest.approx(expect)
    assert S.miou_from_counts(np.zeros((2, 3)), np.zeros((2, 3))) != S.miou_from_counts(i, u)


def test_bootstrap_leaves_out_classes_absent_from_a_resample():
    # image 0: class A perfect, class B missed entirely; image 1: class A only
    i, u = np.array([[10, 0], [10, 0]]), np.array([[10, 10], [10, 0]])
    b = S.bootstrap_miou(i, u, n_boot=2000, seed=0)
    assert b.miou == pytest.approx(0.5)
    assert b.lo == pytest.approx(0.5) and b.hi == pytest.approx(1.0)  # 1.0: B absent, not counted as 0


def test_bootstrap_is_reproducible_and_narrows_with_more_images():
    i, u = _counts(np.random.default_rng(72), 40)
    a, b = S.bootstrap_miou(i, u, 1000, seed=5), S.bootstrap_miou(i, u, 1000, seed=5)
    assert a == b
    assert S.bootstrap_miou(i, u, 1000, seed=6) != a
    assert a.lo < a.miou < a.hi
    big = S.bootstrap_miou(np.tile(i, (16, 1)), np.tile(u, (16, 1)), 1000, seed=5)
    assert big.miou == pytest.approx(a.miou)
    assert (big.hi - big.lo) < (a.hi - a.lo) / 2  # 16x the images: about a quarter of the width


def test_bootstrap_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="n_images, n_classes"):
        S.bootstrap_miou(np.zeros((3, 2)), np.zeros((3, 3)))
    e = S.bootstrap_miou(np.zeros((0, 3)), np.zeros((0, 3)))
    assert e.n_images == 0 and math.isnan(e.lo)


# --- the methods table -------------------------------------------------------------------------

def test_methods_table_is_a_table_of_existing_functions():
    text = S.methods_table()
    rows = [l for l in text.splitlines() if l.startswith("|")]
    assert len(rows) >= 2 + 10
    assert all(r.count("|") == 5 for r in rows)  # no stray pipe breaks a row
    import re
    for name in set(re.findall(r"`(\w+)`", text)) - {"ablate"}:
        assert callable(getattr(S, name)), name
    for ref in ("Welch 1947", "Schuirmann 1987", "Holm 1979", "Efron & Tibshirani", "Benjamini & Hochberg 1995",
                "Boschloo 1970", "Clopper & Pearson 1934", "Smyth 2004", "Yuen 1974", "Lan & DeMets 1983",
                "Kaplan & Meier 1958"):
        assert ref in text
