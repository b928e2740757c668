"""Lan-DeMets spending and group-sequential boundaries against published values and a Monte-Carlo
of Brownian motion; the t-calibrated levels against an independent null simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ablate.stats import spending as SP

EQUAL5 = np.arange(1, 6) / 5


def test_spending_functions_match_their_formulas_and_rpact():
    t = np.array([0.0, 0.2, 0.5, 1.0])
    assert SP.obrien_fleming(t, 0.05, sides=1) == pytest.approx(
        [0.0, *(2 - 2 * stats.norm.cdf(stats.norm.ppf(0.975) / np.sqrt(t[1:])))])
    assert SP.spent(1.0, 0.05, "obf") == pytest.approx(0.05) and SP.spent(1.0, 0.05, "pocock") == pytest.approx(0.05)
    assert SP.pocock(t, 0.05) == pytest.approx(0.05 * np.log(1 + (math.e - 1) * t))
    # rpact tests/testthat/test-f_design_group_sequential.R (one-sided): asOF alpha .13 at (.4, .75, 1)
    # alphaSpent 0.016665509, 0.080406163, 0.13; asP alpha .025 at (.4, .7) alphaSpent 0.013078429, 0.0197432
    assert SP.spent(np.array([0.4, 0.75, 1]), 0.13, "obf", sides=1) == pytest.approx(
        [0.016665509, 0.080406163, 0.13], abs=1e-8)
    assert SP.spent(np.array([0.4, 0.7]), 0.025, "pocock") == pytest.approx([0.013078429, 0.0197432], abs=1e-8)
    with pytest.raises(ValueError, match="spending"):
        SP.spent(0.5, 0.05, "haybittle")


def test_one_sided_boundaries_match_rpact():
    # rpact test-f_design_group_sequential.R, criticalValues of getDesignGroupSequential(...)
    assert SP.boundaries([0.4, 0.7], 0.025, "pocock", sides=1) == pytest.approx([2.223875, 2.3050796], abs=2e-6)
    assert SP.boundaries([0.4, 0.75, 1], 0.13, "obf", sides=1) == pytest.approx(
        [2.1280732, 1.4368565, 1.2468994], abs=2e-6)


def test_two_sided_boundaries_match_published_tables():
    # GroupSeq inst/tinytest/test-legacy_code.R: two-sided OBF-type, 4 equal looks, alpha .05 (its own
    # numerics agree with rpact to ~4e-5, so the tolerance is theirs)
    assert SP.boundaries(np.arange(1, 5) / 4, 0.05, "obf") == pytest.approx(
        [4.332634, 2.963129, 2.35902, 2.014057], abs=5e-5)
    # the usual table for 5 equal looks, alpha .05 two-sided (Lan-DeMets program, gsDesign test.type=2)
    assert SP.boundaries(EQUAL5, 0.05, "obf") == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=6e-4)
    pocock = SP.boundaries(EQUAL5, 0.05, "pocock")
    assert pocock[:4] == pytest.approx([2.438, 2.427, 2.410, 2.397], abs=6e-4)
    # symmetric two-sided at alpha is the one-sided design at alpha/2 up to double crossings (~1e-6)
    assert pocock == pytest.approx(SP.boundaries(EQUAL5, 0.025, "pocock", sides=1), abs=1e-4)
    assert pocock[4] == pytest.approx(2.386, abs=6e-4)


@pytest.mark.parametrize("kind", SP.KINDS)
@pytest.mark.parametrize("fractions", [tuple(EQUAL5), tuple(np.arange(3, 11) / 10), (0.3, 0.5, 0.7, 0.9, 1.0)])
def test_boundaries_spend_alpha_in_a_brownian_motion_monte_carlo(kind, fractions):
    reps, alpha = 200_000, 0.05
    c = SP.boundaries(fractions, alpha, kind)
    exits = SP.crossing_mc(fractions, c, reps=reps, seed=11)
    increments = np.diff(np.concatenate([[0.0], SP.spent(np.array(fractions), alpha, kind)]))
    se = np.sqrt(increments * (1 - increments) / reps)
    assert np.all(np.abs(exits - increments) <= 4 * se + 1e-5)
    assert abs(exits.sum() - alpha) <= 3 * math.sqrt(alpha * (1 - alpha) / reps)


def test_nominal_levels_are_the_boundaries_tail_and_cached():
    f = (0.3, 0.6, 1.0)
    lv = SP.nominal_levels(f, 0.05, "obf")
    assert lv == pytest.approx(2 * stats.norm.sf(SP.boundaries(f, 0.05, "obf")), rel=1e-9)
    assert SP.nominal_levels(list(f), 0.05, "obf") is lv  # cached by (fractions, alpha, kind, sides)
    assert lv[-1] < 0.05 and all(a < b for a, b in zip(lv, lv[1:]))
    with pytest.raises(ValueError, match="increasing"):
        SP.boundaries([0.5, 0.4], 0.05)


def test_t_levels_hold_alpha_where_matched_levels_do_not():
    # an independent null simulation (not the calibration's seed): paired t p-values at looks 3..10
    counts, alpha, reps = (3, 4, 5, 6, 7, 8, 9, 10), 0.05, 200_000
    p = SP.t_pvalues(np.random.default_rng(5).standard_normal((reps, 10)), counts)
    se = math.sqrt(alpha * (1 - alpha) / reps)
    matched = (p <= np.array(SP.nominal_levels(np.array(counts) / 10, alpha))).any(1).mean()
    calibrated = (p <= np.array(SP.t_levels(counts, alpha))).any(1).mean()
    print(f"\nerror of the sequential t at alpha {alpha}: matched nominal levels {matched:.4f}, t_levels {calibrated:.4f}")
    assert matched > alpha + 5 * se  # the p-matched t overshoots at a handful of seeds
    assert abs(calibrated - alpha) <= 3 * se + 0.02 * alpha  # calibration: MC error of its own 500k paths
