"""One worker of ``python -m ablate.run``: claim -> run -> record, until nothing is left.

Storage (:mod:`ablate.storage`) does the claiming and recording under its study lock; which
(cell, seed) comes next is :func:`ablate.run.claims.choose`; the trial itself is
:func:`ablate.trainer.run_trial`. The worker prints the progress lines, asks the pruner after
each epoch (:class:`TrialReporter`), stamps the heartbeat while a trial runs and stops after
:data:`MAX_HARNESS_STREAK` harness failures in a row.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from .progress import Progress, StudyCounts, eta_seconds, points
from .claims import LOOKS_ATTR, choose
from ..config.trial import TrialConfig
from ..study.search import planned_trials

MAX_HARNESS_STREAK = 3  # harness failures in a row after which a worker stops (the next run retries)
PARENT_ENV = "ABLATE_PARENT_PID"  # a --workers child's runner: the child stops when that process is gone
PARENT_POLL_S = 1.0  # how often a worker looks whether its runner still lives (besides PR_SET_PDEATHSIG)
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal this process gets when its parent dies
_stop: dict = {"signal": None}  # the first stop signal this invocation received
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # each stops a worker as Ctrl-C does


@contextlib.contextmanager
def stopping_on_signals():
    """SIGINT, SIGTERM and SIGUSR1 (SLURM's time-limit / preemption signal, :mod:`ablate.run.slurm`)
    stop this process as Ctrl-C does (a KeyboardInterrupt in the main thread: the trial in flight
    is recorded as interrupted, its checkpoints kept), once: a repeat while it stops is ignored, so
    the recording is not cut short. The signal is remembered (:func:`interrupt_words`,
    :func:`interrupt_status`); the previous handlers come back after."""
    _stop["signal"] = None

    def handler(signum, frame):
        if _stop["signal"] is not None:
            return
        _stop["signal"] = signum
        retry = sys.modules.get("ablate.storage.retry")  # a storage call in flight ends first
        if retry is not None and retry.hold_signal():
            return
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in before:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def interrupt_signal() -> int:
    """The signal that stopped this invocation (SIGINT when it was a plain KeyboardInterrupt)."""
    return _stop["signal"] or signal.SIGINT


def interrupt_words() -> str:
    """'interrupted (SIGTERM)' or 'interrupted (SIGINT)'."""
    return f"interrupted ({signal.Signals(interrupt_signal()).name})"


def interrupt_status() -> int:
    """The exit status of an interrupted invocation: 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(interrupt_signal())


def watch_parent(parent: int) -> None:
    """In a worker of ``--workers``: stop (as on SIGTERM, at once) when the runner ``parent``
    dies, even by ``kill -9``: the kernel's parent-death signal (Linux ``prctl``), and a thread
    that compares ``os.getppid()`` with ``parent`` every :data:`PARENT_POLL_S` seconds (other
    systems, and a parent that died before the ``prctl``)."""
    with contextlib.suppress(Exception):  # not Linux, or no libc: the polling alone
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=poll, name="ablate-parent-watch", daemon=True).start()


def threads_for(args, study=None) -> int:
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

    It also carries the trial's mid-trial checkpoints for the trainer (:func:`ablate.trainer.run_trial`):
    ``checkpoint_dir`` (None: off) and ``on_resume(info, history)``, called once when the trial
    resumes from a checkpoint (storage records where from; the restored epochs become its
    intermediate values).
    """

    def __init__(self, trial, pruning: bool, epochs: int, printer, checkpoint_dir: str | None = None,
                 on_resume=None, ask=None):
        self.trial, self.pruning, self.epochs, self.printer = trial, pruning, epochs, printer
        self.checkpoint_dir, self.on_resume = checkpoint_dir, on_resume
        self.ask = ask  # ask(epoch, miou) -> prune, instead of the trial's pruner (a point search's seeds)

    def __call__(self, epoch: int, miou: float) -> bool:
        self.trial.report(miou, epoch)
        prune = self.pruning and epoch + 1 < self.epochs and (self.ask(epoch, miou) if self.ask
                                                              else self.trial.should_prune())
        self.printer(epoch, miou, prune)
        return prune


@dataclasses.dataclass
class Worker:
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
    index: object = None  # the study's TrialIndex (ablate.storage.index), kept current by each claim
    plan: list = dataclasses.field(default_factory=list)  # study.trials(), the grid's claim order
    cursor: int = 0  # every plan entry before it was taken when the last claim looked

    def checkpoint_dir(self, cell, seed: int, config) -> str | None:
        """The folder of this (cell, seed)'s mid-trial checkpoints (None: checkpoints off)."""
        from ..trainer.checkpoints import trial_folder

        return trial_folder(TrialConfig.of(config), self.run_dir, self.study.name, cell.key, seed)


