"""What a worker runs next: the (cell, seed) to claim, in plan order, sequential looks, search points.

:func:`choose` is what :func:`ablate.storage.claim_next` asks under the study lock: the first
(cell, seed) of the plan nobody has taken (a grid), the seeds the looks of a sequential study
added (taking the next look when every wanted trial is finished), or a new point from the
search's sampler. It reads the study's :class:`~ablate.storage.index.TrialIndex` that storage
keeps current (no scan of the trials) and returns a :class:`~ablate.storage.Claim`; storage
creates the trial.
"""
from __future__ import annotations

from .sampling import make_sampler, suggest, trial_attrs  # noqa: F401 - trial_attrs: tests and the bench use it here

LOOKS_ATTR = "sequential_looks"  # study user attribute: the looks of a sequential study, in order


def choose(w, index):
    """The next claim of worker ``w`` (:class:`ablate.run.worker.Worker`) given the study's
    :class:`~ablate.storage.index.TrialIndex`, or None. Call with the study lock held
    (:func:`ablate.storage.claim_next` does): it reads nothing more from storage (a search's
    sampler and a sequential look read what they need)."""
    from ..storage import records as st

    if w.study.point_search():  # seeds per point, confirmation, objectives: ablate/run/search.py
        from .search import claim_points

        return claim_points(w, index)
    if w.study.search:
        claim = claim_search(w.study, w.ostudy, w.store, index, w.run)
        if claim is not None:
            claim.index = 1 + index.taken_trials()
        return claim
    if w.study.sequential:
        todo = sequential_todo(w, index)
    else:
        todo = [p] if (p := next_in_plan(w, index)) else []
    if not todo:
        return None
    cell, seed = todo[0]
    config = w.study.trial(cell, seed)
    where = w.plan_index.get((cell.key, seed)) or 1 + index.taken_pairs()
    return st.Claim(cell, seed, config, where, dict(cell.label),
                    w.choices, trial_attrs(cell, seed, config), checkpoint_dir=w.checkpoint_dir(cell, seed, config))


def next_in_plan(w, index):
    """The first (cell, seed) of the plan nobody has taken, or None. All pairs before the
    worker's cursor were taken when it last looked; a pair that became free since (a lost or
    interrupted trial) moves the cursor back to it, so a claim costs O(1) amortised, not O(plan)."""
    from ..storage import records as st

    if not w.plan:
        w.plan = list(w.study.trials())
    for pair in index.pop_changed():
        pos = w.plan_index.get(pair)
        if pos is not None and index.status.get(pair) not in st.TAKEN:
            w.cursor = min(w.cursor, pos - 1)
    while w.cursor < len(w.plan):
        cell, seed = w.plan[w.cursor]
        if index.status.get((cell.key, seed)) not in st.TAKEN:
            return cell, seed
        w.cursor += 1
    return None


def statuses(trials, run: str) -> dict:
    """(cell key, seed) -> the status that counts among its trials: done, then running, then
    failed here, then free (a lost or retried attempt next to a finished one is history;
    :func:`ablate.storage.index.merge_status`, which the claims' index keeps up to date)."""
    from ..storage import records as st
    from ..storage.index import merge_status, pair_of

    out: dict = {}
    for t in trials:
        pair = pair_of(t)
        out[pair] = merge_status(out.get(pair), st.trial_status(t, run))
    return out


def sequential_todo(w, index) -> list:
    """The (cell, seed) a sequential study wants and nobody has taken, in order. Call with the
    study lock held. What is wanted: the first ``start`` seeds of every cell, plus every seed a
    look added (kept in storage, :data:`LOOKS_ATTR`). When all of them are finished, the next
    look is taken here, from storage alone (:func:`ablate.stats.sequential_look`), and recorded
    before any of its trials is claimed: each look happens once, whichever worker takes it, and
    a killed runner resumes with the seeds its looks added."""
    from ..storage import records as st

    status = index.status
    by_key = {c.key: c for c in w.cells}
    looks = list(w.ostudy.user_attrs.get(LOOKS_ATTR, []))
    wanted = list(w.study.trials()) + [(by_key[k], s) for look in looks for k, seeds in look["added"].items()
                                       if k in by_key for s in seeds]
    todo = [(c, s) for c, s in wanted if status.get((c.key, s)) not in st.TAKEN]
    if todo or any(status.get((c.key, s)) != "done" for c, s in wanted):
        return todo  # trials to claim, or trials still running (wait) or to retry in a later run (stop)
    look = take_look(w, index.all_trials(), status)
    if not look.new:
        return []
    added = {c.key: look.new[c.key] for c in w.cells if c.key in look.new}
    record = {"look": len(looks) + 1, "alpha": look.alpha, "n": look.n, "spent": look.spent, "added": added,
              "undecided": [list(pair) for pair, ok in look.decided.items() if not ok]}
    w.ostudy.set_user_attr(LOOKS_ATTR, looks + [record])
    w.progress.say(f"look {record['look']}: {len(record['undecided'])} comparison(s) undecided at alpha "
                   f"{look.alpha:.4g}; adding seeds " + "; ".join(f"{by_key[k].title()}: {', '.join(map(str, v))}"
                                                                  for k, v in added.items()))
    return [(by_key[k], s) for k, seeds in added.items() for s in seeds]


