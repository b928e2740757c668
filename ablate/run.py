"""``python -m ablate.run STUDY.yaml``: run every cell x seed of a study, then write its report.

Re-running the same command resumes: finished trials are kept, interrupted or lost ones are run
again, nothing finished is run twice. ``--workers N`` starts N local worker processes on the
same storage; the same command on other machines with one ``--storage postgresql://...`` URL
joins the same study. A study with sequential seeds (``seeds: {start, max}``) runs its start
seeds, then adds seeds, one look at a time, only to the comparisons still undecided
(:func:`ablate.stats.sequential_look`); ``--dry-run`` prints the plan and the level it judges at.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

from .errors import StudyError, exit_with
from .trial_config import TrialConfig
from .progress import Progress, StudyCounts, eta_seconds, points


EXIT_FAILED, EXIT_RETRY = 1, 3
EXIT_STATUS = """exit status:
  0    no trial of the study has failed (trials left to run by --max-trials, or running in another
       runner, are not failures)
  1    some trials failed for a reason of their own (non-finite loss, out of memory, an error in the
       model's forward or backward): final, listed in the report
  2    a mistake in the study file or on the command line, or a storage, run folder or reports
       folder that cannot be used: one paragraph on stderr, nothing was run
  3    some trials failed for a reason of the harness or its environment (tracking, storage, files):
       run the same command again to retry them (the report lists them)
  130  interrupted (Ctrl-C): run the same command again to resume"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablate.run", description=__doc__.split("\n")[0], epilog=EXIT_STATUS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study file (YAML), e.g. studies/gcn_effect.yaml")
    p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the run folder); "
                   "e.g. sqlite:///runs/x.db or postgresql://user:pass@host/db")
    p.add_argument("--run-dir", help="run folder (default: runs/<study name>)")
    p.add_argument("--reports-dir", default="reports", help="where the report goes (default: reports)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers); "
                   "a study's train.threads wins (it is part of the cell key)")
    p.add_argument("--dry-run", action="store_true", help="print the trial plan (cells x seeds) and exit")
    p.add_argument("--print-config", metavar="N", help="print the resolved config of plan trial N (1-based) or 'all'")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    p.add_argument("--max-trials", type=int, default=0,
                   help="stop this worker after N trials, failed ones included (0: no limit)")
    p.add_argument("--no-pruning", action="store_true",
                   help="run every trial to its last epoch whatever the study's pruner says (the full-grid control)")
    p.add_argument("--no-doctor", action="store_true",
                   help="skip the health pre-flight of every cell's block before the first trial (ablate doctor)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="change a setting of the study for this run: dotted key = YAML value, e.g. "
                        "train.epochs=3 seeds=2 model.args.K=32 (the study gets a name suffix)")
    p.add_argument("--smoke", action="store_true",
                   help="every cell once: one seed, one epoch on a few batches, in a throwaway run "
                        "folder, no report (see ablate/smoke.py)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # child process of --workers
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_intermixed_args(argv)  # not parse_args: 'study.yaml --dry-run k=v' must parse too


def print_plan(study, out=None) -> None:
    out = out or sys.stdout  # looked up at call time (a caller may have redirected it)
    if study.search:
        print(f"study {study.name}: search of {study.search['n_trials']} trials with the {study.search['sampler']} "
              f"sampler, seed {study.seeds[0]}, {study.train.epochs} epochs each", file=out)
        for k, spec in study.factors.items():
            print(f"  factor {k}: {spec}", file=out)
        return
    plan = study.trials()
    cells = study.cells()
    bases = {c.key for c in study.baseline_cells()}
    seq = study.sequential
    if seq:
        print(f"study {study.name}: {len(cells)} cells x {seq['start']} seeds to start = {len(plan)} trials, up to "
              f"{seq['max']} seeds a cell = {len(cells) * seq['max']} trials ({study.train.epochs} epochs each)",
              file=out)
    else:
        print(f"study {study.name}: {len(cells)} cells x {len(study.seeds)} seeds = {len(plan)} trials "
              f"({study.train.epochs} epochs each)", file=out)
    if study.question:
        print(f"question: {' '.join(study.question.split())}", file=out)
    for i, c in enumerate(cells):
        mark = "  <- baseline" if c.key in bases else ""
        print(f"  cell {i + 1}: {c.title():40s} mechanism={c.mechanism:18s} key={c.key}{mark}", file=out)
    if seq:
        from .report import ALPHA
        from .stats import look_counts, verdict_alpha

        k = len(look_counts(seq["start"], seq["max"], seq["step"]))
        print(f"  seeds: {', '.join(map(str, study.seeds[:seq['start']]))} in every cell; then, after each look, "
              f"{seq['step']} more (in order: {', '.join(map(str, study.seeds[seq['start']:]))}) for each "
              f"comparison still undecided and its baseline, up to {seq['max']}", file=out)
        print(f"  looks: at most {k} (seeds {', '.join(map(str, look_counts(seq['start'], seq['max'], seq['step'])))}"
              f"); verdicts at alpha {ALPHA:g}/{k} = {verdict_alpha(ALPHA, seq):.4g}, margin ±{study.margin:g} "
              f"points, {study.correction} correction over {len(comparison_pairs(study, cells))} comparison(s)",
              file=out)
    else:
        print(f"  seeds: {', '.join(map(str, study.seeds))}", file=out)
    if study.pruner["name"] != "none":
        opts = ", ".join(f"{k}={v}" for k, v in study.pruner.items() if k != "name")
        print(f"  pruner: {study.pruner['name']} ({opts})", file=out)


def _threads(args, study=None) -> int:
    """torch threads per worker: the study's train.threads (part of the cell key), else
    --threads, else the machine's cores shared among the workers."""
    if study is not None and study.train.threads > 0:
        return study.train.threads
    if args.threads > 0:
        return args.threads
    return max(1, (os.cpu_count() or 1) // max(1, args.workers))


class TrialReporter:
    """A trial's per-epoch hook in the worker: the epoch's val mIoU goes to the trial's record
    (an Optuna intermediate value at step = 0-based epoch), the study's pruner is asked whether
    to stop, and a progress line is printed. Returns True to prune.

    The pruner sees the trials in storage: with a grid it compares this trial with the finished
    trials (of every cell) at the same epoch. The last epoch is never pruned (the trial is done).
    """

    def __init__(self, trial, pruning: bool, epochs: int, printer):
        self.trial, self.pruning, self.epochs, self.printer = trial, pruning, epochs, printer

    def __call__(self, epoch: int, miou: float) -> bool:
        self.trial.report(miou, epoch)
        prune = self.pruning and epoch + 1 < self.epochs and self.trial.should_prune()
        self.printer(epoch, miou, prune)
        return prune


@dataclasses.dataclass
class _Worker:
    """What a worker's loop shares between claiming and running trials."""

    study: object
    url: str
    run_dir: Path
    args: argparse.Namespace
    store: object
    ostudy: object
    progress: Progress
    run: str  # this invocation's id: its own harness failures are not retried by it
    plan_index: dict
    choices: dict
    cells: list = dataclasses.field(default_factory=list)  # the grid's cells (sequential studies read them)
    traced: bool = False  # a harness failure's traceback was printed once already


MAX_HARNESS_STREAK = 3  # harness failures in a row after which a worker stops (the next run retries)


def worker_loop(study, url: str, run_dir: Path, args) -> dict:
    """Claim and run trials until none is free; returns this worker's totals."""
    import optuna

    from . import storage as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = st.open_storage(url)
    with st.study_lock(url, study.name):
        st.load_or_create(store, study.name)
    ostudy = optuna.load_study(study_name=study.name, storage=store, pruner=study.make_pruner())
    plan = study.trials()
    choices: dict[str, list] = {}
    for c in study.cells():
        for k, v in c.label:
            if v not in choices.setdefault(k, []):
                choices[k].append(v)
    tag = f"[w{args.worker_index}] " if args.worker else ""
    cells = study.cells()
    total = study.search["n_trials"] if study.search else len(plan)
    if study.sequential:
        total = f"{len(plan)}-{len(cells) * study.sequential['max']}"  # the start plan, up to every seed
    w = _Worker(study, url, run_dir, args, store, ostudy, Progress(tag, total), os.environ.get(st.RUN_ENV, ""),
                {(c.key, s): i + 1 for i, (c, s) in enumerate(plan)}, choices, cells)
    totals = {"trials": 0, "attempts": 0, "error": 0, "harness": 0}
    waiting, streak, finished = False, 0, True  # finished: a trial ended here since the study line was shown
    while not args.max_trials or totals["attempts"] < args.max_trials:
        if waiting:
            time.sleep(min(5.0, st.heartbeat_s()))
        with st.study_lock(url, study.name):
            claim, trials = _claim(w)
        if finished and (totals["attempts"] or w.progress.tty):  # plain lines after a trial; the bar at once
            w.progress.study(study_counts(w, trials))
        finished = False
        if claim is None:
            waiting = _wait_for_others(trials, w.progress, waiting)
            if waiting:
                continue
            break
        waiting = False
        outcome = _run_claimed(w, *claim)
        totals["attempts"] += 1
        finished = True
        if outcome in ("error", "harness"):
            totals[outcome] += 1
        else:
            totals["trials"] += 1
        streak = streak + 1 if outcome == "harness" else 0
        if streak >= MAX_HARNESS_STREAK:
            w.progress.say(f"stopping: {streak} trials in a row failed for a reason of the harness or its "
                           "environment (above); fix it and run the same command again to retry them")
            break
    if finished:  # stopped by --max-trials or by failures in a row: no claim read the storage since
        w.progress.study(study_counts(w, w.ostudy.get_trials(deepcopy=False)))
    w.progress.close()
    return totals


def study_counts(w: _Worker, trials) -> StudyCounts:
    """The study-level progress from storage (every worker's trials): trials finished, final
    failures and this run's harness failures among them, of the total known now (a sequential
    study's start plan plus the seeds its looks added), and the ETA from those finished trials'
    times with as many workers as trials running, this one included."""
    import optuna

    from . import storage as st

    ok_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ended = ("done", "failed here")
    most, wanted = None, None
    if w.study.search:
        mine = [t for t in trials if st.trial_status(t, w.run) in ended]
        total, done, failed = w.study.search["n_trials"], len(mine), sum(t.state not in ok_states for t in mine)
    else:
        wanted = {(c.key, s) for c, s in w.study.trials()}
        if w.study.sequential:
            looks = w.ostudy.user_attrs.get(LOOKS_ATTR, [])
            wanted |= {(k, s) for look in looks for k, seeds in look["added"].items() for s in seeds}
            most = len(w.cells) * w.study.sequential["max"]
        status = _statuses(trials, w.run)
        ok = {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) for t in trials if t.state in ok_states}
        ended_pairs = [p for p in wanted if status.get(p) in ended]
        total, done, failed = len(wanted), len(ended_pairs), sum(p not in ok for p in ended_pairs)
    times = [_trial_seconds(t) for t in trials if t.state in ok_states
             and (wanted is None or (t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) in wanted)]
    running = sum(st.trial_status(t, w.run) == "running" for t in trials)
    eta = eta_seconds([x for x in times if x is not None], total - done, running + 1)
    return StudyCounts(done, total, failed, eta, most)


def _trial_seconds(t) -> float | None:
    """A finished trial's time: its recorded wall time, else its storage timestamps."""
    if isinstance(t.user_attrs.get("wall_s"), (int, float)):
        return float(t.user_attrs["wall_s"])
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def _claim(w: _Worker):
    """(trial id, cell, seed, config, plan index) of the next free trial, created RUNNING and owned
    by this process, or None; and the trials seen. Call with the study lock held."""
    from . import storage as st

    trials = w.ostudy.get_trials(deepcopy=False)
    if st.reap_lost(w.store, trials):
        trials = w.ostudy.get_trials(deepcopy=False)
    if w.study.search:
        claim = _claim_search(w.study, w.ostudy, w.store, trials, w.run)
        if claim is None:
            return None, trials
        index = 1 + sum(st.trial_status(t, w.run) in st.TAKEN for t in trials)
        return (*claim, index), trials
    taken = {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed"))
             for t in trials if st.trial_status(t, w.run) in st.TAKEN}
    if w.study.sequential:
        todo = _sequential_todo(w, trials)
    else:
        todo = [(c, s) for c, s in w.study.trials() if (c.key, s) not in taken]
    if not todo:
        return None, trials
    cell, seed = todo[0]
    config = w.study.trial(cell, seed)
    tid = st.create_running_trial(w.ostudy, dict(cell.label), w.choices, _trial_attrs(cell, seed, config))
    return (tid, cell, seed, config, w.plan_index.get((cell.key, seed)) or 1 + len(taken)), trials


LOOKS_ATTR = "sequential_looks"  # study user attribute: the looks of a sequential study, in order


def _statuses(trials, run: str) -> dict:
    """(cell key, seed) -> the status that counts among its trials: done, then running, then
    failed here, then free (a lost or retried attempt next to a finished one is history)."""
    from . import storage as st

    rank = {"done": 0, "running": 1, "failed here": 2}
    out: dict = {}
    for t in trials:
        pair, status = (t.user_attrs.get("cell_key"), t.user_attrs.get("seed")), st.trial_status(t, run)
        if rank.get(status, 3) < rank.get(out.get(pair), 3):
            out[pair] = status
        else:
            out.setdefault(pair, status)
    return out


def _sequential_todo(w: _Worker, trials) -> list:
    """The (cell, seed) a sequential study wants and nobody has taken, in order. Call with the
    study lock held. What is wanted: the first ``start`` seeds of every cell, plus every seed a
    look added (kept in storage, :data:`LOOKS_ATTR`). When all of them are finished, the next
    look is taken here, from storage alone (:func:`ablate.stats.sequential_look`), and recorded
    before any of its trials is claimed: each look happens once, whichever worker takes it, and
    a killed runner resumes with the seeds its looks added."""
    from . import storage as st

    status = _statuses(trials, w.run)
    by_key = {c.key: c for c in w.cells}
    looks = list(w.ostudy.user_attrs.get(LOOKS_ATTR, []))
    wanted = list(w.study.trials()) + [(by_key[k], s) for look in looks for k, seeds in look["added"].items()
                                       if k in by_key for s in seeds]
    todo = [(c, s) for c, s in wanted if status.get((c.key, s)) not in st.TAKEN]
    if todo or any(status.get((c.key, s)) != "done" for c, s in wanted):
        return todo  # trials to claim, or trials still running (wait) or to retry in a later run (stop)
    look = _look(w, trials, status)
    if not look.new:
        return []
    added = {c.key: look.new[c.key] for c in w.cells if c.key in look.new}
    record = {"look": len(looks) + 1, "alpha": look.alpha, "added": added,
              "undecided": [list(pair) for pair, ok in look.decided.items() if not ok]}
    w.ostudy.set_user_attr(LOOKS_ATTR, looks + [record])
    w.progress.say(f"look {record['look']}: {len(record['undecided'])} comparison(s) undecided at alpha "
                   f"{look.alpha:.4g}; adding seeds " + "; ".join(f"{by_key[k].title()}: {', '.join(map(str, v))}"
                                                                  for k, v in added.items()))
    return [(by_key[k], s) for k, seeds in added.items() for s in seeds]


def comparison_pairs(study, cells: list) -> list[tuple[str, str]]:
    """(cell key, baseline key) of every comparison the report makes (each cell against its
    baseline, :meth:`ablate.study.Study.baseline_for`), in the study's order."""
    pairs = []
    for c in cells:
        b = study.baseline_for(c, cells)
        if b is not None and b.key != c.key and (c.key, b.key) not in pairs:
            pairs.append((c.key, b.key))
    return pairs


def _look(w: _Worker, trials, status: dict):
    """One look of a sequential study over its finished trials (see :func:`_sequential_todo`)."""
    import optuna

    from .report import ALPHA
    from .stats import sequential_look

    values: dict = {c.key: {} for c in w.cells}
    for t in trials:
        key = t.user_attrs.get("cell_key")
        if t.state == optuna.trial.TrialState.COMPLETE and key in values:
            values[key][t.user_attrs.get("seed")] = t.value
    done = {c.key: [s for s in w.study.seeds if status.get((c.key, s)) == "done"] for c in w.cells}
    seq = w.study.sequential
    return sequential_look(values, done, comparison_pairs(w.study, w.cells), w.study.margin / 100, ALPHA,
                           w.study.correction, seq["start"], seq["max"], seq["step"], w.study.seeds)


def _run_claimed(w: _Worker, tid: int, cell, seed: int, config, index: int) -> str:
    """Run one claimed trial and record it; returns 'complete', 'pruned', 'error' (final) or
    'harness' (retried by the next invocation)."""
    import optuna

    from . import storage as st
    from .trainer import HarnessFailed, TrialFailed, failure_kind, run_trial, wandb_summary

    t0 = time.perf_counter()
    title, epochs = cell.title(), config.train.epochs
    head = f"trial {index}/{w.progress.total} {title} seed={seed}"
    w.progress.say(f"{head}: started")
    logger = None
    try:
        with st.Heartbeat(w.store, tid):
            reporter = TrialReporter(optuna.trial.Trial(w.ostudy, tid), w.study.pruner["name"] != "none", epochs,
                                     w.progress.epoch_printer(index, title, seed, epochs, t0))
            logger, isolated_wandb = _tracker(w, config, f"{title} seed={seed}")
            result = run_trial(config, reporter, logger=logger, threads=_threads(w.args, w.study),
                               wandb=isolated_wandb)
            if logger is not None:
                logger.experiment.summary.update(wandb_summary(result))
            _finish_wandb(logger, 0)
            logger = None
            result["wall_s"] = time.perf_counter() - t0  # closing the W&B run is the harness's time too
            outcome = _record(w.store, tid, result)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            st.mark_failed(w.store, tid, "interrupted", "interrupted (Ctrl-C); run again to resume")
        _finish_wandb(logger, 130)
        raise
    except Exception as e:  # noqa: BLE001 - any failure is recorded, the study goes on
        kind = failure_kind(e)
        reason = str(e) if isinstance(e, (TrialFailed, HarnessFailed)) else f"{type(e).__name__}: {e}"
        if kind == "harness" and not isinstance(e, HarnessFailed) and not w.traced:
            traceback.print_exc()
            w.traced = True
        with contextlib.suppress(Exception):  # a broken storage: the trial stays RUNNING, reaped as lost later
            st.mark_failed(w.store, tid, kind, reason)
        what = "FAILED" if kind == "error" else "FAILED (harness or environment; the next run retries it)"
        w.progress.say(f"{head}: {what}: {' '.join(reason.split())[:200]}")
        _finish_wandb(logger, 1)
        return kind
    wall, curve = result["wall_s"], result["curve"]
    if outcome == "pruned":
        w.progress.say(f"{head}: pruned after epoch {result['pruned_epoch'] + 1}/{epochs} (val mIoU "
                       f"{points(curve[-1])})  ({wall:.0f}s)")
    else:
        w.progress.say(f"{head}: val mIoU {points(result['value'])}  ({wall:.0f}s)")
    return outcome


def _tracker(w: _Worker, config: TrialConfig, name: str):
    """The trial's W&B logger (None when off, or under DDP, where the trial process makes its own
    run on rank 0) and the W&B arguments for such a trial process (None otherwise)."""
    if not w.study.tracking.get("wandb", True) or w.args.no_wandb:
        return None, None
    wandb_args = {"run_dir": str(w.run_dir), "project": w.study.tracking.get("project", "ablate"),
                  "entity": w.study.tracking.get("entity"), "name": name}
    if w.study.trainer.isolated:
        return None, wandb_args
    from .tracking import make_logger

    return make_logger(config.as_dict(), w.run_dir, wandb_args["project"], wandb_args["entity"], name), None


def _record(store, tid: int, result: dict) -> str:
    """Write a finished trial's result and final state; returns 'complete' or 'pruned'."""
    import optuna

    for k, v in result.items():
        store.set_trial_user_attr(tid, k, v)
    if result.get("pruned_epoch") is not None:
        # final, like a failure of its own: storage counts PRUNED as done; the value is the
        # last reported one, as Optuna's own tell() records it
        store.set_trial_state_values(tid, optuna.trial.TrialState.PRUNED, [result["curve"][-1]])
        return "pruned"
    store.set_trial_state_values(tid, optuna.trial.TrialState.COMPLETE, [result["value"]])
    return "complete"


def sequential_summary(study, url: str) -> str:
    """How far a sequential study went: looks taken, trials finished of the most it could run,
    and each cell's finished seeds."""
    import optuna

    from . import storage as st

    ostudy = optuna.load_study(study_name=study.name, storage=st.open_storage(url))
    looks = ostudy.user_attrs.get(LOOKS_ATTR, [])
    cells = study.cells()
    done = _statuses(ostudy.get_trials(deepcopy=False), "")
    per = {c.key: sum(done.get((c.key, s)) == "done" for s in study.seeds) for c in cells}
    return (f"sequential seeds: {len(looks)} look(s) added seeds; {sum(per.values())} of at most "
            f"{len(cells) * study.sequential['max']} trials finished; seeds a cell: "
            + ", ".join(f"{c.title()} {per[c.key]}" for c in cells))


def _wait_for_others(trials, progress, was_waiting: bool) -> bool:
    """Nothing is free. While other workers' trials run, wait: one of them may yet be lost (its
    machine gone: reaped once its heartbeat is older than the grace period) and must run again."""
    import optuna

    from . import storage as st

    running = sum(t.state == optuna.trial.TrialState.RUNNING and st.ATTR + "pid" in t.system_attrs for t in trials)
    if running and not was_waiting:
        progress.say(f"nothing left to claim; waiting for {running} running trial(s) of other workers")
    return running > 0


def _trial_attrs(cell, seed: int, config) -> dict:
    """The user attributes that tie a trial record to its cell x seed and resolved config."""
    return {"cell_key": cell.key, "seed": seed, "cell": json.dumps(cell.label_dict), "config": TrialConfig.of(config).to_json()}


def make_sampler(study, n_existing: int = 0):
    """The study's sampler; re-created at every claim, so its seed advances with the trial count
    (a fixed seed would replay the same random start-up point for every trial)."""
    import optuna

    kind, seed = study.search["sampler"], study.seeds[0] + n_existing
    if kind == "grid":
        space = {k: list(v) if isinstance(v, list) else list(v["choices"]) for k, v in study.factors.items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _suggest(trial, name, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _claim_search(study, ostudy, store, trials, run: str = ""):
    """Sample the next point of a search study (lock held); None once the budget is used. The
    new trial names its owner first: a sample that fails later is marked failed, never left
    RUNNING without an owner."""
    import optuna

    from . import storage as st

    if sum(st.trial_status(t, run) in st.TAKEN for t in trials) >= study.search["n_trials"]:
        return None
    sampler_study = optuna.load_study(study_name=study.name, storage=store, sampler=make_sampler(study, len(trials)))
    trial = sampler_study.ask()
    tid = trial._trial_id
    for k, v in st.owner_attrs().items():
        store.set_trial_system_attr(tid, k, v)
    try:
        params = {k: _suggest(trial, k, d) for k, d in study.distributions().items()}
        cell = study.search_cell(params)
        seed = study.seeds[0]
        config = study.trial(cell, seed)
        for k, v in _trial_attrs(cell, seed, config).items():
            store.set_trial_user_attr(tid, k, v)
    except BaseException as e:
        with contextlib.suppress(Exception):
            st.mark_failed(store, tid, "harness", f"the sampled point could not be set up: {type(e).__name__}: {e}")
        raise
    return tid, cell, seed, config


def _finish_wandb(logger, code: int) -> None:
    if logger is not None:
        try:
            logger.experiment.finish(exit_code=code)
        except Exception:  # noqa: BLE001 - tracking must never break a study
            pass


def gpu_assignment(workers: int, visible: list[str], per_worker: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each local worker: worker i gets the i-th group of ``per_worker``
    GPUs (a trial's ``trainer.devices``), cycling when there are more workers than groups."""
    groups = [visible[g * per_worker:(g + 1) * per_worker] for g in range(len(visible) // per_worker)]
    if not groups:
        raise StudyError("command line", "--workers", f"a trial needs {per_worker} GPUs (trainer.devices) but only "
                         f"{len(visible)} are visible ({','.join(visible) or 'none'}).")
    return [",".join(groups[i % len(groups)]) for i in range(workers)]


def _worker_gpus(study, workers: int) -> list[str] | None:
    """Per-worker GPU lists on a machine with several GPUs (None: leave CUDA_VISIBLE_DEVICES alone)."""
    if study.trainer.accelerator == "cpu":
        return None
    import torch

    count = torch.cuda.device_count()
    if count <= 1:
        return None
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d.strip() for d in env.split(",") if d.strip()] if env else [str(i) for i in range(count)]
    return gpu_assignment(workers, visible[:count], study.trainer.devices)


def _spawn_workers(args, url: str, run_dir: Path, gpus: list[str] | None = None) -> list[int]:
    from . import storage as st

    procs = []
    threads = _threads(args)
    for i in range(args.workers):
        cmd = [sys.executable, "-m", "ablate.run", args.study, *args.overrides, "--worker", "--worker-index", str(i),
               "--run-dir", str(run_dir), "--threads", str(threads), "--no-report"]
        if args.no_wandb:
            cmd.append("--no-wandb")
        if args.no_pruning:
            cmd.append("--no-pruning")
        if args.max_trials:
            cmd += ["--max-trials", str(args.max_trials)]
        # the URL goes by environment, not argv: command lines are public (ps) and W&B records them
        env = {**os.environ, "PYTHONUNBUFFERED": "1", st.STORAGE_ENV: url}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        procs.append(subprocess.Popen(cmd, env=env))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    return codes


def _check_args(args) -> None:
    for key, value, least in (("--workers", args.workers, 1), ("--threads", args.threads, 0),
                              ("--max-trials", args.max_trials, 0)):
        if value < least:
            raise StudyError("command line", key, f"{value}: give {least} or more" +
                             (" (0: the default)." if least == 0 else "."))


def _print_config(study, args) -> int:
    if study.search:
        exit_with(StudyError("command line", "--print-config", "a search study's trials are sampled as it runs; "
                             "--print-config works on grid studies (python -m ablate.report lists what ran)."))
    plan = study.trials()
    picks = range(1, len(plan) + 1) if args.print_config == "all" else None
    if picks is None:
        if not args.print_config.isdigit() or not 1 <= int(args.print_config) <= len(plan):
            exit_with(StudyError("command line", "--print-config",
                                 f"{args.print_config[:40]!r}: give a trial number from 1 to {len(plan)} or 'all'."))
        picks = [int(args.print_config)]
    for i in picks:
        cell, seed = plan[i - 1]
        print(json.dumps({"trial": i, **study.trial_config(cell, seed)}, indent=2))
    return 0


def _check_folder(path: Path, key: str, what: str) -> None:
    """``path`` must be a writable folder, or one that can be made (its nearest existing
    ancestor is a writable folder). Checked before any trial runs; nothing is created."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and not path.is_dir():
        raise StudyError("command line", key, f"the {what} {path} is a file, not a folder; give a folder (it is "
                         "made if missing).")
    if not probe.is_dir():
        raise StudyError("command line", key, f"the {what} {path} cannot be made: {probe} is a file.")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = f"the {what} {path} is" if probe == path else f"the {what} {path} cannot be made: {probe} is"
        raise StudyError("command line", key, f"{where} not writable (permissions or a read-only file system); "
                         f"give a writable folder with {key} or run from one.")


def _prepare(study, args) -> tuple[Path, str]:
    """The run folder and storage URL, checked before any trial runs: the storage is a known
    kind and opens (server reachable, login accepted, journal readable), the run and report
    folders are writable folders. A failure is a StudyError, and leaves no folder it made."""
    import optuna

    from . import storage as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.storage:
        st.check_storage(args.storage, "--storage")
    elif os.environ.get(st.STORAGE_ENV) and not args.worker:
        st.check_storage(os.environ[st.STORAGE_ENV], "$" + st.STORAGE_ENV)
    run_dir = Path(args.run_dir) if args.run_dir else st.default_run_dir(study.name)
    if not args.no_report and not args.worker:
        _check_folder(Path(args.reports_dir), "--reports-dir", "reports folder")
    _check_folder(run_dir, "--run-dir", "run folder")
    url = st.storage_url(run_dir, args.storage)
    made = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        store = st.open_storage(url)
        with st.study_lock(url, study.name):
            st.load_or_create(store, study.name)
    except BaseException as e:
        for d in made:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, Exception) and not isinstance(e, StudyError):
            raise st.storage_error(url, e) from None
        raise
    return run_dir, url


def main(argv=None) -> int:
    t_start, started_at = time.perf_counter(), time.time()
    args = parse_args(argv)
    from .study import load_study

    try:
        _check_args(args)
        if args.smoke:
            from .smoke import run_smoke

            return run_smoke(args.study, args.overrides, run_main=main, print_plan=print_plan,
                             workers=args.workers, threads=args.threads,
                             run_dir=args.run_dir, dry_run=args.dry_run)
        if args.overrides:
            from .overrides import load_with_overrides

            study = load_with_overrides(args.study, args.overrides)
        else:
            study = load_study(args.study)
    except StudyError as e:
        exit_with(e)
    if args.no_pruning:
        study = dataclasses.replace(study, pruner={"name": "none"})
    if args.dry_run:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--dry-run | head` must not traceback
        if args.overrides:
            from .overrides import effective_yaml

            print(effective_yaml(args.study, args.overrides))
        print_plan(study)
        return 0
    if args.print_config:
        return _print_config(study, args)

    from . import storage as st

    # W&B records sys.argv and the report prints the command: neither may hold a password
    sys.argv[:] = [st.redact(a) for a in sys.argv]
    if not args.worker:
        os.environ[st.RUN_ENV] = uuid.uuid4().hex[:12]  # this invocation; its --workers inherit it
    try:
        run_dir, url = _prepare(study, args)
        gpus = _worker_gpus(study, args.workers) if args.workers > 1 and not args.worker else None
    except StudyError as e:
        exit_with(e)
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    if not args.worker:
        n = len(study.trials())
        count = (f"{n} trials to start, up to {len(study.cells()) * study.sequential['max']} (sequential seeds)"
                 if study.sequential else f"{n} trials")
        print(f"ablate: study {study.name} -> storage {st.redact(url)}; {count}; "
              f"{args.workers} worker(s) x {_threads(args, study)} thread(s)", flush=True)
        if not args.no_doctor and not _preflight(study):
            exit_with(StudyError(str(study.path), "model.mechanism",
                                 "the health pre-flight found a hard error (printed above: a block that cannot be "
                                 "built or run, or NaN/Inf at initialisation); fix the block or the factor it "
                                 "names (python -m ablate.doctor for details), or pass --no-doctor to run anyway. "
                                 "Nothing was run."))
    try:
        if args.workers > 1 and not args.worker:
            if gpus:
                print(f"ablate: GPUs per worker: {'; '.join(f'w{i}={g}' for i, g in enumerate(gpus))}", flush=True)
            codes, totals = _spawn_workers(args, url, run_dir, gpus), None
        else:
            codes, totals = [0], worker_loop(study, url, run_dir, args)
    except KeyboardInterrupt:
        print("\nablate: interrupted; run the same command again to resume (finished trials are kept).",
              file=sys.stderr)
        return 130
    except StudyError as e:
        exit_with(e)
    if args.worker:
        return 0
    return _finish(study, url, args, argv, codes, totals, time.perf_counter() - t_start, started_at)


def _preflight(study) -> bool:
    """The doctor's check of every cell's block before the first trial (``ablate/doctor.py``);
    a doctor that itself fails says so and lets the study run."""
    try:
        from .doctor import preflight

        return preflight(study, sys.stdout)
    except Exception as e:  # noqa: BLE001 - a fault of the check must not stop a valid study
        print(f"ablate: the health pre-flight could not run ({type(e).__name__}: {e}); continuing.", flush=True)
        return True


def _finish(study, url: str, args, argv, codes: list[int], totals, wall: float, started_at: float) -> int:
    """Write the report and say how the study stands; returns the exit status (see --help)."""
    from . import storage as st
    from .report import failures, write_report

    if not args.no_report:
        path = write_report(study, url, args.reports_dir, run_info={
            "wall_s": wall, "started": started_at, "workers": args.workers, "run": os.environ.get(st.RUN_ENV),
            "command": st.redact(" ".join(["python -m ablate.run"] + (argv or sys.argv[1:])))})
        print(f"ablate: report written to {path}")
    print(f"ablate: done in {wall:.0f}s" + (f" ({totals['trials']} trials run here)" if totals else ""))
    if study.sequential:
        print(f"ablate: {sequential_summary(study, url)}")
    final, retry = failures(study, url)
    if final:
        print(f"ablate: {len(final)} trial(s) failed for a reason of their own (non-finite loss, out of memory, "
              "an error in the model): final, listed in the report.", file=sys.stderr)
    if retry:
        print(f"ablate: {len(retry)} trial(s) failed for a reason of the harness or its environment (tracking, "
              "storage, files): run the same command again to retry them.", file=sys.stderr)
    code = EXIT_RETRY if retry else EXIT_FAILED if final else 0
    if any(c == 2 for c in codes):
        return 2
    if any(c not in (0, 130) for c in codes):  # a worker died (its output says why)
        return max(code, EXIT_FAILED)
    return code


if __name__ == "__main__":
    sys.exit(main())
