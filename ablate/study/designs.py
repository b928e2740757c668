"""Which comparisons a study makes (``comparisons:``) and which cells are matched controls
(``controls:``); the schema is ``docs/study_files.md``.

- ``baseline`` (the default): each cell against its baseline (:meth:`Study.baseline_for`), in the
  families of :meth:`Study.family_of`;
- ``ladder``: each rung against the rung before it, in the order ``rungs:`` names them (by label
  or by setting as the report shows it; default: every cell in the study's order, per task when
  ``data.task`` is a factor), one family ``ladder``; the cells off the ladder and the first rung
  keep their baseline comparison;
- ``all_pairs``: every pair of cells, one family ``all pairs`` (each cell's pair with its baseline
  first, then the later cell against the earlier);
- ``factorial``: the grid is a 2^k design over k two-valued factors (``generators:`` a regular
  fraction of resolution V or more); its main effects and two-factor interactions are decided as
  paired contrasts over seeds (:mod:`ablate.stats.factorial`), one family ``factorial``; the
  references keep their baseline comparison.

``controls: {control: cell}`` declares a control cell as the matched control of another (the same
parameter count and nonlinearity without the mechanism under test): the report's parameter
warning (a comparison that changes the block's parameters by more than 5%) is answered by it.
"""
from __future__ import annotations

import itertools

from ..attention import MECHANISMS
from ..config.errors import StudyError, brief
from ..config.specs import expect_mapping, unknown_keys

DESIGNS = ("baseline", "ladder", "all_pairs", "factorial")
MIN_RESOLUTION = 5  # a fraction must keep main effects and two-factor interactions clear of each other
PARAMS_TOLERANCE = 0.05  # a comparison that moves the block's parameters by more than this needs a control


def comparisons_spec(raw: dict, where: str, factors: dict, search, sequential) -> dict:
    """``comparisons:`` and ``controls:`` checked against the study's factors (names of cells are
    resolved later, by :func:`resolve_names`)."""
    value = raw.get("comparisons", "baseline")
    spec = {"design": value} if isinstance(value, str) else expect_mapping(value, where, "comparisons")
    unknown_keys(spec, ("design", "rungs", "generators"), where, "comparisons.")
    design = spec.get("design", "baseline")
    if design not in DESIGNS:
        raise StudyError(where, "comparisons", f"unknown design {brief(design)}; valid: {', '.join(DESIGNS)}.")
    if design != "baseline" and (search or raw.get("search") is not None):
        raise StudyError(where, "comparisons", f"{design} compares grid cells; a search compares each sampled "
                         "point with the best: remove comparisons: or the search.")
    if design == "factorial" and sequential:
        raise StudyError(where, "comparisons", "a factorial's contrasts use every run at the same seeds, so "
                         "sequential seeds ({start, max}) cannot add seeds to one comparison: give seeds as a list "
                         "or a count.")
    rungs = spec.get("rungs")
    if rungs is not None and (design != "ladder" or not isinstance(rungs, list) or len(rungs) < 2
                              or not all(isinstance(r, str) and r for r in rungs) or len(set(rungs)) != len(rungs)):
        raise StudyError(where, "comparisons.rungs", "a ladder's rungs: a list of at least two different cell names "
                         "(a label, or the setting as the report shows it, e.g. 'T=1, T_eval=1'), with design: "
                         f"ladder; got {brief(rungs)} with design {brief(design)}.")
    gens = _generators(spec.get("generators"), design, factors, where)
    if design == "factorial":
        _check_factorial(factors, gens, where)
    return {"design": design, "rungs": tuple(rungs) if rungs else None, "generators": gens,
            "controls": _controls(raw.get("controls"), where)}