def open_worker(study, url: str, run_dir: Path, args) -> Worker:
    """The worker's view of the study: its storage, its plan and the factors' choices."""
    import optuna

    from ..storage import records as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store, ostudy = st.open_study(url, study.name, pruner=study.make_pruner())
    plan = study.trials()
    choices: dict[str, list] = {}
    for c in study.cells():
        for k, v in c.label:
            if v not in choices.setdefault(k, []):
                choices[k].append(v)
    tag = f"[w{args.worker_index}] " if args.worker else ""
    cells = study.cells()
    total = study.search["n_trials"] if study.search else len(plan)
    if study.point_search():  # every point's seeds, then the confirmation
        total = sum(planned_trials(study.search))
    if study.sequential:
        total = f"{len(plan)}-{len(cells) * study.sequential['max']}"  # the start plan, up to every seed
    run = os.environ.get(st.RUN_ENV, "")
    return Worker(study, url, run_dir, args, store, ostudy, Progress(tag, total), run,
                  {(c.key, s): i + 1 for i, (c, s) in enumerate(plan)}, choices, cells,
                  index=st.TrialIndex.open_on(store, ostudy._study_id, run), plan=plan)


def worker_loop(study, url: str, run_dir: Path, args) -> dict:
    """Claim and run trials until none is free; returns this worker's totals."""
    from ..storage import records as st

    from .evaluate import evaluate_next, open_evaluations, others_evaluating

    w = open_worker(study, url, run_dir, args)
    evals = open_evaluations(w)  # evaluation-time factors: trained weights evaluated first (ablate/run/evaluate.py)
    totals = {"trials": 0, "attempts": 0, "error": 0, "harness": 0, "evaluations": 0}
    waiting, streak, finished = False, 0, True  # finished: a trial ended here since the study line was shown
    while not args.max_trials or totals["attempts"] < args.max_trials:
        if waiting:
            time.sleep(min(5.0, st.heartbeat_s()))
        if evals is not None and count_evaluation(evaluate_next(w, evals, threads_for(args, study), interrupt_words),
                                                      totals):
            waiting = False
            continue
        claim, w.index = st.claim_next(url, w.ostudy, functools.partial(choose, w), w.index)
        if finished and (totals["attempts"] or w.progress.tty):  # plain lines after a trial; the bar at once
            w.progress.study(study_counts(w, w.index))
        finished = False
        if claim is None:
            waiting = wait_for_others(w.index, w.progress, waiting) or others_evaluating(evals) > 0
            if waiting:
                continue
            break
        waiting = False
        outcome = run_claimed(w, claim)
        totals["attempts"] += 1
        finished = True
        totals[outcome if outcome in ("error", "harness") else "trials"] += 1
        streak = streak + 1 if outcome == "harness" else 0
        if streak >= MAX_HARNESS_STREAK:
            w.progress.say(f"stopping: {streak} trials in a row failed for a reason of the harness or its "
                           "environment (above); fix it and run the same command again to retry them")
            break
    if finished:  # stopped by --max-trials or by failures in a row: no claim read the storage since
        w.index.refresh()
        w.progress.study(study_counts(w, w.index))
    w.progress.close()
    return totals


