"""The ``search:`` section: how many points a search samples, with which sampler, on how many seeds
each, which objectives, and the confirmation of its best points on fresh seeds.

``search: {n_trials: 20, sampler: tpe}`` is the one-seed search it always was: one trial a sampled
point. Any of the keys below turns it into a *point search* (:mod:`ablate.run.search` runs it):

* ``seeds_per_point: k`` — every sampled point runs on the same k seeds, the first k of ``seeds:``
  (paired across points, as a grid's cells are); the value Optuna's sampler is told is the mean
  over the point's seeds, told when its last seed finishes;
* ``confirm: {top: 3, seeds: 5}`` — once the search's budget is spent, the ``top`` best points (with
  several objectives: points of the Pareto front) and the baseline (``baseline:`` applied to the
  model as written) run again on ``seeds`` fresh seeds (a count: the seeds after every seed of
  ``seeds:``; or a list disjoint from them), and the report's verdicts are computed on those runs
  only; the baseline also runs on the search seeds, so the report can show how much selecting on
  them inflated the search's own deltas;
* ``objectives: [val_miou, attn_flops]`` — the study's metric first (maximised), then one or two
  costs of the attention block (minimised): ``attn_flops``, ``attn_params``, ``attn_latency_ms``,
  ``attn_peak_mib``; sampled with NSGA-II (``sampler: nsga2``, the default with several objectives)
  or multi-objective TPE (``sampler: tpe``);
* ``wilcoxon: {p_threshold: 0.1, n_startup_steps: 2}`` — Optuna's WilcoxonPruner with the seeds as
  its instances: after each of a point's seeds, the point is compared seed by seed with the best
  point so far, and its remaining seeds are not run when it is worse (it fits where a point has
  six or more seeds: with fewer, the signed-rank test cannot reach the threshold).

The factor ranges themselves are ``factors:`` (:func:`ablate.study.cells.check_search`).
"""
from __future__ import annotations

from ..config.errors import StudyError, brief
from ..config.specs import expect_mapping, typed_value, unknown_keys, unknown_name

SEARCH_KEYS = ("n_trials", "sampler", "seeds_per_point", "confirm", "objectives", "wilcoxon")
SAMPLERS = ("tpe", "random", "grid", "nsga2")
MAX_POINTS = 10_000  # sampled points of one search
# cost objective -> (what a trial records, or None: measured once a block by the worker; its words)
COSTS = {"attn_flops": ("attention_flops", "attention forward FLOPs per image"),
         "attn_params": ("attention_params", "attention parameters"),
         "attn_latency_ms": (None, "attention forward+backward latency, ms"),
         "attn_peak_mib": (None, "attention peak memory, MiB")}
DEFAULT_CONFIRM = {"top": 3, "seeds": 5}


def search_spec(search, where: str, metric: str = "val_miou") -> dict | None:
    """The ``search:`` section resolved: ``n_trials``, ``sampler``, ``seeds_per_point`` (1 unless
    given), ``objectives`` (the metric alone unless given), ``confirm`` ({top, seeds: a count or a
    list, resolved against ``seeds:`` by :func:`confirm_seeds`} or None), ``wilcoxon`` (options or
    None) and ``points`` (whether it is a point search, see the module docstring)."""
    if search is None:
        return None
    search = expect_mapping(search, where, "search")
    unknown_keys(search, SEARCH_KEYS, where, "search.")
    n = search.get("n_trials")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_POINTS:
        raise StudyError(where, "search.n_trials", f"expected a whole number of points from 1 to {MAX_POINTS:,}, "
                         f"got {brief(n)}.")
    objectives = _objectives(search.get("objectives"), where, metric)
    sampler = search.get("sampler", "nsga2" if len(objectives) > 1 else "tpe")
    if sampler not in SAMPLERS:
        raise StudyError(where, "search.sampler", f"{unknown_name('sampler', sampler)}; valid: {', '.join(SAMPLERS)}.")
    if len(objectives) > 1 and sampler not in ("nsga2", "tpe", "random"):
        raise StudyError(where, "search.sampler", f"{sampler} does not sample several objectives; use nsga2 "
                         "(NSGA-II, the default), tpe (multi-objective TPE) or random.")
    if sampler == "nsga2" and len(objectives) == 1:
        raise StudyError(where, "search.sampler", "nsga2 is a multi-objective sampler: give objectives: "
                         f"[{metric}, attn_flops] (or another cost), or use tpe / random.")
    k = typed_value(search.get("seeds_per_point", 1), "int", 1, where, "search.seeds_per_point", maximum=100)
    confirm = _confirm(search.get("confirm"), where)
    wilcoxon = _wilcoxon(search.get("wilcoxon"), where, k)
    points = k > 1 or confirm is not None or len(objectives) > 1 or wilcoxon is not None
    return {"n_trials": n, "sampler": sampler, "seeds_per_point": k, "objectives": objectives,
            "confirm": confirm, "wilcoxon": wilcoxon, "points": points}


def _objectives(raw, where: str, metric: str) -> list[str]:
    if raw is None:
        return [metric]
    valid = f"[{metric}] followed by one or two of {', '.join(COSTS)}"
    if not isinstance(raw, list) or not 1 <= len(raw) <= 3 or raw[0] != metric:
        raise StudyError(where, "search.objectives", f"expected {valid} (the study's metric first), got {brief(raw)}.")
    for i, name in enumerate(raw[1:], 1):
        if name not in COSTS:
            raise StudyError(where, f"search.objectives[{i}]", f"{unknown_name('cost', name)}; valid: "
                             f"{', '.join(COSTS)}.")
    if len(set(raw)) != len(raw):
        raise StudyError(where, "search.objectives", f"{brief(raw)} names an objective twice.")
    return list(raw)