def _generators(raw, design: str, factors: dict, where: str) -> tuple:
    """``generators: {E: A*B*C*D}`` (or ``-A*B*C*D``) as ((E, (A, B, C, D), sign), ...)."""
    if raw is None:
        return ()
    key = "comparisons.generators"
    if design != "factorial":
        raise StudyError(where, key, "generators define a fraction of a factorial: set design: factorial.")
    raw = expect_mapping(raw, where, key)
    out, generated = [], set(raw)
    for g, text in raw.items():
        word = text.strip() if isinstance(text, str) else ""
        sign = -1 if word.startswith("-") else 1
        names = [n.strip() for n in word.lstrip("-").split("*")]
        bad = [n for n in names if n not in factors or n in generated]
        if g not in factors or not word or bad or len(set(names)) != len(names):
            raise StudyError(where, f"{key}.{g}", f"expected a factor of the grid equal to a product of other, "
                             f"not generated factors, e.g. {g}: A*B*C (or -A*B*C); got {brief(g)}: {brief(text)}"
                             + (f" ({', '.join(map(brief, bad))} is no factor that can generate it)" if bad else "")
                             + f". Factors: {', '.join(factors)}.")
        out.append((g, tuple(names), sign))
    return tuple(out)


def _check_factorial(factors: dict, gens: tuple, where: str) -> None:
    """Every factor a list of two values, at least two factors, a fraction of resolution V or more."""
    bad = [k for k, v in factors.items() if not isinstance(v, list) or len(v) != 2]
    if len(factors) < 2 or bad:
        raise StudyError(where, "comparisons", "a factorial needs at least two factors of exactly two values each "
                         "(the first listed is the low level, the second the high one)"
                         + (f"; {', '.join(bad)} has {brief(factors[bad[0]])}" if bad else "") + ".")
    from ..stats import factorial as fac  # on use: the stats package imports scipy, which a plain study never needs

    res = fac.resolution(list(factors), gens)
    if res is not None and res < MIN_RESOLUTION:
        words = "; ".join(f"I = {'-' if s < 0 else ''}{'×'.join(w)}" for s, w in fac.defining_relation(list(factors), gens))
        raise StudyError(where, "comparisons.generators", f"this fraction has resolution {res} (defining relation "
                         f"{words}), so some main effects or two-factor interactions are aliased with each other; "
                         f"a factorial needs resolution {MIN_RESOLUTION} or more: fewer generators, or longer words.")


def _controls(raw, where: str) -> tuple:
    if raw is None:
        return ()
    raw = expect_mapping(raw, where, "controls")
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str) or k == v:
            raise StudyError(where, f"controls.{k}", "expected control cell: the cell it is matched to, both named "
                             f"by label or by setting as the report shows it; got {brief(k)}: {brief(v)}.")
    return tuple(raw.items())


# -- after the grid is resolved --------------------------------------------------------------------------

def find_cell(cells, name: str, where: str, key: str):
    """The cell a study file names: its label or its setting as the report shows it."""
    hit = next((c for c in cells if c.title() == name or c.setting() == name), None)
    if hit is None:
        listed = "; ".join(c.title() for c in list(cells)[:20])
        raise StudyError(where, key, f"{brief(name)} names no cell; cells are: {listed}.")
    return hit


def resolve_names(study, comparisons: dict) -> dict:
    """``comparisons`` with the rungs and controls as cell keys (``rung_keys``, ``control_keys``)."""
    where, cells = study.path, study.grid
    rungs = comparisons.get("rungs") or ()
    keys = tuple(find_cell(cells, r, where, f"comparisons.rungs[{i}]").key for i, r in enumerate(rungs))
    ctrl = tuple((find_cell(cells, a, where, f"controls.{a}").key, find_cell(cells, b, where, f"controls.{a}").key)
                 for a, b in comparisons.get("controls") or ())
    return {**comparisons, "rung_keys": keys, "control_keys": ctrl}


def design_of(study) -> str:
    return (getattr(study, "comparisons", None) or {}).get("design", "baseline")


def grid_assignments(study) -> list[dict]:
    """The grid's assignments in itertools.product order, the runs of the fraction only."""
    names = list(study.factors)
    gens = (study.comparisons or {}).get("generators") or ()
    out = []
    if gens:
        from ..stats import factorial as fac
    for idx in itertools.product(*(range(len(study.factors[n])) for n in names)):
        if gens and not fac.in_fraction({n: 1 if i else -1 for n, i in zip(names, idx)}, gens):
            continue
        out.append({n: study.factors[n][i] for n, i in zip(names, idx)})
    return out