def count_evaluation(outcome: str | None, totals: dict) -> bool:
    """Count an evaluation's outcome (None: none was ready) in ``totals``; whether one ran."""
    if outcome is None:
        return False
    totals["attempts"] += 1
    totals["evaluations" if outcome == "complete" else outcome] += 1
    return True


def study_counts(w: Worker, trials) -> StudyCounts:
    """The study-level progress from storage (every worker's trials): trials finished, final
    failures and this run's harness failures among them, of the total known now (a sequential
    study's start plan plus the seeds its looks added), and the ETA from those finished trials'
    times with as many workers as trials running, this one included. ``trials``: the worker's
    :class:`~ablate.storage.index.TrialIndex` (counts it keeps: no storage read) or a list of trials."""
    from ..storage import records as st

    index = trials if isinstance(trials, st.TrialIndex) else st.TrialIndex.of(trials, w.run)
    ended = ("done", "failed here")
    most, wanted = None, None
    if w.study.search:
        done = index.counts["done"] + index.counts["failed here"]
        total, failed = w.study.search["n_trials"], done - index.n_finished
        if w.study.point_search():
            total = max(done, sum(planned_trials(w.study.search)))
        times = [x for v in index.walls.values() for x in v]
    else:
        wanted = {(c.key, s) for c, s in (w.plan or w.study.trials())}
        if w.study.sequential:
            looks = w.ostudy.user_attrs.get(LOOKS_ATTR, [])
            wanted |= {(k, s) for look in looks for k, seeds in look["added"].items() for s in seeds}
            most = len(w.cells) * w.study.sequential["max"]
        ended_pairs = [p for p in wanted if index.status.get(p) in ended]
        total, done, failed = len(wanted), len(ended_pairs), sum(p not in index.ok for p in ended_pairs)
        times = [x for p, v in index.walls.items() if p in wanted for x in v]
    eta = eta_seconds(times, total - done, index.counts["running"] + 1)
    return StudyCounts(done, total, failed, eta, most)


def wait_for_others(index, progress, was_waiting: bool) -> bool:
    """Nothing is free. While other workers' trials run, wait: one of them may yet be lost (its
    machine gone: reaped once its heartbeat is older than the grace period) and must run again.
    ``index``: the study's :class:`~ablate.storage.index.TrialIndex` (its open trials alone are looked at)."""
    import optuna

    from ..storage import records as st

    running = sum(r.state == optuna.trial.TrialState.RUNNING and r.owned for r in st.read_trials(index.open_trials()))
    if running and not was_waiting:
        progress.say(f"nothing left to claim; waiting for {running} running trial(s) of other workers")
    return running > 0


