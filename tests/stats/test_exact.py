"""ablate.stats.exact (issue 28, item 1): the permutation, sign-flip and Boschloo p-values against
scipy.stats, the Monte-Carlo paths against the exact ones, and the smallest attainable p-values
against data that attain them. Error rates under two-valued nulls are in test_power.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ablate.stats import exact
from ablate.stats.exact import boschloo, boschloo_table, min_p, perm_pvalues, perm_test, signflip_test


def _two_valued(rng, n, rate=0.5, round_to=None):
    x = np.where(rng.random(n) < rate, 0.89, 0.42) + rng.normal(0, 0.01, n)
    return np.round(x, round_to) if round_to is not None else x


def _scipy_perm(a, b):
    """P(|T*| ≥ |T|) over every relabeling, via scipy's enumeration of |mean(a) - mean(b)|."""
    def stat(x, y, axis):
        return np.abs(np.mean(x, axis=axis) - np.mean(y, axis=axis))
    return stats.permutation_test((a, b), stat, permutation_type="independent", n_resamples=np.inf,
                                  alternative="greater", vectorized=True).pvalue


@pytest.mark.parametrize("na,nb", [(2, 2), (3, 3), (5, 5), (4, 6), (2, 7), (7, 7)])
@pytest.mark.parametrize("seed", range(3))
def test_perm_test_matches_scipy_enumeration(na, nb, seed):
    rng = np.random.default_rng(seed)
    a, b = _two_valued(rng, na, 0.6), _two_valued(rng, nb, 0.4)
    assert perm_test(a, b) == pytest.approx(_scipy_perm(a, b), rel=1e-12)
    # exact ties (values rounded to one decimal) count as ties, as in scipy
    a, b = _two_valued(rng, na, 0.6, 1), _two_valued(rng, nb, 0.4, 1)
    assert perm_test(a, b) == pytest.approx(_scipy_perm(a, b), rel=1e-12)
    if na == nb:  # the null distribution is symmetric: scipy's default two-sided convention agrees
        d = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x, axis) - np.mean(y, axis),
                                   n_resamples=np.inf, vectorized=True).pvalue
        assert perm_test(a, b) == pytest.approx(d, rel=1e-12)


def test_perm_test_constant_data_and_float_ties():
    assert perm_test([0.5, 0.5, 0.5], [0.5, 0.5]) == 1.0
    # 0.1 + 0.2 and 0.3 differ in the last bit; as ties the two cells are interchangeable
    assert perm_test([0.1 + 0.2, 0.4], [0.3, 0.4]) == 1.0
    with pytest.raises(ValueError):
        perm_test([], [1.0])


def test_perm_monte_carlo_path_agrees_with_exact(monkeypatch):
    rng = np.random.default_rng(7)
    a, b = _two_valued(rng, 6, 0.9), _two_valued(rng, 6, 0.3)
    p_exact = perm_test(a, b)
    monkeypatch.setattr(exact, "EXACT_MAX", 10)
    p_mc = perm_test(a, b)
    r = exact.MC_RESAMPLES
    assert p_mc != p_exact  # the Monte-Carlo path was taken
    assert abs(p_mc - p_exact) <= 4 * math.sqrt(p_exact * (1 - p_exact) / r) + 1 / r
    assert perm_test(a, b) == p_mc  # seeded: reproducible


def test_perm_large_design_runs_monte_carlo_and_finds_a_clear_shift():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1, 13), rng.normal(0, 1, 12)  # C(25, 13) > 200,000
    p = perm_test(a, b)
    r = exact.MC_RESAMPLES
    ref = stats.permutation_test((a, b), lambda x, y, axis: np.abs(np.mean(x, axis) - np.mean(y, axis)),
                                 n_resamples=r, vectorized=True, alternative="greater", rng=1).pvalue
    assert abs(p - ref) <= 4 * math.sqrt(ref * (1 - ref) / r) + 2 / r


@pytest.mark.parametrize("n", [2, 4, 7, 10, 12])
@pytest.mark.parametrize("seed", range(3))
def test_signflip_matches_scipy_paired_permutation(n, seed):
    rng = np.random.default_rng(10 + seed)
    x, y = _two_valued(rng, n, 0.7), _two_valued(rng, n, 0.4)
    ref = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis),
                                 permutation_type="samples", n_resamples=np.inf, vectorized=True).pvalue
    assert signflip_test(x - y) == pytest.approx(min(1.0, ref), rel=1e-12)


def test_signflip_zeros_and_ties_and_monte_carlo(monkeypatch):
    # zero differences do not move under a flip: 2 of the 2^3 sign vectors reach |Σd| = 1.0
    assert signflip_test([0.0, 0.5, 0.5]) == pytest.approx(4 / 8)
    assert signflip_test([0.0, 0.0]) == 1.0
    assert signflip_test([0.3]) == 1.0  # one difference: its mirror is as extreme
    rng = np.random.default_rng(2)
    d = rng.normal(0.5, 1, 9)
    p_exact = signflip_test(d)
    monkeypatch.setattr(exact, "SIGNFLIP_EXACT_MAX_N", 4)
    p_mc = signflip_test(d)
    r = exact.MC_RESAMPLES
    assert p_mc != p_exact and abs(p_mc - p_exact) <= 4 * math.sqrt(p_exact * (1 - p_exact) / r) + 1 / r


@pytest.mark.parametrize("na,nb", [(3, 3), (4, 6), (5, 2)])
def test_boschloo_matches_scipy_on_every_table(na, nb):
    for ka in range(na + 1):
        for kb in range(nb + 1):
            ref = stats.boschloo_exact([[ka, kb], [na - ka, nb - kb]], alternative="two-sided").pvalue
            assert boschloo(ka, na, kb, nb) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    table = boschloo_table(na, nb)
    assert table.shape == (na + 1, nb + 1) and table[na, 0] == table.min()
    with pytest.raises(ValueError):
        boschloo(4, 3, 0, 3)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 10])
def test_min_p_is_attained_by_separated_cells(n):
    lo, hi = np.linspace(0.40, 0.44, n), np.linspace(0.87, 0.91, n)
    assert perm_test(hi, lo) == pytest.approx(min_p("perm", n))
    assert min_p("perm", n) == pytest.approx(2 / math.comb(2 * n, n))
    assert signflip_test(hi - lo) == pytest.approx(min_p("signflip", n)) == pytest.approx(2 / 2 ** n)
    assert min_p("boschloo", n) == pytest.approx(stats.boschloo_exact([[n, 0], [0, n]]).pvalue)


def test_min_p_unequal_cells_and_lower_bound():
    # one relabeling alone is as extreme when the cells differ in size: 1/C(8, 3)
    assert perm_test([10.0, 11.0, 12.0], [0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(1 / 56)
    assert min_p("perm", 3, 5) == pytest.approx(1 / 56)
    rng = np.random.default_rng(5)
    a, b = rng.normal(2, 1, (300, 4)), rng.normal(0, 1, (300, 4))
    assert perm_pvalues(a, b).min() >= min_p("perm", 4) - 1e-15
    assert boschloo_table(4).min() == pytest.approx(min_p("boschloo", 4))
    # the figures: 2 seeds cannot go below 1/3 (perm) or 1/2 (signflip); 5 seeds: 2/252, 2/32
    assert (min_p("perm", 2), min_p("signflip", 2)) == (pytest.approx(1 / 3), 0.5)
    assert (min_p("perm", 5), min_p("signflip", 5)) == (pytest.approx(2 / 252), 0.0625)
    with pytest.raises(ValueError):
        min_p("t", 3)
    with pytest.raises(ValueError):
        min_p("signflip", 3, 4)
