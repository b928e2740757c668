"""``ablate status STUDY.yaml``: where a study stands, read from its storage (any kind), read-only.

Per cell: seeds finished (pruned among them), running (worker host, process, the SLURM task or
run that owns it, epoch, heartbeat age), failed (the reason; final, or retried by the next run)
and waiting (never started, or interrupted or lost and resumed by the next claim from its
checkpoint). Then the trials' time so far (GPU-hours when the trials train on GPUs), an ETA from
the finished trials' times with as many workers as trials running, and the SLURM jobs of the
study's last ``ablate submit`` with their states (squeue) and requeues. ``--watch`` prints it
again every few seconds until Ctrl-C.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ablate status", description=__doc__.split("\n")[0])
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the overrides the run was given (they name "
                   "its study)")
    p.add_argument("--storage", help="storage URL (default: $ABLATE_STORAGE, else the run folder's journal)")
    p.add_argument("--run-dir", help="run folder (default: runs/<study name>)")
    p.add_argument("--watch", nargs="?", type=float, const=10.0, default=None, metavar="SECONDS",
                   help="print it again every SECONDS (default 10) until Ctrl-C")
    return p.parse_intermixed_args(argv)


def _ago(seconds: float) -> str:
    from .progress import duration

    return duration(max(0.0, seconds)) + " ago"


def pair_state(attempts: list, now: float, grace: float) -> tuple[str, str]:
    """('finished' | 'running' | 'failed' | 'waiting', words) for one (cell, seed) from its trials
    (oldest first)."""
    from optuna.trial import TrialState

    from ..storage import records as st

    done = [t for t in attempts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if done:
        t = done[-1]
        wall = t.user_attrs.get("wall_s")
        took = f" ({wall:.0f}s)" if isinstance(wall, (int, float)) else ""
        if t.state == TrialState.PRUNED:
            return "pruned", f"pruned after epoch {len(t.intermediate_values)}{took}"
        value = t.value if t.value is not None else float("nan")
        return "finished", f"val {value:.1f}{took}"
    if not attempts:
        return "waiting", "not started"
    t = attempts[-1]
    sys_attrs = t.system_attrs
    if t.state == TrialState.RUNNING:
        host, pid = sys_attrs.get(st.ATTR + "host", "?"), sys_attrs.get(st.ATTR + "pid", "?")
        owner = sys_attrs.get(st.ATTR + "run", "")
        beat = sys_attrs.get(st.ATTR + "heartbeat")
        age = now - float(beat) if beat is not None else None
        epoch = len(t.intermediate_values)
        words = f"on {host} pid {pid}" + (f" ({owner})" if owner else "") + f", epoch {epoch}"
        if age is not None:
            words += f", heartbeat {_ago(age)}"
        if age is not None and age > grace:
            return "waiting", words + " (lost: the next claim runs it again)"
        return "running", words
    if t.state == TrialState.FAIL:
        kind = sys_attrs.get(st.ATTR + "fail_kind", "")
        reason = " ".join(str(sys_attrs.get(st.ATTR + "fail_reason", "")).split())[:160]
        if kind == "error":
            return "failed", f"(final): {reason}"
        if kind == "harness":
            return "failed", f"(harness; the next run retries it): {reason}"
        resumed = sys_attrs.get(st.CHECKPOINT_ATTR)
        return "waiting", f"{kind or 'stopped'}: {reason}" + (" (resumes from its checkpoint)" if resumed else "")
    return "waiting", t.state.name.lower()


def wanted_pairs(study, ostudy) -> list[tuple]:
    """The (cell, seed) pairs of the plan: the start plan, plus the seeds a sequential study's looks added."""
    from .claims import LOOKS_ATTR

    plan = [(c, s) for c, s in study.trials()]
    if study.sequential:
        cells = {c.key: c for c in study.cells()}
        for look in ostudy.user_attrs.get(LOOKS_ATTR, []):
            for key, seeds in look["added"].items():
                plan += [(cells[key], s) for s in seeds if key in cells]
    return list(dict.fromkeys(plan))


