"""summarize / welch_diff against scipy.stats, computed independently here."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

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
