"""Small-sample statistics for seeds: t intervals for a mean and for a difference of means."""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _st


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 when n == 1
    half_width: float  # 95% CI half width; nan when n < 2

    @property
    def ci(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width


def summarize(values: list[float], level: float = 0.95) -> Summary:
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, _st.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def welch_diff(a: list[float], b: list[float], level: float = 0.95) -> Summary:
    """mean(a) - mean(b) with a Welch t interval (unequal variances)."""
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        return Summary(min(sa.n, sb.n), sa.mean - sb.mean, math.nan, math.nan)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Summary(min(sa.n, sb.n), sa.mean - sb.mean, 0.0, 0.0)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    return Summary(min(sa.n, sb.n), sa.mean - sb.mean, se, _st.t.ppf(0.5 + level / 2, df) * se)
