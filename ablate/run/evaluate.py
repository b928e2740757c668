"""The worker's evaluations: each finished training's final weights, under every evaluation-time setting.

A study with ``eval_factors:`` (:mod:`ablate.study.evaluations`) trains its cells as any grid
does; before each claim of a training the worker claims an evaluation whose training has finished
with final weights (:func:`evaluate_next`). An evaluation is a record of the study's evaluations
in the same storage (:mod:`ablate.storage.evaluations`), claimed under that record set's lock by
:func:`ablate.storage.records.claim_next` as trials are: RUNNING and owned, with a heartbeat;
reaped as lost when its worker dies; an interrupted, lost or harness-failed evaluation is run again
from the same weights by the next claim or invocation, and the training is never repeated for it.
The evaluation itself is :func:`ablate.trainer.evaluate.evaluate_weights`.
"""
from __future__ import annotations

import dataclasses
import json
import time

from .progress import points


@dataclasses.dataclass(frozen=True)
class EvalRow:
    """What a claim of an evaluation names: its row's key, the training cell and the setting."""

    key: str
    cell: object
    setting: object

    def title(self) -> str:
        return f"{self.cell.title()} | {self.setting.title()}"


@dataclasses.dataclass
class Evaluations:
    """A worker's view of the study's evaluations: their storage and index, and the plan."""

    store: object
    ostudy: object
    index: object
    plan: list
    done: int = 0


def open_evaluations(w) -> Evaluations | None:
    """The evaluations of worker ``w``'s study (None: it has no evaluation-time factors)."""
    if not w.study.evals:
        return None
    from ..storage import records as st
    from ..storage.evaluations import open_evaluations as open_store
    from ..study.evaluations import evaluations

    store, ostudy = open_store(w.url, w.study.name)
    return Evaluations(store, ostudy, st.TrialIndex.open_on(store, ostudy._study_id, w.run), evaluations(w.study))


def choose_evaluation(w, ev: Evaluations, index):
    """The first evaluation of the plan nobody has taken whose training finished with final
    weights, as a :class:`~ablate.storage.Claim` (None: none is ready). Storage calls it under the
    evaluations' lock; the trainings are read from the worker's own index."""
    from ..storage import records as st
    from ..storage.evaluations import parent_weights
    from ..study.evaluations import eval_config

    w.index.refresh()  # trainings finished since the worker's last claim (a read: no lock needed)
    for i, (cell, seed, setting, key) in enumerate(ev.plan):
        if index.status.get((key, seed)) in st.TAKEN:
            continue
        parent = parent_weights(w.index.attempts(cell.key, seed))
        if parent is None:
            continue
        config = eval_config(w.study, cell, seed, setting)
        attrs = {"cell_key": key, "seed": seed, "train_key": cell.key, "parent": parent[0], "weights": parent[1],
                 "cell": json.dumps({**cell.label_dict, **{k: v for k, v in setting.label}}, default=str),
                 "eval": json.dumps(dict(setting.label), default=str), "config": config.to_json()}
        return st.Claim(EvalRow(key, cell, setting), seed, config, i + 1, attrs=attrs)
    return None


def evaluate_next(w, ev: Evaluations, threads: int, interrupted) -> str | None:
    """Claim and run one evaluation with ``threads`` torch threads; returns its outcome ('complete',
    'error', 'harness') or None when none is ready. ``interrupted()``: the words an interrupted
    evaluation is recorded with (the worker's signal)."""
    from ..storage import records as st

    claim, ev.index = st.claim_next(w.url, ev.ostudy, lambda index: choose_evaluation(w, ev, index), ev.index)
    if claim is None:
        return None
    return run_evaluation(w, ev, claim, threads, interrupted)


def run_evaluation(w, ev: Evaluations, claim, threads: int, interrupted) -> str:
    """Evaluate one claimed (training, seed, setting) and record it in storage."""
    from ..storage import records as st
    from ..trainer.evaluate import evaluate_weights
    from ..trainer.fit import HarnessFailed, TrialFailed, failure_kind

    t0 = time.perf_counter()
    head = f"evaluation {claim.index}/{len(ev.plan)} {claim.cell.title()} seed={claim.seed}"
    try:
        with st.Heartbeat(ev.store, claim.trial_id):
            result = evaluate_weights(claim.config, claim.attrs["weights"], threads=threads)
            result["wall_s"] = time.perf_counter() - t0
            st.record_result(ev.store, claim.trial_id, result)
    except KeyboardInterrupt:
        st.record_failure(ev.store, claim.trial_id, "interrupted", f"{interrupted()}; run again to evaluate")
        raise
    except Exception as e:  # noqa: BLE001 - recorded; the study goes on
        kind = failure_kind(e)
        reason = str(e) if isinstance(e, (TrialFailed, HarnessFailed)) else f"{type(e).__name__}: {e}"
        st.record_failure(ev.store, claim.trial_id, kind, reason)
        w.progress.say(f"{head}: FAILED{'' if kind == 'error' else ' (the next run retries it)'}: "
                       f"{' '.join(reason.split())[:200]}")
        return kind
    ev.done += 1
    w.progress.say(f"{head}: val mIoU {points(result['value'])}  ({result['wall_s']:.0f}s)")
    return "complete"


def others_evaluating(ev: Evaluations | None) -> int:
    """Evaluations other workers are running now (a worker waits for them as for trainings)."""
    if ev is None:
        return 0
    from ..storage import records as st

    return sum(r.state.name == "RUNNING" and r.owned for r in st.read_trials(ev.index.open_trials()))


__all__ = ["EvalRow", "Evaluations", "choose_evaluation", "evaluate_next", "open_evaluations", "others_evaluating",
           "run_evaluation"]
