"""The statistics pre-flight of a run: before any trial, can the planned seeds decide the study's
questions? (:mod:`ablate.stats.feasibility` per family of comparisons.)

``--dry-run`` and the start of every run print one line per family; a plan in which some family
cannot decide two-valued outcomes (no exact test can reach the corrected level with the planned
seeds) is refused with exit 2 before anything is written, naming the seeds that would work,
unless the study says ``screening: true``, the command line passes ``--allow-undecidable``, or
the environment sets ``ABLATE_ALLOW_UNDECIDABLE=1`` (for scripted test runs).
"""
from __future__ import annotations

import os
import sys

from ..config.errors import StudyError
from ..stats import ALPHA
from ..stats.feasibility import FamilyCheck, check_family
from ..study.designs import design_of, factorial_effects

ENV_ALLOW = "ABLATE_ALLOW_UNDECIDABLE"


def family_sizes(study) -> dict[str, int]:
    """Comparisons per family of the study's grid under its design (``comparisons:``; search studies:
    none); a factorial's main effects and two-factor interactions are one family, ``factorial``,
    each a paired contrast over the seeds, planned as one comparison of two cells at those seeds."""
    if study.search:  # a point search's confirmation: its top points against the baseline, one family
        confirm = study.search.get("confirm") if study.point_search() else None
        return {"question": min(confirm["top"], study.search["n_trials"])} if confirm else {}
    sizes: dict[str, int] = {}
    for c, _ in study.comparison_pairs():
        fam = study.family_of(c)
        sizes[fam] = sizes.get(fam, 0) + 1
    if design_of(study) == "factorial":
        sizes["factorial"] = len(factorial_effects(study))
    return sizes


def checks(study, power: bool = True) -> list[FamilyCheck]:
    """One :class:`FamilyCheck` per family, at the seeds a cell the plan can reach (sequential seeds:
    the cap, judged at the family level; the spending makes the last look's level a little lower)."""
    n = study.sequential["max"] if study.sequential else len(study.seeds)
    if study.search and study.search.get("confirm"):
        n = len(study.search["confirm"]["seeds"])  # verdicts come from the confirmation's fresh seeds
    plan = study.analysis or {}
    # sequential seeds test with the exact sign-flip at every look (ablate.stats.decide.exact_pvalue)
    test = "signflip" if study.sequential else plan.get("two_valued_test", "perm")
    return [check_family(fam, m, n, ALPHA, study.correction, study.margin / 100, plan.get("sd", 1.0) / 100,
                         tuple(plan.get("learn_rates", (0.5, 1.0))), test, power)
            for fam, m in family_sizes(study).items()]


def print_checks(found: list[FamilyCheck], out=None) -> None:
    out = out or sys.stdout
    if found:
        print("  can these seeds decide? (per family of comparisons; power under planning: assumptions)", file=out)
    for f in found:
        print(f"    {f.line()}", file=out)


def refusal(study, found: list[FamilyCheck], allow: bool) -> StudyError | None:
    """The exit-2 error for a plan with an undecidable family, or None when it may run."""
    bad = [f for f in found if not f.decidable]
    if not bad or allow or (study.analysis or {}).get("screening") or os.environ.get(ENV_ALLOW) == "1":
        return None
    need = max((f.seeds_to_decide or 0) for f in bad)
    if study.search:  # a point search's verdicts come from its confirmation seeds
        return StudyError(str(study.path), "search.confirm.seeds",
                          f"with {bad[0].n} fresh seeds the confirmation cannot decide two-valued outcomes "
                          f"(m = {bad[0].m}: smallest p {bad[0].min_p:.2g} ≥ level {bad[0].level:.2g}); give "
                          f"search.confirm.seeds: {need} or more, or fewer points (search.confirm.top), or mark "
                          "the study screening: true (or pass --allow-undecidable).")
    names = "; ".join(f"{f.family} (m = {f.m}: smallest p {f.min_p:.2g} ≥ level {f.level:.2g})" for f in bad)
    return StudyError(str(study.path), "seeds",
                      f"with {bad[0].n} seeds a cell no exact test can decide two-valued outcomes in: {names}. "
                      f"At least {need} seeds a cell would let every family decide (80% power needs more: see "
                      "--dry-run). Raise seeds (e.g. seeds: "
                      f"{need} or {{start: {min(need, 5)}, max: {max(need, 10)}}}), split the families, or mark "
                      "the study screening: true (or pass --allow-undecidable) to run it as a screen whose "
                      "verdicts cannot be better or worse on two-valued outcomes.")
