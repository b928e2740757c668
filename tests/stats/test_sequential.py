"""Sequential seeding with alpha spending: family-wise error under normal and two-valued nulls by
seeded vectorised simulation, power against the fixed design and Bonferroni over looks, Holm as a
graphical procedure, the replay reproducing the runner, and the pluggable p-value."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ablate.stats import sequential as Q
from ablate.stats.spending import nominal_levels, t_levels, t_pvalues

ALPHA, REPS = 0.05, 4000
SE = math.sqrt(ALPHA * (1 - ALPHA) / REPS)


def _differences(rng, reps, m, null, rho, delta=0.0, seeds=10):
    """(reps, seeds, m) per-seed differences cell_i - baseline; the m + 1 cells of a seed share a
    Gaussian factor with weight √rho. two-valued: a seed learns when its latent is > 0
    (probability 0.5) and scores N(0.89, 0.01), else N(0.42, 0.007) (the synthetic tasks' modes)."""
    z = math.sqrt(rho) * rng.normal(size=(reps, seeds, 1)) + math.sqrt(1 - rho) * rng.normal(size=(reps, seeds, m + 1))
    if null == "normal":
        x = z
    else:
        x = np.where(z > 0, rng.normal(0.89, 0.01, z.shape), rng.normal(0.42, 0.007, z.shape))
    return x[..., 1:] + delta - x[..., :1]


def _rejections(p, counts, level):
    state, look, _ = Q.spend_looks(len(counts), p.shape[2], level, lambda k, need: p[:, k], reps=len(p))
    return state == Q.REJECTED, look


def _sign_pvalues(d, counts):
    """Exact two-sided sign test of each look (valid for any null symmetric about 0), vectorised."""
    pos = np.cumsum(d > 0, 1)
    out = []
    for n in counts:
        k = pos[:, n - 1]
        out.append(np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(k, n, 0.5), stats.binom.sf(k - 1, n, 0.5))))
    return np.stack(out, 1)


@pytest.mark.parametrize("null", ["normal", "two-valued"])
def test_family_wise_error_of_sequential_seeding_stays_at_alpha(null):
    """Normal nulls: paired t at the t-calibrated levels. Two-valued nulls: the paired t is not a
    valid test there at 3-5 seeds (issue 28), so the asserted rate is the exact sign test's at the
    boundaries' own levels; the t's is printed beside it."""
    rows = []
    for start, step in ((3, 1), (4, 2), (5, 1)):
        counts = Q.look_counts(start, 10, step)
        fr = tuple(n / 10 for n in counts)
        for rho in (0.0, 0.5):
            for m in (1, 3, 10):
                rng = np.random.default_rng([start, step, m, int(10 * rho), null == "normal"])
                d = _differences(rng, REPS, m, null, rho)
                t = _rejections(t_pvalues(d, counts), counts, lambda j: t_levels(counts, ALPHA / j))[0].any(1).mean()
                sign = math.nan
                if null != "normal":
                    sign = _rejections(_sign_pvalues(d, counts), counts,
                                       lambda j: nominal_levels(fr, ALPHA / j))[0].any(1).mean()
                rows.append((rho, start, step, m, t, sign))
    print(f"\n{null} nulls, FWER of OBF spending + Holm ({REPS} reps, bound {ALPHA + 3 * SE:.4f}):")
    for rho, start, step, m, t, sign in rows:
        print(f"  rho {rho} start {start} step {step} m {m:2d}: paired t {t:.4f}" +
              ("" if math.isnan(sign) else f", sign test {sign:.4f}"))
    asserted = [t for *_, t, _ in rows] if null == "normal" else [s for *_, s in rows]
    assert all(f <= ALPHA + 3 * SE for f in asserted)


def test_power_at_delta_sigma_obf_beats_bonferroni_over_looks():
    # one comparison, δ = σ of the per-seed differences, seeds 3..10 one at a time
    reps, counts = 20_000, Q.look_counts(3, 10)
    p = t_pvalues(np.random.default_rng(7).normal(1.0, 1.0, (reps, 10, 1)), counts)
    fixed = (p[:, -1, 0] <= ALPHA).mean()
    power = {kind: _rejections(p, counts, lambda j, kind=kind: t_levels(counts, ALPHA / j, kind))[0].mean()
             for kind in ("obf", "pocock")}
    bonferroni = _rejections(p, counts, lambda j: [ALPHA / len(counts)] * len(counts))[0].mean()
    _, look = _rejections(p, counts, lambda j: t_levels(counts, ALPHA / j))
    seeds = np.where(look[:, 0] >= 0, np.array(counts)[look[:, 0]], 10).mean()
    print(f"\npower at δ = σ (seeds 3..10, {reps} reps): fixed 10 seeds {fixed:.3f}, OBF spending {power['obf']:.3f} "
          f"(mean seeds {seeds:.2f}), Pocock spending {power['pocock']:.3f}, Bonferroni over looks {bonferroni:.3f}")
    assert power["obf"] > bonferroni + 0.1 and power["pocock"] > bonferroni
    assert power["obf"] <= fixed + 0.01 and seeds < 9


