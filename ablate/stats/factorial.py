"""Two-level factorial designs over k switches: the runs, the aliasing of a fraction, and main
effects and two-factor interactions as paired contrasts over seeds, decided by
:func:`ablate.stats.decide.decide_family`.

Each factor has two levels, coded -1 (the first value the study lists) and +1 (the second). A full
2^k design runs every combination; a regular fraction 2^(k-p) keeps the runs that satisfy p
generators, each "G = s·F1·F2·…" (G's level is s times the product of the listed factors'
levels; s = ±1). Multiplying every generator by its left side gives the words I = s·G·F1·F2·…;
the defining relation is every product of those words, the resolution is the length of its
shortest word, and an effect E is aliased with E·W for every word W (squares cancel): what the
fraction estimates as E is E ± its aliases (Box, Hunter & Hunter 2005, ch. 6; Montgomery 2017,
ch. 8). A resolution-V fraction aliases main effects with interactions of four or more factors
and two-factor interactions with interactions of three or more.

An effect's contrast is the product of its factors' columns; its estimate is the mean over the
runs where the contrast is +1 minus the mean where it is -1 (for a main effect: the switch's
second level minus its first, averaged over the other factors; for A×B: half of A's effect at B's
second level minus A's effect at B's first). Over seeds, the contrast is a paired comparison: for
seed s, a_s = the mean of the + runs at s and b_s = the mean of the - runs at s, over the seeds
every run of the design finished, so a - b is that seed's contrast. Its outcome kind is the
pooled kind of every run's values (two-valued when some seeds learned and some did not), so the
decisive engine tests it as it tests a comparison of two cells: the exact permutation test of the
a_s against the b_s (or the sign-flip of a_s - b_s) on two-valued outcomes, the paired t (Yuen's
with an outlier) on unimodal ones, the family corrected together (Holm by default), the printed
interval the inverted exact test or the t interval at 1 - α/m. Boschloo's test needs learned
counts, which a mean over runs has not: a factorial asked for it uses the permutation test.
Pure functions of numbers.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from .decide import Comparison, Decision, decide_family
from .outcomes import Threshold, outcome_kind

Generator = tuple  # (generated factor, (factors it is the product of), sign ±1)


@dataclass(frozen=True)
class Effect:
    """A main effect (one factor) or an interaction (several), with its aliases in the design."""
    factors: tuple  # factor names, in the design's order
    aliases: tuple = ()  # ((sign, factor names), ...) shortest first; () in a full design

    @property
    def name(self) -> str:
        return "×".join(self.factors)

    def alias_text(self) -> str:
        """"= -B×C×D×E" style: the effects this estimate cannot be told from (empty without any)."""
        return " ".join(f"= {'-' if s < 0 else ''}{'×'.join(w)}" for s, w in self.aliases)


def _word(factors: Sequence[str], names: frozenset) -> tuple:
    return tuple(f for f in factors if f in names)


def defining_relation(factors: Sequence[str], generators: Sequence[Generator]) -> list[tuple[int, tuple]]:
    """Every word of the fraction's defining relation as (sign, factor names), shortest first:
    the products of the generator words I = s·G·F1·F2·… taken one, two, … at a time."""
    words = [(int(s), frozenset((g, *frm))) for g, frm, s in generators]
    found: dict[frozenset, int] = {}
    for r in range(1, len(words) + 1):
        for combo in itertools.combinations(words, r):
            sign, word = 1, frozenset()
            for s, w in combo:
                sign, word = sign * s, word ^ w
            found[word] = sign
    order = {f: i for i, f in enumerate(factors)}
    return sorted(((s, _word(factors, w)) for w, s in found.items()),
                  key=lambda t: (len(t[1]), [order[f] for f in t[1]]))


def resolution(factors: Sequence[str], generators: Sequence[Generator]) -> int | None:
    """The fraction's resolution (its shortest defining word's length); None for a full design."""
    words = defining_relation(factors, generators)
    return min(len(w) for _, w in words) if words else None


def in_fraction(levels: Mapping[str, int], generators: Sequence[Generator]) -> bool:
    """Whether a run (factor -> ±1) belongs to the fraction the generators define."""
    return all(levels[g] == s * math.prod(levels[f] for f in frm) for g, frm, s in generators)


def effects(factors: Sequence[str], generators: Sequence[Generator] = (), order: int = 2) -> list[Effect]:
    """The main effects, then the interactions of 2 … ``order`` factors, each with its aliases."""
    words = defining_relation(factors, generators)
    pos = {f: i for i, f in enumerate(factors)}
    out = []
    for r in range(1, order + 1):
        for combo in itertools.combinations(factors, r):
            own = frozenset(combo)
            aliases = sorted(((s, _word(factors, own ^ frozenset(w))) for s, w in words),
                             key=lambda t: (len(t[1]), [pos[f] for f in t[1]]))
            out.append(Effect(combo, tuple(aliases)))
    return out


def contrast(levels: Sequence[Mapping[str, int]], effect: Effect) -> list[int]:
    """The effect's column: per run, the product of its factors' levels."""
    col = [math.prod(run[f] for f in effect.factors) for run in levels]
    if abs(sum(col)) == len(col):
        raise ValueError(f"{effect.name} is constant over the runs (aliased with the mean): not estimable")
    return col


def halves(values: Sequence[Mapping[int, float]], column: Sequence[int]) -> tuple[dict, dict]:
    """({seed: mean of the + runs}, {seed: mean of the - runs}) over the seeds every run has."""
    seeds = sorted(set.intersection(*(set(v) for v in values))) if values else []
    plus = [v for v, c in zip(values, column) if c > 0]
    minus = [v for v, c in zip(values, column) if c < 0]
    return ({s: sum(v[s] for v in plus) / len(plus) for s in seeds},
            {s: sum(v[s] for v in minus) / len(minus) for s in seeds})


def pooled_kind(values: Sequence[Mapping[int, float]], threshold: Threshold) -> str:
    """The outcome kind of every run's values at the seeds all runs have (see the module docstring)."""
    seeds = set.intersection(*(set(v) for v in values)) if values else set()
    pooled = [v[s] for v in values for s in seeds]
    return outcome_kind(pooled, [], threshold) if pooled else "unclassified"


def decide_effects(values: Sequence[Mapping[int, float]], levels: Sequence[Mapping[str, int]],
                   effect_list: Sequence[Effect], threshold: Threshold, margin: float, alpha: float = 0.05,
                   correction: str = "holm", two_valued_test: str = "perm",
                   family: str = "factorial") -> list[Decision]:
    """Each effect decided as a paired contrast over seeds, the effects one family (``margin`` in
    fractions). ``values``: per run {seed: value}; ``levels``: per run {factor: ±1}."""
    kind = pooled_kind(values, threshold)
    comps = []
    for e in effect_list:
        a, b = halves(values, contrast(levels, e))
        comps.append(Comparison(e.name, "", a, b, family, threshold, kind=kind))
    test = "perm" if two_valued_test == "boschloo" else two_valued_test
    return decide_family(comps, margin, alpha, correction, two_valued_test=test, advice=False)