def _confirm(raw, where: str) -> dict | None:
    if raw is None or raw is False:
        return None
    raw = DEFAULT_CONFIRM if raw is True else {**DEFAULT_CONFIRM, **expect_mapping(raw, where, "search.confirm")}
    unknown_keys(raw, ("top", "seeds"), where, "search.confirm.")
    top = typed_value(raw["top"], "int", 1, where, "search.confirm.top", maximum=50)
    seeds = raw["seeds"]
    if isinstance(seeds, list):
        if not 2 <= len(seeds) <= 1000 or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 31
                                                  for s in seeds) or len(set(seeds)) != len(seeds):
            raise StudyError(where, "search.confirm.seeds", f"expected 2 to 1,000 distinct seeds (integers >= 0), "
                             f"got {brief(seeds)}.")
    else:
        seeds = typed_value(seeds, "int", 2, where, "search.confirm.seeds", maximum=1000)
    return {"top": top, "seeds": seeds}


def _wilcoxon(raw, where: str, k: int) -> dict | None:
    if raw is None or raw is False:
        return None
    raw = {} if raw is True else dict(expect_mapping(raw, where, "search.wilcoxon"))
    unknown_keys(raw, ("p_threshold", "n_startup_steps"), where, "search.wilcoxon.")
    if k < 2:
        raise StudyError(where, "search.wilcoxon", "the Wilcoxon pruner compares a point's seeds with the best "
                         "point's: give search.seeds_per_point >= 2 (it can prune from about 6).")
    return {"p_threshold": typed_value(raw.get("p_threshold", 0.1), "float", 0, where, "search.wilcoxon.p_threshold",
                                       strict=True, maximum=1),
            "n_startup_steps": typed_value(raw.get("n_startup_steps", 2), "int", 0, where,
                                           "search.wilcoxon.n_startup_steps")}


def confirm_seeds(search: dict | None, seeds, where: str) -> dict | None:
    """``search`` with its search seeds (the first ``seeds_per_point`` of ``seeds``) and its
    confirmation seeds resolved: a count becomes the seeds after the largest of ``seeds``; a list
    must share no seed with ``seeds``. Refuses fewer ``seeds:`` than ``seeds_per_point``."""
    if search is None:
        return None
    k = search["seeds_per_point"]
    if len(seeds) < k:
        raise StudyError(where, "seeds", f"{len(seeds)} seed(s) listed, but search.seeds_per_point is {k}: the "
                         f"search runs each point on the first {k} seeds of seeds:; give seeds: {k}.")
    out = {**search, "search_seeds": list(seeds[:k])}
    confirm = search["confirm"]
    if confirm is not None:
        n = confirm["seeds"]
        if isinstance(n, list):
            shared = sorted(set(n) & set(seeds))
            if shared:
                raise StudyError(where, "search.confirm.seeds", f"seed(s) {', '.join(map(str, shared))} are also in "
                                 "seeds:; confirmation seeds must be fresh (never used by the search).")
            fresh = list(n)
        else:
            start = max(seeds) + 1
            fresh = list(range(start, start + n))
        out["confirm"] = {**confirm, "seeds": fresh}
    return out


def check_point_search(search: dict | None, pruner: dict, where: str) -> None:
    """What a point search cannot combine: a pruner with several objectives (Optuna prunes one
    objective only), and an epoch pruner with the Wilcoxon pruner (both judge the point's
    intermediate values: the mean curve by epoch, or the seeds' values by seed)."""
    if search is None or pruner["name"] == "none":
        return
    if len(search["objectives"]) > 1:
        raise StudyError(where, "pruner", "a search of several objectives cannot prune (Optuna prunes one "
                         "objective only): remove pruner:.")
    if search["wilcoxon"] is not None:
        raise StudyError(where, "pruner", "search.wilcoxon prunes a point between its seeds; an epoch pruner "
                         "(pruner:) prunes it between epochs: choose one.")


def planned_trials(search: dict) -> tuple[int, int]:
    """(trials of the search phase, trials of the confirmation) a point search plans: every point
    on its seeds; then the top points and the baseline on the fresh seeds, and the baseline on the
    search seeds (with several objectives ``top`` bounds the front's points confirmed)."""
    k = search["seeds_per_point"]
    confirm = search.get("confirm")
    if not confirm:
        return search["n_trials"] * k, 0
    return search["n_trials"] * k, (min(confirm["top"], search["n_trials"]) + 1) * len(confirm["seeds"]) + k


# -- conditional factors: a mechanism factor applies to the sampled mechanisms that have it ----------

def mechanisms_of(study) -> list[str]:
    """The mechanisms a search can sample: its ``mechanism`` factor's choices, else the model's."""
    spec = study.factors.get("mechanism")
    if spec is None:
        return [study.mechanism]
    return list(spec if isinstance(spec, list) else spec.get("choices", [study.mechanism]))


def applies(k: str, mechanism: str) -> bool:
    """Whether search factor ``k`` is sampled for a point of ``mechanism``: a setting of train, data,
    backbone or head always, a mechanism factor only where the mechanism has it (``reduction`` for
    GCNet and Non-local, ``K`` for EMANet alone): a conditional search space, define-by-run."""
    from ..attention import MECHANISMS

    if k == "mechanism" or k.startswith(("train.", "data.", "backbone.", "head.")):
        return True
    preset = MECHANISMS.get(mechanism)
    return preset is not None and k in preset.defaults


def owner_preset(study, k: str):
    """The preset whose factor ``k`` is (the model's, else the first sampled mechanism that has it)."""
    from ..attention import MECHANISMS

    for m in [study.mechanism] + mechanisms_of(study):
        if m in MECHANISMS and k in MECHANISMS[m].defaults:
            return MECHANISMS[m]
    return MECHANISMS[study.mechanism]