def status_text(study, url: str, now: float | None = None) -> str:
    """The status of ``study`` in storage ``url`` as text."""
    import optuna
    from optuna.trial import TrialState

    from ..storage import records as st
    from .progress import duration, eta_seconds

    now = time.time() if now is None else now
    if "://" in url:
        ostudy = optuna.load_study(study_name=study.name, storage=st.open_storage(url))
    else:  # a journal: one read-only pass, without Optuna's replay (ablate.storage.replay)
        from ..storage.replay import read_journal

        ostudy = read_journal(url, study.name)
    trials = ostudy.get_trials(deepcopy=False)
    grace = st.grace_s()
    by_pair: dict[tuple, list] = {}
    for t in sorted(trials, key=lambda t: t.number):
        by_pair.setdefault((t.user_attrs.get("cell_key"), t.user_attrs.get("seed")), []).append(t)
    lines = []
    counts = {"finished": 0, "pruned": 0, "running": 0, "failed": 0, "waiting": 0}
    if study.search:
        lines.append(f"study {study.name}: search of {study.search['n_trials']} trials; storage {st.redact(url)}")
        for t in trials:
            state, _ = pair_state([t], now, grace)
            counts[state] += 1
        counts["waiting"] = max(0, study.search["n_trials"] - sum(counts.values()))
    else:
        pairs = wanted_pairs(study, ostudy)
        seeds_of: dict = {}  # cell -> its seeds, in plan order (one pass: O(pairs), not O(cells x pairs))
        for c, seed in pairs:
            seeds_of.setdefault(c, []).append(seed)
        lines.append(f"study {study.name}: {len(seeds_of)} cells, {len(pairs)} trials; storage {st.redact(url)}")
        for cell, seeds in seeds_of.items():
            rows, mine = [], {k: 0 for k in counts}
            for seed in seeds:
                state, words = pair_state(by_pair.get((cell.key, seed), []), now, grace)
                mine[state] += 1
                if state in ("running", "failed") or (state == "waiting" and words != "not started"):
                    rows.append(f"    seed {seed}: {state} {words}")
            for k, v in mine.items():
                counts[k] += v
            n = sum(mine.values())
            lines.append(f"  {cell.title()} (key {cell.key}): {mine['finished'] + mine['pruned']}/{n} finished"
                         + (f" ({mine['pruned']} pruned)" if mine["pruned"] else "")
                         + f", {mine['running']} running, {mine['failed']} failed, {mine['waiting']} waiting")
            lines += rows
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    times = [float(t.user_attrs["wall_s"]) for t in finished if isinstance(t.user_attrs.get("wall_s"), (int, float))]
    spent = 0.0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and isinstance(t.user_attrs.get("wall_s"), (int, float)):
            spent += float(t.user_attrs["wall_s"])
        elif t.datetime_start is not None:
            end = t.datetime_complete.timestamp() if t.datetime_complete else now
            spent += max(0.0, end - t.datetime_start.timestamp())
    left = counts["running"] + counts["waiting"]
    eta = eta_seconds(times, left, max(1, counts["running"]))
    gpus = study.trainer.world_size if study.trainer.accelerator in ("gpu", "cuda") else 0
    spent_words = (f"{spent * gpus / 3600:.2f} GPU-hours ({spent / 3600:.2f} h of trials)" if gpus
                   else f"{spent / 3600:.2f} h of trials (CPU)")
    lines.append(f"total: {counts['finished'] + counts['pruned']} finished ({counts['pruned']} pruned), "
                 f"{counts['running']} running, {counts['failed']} failed, {counts['waiting']} waiting; "
                 f"{spent_words}; ETA {duration(eta) if left else 'done'}"
                 + (f" with {counts['running']} running" if left and counts["running"] else ""))
    lines += slurm_lines(ostudy.user_attrs)
    return "\n".join(lines)


def slurm_lines(user_attrs: dict) -> list[str]:
    """The last ``ablate submit``'s jobs, their states (when squeue answers) and the tasks' requeues."""
    from .slurm import REQUEUES_ATTR, SUBMISSIONS_ATTR

    subs = user_attrs.get(SUBMISSIONS_ATTR) or []
    if not subs:
        return []
    last = subs[-1]
    when = dt.datetime.fromtimestamp(last["submitted"]).strftime("%Y-%m-%d %H:%M")
    out = [f"SLURM: job array {last['array']} ({last['workers']} workers) and report job {last['report']}, "
           f"submitted {when} from {last.get('host', '?')}" + (f" ({len(subs)} submissions)" if len(subs) > 1 else "")
           + f"; logs in {last.get('logs', '?')}"]
    states = _squeue([last["array"], last["report"]])
    if states is not None:
        out.append("  jobs: " + (", ".join(f"{j} {s}" for j, s in sorted(states.items())) or
                                 "none left in the queue (ended)"))
    requeues = {k[len(REQUEUES_ATTR):]: len(v) for k, v in user_attrs.items() if k.startswith(REQUEUES_ATTR)
                and k[len(REQUEUES_ATTR):].split("_")[0] == str(last["array"])}
    if requeues:
        out.append("  requeued (preemption or time limit): " + ", ".join(f"{j} {n}x" for j, n in sorted(requeues.items())))
    return out


def _squeue(jobs: list[str]) -> dict[str, str] | None:
    if shutil.which("squeue") is None:
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-j", ",".join(map(str, jobs)), "-o", "%i %T %R"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode:
        return {} if "Invalid job id" in res.stderr else None
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2:
            out[parts[0]] = parts[1].lower() + (f" ({parts[2]})" if len(parts) > 2 and parts[1] == "PENDING" else "")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from ..storage import records as st
    from ..storage.opening import located
    from ..config.errors import StudyError, exit_with

    from .slurm import load

    try:
        study = load(args.study, args.overrides, check_files=False)
        run_dir, url = located(study.name, args.storage, args.run_dir)
        if args.watch is not None and args.watch <= 0:
            raise StudyError("command line", "--watch", "give a number of seconds above 0.")
    except StudyError as e:
        exit_with(e)
    if "://" not in url and not Path(url).exists():
        exit_with(StudyError(args.study, "", f"nothing has run yet: the storage {st.redact(url)} does not exist "
                             "(give --storage or --run-dir where the run put it)."))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clear = "\033[H\033[J" if sys.stdout.isatty() else ""
    try:
        while True:
            try:
                text = status_text(study, url)
            except KeyError:
                exit_with(StudyError(args.study, "", f"the storage {st.redact(url)} holds no study named "
                                     f"{study.name} (the overrides given name the study: give the run's)."))
            if args.watch is None:
                print(text)
                return 0
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            print(f"{clear}{text}\n(at {stamp}; every {args.watch:g}s, Ctrl-C to stop)", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
