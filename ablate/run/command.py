"""``python -m ablate.run STUDY.yaml``: run every cell x seed of a study, then write its report.

Re-running the same command resumes: finished trials are kept, interrupted or lost ones are run
again, nothing finished is run twice. ``--workers N`` starts N local worker processes on the
same storage; the same command on other machines with one ``--storage postgresql://...`` URL
joins the same study. A study with sequential seeds (``seeds: {start, max}``) runs its start
seeds, then adds seeds, one look at a time, only to the comparisons still undecided
(:func:`ablate.stats.sequential_look`); ``--dry-run`` prints the plan and the level it judges at.

This module is the command: arguments, checks before any trial, the worker processes, the run
record and the report at the end. A worker's loop is :mod:`ablate.run.worker` (claim -> run ->
record); what it claims next is :mod:`ablate.run.claims`; storage does the claiming and the
recording (:mod:`ablate.storage`).
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
import uuid
from pathlib import Path

from ..config.errors import EXIT_RETRY, RetryableError, StudyError, exit_retry, exit_with
from .claims import LOOKS_ATTR, comparison_pairs, sequential_summary, trial_attrs  # noqa: F401 - tests use them
from .preflight import print_checks
from .spawn import spawn_workers, worker_gpus
from .worker import (
    PARENT_ENV,
    TrialReporter,
    Worker,
    interrupt_signal,
    interrupt_status,
    interrupt_words,
    stopping_on_signals,
    study_counts,
    threads_for,
    watch_parent,
    worker_loop,
)


EXIT_FAILED = 1
EXIT_STATUS = """exit status:
  0    no trial of the study has failed (trials left to run by --max-trials, or running in another
       runner, are not failures)
  1    some trials failed for a reason of their own (non-finite loss, out of memory, an error in the
       model's forward or backward): final, listed in the report
  2    a mistake in the study file or on the command line, or a storage, run folder or reports
       folder that cannot be used: one paragraph on stderr, nothing was run
  3    some trials failed for a reason of the harness or its environment (tracking, storage, files),
       or the run stopped on one (a full disk, a read-only folder, a storage that stayed away for
       $ABLATE_STORAGE_RETRY_S seconds; one paragraph naming it): run the same command again
  130  interrupted by SIGINT (Ctrl-C): every worker stops, its trial is kept to resume; run the
       same command again to resume
  138  interrupted by SIGUSR1 (SLURM's warning before a time limit or a preemption): the same as
       130; under ablate submit the task then requeues itself and its trial resumes
  143  interrupted by SIGTERM (kill PID, a scheduler's stop): the same as 130; a worker whose
       runner is killed with SIGKILL stops by itself within seconds"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablate.run", description=__doc__.split("\n")[0], epilog=EXIT_STATUS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="study file (YAML), e.g. studies/gcn_effect.yaml")
    p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the run folder); "
                   "e.g. sqlite:///runs/x.db or postgresql://user:pass@host/db")
    p.add_argument("--run-dir", help="run folder (default: runs/<study name>)")
    p.add_argument("--reports-dir", default="reports", help="where the report goes (default: reports)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: $ABLATE_WORKERS, else chosen from this machine's cores, "
                        "GPUs and memory and printed; see ablate/run/parallel.py)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers); "
                   "a study's train.threads wins (it is part of the cell key)")
    p.add_argument("--dry-run", action="store_true", help="print the trial plan (cells x seeds) and exit")
    p.add_argument("--allow-undecidable", action="store_true",
                   help="run a plan whose seeds cannot decide some family of comparisons (a screen)")
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
                        "folder, no report (see ablate/run/smoke.py)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # child process of --workers
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_intermixed_args(argv)  # not parse_args: 'study.yaml --dry-run k=v' must parse too


