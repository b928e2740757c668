"""Before compute is spent: can the planned seeds decide anything?

For each family of comparisons (m tests, n seeds a cell) :func:`check_family` states

- the smallest p-value the family's exact test can reach with n seeds (for two-valued outcomes;
  :func:`ablate.stats.exact.min_p`), and whether it is below the level the first step of the
  correction needs (α/m for Holm and Bonferroni, α for Benjamini-Hochberg and none): when it is
  not, no two-valued comparison of the family can ever be called better or worse, whatever the
  runs show;
- the fewest seeds at which that becomes possible;
- the seeds a cell for 80% power at that level under the two outcome models the planning
  assumes (``planning:`` in the study): two-valued with learn rates p_a vs p_b, and normal with
  Δ = the study's margin and spread sd (:func:`ablate.stats.power.seeds_for_power`, simulated).

A plan whose families cannot decide is refused by the runner unless the study is marked
``screening: true`` or ``--allow-undecidable`` is given.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

MAX_PLAN_SEEDS = 60


@dataclass(frozen=True)
class FamilyCheck:
    family: str
    m: int
    n: int  # seeds a cell planned (the cap, for sequential seeds)
    level: float  # the level the smallest p must beat
    test: str  # the two-valued test
    min_p: float
    decidable: bool
    seeds_to_decide: int | None  # fewest seeds with min_p < level
    seeds_power_two_valued: int | None
    seeds_power_normal: int | None
    powered: bool = True  # whether the power was simulated (the start of a run skips it: --dry-run has it)

    def line(self) -> str:
        ok = "can decide" if self.decidable else "CANNOT decide two-valued outcomes"
        need = "" if self.decidable else f"; exact tests need ≥ {self.seeds_to_decide} seeds a cell"
        pw = (f"80% power needs {_n(self.seeds_power_two_valued)} seeds (two-valued) / "
              f"{_n(self.seeds_power_normal)} (normal)") if self.powered else "power: see --dry-run"
        return (f"{self.family}: m = {self.m}, {self.n} seeds, {self.test} smallest p = {self.min_p:.2g} vs level "
                f"{self.level:.2g}: {ok}{need}; {pw}")


def _n(x: int | None) -> str:
    return f">{MAX_PLAN_SEEDS}" if x is None else str(x)


def first_step_level(alpha: float, m: int, correction: str) -> float:
    """The level the smallest p-value of a family must beat for the correction to reject anything."""
    return alpha if correction in ("none", "bh") else alpha / max(1, m)


def seeds_to_decide(test: str, level: float, cap: int = MAX_PLAN_SEEDS) -> int | None:
    """Fewest seeds a cell at which ``test`` can reach a p-value below ``level``."""
    from .exact import min_p

    for n in range(2, cap + 1):
        if min_p(test, n, n) < level:
            return n
    return None


def check_family(family: str, m: int, n: int, alpha: float, correction: str, margin: float, sd: float,
                 learn_rates: tuple[float, float], test: str = "perm", power: bool = True) -> FamilyCheck:
    """One family's feasibility (``margin`` and ``sd`` in fractions)."""
    from .exact import min_p

    level = first_step_level(alpha, m, correction)
    mp = min_p(test, n, n) if n >= 2 else 1.0
    need = seeds_to_decide(test, level)
    two, norm = _power_seeds(test, tuple(learn_rates), level, margin, sd) if power else (None, None)
    return FamilyCheck(family, m, n, level, test, mp, mp < level, need, two, norm, power)


@functools.lru_cache(maxsize=256)
def _power_seeds(test: str, learn_rates: tuple, level: float, margin: float, sd: float) -> tuple:
    """(seeds for 80% power under the two-valued model, under the normal model), simulated; cached
    (the families of a task grid share them)."""
    from . import power as pw

    two = pw.seeds_for_power(test, pw.TwoValued(*learn_rates), level, target=0.8, max_seeds=MAX_PLAN_SEEDS, reps=1000)
    norm = pw.seeds_for_power("paired_t", pw.Normal(margin, sd), level, target=0.8, max_seeds=MAX_PLAN_SEEDS,
                              reps=1000)
    return two, norm