def run_claimed(w: Worker, claim) -> str:
    """Run one claimed trial and record it; returns 'complete', 'pruned', 'error' (final) or
    'harness' (retried by the next invocation)."""
    import optuna

    from ..storage import records as st
    from ..trainer.trial import HarnessFailed, TrialFailed, failure_kind, run_trial, wandb_summary

    t0 = time.perf_counter()
    tid, cell, seed, config = claim.trial_id, claim.cell, claim.seed, claim.config
    title, epochs = cell.title(), config.train.epochs
    head = f"trial {claim.index}/{w.progress.total} {title} seed={seed}"
    w.progress.say(f"{head}: started")
    logger = None
    try:
        with st.Heartbeat(w.store, tid):
            logger, isolated_wandb = tracker(w, config, f"{title} seed={seed}")
            reporter = TrialReporter(optuna.trial.Trial(w.ostudy, tid), w.study.pruner["name"] != "none", epochs,
                                     w.progress.epoch_printer(claim.index, title, seed, epochs, t0),
                                     claim.checkpoint_dir, functools.partial(_resumed, w, tid, head, logger),
                                     _point_pruning(w, claim))
            result = run_trial(config, reporter, logger=logger, threads=threads_for(w.args, w.study),
                               wandb=isolated_wandb)
            if logger is not None:
                logger.experiment.summary.update(wandb_summary(result))
            finish_wandb(logger, 0)
            logger = None
            result["wall_s"] = time.perf_counter() - t0  # closing the W&B run is the harness's time too
            outcome = st.record_result(w.store, tid, result)
    except KeyboardInterrupt:
        st.record_failure(w.store, tid, "interrupted", f"{interrupt_words()}; run again to resume")
        finish_wandb(logger, 130)
        raise
    except Exception as e:  # noqa: BLE001 - any failure is recorded, the study goes on
        stop = _environment_fault(e)
        if stop is not None:  # a full disk or a forbidden folder: every next trial would fail alike
            st.record_failure(w.store, tid, "harness", stop.message)
            w.progress.say(f"{head}: stopped (the next run resumes it): {' '.join(stop.what.split())}")
            finish_wandb(logger, 1)
            raise stop from None
        kind = failure_kind(e)
        reason = str(e) if isinstance(e, (TrialFailed, HarnessFailed)) else f"{type(e).__name__}: {e}"
        if kind == "harness" and not isinstance(e, HarnessFailed) and not w.traced:
            traceback.print_exc()
            w.traced = True
        st.record_failure(w.store, tid, kind, reason)  # a broken storage: reaped as lost later
        what = "FAILED" if kind == "error" else "FAILED (harness or environment; the next run retries it)"
        w.progress.say(f"{head}: {what}: {' '.join(reason.split())[:200]}")
        finish_wandb(logger, 1)
        return kind
    wall, curve = result["wall_s"], result["curve"]
    if outcome == "pruned":
        w.progress.say(f"{head}: pruned after epoch {result['pruned_epoch'] + 1}/{epochs} (val mIoU "
                       f"{points(curve[-1])})  ({wall:.0f}s)")
    else:
        w.progress.say(f"{head}: val mIoU {points(result['value'])}  ({wall:.0f}s)")
    return outcome


def _point_pruning(w: Worker, claim):
    """A point search's seed asks the pruner about its point (:func:`ablate.run.search.point_prunes`)."""
    if not w.study.point_search():
        return None
    from .search import point_prunes

    return functools.partial(point_prunes, w, claim)


def _environment_fault(e: BaseException):
    """The RetryableError that should stop the worker for ``e`` (None: a trial's failure like any
    other): one of ours (a checkpoint or file that could not be written, a storage that stayed
    away), or an OSError of a full disk or forbidden folder that names its path."""
    from ..config.errors import RetryableError, disk_error, disk_fault

    if isinstance(e, RetryableError):
        return e
    fault = disk_fault(e)
    if fault is not None and fault.filename:
        return disk_error(fault.filename, fault)
    return None


def _resumed(w: Worker, tid: int, head: str, logger, info: dict, history: list[float]) -> None:
    """The trial resumed from a checkpoint: storage records where from, its W&B run gets the
    epochs before it again (:func:`ablate.trainer.tracking.replay`); a line says so."""
    from ..storage import records as st
    from ..trainer.tracking import replay

    st.record_resumed(w.store, tid, info, history)
    replay(logger, info, history)
    w.progress.say(f"{head}: resumed from its checkpoint after epoch {info['epoch']} (step {info['step']})")


def tracker(w: Worker, config: TrialConfig, name: str):
    """The trial's W&B logger (None when off, or under DDP, where the trial process makes its own
    run on rank 0) and the W&B arguments for such a trial process (None otherwise)."""
    if not w.study.tracking.get("wandb", True) or w.args.no_wandb:
        return None, None
    wandb_args = {"run_dir": str(w.run_dir), "project": w.study.tracking.get("project", "ablate"),
                  "entity": w.study.tracking.get("entity"), "name": name}
    if w.study.trainer.isolated:
        return None, wandb_args
    from ..trainer.tracking import make_logger

    return make_logger(config.as_dict(), w.run_dir, wandb_args["project"], wandb_args["entity"], name), None


def finish_wandb(logger, code: int) -> None:
    if logger is not None:
        try:
            logger.experiment.finish(exit_code=code)
        except Exception:  # noqa: BLE001 - tracking must never break a study
            pass