def print_plan(study, out=None) -> None:
    out = out or sys.stdout  # looked up at call time (a caller may have redirected it)
    if study.point_search():
        from .search import print_point_plan

        print_point_plan(study, out)
        return
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
        from ..stats import ALPHA
        from ..stats import look_counts

        k = len(look_counts(seq["start"], seq["max"], seq["step"]))
        print(f"  seeds: {', '.join(map(str, study.seeds[:seq['start']]))} in every cell; then, after each look, "
              f"{seq['step']} more (in order: {', '.join(map(str, study.seeds[seq['start']:]))}) for each "
              f"comparison still undecided and its baseline, up to {seq['max']}", file=out)
        spending = (study.analysis or {}).get("spending", "obrien_fleming").replace("_", "-")
        print(f"  looks: at most {k} (seeds {', '.join(map(str, look_counts(seq['start'], seq['max'], seq['step'])))}"
              f"); each compares an exact test with the Lan-DeMets {spending} boundary at the family's "
              f"{study.correction} share of alpha {ALPHA:g}; margin ±{study.margin:g} points; "
              f"{len(comparison_pairs(study, cells))} comparison(s)", file=out)
    else:
        print(f"  seeds: {', '.join(map(str, study.seeds))}", file=out)
    if study.pruner["name"] != "none":
        opts = ", ".join(f"{k}={v}" for k, v in study.pruner.items() if k != "name")
        print(f"  pruner: {study.pruner['name']} ({opts})", file=out)
    if study.evals:  # evaluation-time factors: trainings, evaluations and the saving (ablate/study/evaluations.py)
        from ..study.evaluations import plan_lines

        print("\n".join(plan_lines(study)), file=out)



def _check_args(args) -> None:
    for key, value, least in (("--workers", args.workers, 1), ("--threads", args.threads, 0),
                              ("--max-trials", args.max_trials, 0)):
        if value is not None and value < least:
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


def _locate(study, args) -> tuple[Path, str]:
    """The run folder and storage URL, checked before anything is made: the storage is a known
    kind, the run and report folders are writable folders (or can be made). StudyError if not."""
    from ..storage import records as st

    if args.storage:
        st.check_storage(args.storage, "--storage")
    elif os.environ.get(st.STORAGE_ENV) and not args.worker:
        st.check_storage(os.environ[st.STORAGE_ENV], "$" + st.STORAGE_ENV)
    run_dir = Path(args.run_dir) if args.run_dir else st.default_run_dir(study.name)
    if not args.no_report and not args.worker:
        _check_folder(Path(args.reports_dir), "--reports-dir", "reports folder")
    _check_folder(run_dir, "--run-dir", "run folder")
    return run_dir, st.storage_url(run_dir, args.storage)


def _prepare(study, args) -> tuple[Path, str]:
    """The run folder and storage URL, checked before any trial runs (:func:`_locate`), then the
    folder made and the storage opened (server reachable, login accepted, journal readable). A
    failure is a StudyError, and leaves no folder it made."""
    return _open(study, *_locate(study, args))


def _open(study, run_dir: Path, url: str) -> tuple[Path, str]:
    """Make the run folder and open (or create) the study in storage; a failure is a StudyError
    and removes the folders it made."""
    import optuna

    from ..storage import records as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    made = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        st.open_study(url, study.name)
    except BaseException as e:
        for d in made:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, Exception) and not isinstance(e, StudyError):
            raise st.storage_error(url, e) from None
        raise
    return run_dir, url


def _load(args):
    """The study of the command line, overrides applied, its file read once (a mistake exits 2);
    with --smoke, the smoke study, ``args`` set for a smoke run (its folder, no report, no W&B)
    and ``args.smoke_run`` holding it (ablate/run/smoke.py), or 0 after a smoke --dry-run."""
    from ..study.overrides import load_with_overrides, read_raw

    try:
        _check_args(args)
        if args.smoke:
            from .smoke import prepare_smoke

            smoke = prepare_smoke(args.study, args.overrides, print_plan, run_dir=args.run_dir, dry_run=args.dry_run)
            if isinstance(smoke, int):
                return smoke
            args.study, args.overrides, args.run_dir, args.smoke_run = str(smoke.effective), [], str(smoke.folder), smoke
            args.no_report = args.no_wandb = args.allow_undecidable = True
            return smoke.study
        args.raw = read_raw(args.study)
        return load_with_overrides(args.study, args.overrides, raw=args.raw)
    except StudyError as e:
        exit_with(e)


def main(argv=None) -> int:
    """The command (see the module's docstring and ``--help``); returns the exit status.
    SIGINT, SIGUSR1 and SIGTERM stop it, and its workers, as Ctrl-C does (exit 130, 138 or 143)."""
    with stopping_on_signals():
        return _main(argv)


