"""Alpha spending for looks at accumulating seeds: the Lan-DeMets spending functions and the
group-sequential boundaries they define.

A study that adds seeds and looks again tests the same comparison K times. Lan & DeMets (1983)
let the chance of a false rejection accumulate along a spending function α(t) of the information
fraction t (here the seeds so far over the most a comparison can get): by look k the procedure
has spent α(t_k) of its level, and α(1) = α. The z-boundary c_k of look k solves

    P(|Z_j| < c_j for j < k, |Z_k| ≥ c_k) = α(t_k) - α(t_{k-1})     under H0,

where Z_k = W(t_k)/√t_k is the standardised cumulative sum (W a Brownian motion, so
Cov(Z_j, Z_k) = √(t_j/t_k)). The probabilities come from the Armitage, McPherson & Rowe (1969)
recursion, integrated numerically on a grid (Jennison & Turnbull 2000, ch. 19). The nominal
level of look k, p_k = 2(1 - Φ(c_k)), is what a look's p-value is compared with.

Pure functions of numbers (numpy and scipy); :mod:`ablate.stats.sequential` uses them.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import optimize, special
from scipy import stats as _st

KINDS = ("obf", "pocock")
_GRID = 201  # points of the integration grid per look (odd: Simpson's rule)
_FAR = 12.0  # where the grid stops when a side has no boundary (standard deviations of W(t))


def obrien_fleming(t, alpha: float, sides: int = 2):
    """O'Brien-Fleming-type spending (Lan & DeMets 1983), α(0) = 0, α(1) = α.

    One-sided: α(t) = 2 - 2Φ(z_{1-α/2}/√t). Two-sided, each side spends the one-sided function at
    α/2, so α(t) = 2·(2 - 2Φ(z_{1-α/4}/√t)): the convention of the Lan-DeMets program
    (Reboussin et al. 2000) and of GroupSeq and gsDesign's symmetric two-sided designs, whose
    published boundaries (4.877, 3.357, 2.680, 2.290, 2.031 for five equal looks at α = 0.05)
    it reproduces. It spends almost nothing early and ends near the fixed-sample test
    (O'Brien & Fleming 1979 is the boundary it imitates)."""
    t = np.asarray(t, dtype=float)
    z = _st.norm.isf(alpha / (2 * sides))
    with np.errstate(divide="ignore"):
        out = 2 * sides * _st.norm.sf(z / np.sqrt(np.where(t > 0, t, 1.0)))
    return np.where(t > 0, out, 0.0)


def pocock(t, alpha: float):
    """Pocock-type spending (Lan & DeMets 1983): α(t) = α·ln(1 + (e - 1)·t).

    Near-constant nominal levels over equally spaced looks, like Pocock's (1977) boundary."""
    t = np.asarray(t, dtype=float)
    return alpha * np.log1p((math.e - 1) * np.clip(t, 0.0, None))


def spent(t, alpha: float, kind: str = "obf", sides: int = 2):
    """α(t) of the spending function ``kind`` ("obf" or "pocock"): the level used up by fraction t
    (two-sided unless ``sides=1``; Pocock's is the same either way, being linear in α)."""
    if kind == "obf":
        return obrien_fleming(t, alpha, sides)
    if kind == "pocock":
        return pocock(t, alpha)
    raise ValueError(f"unknown spending function {kind!r}; valid: {', '.join(KINDS)}")


def _simpson(n: int, h: float) -> np.ndarray:
    """Simpson's-rule weights for n (odd) equally spaced points h apart."""
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * h / 3


def _exit(c: float, u: np.ndarray, mass: np.ndarray, t_prev: float, t: float, sides: int) -> float:
    """P(continue to look k-1, then |Z_k| ≥ c) (one-sided: Z_k ≥ c), from the grid ``u`` of W(t_{k-1})
    and ``mass`` = weight × sub-density there: ∫ f(u)·P(W(t) - u beyond ±c√t | increment ~ N(0, t - t_prev)) du."""
    sd, b = math.sqrt(t - t_prev), c * math.sqrt(t)
    out = _st.norm.sf((b - u) / sd)
    if sides == 2:
        out = out + _st.norm.cdf((-b - u) / sd)
    return float(mass @ out)


def _grid(c: float, t: float, sides: int) -> np.ndarray:
    """The continuation region of look k on the W scale: (-c√t, c√t), or (-∞, c√t) one-sided (cut at _FAR sd)."""
    far = _FAR * math.sqrt(t)
    hi = min(c * math.sqrt(t), far) if math.isfinite(c) else far
    lo = -hi if sides == 2 else -far
    return np.linspace(lo, hi, _GRID)


def boundaries(fractions: Sequence[float], alpha: float = 0.05, kind: str = "obf", sides: int = 2) -> np.ndarray:
    """Group-sequential z-boundaries c_1..c_K for looks at information fractions t_1 < ... < t_K ≤ 1.

    Look k rejects when |Z_k| ≥ c_k (``sides=1``: Z_k ≥ c_k), where c_k spends exactly
    α(t_k) - α(t_{k-1}) of the level given no earlier rejection (see the module docstring;
    Lan & DeMets 1983). The sub-density f_k of W(t_k) on the continuation region follows the
    Armitage-McPherson-Rowe recursion f_k(s) = ∫ f_{k-1}(u)·φ((s-u)/σ_k)/σ_k du,
    σ_k² = t_k - t_{k-1} (Jennison & Turnbull 2000, ch. 19), by Simpson's rule on a grid of the
    region; c_k is the root (Brent) of the exit probability minus the increment. A look that
    spends nothing gets c_k = inf.
    """
    t = np.asarray(fractions, dtype=float)
    if t.ndim != 1 or not len(t) or t[0] <= 0 or t[-1] > 1 + 1e-12 or np.any(np.diff(t) <= 0):
        raise ValueError(f"need increasing information fractions in (0, 1]; got {list(fractions)}")
    if not 0 < alpha < 1 or sides not in (1, 2):
        raise ValueError(f"need 0 < alpha < 1 and sides 1 or 2; got alpha={alpha}, sides={sides}")
    cum = spent(t, alpha, kind, sides)
    inc = np.diff(np.concatenate([[0.0], cum]))
    out = np.empty(len(t))
    u = mass = None
    t_prev = 0.0
    for k, (tk, a) in enumerate(zip(t, inc)):
        if u is None:  # first look: Z_1 ~ N(0, 1)
            c = _st.norm.isf(a / sides) if a > 0 else math.inf
        elif a <= 1e-15:
            c = math.inf
        else:
            c = optimize.brentq(lambda x: _exit(x, u, mass, t_prev, tk, sides) - a, 0.0, 40.0, xtol=1e-12)
        out[k] = c
        s = _grid(c, tk, sides)
        w = _simpson(len(s), s[1] - s[0])
        if u is None:
            f = _st.norm.pdf(s / math.sqrt(tk)) / math.sqrt(tk)
        else:
            sd = math.sqrt(tk - t_prev)
            f = _st.norm.pdf((s[:, None] - u[None, :]) / sd) @ mass / sd
        u, mass, t_prev = s, w * f, tk
    return out


@lru_cache(maxsize=4096)
def _levels(fractions: tuple, alpha: float, kind: str, sides: int) -> tuple:
    c = boundaries(fractions, alpha, kind, sides)
    return tuple(float(sides * _st.norm.sf(x)) if math.isfinite(x) else 0.0 for x in c)


def nominal_levels(fractions: Sequence[float], alpha: float = 0.05, kind: str = "obf", sides: int = 2) -> tuple:
    """The nominal p-value level of each look, p_k = 2(1 - Φ(c_k)) (one-sided: 1 - Φ(c_k)), for the
    :func:`boundaries` of ``fractions``: a look rejects when its p-value ≤ p_k. Cached by
    (fractions, alpha, kind, sides)."""
    return _levels(tuple(float(x) for x in fractions), float(alpha), kind, int(sides))


def crossing_mc(fractions: Sequence[float], c: Sequence[float], reps: int = 200_000, seed: int = 0,
                drift: float = 0.0, sides: int = 2) -> np.ndarray:
    """Monte-Carlo exit probabilities per look of the boundaries ``c``: Z_k = W(t_k)/√t_k with W a
    Brownian motion (plus ``drift``·t), stopped at the first |Z_k| ≥ c_k. A check on :func:`boundaries`
    independent of its recursion."""
    t = np.asarray(fractions, dtype=float)
    rng = np.random.default_rng(seed)
    w = np.cumsum(rng.normal(size=(reps, len(t))) * np.sqrt(np.diff(np.concatenate([[0.0], t]))), axis=1)
    z = (w + drift * t) / np.sqrt(t)
    hit = (np.abs(z) if sides == 2 else z) >= np.asarray(c, dtype=float)
    first = np.where(hit.any(1), hit.argmax(1), -1)
    return np.array([(first == k).mean() for k in range(len(t))])


# --- the paired t test at the looks -------------------------------------------------------------

_CAL_SEED = 20_240_601


def t_pvalues(d: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Two-sided paired t p-values of H0: mean 0 at each look: ``d`` (reps, n_max, ...) per-seed
    differences, look k on the first counts[k] of them; returns (reps, K, ...). Student (1908):
    t = d̄/(s/√n), p = 2·P(T_{n-1} > |t|); s = 0 gives p = 1 for d̄ = 0 and 0 otherwise."""
    c1, c2 = np.cumsum(d, 1), np.cumsum(d * d, 1)
    out = []
    for n in counts:
        mean = c1[:, n - 1] / n
        var = np.maximum(c2[:, n - 1] - n * mean ** 2, 0.0) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2 * special.stdtr(n - 1, -np.abs(mean) / np.sqrt(var / n))
        out.append(np.where(var > 0, p, np.where(mean == 0, 1.0, 0.0)))
    return np.stack(out, 1)


_CAL_REPS = 500_000


@lru_cache(maxsize=6)
def _null_paths(counts: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Seeded normal null paths: the t p-values and the known-variance z p-values at the looks (float32)."""
    rng = np.random.default_rng(_CAL_SEED)
    pt, pz = [], []
    for _ in range(10):  # in chunks, to keep memory small
        d = rng.standard_normal((_CAL_REPS // 10, counts[-1]))
        z = np.cumsum(d, 1)[:, [n - 1 for n in counts]] / np.sqrt(counts)
        pt.append(t_pvalues(d, counts).astype(np.float32))
        pz.append((2 * _st.norm.sf(np.abs(z))).astype(np.float32))
    return np.concatenate(pt), np.concatenate(pz)


@lru_cache(maxsize=4096)
def _t_levels(counts: tuple, alpha: float, kind: str) -> tuple:
    fr = tuple(n / counts[-1] for n in counts)
    pt, pz = _null_paths(counts)

    def error(b: float) -> float:  # the t test's chance of any rejection at the levels of b, minus alpha
        lv = np.array(nominal_levels(fr, b, kind), dtype=np.float32)
        return b + float(np.mean((pt <= lv).any(1)) - np.mean((pz <= lv).any(1))) - alpha

    b = optimize.brentq(error, alpha / 2, alpha, xtol=alpha * 1e-3) if error(alpha) > 0 else alpha
    return nominal_levels(fr, b, kind)


def t_levels(counts: Sequence[int], alpha: float = 0.05, kind: str = "obf") -> tuple:
    """Nominal levels for the paired t test at looks after counts[k] seeds, calibrated so that its
    chance of any rejection under H0 is ``alpha``.

    Comparing t p-values with :func:`nominal_levels` (matching significance levels, Jennison &
    Turnbull 2000, §11.4) keeps each look's level but not the total at a handful of seeds: the
    variance is re-estimated at every look, the looks are less correlated than Brownian motion,
    and the error grows by 8-24% from 3 to 10 seeds (measured). So the levels are the
    :func:`nominal_levels` of a smaller b ≤ alpha, found by Brent's method so that a seeded
    simulation of normal null paths (the t test's law under H0 is free of the mean and σ) gives
    error alpha; the z test on the same paths, whose error is exactly b, is the control variate
    (the estimate is b + mean(t crosses) - mean(z crosses)). Deterministic and cached."""
    return _t_levels(tuple(int(n) for n in counts), float(alpha), kind)
