"""The seeds advice's exact permutation counts by meeting in the middle (power.perm_pvalues_split)
are exact.perm_pvalues' p-values, value for value: continuous two-valued outcomes, near-ties and
exact ties (integer outcomes), at every n the advice enumerates."""
from __future__ import annotations

import numpy as np
import pytest

from ablate.stats import power as pw
from ablate.stats.exact import perm_pvalues


@pytest.mark.parametrize("n", range(2, 11))
def test_the_split_count_is_the_enumerated_one(n):
    rng = np.random.default_rng(n)
    rows = 60 if n >= 9 else 150
    for a, b in (pw.TwoValued(0.3, 0.8).sample(rng, rows, n),
                 pw.TwoValued(0.5, 0.5, floor_sd=1e-3, learned_sd=1e-3).sample(rng, rows, n),
                 (rng.integers(0, 3, (rows, n)).astype(float), rng.integers(0, 3, (rows, n)).astype(float)),
                 (np.zeros((2, n)), np.zeros((2, n)))):  # every value equal: every relabeling is as extreme
        assert np.array_equal(pw.perm_pvalues_split(a, b), perm_pvalues(a, b))


def test_the_advice_uses_it_from_mitm_from_seeds():
    rng = np.random.default_rng(0)
    a, b = pw.TwoValued(0.2, 0.9).sample(rng, 50, pw.MITM_FROM)
    assert np.array_equal(pw.pvalues("perm", a, b), perm_pvalues(a, b))