def comparison_pairs(study, cells: list) -> list[tuple[str, str]]:
    """(cell key, baseline key) of every comparison the report makes (each cell against its
    baseline, :meth:`ablate.study.Study.baseline_for`), in the study's order."""
    return [(c.key, b.key) for c, b in study.comparison_pairs(cells)]


def take_look(w, trials, status: dict):
    """One look of a sequential study over its finished trials (see :func:`sequential_todo`)."""
    import optuna

    from ..stats import ALPHA
    from ..stats import sequential_look
    from ..stats.decide import exact_pvalue, spending_kind

    values: dict = {c.key: {} for c in w.cells}
    for t in trials:
        key = t.user_attrs.get("cell_key")
        if t.state == optuna.trial.TrialState.COMPLETE and key in values:
            values[key][t.user_attrs.get("seed")] = t.value
    done = {c.key: [s for s in w.study.seeds if status.get((c.key, s)) == "done"] for c in w.cells}
    seq, by_key = w.study.sequential, {c.key: c for c in w.cells}
    pairs = comparison_pairs(w.study, w.cells)
    kind = spending_kind((w.study.analysis or {}).get("spending", "obrien_fleming"))
    # the exact test, the spending and the families the report replays (ablate/report/rows.py::_sequential)
    return sequential_look(values, done, pairs, w.study.margin / 100, ALPHA, w.study.correction, seq["start"],
                           seq["max"], seq["step"], w.study.seeds, pvalue=exact_pvalue, kind=kind,
                           families={p: w.study.family_of(by_key[p[0]]) for p in pairs}, precision=False)


def sequential_summary(study, url: str) -> str:
    """How far a sequential study went: looks taken, trials finished of the most it could run,
    and each cell's finished seeds."""
    import optuna

    from ..storage import records as st

    ostudy = optuna.load_study(study_name=study.name, storage=st.open_storage(url))
    looks = ostudy.user_attrs.get(LOOKS_ATTR, [])
    cells = study.cells()
    done = statuses(ostudy.get_trials(deepcopy=False), "")
    per = {c.key: sum(done.get((c.key, s)) == "done" for s in study.seeds) for c in cells}
    return (f"sequential seeds: {len(looks)} look(s) added seeds; {sum(per.values())} of at most "
            f"{len(cells) * study.sequential['max']} trials finished; seeds a cell: "
            + ", ".join(f"{c.title()} {per[c.key]}" for c in cells))


def claim_search(study, ostudy, store, trials, run: str = ""):
    """Sample the next point of a search study (lock held) as a claim storage has created
    (:func:`ablate.storage.ask_trial`); None once the budget is used. ``trials``: the study's
    :class:`~ablate.storage.index.TrialIndex`, or a list of its trials. No mid-trial checkpoints:
    a search's lost trial is not run again (the next claim samples a new point), and two
    samples may be the same point."""
    import optuna

    from ..storage import records as st
    from ..storage.index import TrialIndex

    index = trials if isinstance(trials, TrialIndex) else TrialIndex.of(trials, run)
    if index.taken_trials() >= study.search["n_trials"]:
        return None
    sampler_study = optuna.load_study(study_name=study.name, storage=store, sampler=make_sampler(study, len(index)))

    def setup(trial):
        params = {k: suggest(trial, k, d) for k, d in study.distributions().items()}
        cell = study.search_cell(params)
        seed = study.seeds[0]
        config = study.trial(cell, seed)
        return st.Claim(cell, seed, config, 0, attrs=trial_attrs(cell, seed, config))

    return st.ask_trial(sampler_study, setup)