def test_holm_passes_a_rejected_level_on_within_the_look():
    # two hypotheses at one look: p1 clears α/2, p2 only clears α/1 once p1 is rejected
    levels = {1: [0.05], 2: [0.025]}
    p = np.array([[[0.01, 0.04]]])
    state, look, nominal = Q.spend_looks(1, 2, levels.__getitem__, lambda k, need: p[:, k])
    assert (state == Q.REJECTED).all() and (look == 0).all() and nominal.tolist() == [[0.025, 0.05]]
    p = np.array([[[0.03, 0.04]]])  # nothing clears α/2: nothing is rejected
    state, _, nominal = Q.spend_looks(1, 2, levels.__getitem__, lambda k, need: p[:, k])
    assert (state == Q.OPEN).all() and nominal.tolist() == [[0.025, 0.025]]


def _runner(values, pairs, order, start, max_seeds, **kw):
    """The runner's loop: a look whenever every wanted seed is done, the seeds it asks for added."""
    done = {c: [] for c in values}
    history = []
    while True:
        have = {c: {s: values[c][s] for s in done[c]} for c in values}
        look = Q.sequential_look(have, done, pairs, 0.01, ALPHA, "holm", start, max_seeds, 1, order, **kw)
        history.append(look)
        if not look.new:
            return done, history
        for c, seeds in look.new.items():
            done[c] = done[c] + seeds


def test_replay_reproduces_the_runner_and_decisions_never_change():
    rng = np.random.default_rng(13)
    order = [7, 3, 11, 5, 2, 9, 0, 4, 8, 6]
    base = {s: 0.5 + rng.normal(0, 0.01) for s in order}
    effects = {"clear": (0.08, 0.01), "null": (0.0, 0.002), "noisy": (0.005, 0.03), "small": (0.015, 0.01)}
    values = {"base": base, **{c: {s: base[s] + mu + rng.normal(0, sd) for s in order} for c, (mu, sd) in effects.items()}}
    pairs = [(c, "base") for c in effects]
    done, history = _runner(values, pairs, order, 3, 10)
    r = Q.replay(values, pairs, order, 3, 10, 1, ALPHA, "obf", margin=0.01)
    assert r.decisions == history[-1].decisions and r.seeds == {c: len(s) for c, s in done.items()}
    assert r.trials == sum(map(len, done.values())) and r.saved == 50 - r.trials and 0 < r.spent <= ALPHA
    assert r.decisions[("clear", "base")].label == "better" and r.decisions[("null", "base")].label == "equivalent"
    for look in history:  # a decision, once taken, is the same at every later look
        for pair, d in look.decisions.items():
            if d.look is not None:
                assert r.decisions[pair] == d
    assert all(len(done[c]) <= 10 for c in done) and done["noisy"] == order[:10]


def test_a_pair_without_values_is_given_up_once_its_seeds_are_done():
    look = Q.sequential_look({"base": {0: 0.5, 1: 0.5, 2: 0.5}, "x": {0: 0.4}}, {"base": [0, 1, 2], "x": [0, 1, 2]},
                             [("x", "base")], 0.01, ALPHA, "holm", 3, 10)
    assert look.decisions[("x", "base")].stop == "no test" and look.decided[("x", "base")] and look.new == {}
    look = Q.sequential_look({"base": {0: 0.5}, "x": {}}, {"base": [0], "x": []}, [("x", "base")], 0.01, ALPHA,
                             "holm", 3, 10)
    assert look.new == {"base": [1, 2], "x": [0, 1, 2]} and look.index == -1


def test_the_pvalue_parameter_is_honoured():
    values = {"base": {s: 0.5 for s in range(10)}, "x": {s: 0.5 + 0.001 * (s % 3) for s in range(10)}}
    calls = []

    def always(p):
        def f(a, b):
            calls.append((len(a), len(b)))
            return p
        return f

    r = Q.replay(values, [("x", "base")], None, 3, 10, pvalue=always(0.0))
    assert r.decisions[("x", "base")].look == 0 and r.decisions[("x", "base")].label == "better" and calls[0] == (3, 3)
    r = Q.replay(values, [("x", "base")], None, 3, 10, pvalue=always(1.0))
    assert r.decisions[("x", "base")].stop == "max" and r.seeds == {"base": 10, "x": 10}


def test_a_pluggable_welch_test_keeps_the_error_through_replay():
    # a small end-to-end simulation through replay with scipy's Welch test as the p-value (z-matched levels)
    rng = np.random.default_rng(17)
    reps, wrong = 200, 0
    welch = lambda a, b: float(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)  # noqa: E731
    for _ in range(reps):
        values = {c: dict(enumerate(rng.normal(0.5, 0.02, 10))) for c in ("base", "x", "y")}
        r = Q.replay(values, [("x", "base"), ("y", "base")], None, 4, 10, 2, ALPHA, "obf", pvalue=welch)
        wrong += any(d.label in ("better", "worse") for d in r.decisions.values())
    assert wrong / reps <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
