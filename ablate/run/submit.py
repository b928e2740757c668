"""``ablate submit STUDY.yaml``: run a study on a SLURM cluster as one job array of workers.

``ablate submit studies/x.yaml --workers 8 --partition gpu --gpus-per-worker 1 --time 12:00:00``
submits, through submitit, one job array of 8 tasks; each task is the worker of ``ablate run``
(claim -> run -> record, :mod:`.worker`) against the study's storage, so the tasks share the
trials exactly as ``--workers`` processes do. A last job, dependent on the array (``afterany``),
writes the report. ``ablate run STUDY --submit ...`` is the same command. What runs inside the
jobs, and the preemption / time-limit signal, is :mod:`.slurm`.

Storage must reach every node: a PostgreSQL URL (its password in ``~/.pgpass`` or
``$PGPASSFILE``, never in the URL, which travels in the jobs' files), or a journal file on a
shared file system. The run folder (checkpoints, W&B offline runs, the jobs' logs), the reports
folder and ``train.checkpoint_dir`` must be shared too; on a partition whose only node is this
machine, local folders are shared by construction. ``--dry-run`` prints the two sbatch scripts
and submits nothing (no cluster needed).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import socket
import sys
import textwrap
import time
from pathlib import Path

from ..config.errors import StudyError, exit_with
from .slurm import (PREEMPT_SIGNAL, SIGNAL_DELAY_S, SUBMISSIONS_ATTR, filesystem_of, load, only_this_machine,
                    partition_nodes, shared_filesystem, slurm_report, slurm_worker)

DEFAULT_TIME = "24:00:00"
STORAGE_ADVICE = ("use a PostgreSQL server (--storage postgresql://USER@HOST/DB, the password in ~/.pgpass) or a "
                  "journal file on a file system every node mounts (NFS, Lustre, GPFS, BeeGFS, CephFS)")
RESERVED = ("array", "signal", "dependency", "output", "error", "requeue", "open_mode")  # set by submit itself


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ablate submit", description=__doc__.split("\n")[0],
                                epilog="exit status: 0 submitted (or printed, with --dry-run); 2 refused: one "
                                       "paragraph on stderr, nothing submitted")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the same overrides as ablate run's")
    p.add_argument("--storage", help="Optuna storage URL every node reaches (default: $ABLATE_STORAGE, else the "
                   "journal file in the run folder, which must then be on a shared file system)")
    p.add_argument("--run-dir", help="run folder on a shared file system (default: runs/<study name>)")
    p.add_argument("--reports-dir", default="reports", help="where the report job writes (default: reports)")
    p.add_argument("--workers", type=int, default=1, help="array tasks, one worker each (default 1)")
    p.add_argument("--partition", help="SLURM partition (default: the cluster's default one)")
    p.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs of each task (default 0)")
    p.add_argument("--cpus-per-worker", type=int, default=1,
                   help="CPUs of each task, also its torch threads unless the study sets train.threads (default 1)")
    p.add_argument("--time", default=DEFAULT_TIME, help="time limit of each task in SLURM's forms (MINUTES, "
                   f"H:M:S, D-H:M:S; default {DEFAULT_TIME}); a task near its limit requeues itself")
    p.add_argument("--mem", help="memory of each task in SLURM's form (16G, 500M)")
    p.add_argument("--account", help="SLURM account to charge")
    p.add_argument("--qos", help="SLURM quality of service")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, repeatable: --slurm constraint=a100 --slurm exclusive=true")
    p.add_argument("--job-name", help="the jobs' name (default: ablate-<study name>)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch scripts; submit nothing")
    p.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    p.add_argument("--no-pruning", action="store_true", help="run every trial to its last epoch")
    p.add_argument("--allow-undecidable", action="store_true", help="as ablate run's")
    return p.parse_intermixed_args(argv)


# ------------------------------------------------------------------------------------------------
# the checks before anything is submitted
# ------------------------------------------------------------------------------------------------

def slurm_minutes(text: str) -> int:
    """SLURM's time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m or not any(int(g or 0) for g in m.groups()):
        raise StudyError("command line", "--time", f"{text[:40]!r} is not a SLURM time limit; give MINUTES, "
                         "HOURS:MINUTES:SECONDS or DAYS-HOURS:MINUTES:SECONDS (e.g. 90, 12:00:00, 2-00:00:00).")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:
        h, mi, s = a, b or 0, c or 0
    elif c is not None:
        h, mi, s = a, b, c
    else:  # M or M:S
        h, mi, s = 0, a, b or 0
    return max(1, -(-(((days or 0) * 24 + h) * 3600 + mi * 60 + s) // 60))


def extra_options(pairs: list[str]) -> dict:
    """``--slurm KEY=VALUE`` as sbatch options (``{'constraint': 'a100'}``; VALUE true: a bare flag)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
            raise StudyError("command line", "--slurm", f"{pair[:60]!r}: give KEY=VALUE with KEY an sbatch option "
                             "without its dashes (constraint=a100, exclusive=true, mail-type=END).")
        key = key.replace("-", "_")
        if key in RESERVED:
            raise StudyError("command line", "--slurm", f"{key.replace('_', '-')} is set by ablate submit itself "
                             "(the array of workers, the preemption signal, the report's dependency, the log files).")
        out[key] = True if value.lower() == "true" else value
    return out


def check_shared(paths: dict[str, Path], nodes: list[str] | None, warn_only: bool = False) -> None:
    """Refuse (StudyError) a path the cluster's nodes may not see: one on a file system that is not
    a known network one, unless the partition's only node is this machine. ``warn_only``: say it on
    stderr instead (a dry run away from the cluster, whose nodes are unknown)."""
    if only_this_machine(nodes):
        return
    for key, path in paths.items():
        kind, mount = filesystem_of(path)
        if shared_filesystem(kind):
            continue
        where = f"a {kind} file system mounted at {mount}" if kind else "a file system this machine cannot name"
        what = "journal file" if key == "--storage" else "folder"
        err = StudyError("command line", key, f"the {what} {path} is on {where}, which the cluster's other nodes "
                         f"do not see (the partition's nodes: {', '.join(nodes) if nodes else 'unknown'}); every "
                         f"worker must reach the study's storage, checkpoints and logs: {STORAGE_ADVICE}, with "
                         "--run-dir and --reports-dir on a shared file system.")
        if not warn_only:
            raise err
        print(textwrap.fill(f"warning: on the cluster ablate submit would refuse this: {err.message}", width=100,
                            break_on_hyphens=False, break_long_words=False), file=sys.stderr)


def check_submission(study, args, run_dir: Path, url: str) -> None:
    """Every refusal before anything is submitted (StudyError): bad numbers, a password in the
    storage URL, no sbatch (unless a dry run), storage or folders the nodes do not share."""
    from ..storage import records as st

    for key, least in (("--workers", 1), ("--cpus-per-worker", 1), ("--gpus-per-worker", 0)):
        if getattr(args, key[2:].replace("-", "_")) < least:
            raise StudyError("command line", key, f"give {least} or more.")
    world = study.trainer.world_size
    gpus = world if study.trainer.accelerator in ("gpu", "cuda") else 0
    for key, have, wanted in (("--cpus-per-worker", args.cpus_per_worker, world),
                              ("--gpus-per-worker", args.gpus_per_worker, gpus)):
        if have < wanted:  # a DDP trial's ranks are the tasks of an srun step inside the worker's allocation
            raise StudyError("command line", key, f"the study's trials run {world} DDP ranks (trainer.devices), each "
                             f"an srun task inside its worker's allocation: give {key} {wanted} or more.")
    if st.redact(url) != url:
        raise StudyError("command line", "--storage", f"the storage URL {st.redact(url)} holds a password, which "
                         "would be written into the jobs' files and environment, which the cluster keeps and shows "
                         "(scontrol show job); take it out of the URL and put it in ~/.pgpass (chmod 600, a line "
                         "HOST:PORT:DB:USER:PASSWORD) or in a file named by $PGPASSFILE, which every node reads.")
    if not args.dry_run and shutil.which("sbatch") is None:
        raise StudyError("command line", "ablate submit", "sbatch is not on PATH: ablate submit runs where SLURM's "
                         "commands do (a cluster's login node; module load slurm); --dry-run prints the job "
                         "scripts anywhere; on one machine, ablate run --workers N runs the same workers.")
    nodes = partition_nodes(args.partition)
    paths = {"--run-dir": run_dir, "--reports-dir": Path(args.reports_dir).absolute()}
    if "://" not in url:
        paths["--storage"] = Path(url)
    elif url.startswith("sqlite"):
        paths["--storage"] = Path(url.split("://", 1)[1][1:].split("?", 1)[0]).absolute()
    if study.train.checkpoint_dir:
        paths["train.checkpoint_dir"] = Path(study.train.checkpoint_dir).absolute()
    check_shared(paths, nodes, warn_only=args.dry_run and nodes is None)


def check_compute(study) -> None:
    """Refuse a plan of more than a year of compute even at the fastest step, as ``ablate run``
    does (its memory check is not made: this machine is not the nodes that train)."""
    from .estimate import MAX_PLAN_S, STEP_FLOOR_S, plan_steps

    steps, trials, key = plan_steps(study)
    if steps * STEP_FLOOR_S > MAX_PLAN_S:
        raise StudyError(str(study.path), key, f"the plan is {trials:,} trial(s) of {steps:,} training steps in all; "
                         f"even at {STEP_FLOOR_S * 1e3:g} ms a step that is more than {MAX_PLAN_S / 86400:.0f} days "
                         f"of compute. Lower {key} (ablate estimate times the real steps).")


def locate(study, args) -> tuple[Path, str]:
    """The run folder (absolute) and the storage URL, the storage checked to be a known kind."""
    from ..storage import records as st

    if args.storage:
        st.check_storage(args.storage, "--storage")
    elif os.environ.get(st.STORAGE_ENV):
        st.check_storage(os.environ[st.STORAGE_ENV], "$" + st.STORAGE_ENV)
    run_dir = (Path(args.run_dir) if args.run_dir else st.default_run_dir(study.name)).absolute()
    url = st.storage_url(run_dir, args.storage)
    return run_dir, url if "://" in url else str(Path(url).absolute())


def open_storage(study, run_dir: Path, url: str) -> None:
    """Make the run folder and open (or create) the study in storage: the server answers, the
    login works, the journal reads, before any job is queued (StudyError if not)."""
    import optuna

    from ..storage import records as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        st.open_study(url, study.name)
    except StudyError:
        raise
    except Exception as e:  # noqa: BLE001 - one paragraph naming the storage
        raise st.storage_error(url, e) from None


# ------------------------------------------------------------------------------------------------
# the jobs
# ------------------------------------------------------------------------------------------------

def job_spec(study, args, run_dir: Path, url: str) -> dict:
    """What each job gets (pickled into its files by submitit): absolute paths, no password."""
    threads = study.train.threads if study.train.threads > 0 else args.cpus_per_worker
    return {"study": str(Path(args.study).absolute()), "overrides": list(args.overrides), "name": study.name,
            "run_dir": str(run_dir), "reports_dir": str(Path(args.reports_dir).absolute()), "url": url,
            "threads": threads, "no_wandb": args.no_wandb, "no_pruning": args.no_pruning, "cwd": os.getcwd(),
            "workers": args.workers, "submitted": time.time(), "command": "ablate submit " + shlex.join(args.argv)}


def slurm_parameters(study, args) -> dict:
    """submitit's SlurmExecutor parameters of each worker task."""
    extra = {"signal": f"{PREEMPT_SIGNAL}@{SIGNAL_DELAY_S}", "requeue": True}
    extra.update({key: getattr(args, key) for key in ("mem", "account", "qos") if getattr(args, key)})
    extra.update(extra_options(args.slurm))
    params = {"job_name": args.job_name or f"ablate-{study.name}", "time": slurm_minutes(args.time),
              "cpus_per_task": args.cpus_per_worker, "signal_delay_s": SIGNAL_DELAY_S,
              # submitit's own handler, before the worker's is in place, takes the same signal
              "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL} PYTHONUNBUFFERED=1"],
              "additional_parameters": extra}
    if args.partition:
        params["partition"] = args.partition
    if args.gpus_per_worker:
        params["gpus_per_node"] = args.gpus_per_worker
    return params


def report_parameters(params: dict, array_id: str) -> dict:
    """The report job's: one CPU, no GPU, not requeued, after every worker task ended in any state."""
    out = {k: v for k, v in params.items() if k != "gpus_per_node"}
    out.update(job_name=params["job_name"] + "-report", cpus_per_task=1)
    extra = {k: v for k, v in params["additional_parameters"].items() if k != "requeue"}
    out["additional_parameters"] = {**extra, "dependency": f"afterany:{array_id}"}
    return out


def sbatch_scripts(params: dict, folder: Path, workers: int) -> tuple[str, str]:
    """The two sbatch scripts as submitit writes them (the report's dependency shown as ARRAY_ID)."""
    from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor submits

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    array = _make_sbatch_string(command=command, folder=folder, map_count=workers, **params)
    return array, _make_sbatch_string(command=command, folder=folder, **report_parameters(params, "ARRAY_ID"))


def submit_jobs(spec: dict, params: dict, folder: Path) -> tuple[str, str]:
    """Submit the worker array, then the report job after it; returns their job ids."""
    import submitit

    workers = submitit.SlurmExecutor(folder=str(folder))
    workers.update_parameters(**params)
    jobs = workers.map_array(slurm_worker, [spec] * spec["workers"], list(range(spec["workers"])))
    array_id = jobs[0].job_id.split("_")[0]
    reporter = submitit.SlurmExecutor(folder=str(folder))
    reporter.update_parameters(**report_parameters(params, array_id))
    return array_id, reporter.submit(slurm_report, spec).job_id


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------

def prepare(args):
    """The study (pruner off with --no-pruning) and the statistics pre-flight's checks; exits 2 on a refusal."""
    from .preflight import checks, refusal

    try:
        study = load(args.study, args.overrides)
    except StudyError as e:
        exit_with(e)
    if args.no_pruning:
        study = dataclasses.replace(study, pruner={"name": "none"})
    found = checks(study, power=args.dry_run)
    err = refusal(study, found, args.allow_undecidable)
    if err is not None:
        exit_with(err)
    return study, found


def main(argv=None) -> int:
    """The command (see the module's docstring and ``--help``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    from ..storage import records as st
    from .preflight import print_checks

    study, found = prepare(args)
    try:
        check_compute(study)
        run_dir, url = locate(study, args)
        check_submission(study, args, run_dir, url)
        params = slurm_parameters(study, args)
        folder = run_dir / "slurm" / "%j"
        if args.dry_run:
            array, report = sbatch_scripts(params, folder, args.workers)
            print(f"# ablate submit: study {study.name}, {len(study.trials())} trials, {args.workers} worker task(s), "
                  f"storage {st.redact(url)}\n# the worker array:\n{array}\n# the report job, after the array "
                  f"(ARRAY_ID: the array's job id):\n{report}", end="")
            print_checks(found)
            return 0
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise StudyError("command line", "ablate submit", "submitit is not installed: pip install -c "
                             "constraints.txt -e '.[cluster]' (or pip install submitit).") from None
        open_storage(study, run_dir, url)
    except StudyError as e:
        exit_with(e)
    print_checks(found)
    spec = job_spec(study, args, run_dir, url)
    try:
        array_id, report_id = submit_jobs(spec, params, folder)
    except Exception as e:  # noqa: BLE001 - sbatch refused (a partition, account or limit it rejects)
        exit_with(StudyError("command line", "sbatch", f"the cluster refused the jobs: {' '.join(str(e).split())[:600]}"))
    record = {"array": array_id, "report": report_id, "workers": args.workers, "submitted": spec["submitted"],
              "host": socket.gethostname(), "logs": str(run_dir / "slurm")}
    save_submission(url, study.name, record)
    watch = shlex.join(["ablate", "status", args.study, *args.overrides] +
                       (["--storage", st.redact(url)] if args.storage else []) +
                       (["--run-dir", args.run_dir] if args.run_dir else []))
    print(f"ablate: study {study.name} -> storage {st.redact(url)}; {len(study.trials())} trials; SLURM job array "
          f"{array_id} ({args.workers} worker task(s)) and report job {report_id} (after the array) submitted; "
          f"logs in {run_dir / 'slurm'}; watch it with: {watch}", flush=True)
    return 0


def save_submission(url: str, name: str, record: dict) -> None:
    """Append this submission's jobs to the study's record of them (read by ``ablate status``)."""
    import optuna

    from ..storage import records as st

    ostudy = optuna.load_study(study_name=name, storage=st.open_storage(url))
    ostudy.set_user_attr(SUBMISSIONS_ATTR, list(ostudy.user_attrs.get(SUBMISSIONS_ATTR, [])) + [record])


if __name__ == "__main__":
    sys.exit(main())