def _main(argv=None) -> int:
    t_start, started_at = time.perf_counter(), time.time()
    args = parse_args(argv)
    if args.worker and os.environ.get(PARENT_ENV, "").isdigit():
        watch_parent(int(os.environ[PARENT_ENV]))  # the runner killed with -9: stop within seconds
    study = _load(args)
    if isinstance(study, int):  # a smoke --dry-run's exit status
        return study
    if getattr(args, "smoke_run", None) is not None:
        from .smoke import finish_smoke

        return finish_smoke(args.smoke_run, _run(study, args, argv, t_start, started_at))
    return _run(study, args, argv, t_start, started_at)


def _run(study, args, argv, t_start: float, started_at: float) -> int:
    """The run of a loaded study (a smoke run's too): pre-flights, storage, workers, the report."""
    if args.no_pruning:
        study = dataclasses.replace(study, pruner={"name": "none"})
    if args.dry_run:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--dry-run | head` must not traceback
        if args.overrides:
            from ..study.overrides import effective_yaml

            print(effective_yaml(args.study, args.overrides, raw=args.raw))
        print_plan(study)
        print_checks(_stats_preflight(study, args, power=True))
        return 0
    if args.print_config:
        return _print_config(study, args)

    found = [] if args.worker else _stats_preflight(study, args, power=False)  # refuses before anything is written
    from ..storage import records as st

    # W&B records sys.argv and the report prints the command: neither may hold a password
    sys.argv[:] = [st.redact(a) for a in sys.argv]
    if not args.worker:
        os.environ[st.RUN_ENV] = uuid.uuid4().hex[:12]  # this invocation; its --workers inherit it
    try:  # everything checked before anything is written: a refusal leaves no run folder behind
        if not args.worker:
            _check_plan(study)
        _set_parallel(study, args)
        run_dir, url = _locate(study, args)
        gpus = worker_gpus(study, args.workers) if args.workers > 1 and not args.worker else None
        server = "://" in url  # a server is checked before the first line; a journal is made after the checks
        if server or args.worker:
            _open(study, run_dir, url)
        if not args.worker:
            _announce(study, args, url)
            print_checks(found)
        if not (server or args.worker):
            _open(study, run_dir, url)
    except StudyError as e:
        exit_with(e)
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    try:
        if args.workers > 1 and not args.worker:
            if gpus:
                print(f"ablate: GPUs per worker: {'; '.join(f'w{i}={g}' for i, g in enumerate(gpus))}", flush=True)
            codes, totals = spawn_workers(args, url, run_dir, gpus), None
        else:
            codes, totals = [0], worker_loop(study, url, run_dir, args)
        if args.worker:
            return 0
        return _finish(study, url, args, argv, codes, totals, time.perf_counter() - t_start, started_at)
    except KeyboardInterrupt:
        print(f"\nablate: {interrupt_words()}; run the same command again to resume (finished trials are kept, "
              "the trials in flight resume from their checkpoints).", file=sys.stderr, flush=True)
        return interrupt_status()
    except StudyError as e:
        exit_with(e)
    except RetryableError as e:  # a full disk, a read-only folder, a storage that stayed away
        exit_retry(e)


def _check_plan(study) -> None:
    """Refuse a plan that cannot run here before anything is written (StudyError naming the
    key): more compute than :data:`ablate.run.estimate.MAX_PLAN_S` even at the fastest step, or a
    model too large for this machine's memory (:func:`ablate.run.estimate.check_plan`)."""
    from .estimate import check_plan

    check_plan(study)


def _stats_preflight(study, args, power: bool) -> list:
    """Whether the planned seeds can decide each family (``ablate/run/preflight.py``); an
    undecidable plan exits 2 here unless allowed (nothing is written before). The caller prints
    the returned checks (``print_checks``): after the plan, or after a run's first line."""
    from .preflight import checks, refusal

    found = checks(study, power=power)
    err = refusal(study, found, getattr(args, "allow_undecidable", False))
    if err is not None:
        exit_with(err)
    return found


def _set_parallel(study, args) -> None:
    """``--workers`` (and ``--threads``) when the command line leaves them out: $ABLATE_WORKERS,
    else the machine's rule (:func:`ablate.run.parallel.choose`), said in the first line."""
    from .parallel import choose, default_workers

    args.parallel_why = ""
    if args.workers is None:
        args.workers = 1 if args.worker else default_workers()
    if args.workers is None:
        choice = choose(study)
        args.workers, args.threads = choice.workers, args.threads or choice.threads
        args.parallel_why = f" (chosen: {choice.why}; --workers and --threads override)"


def _announce(study, args, url: str) -> None:
    """The first line of a run, then the doctor's pre-flight (a hard error exits 2)."""
    from ..storage import records as st

    n = len(study.trials())
    count = (f"{n} trials to start, up to {len(study.cells()) * study.sequential['max']} (sequential seeds)"
             if study.sequential else f"{n} trials")
    if study.point_search():
        from ..study.search import planned_trials

        count = "{} search + {} confirmation trials".format(*planned_trials(study.search))
    print(f"ablate: study {study.name} -> storage {st.redact(url)}; {count}; "
          f"{args.workers} worker(s) x {threads_for(args, study)} thread(s){args.parallel_why}", flush=True)
    args.health = [] if not args.no_doctor else None  # the doctor's findings, for the report
    if not args.no_doctor and not _preflight(study, args.health):
        raise StudyError(str(study.path), "model.mechanism", "the health pre-flight found a hard error (listed "
                         "above: a block that cannot be built or run, or NaN/Inf at initialisation); fix the block or "
                         "the factor it names (python -m ablate.doctor for details), or pass --no-doctor to run "
                         "anyway.")


def _preflight(study, found: list | None = None) -> bool:
    """The doctor's check of every cell's block before the first trial (``ablate/doctor/check.py``),
    its findings appended to ``found``; a doctor that itself fails says so and lets the study run."""
    try:
        from ..doctor.check import preflight

        return preflight(study, sys.stdout, found)
    except Exception as e:  # noqa: BLE001 - a fault of the check must not stop a valid study
        print(f"ablate: the health pre-flight could not run ({type(e).__name__}: {e}); continuing.", flush=True)
        return True


def run_record(study, url: str, info: dict, data: dict | None = None) -> dict:
    """The run record of this invocation (its wall time, workers, command, and from storage its
    trials' compute and overhead: :func:`ablate.storage.summary.run_totals`), written to the study in
    storage (``last_run``, which later reports read) and returned. ``data``: the study's storage
    as :func:`ablate.report.collect` read it, if read already."""
    from ..storage import records as st
    from ..storage.summary import collect, run_totals

    info = run_totals(info, (data if data is not None else collect(study, url))["finished"])
    st.save_run_record(url, study.name, info)
    return info


def _finish(study, url: str, args, argv, codes: list[int], totals, wall: float, started_at: float) -> int:
    """Write the report and say how the study stands; returns the exit status (see --help)."""
    from ..storage import records as st
    from ..report.command import write_report
    from ..storage.summary import collect

    data = collect(study, url)  # storage read once for the run record, the report and the failures
    if not args.no_report:
        info = run_record(study, url, {
            "wall_s": wall, "started": started_at, "workers": args.workers, "run": os.environ.get(st.RUN_ENV),
            "command": st.redact(" ".join(["python -m ablate.run"] + (argv or sys.argv[1:])))}, data)
        health = getattr(args, "health", None)
        path = write_report(study, url, args.reports_dir, run_info=info, data=data, findings=health)
        print(f"ablate: report written to {path}")
    evals = f" and {totals['evaluations']} evaluations" if totals and totals.get("evaluations") else ""
    print(f"ablate: done in {wall:.0f}s" + (f" ({totals['trials']} trials{evals} run here)" if totals else ""))
    if study.sequential:
        print(f"ablate: {sequential_summary(study, url)}")
    final, retry = data["failed"], data["retry"]
    if final:
        print(f"ablate: {len(final)} trial(s) failed for a reason of their own (non-finite loss, out of memory, "
              "an error in the model): final, listed in the report.", file=sys.stderr)
    if retry:
        print(f"ablate: {len(retry)} trial(s) failed for a reason of the harness or its environment (tracking, "
              "storage, files): run the same command again to retry them.", file=sys.stderr)
    code = EXIT_RETRY if retry else EXIT_FAILED if final else 0
    if any(c == 2 for c in codes):
        return 2
    if any(c == EXIT_RETRY for c in codes):  # a worker stopped on a full disk or a storage outage (said above)
        return EXIT_RETRY
    if any(c not in (0, 130) for c in codes):  # a worker died (its output says why)
        return max(code, EXIT_FAILED)
    return code


if __name__ == "__main__":
    sys.exit(main())