def _task(study, cell):
    return cell.label_dict.get("data.task") if isinstance(study.factors.get("data.task"), list) else None


def ladder_previous(study, cells) -> dict:
    """cell key -> the rung before it, for every rung after the first (of its task)."""
    present = {c.key: c for c in cells}
    keys = (study.comparisons or {}).get("rung_keys") or ()
    rungs = [present[k] for k in keys if k in present] if keys else list(cells)
    out, last = {}, {}
    for c in rungs:
        t = _task(study, c)
        if t in last:
            out[c.key] = last[t]
        last[t] = c
    return out


def family(study, cell) -> str | None:
    """``cell``'s family under the study's design, or None where :meth:`Study.family_of`'s rule holds."""
    design = design_of(study)
    if design == "all_pairs":
        return "all pairs"
    if design == "ladder" and cell.key in ladder_previous(study, study.grid):
        task = _task(study, cell)
        return "ladder" if task is None else f"ladder, task={task}"
    return None


def comparison_pairs(study, cells) -> list[tuple]:
    """(cell, the cell it is compared with) for every comparison the design makes among ``cells``."""
    design, out = design_of(study), []
    prev = ladder_previous(study, cells) if design == "ladder" else {}
    for c in cells:
        if c.key in prev:
            out.append((c, prev[c.key]))
            continue
        if design == "factorial" and not study.is_reference(c):
            continue
        b = study.baseline_for(c, cells)
        if b is not None and b.key != c.key:
            out.append((c, b))
    if design == "all_pairs":
        seen = {frozenset((c.key, b.key)) for c, b in out}
        out += [(cells[j], cells[i]) for i, j in itertools.combinations(range(len(cells)), 2)
                if frozenset((cells[i].key, cells[j].key)) not in seen]
    return out


def design_pairs(study, cells: list, pairs: list) -> tuple[list, list]:
    """(the rows' (cell, partner) pairs, every pair to decide): under the baseline design the rows'
    pairs themselves; otherwise the design's pairs (:meth:`Study.comparison_pairs`), a row showing
    its cell's first one (a ladder's rung against the rung before it)."""
    if study.search or design_of(study) == "baseline":
        return pairs, [(c, b) for c, b in pairs if b is not None and b.key != c.key]
    judged = study.comparison_pairs(cells)
    first: dict = {}
    for c, b in judged:
        first.setdefault(c.key, b)
    return [(c, first.get(c.key, b)) for c, b in pairs], judged


def factorial_runs(study, cells) -> list[tuple]:
    """(cell, {factor: ±1}) for every run of a factorial study's design among ``cells``."""
    out = []
    for c in cells:
        if study.is_reference(c):
            continue
        preset = MECHANISMS[c.mechanism]
        low = {f: _canon(preset, f, vals[0]) for f, vals in study.factors.items()}
        out.append((c, {f: -1 if c.label_dict[f] == low[f] else 1 for f in study.factors}))
    return out


def _canon(preset, key: str, value):
    """A factor's value as a cell's label holds it (:func:`ablate.study.records.canon`, which
    imports this module: records -> designs, never back)."""
    if key in preset.defaults:
        try:
            return preset.factor(key).coerce(value)
        except ValueError:
            return value
    return value


def factorial_effects(study) -> list:
    """The main effects and two-factor interactions of a factorial study, with their aliases."""
    from ..stats import factorial as fac

    return fac.effects(list(study.factors), (study.comparisons or {}).get("generators") or ())


def controls_of(study) -> dict:
    """cell key -> the keys of the cells declared its matched controls."""
    out: dict = {}
    for ctrl, matched in (study.comparisons or {}).get("control_keys") or ():
        out.setdefault(matched, []).append(ctrl)
    return out
