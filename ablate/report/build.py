"""``python -m ablate.report STUDY.yaml``: the study's ablation table, from storage alone.

One row per cell: mean +- std of the metric over finished seeds, its 95% t interval, the
difference to the baseline cell (paired t over the seeds both cells share, Welch otherwise) with
its interval at the corrected level, the attention block's parameter count and forward FLOPs per
image (recorded by the trial), its forward+backward latency and peak memory (measured when the
report is written, see :func:`block_costs`), seeds finished, and a verdict from
:mod:`ablate.stats`: better / worse / equivalent within ±margin (TOST) / inconclusive with the
seeds that would decide, every comparison of the study corrected together (``correction:``,
Holm by default). A cell whose mean validation curve still rises over its last third is marked
budget-limited, and "worse" against or for it reads "worse at this budget". W&B is never read.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path

from ..config.errors import RetryableError, StudyError, exit_retry, exit_with
from .markdown import fingerprint_lines, render  # noqa: F401 - the Markdown, and names tests use
from ..stats import ALPHA
from .rows import COST_REPEATS, COST_WARMUP, block_shape, describe_setup, judge, search_cells, table



def _pts(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def collect(study, url: str) -> dict:
    """Finished values per cell key, failed trials (final, and to retry), running and pending
    trials, timing and owners, from the Optuna storage."""
    import optuna

    from ..storage import records as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = st.open_storage(url)
    try:
        ostudy = optuna.load_study(study_name=study.name, storage=store)
    except KeyError:
        return {"values": {}, "records": {}, "failed": [], "retry": [], "pruned": [], "running": 0, "running_here": 0,
                "pending": len(study.trials()) if not study.search else study.search["n_trials"],
                "epochs": {"run": 0, "planned": 0}, "finished": [], "run": {}, "curves": {}, "trials": []}
    trials = ostudy.get_trials(deepcopy=False)
    values: dict[str, dict[int, float]] = {}
    records: dict[str, list[dict]] = {}
    curves: dict[str, list[list[float]]] = {}  # per-epoch val curves of the complete trials
    pruned = []
    epochs = {"run": 0, "planned": 0}  # over complete and pruned trials
    finished = []  # complete and pruned trials: completion time, compute s, owner
    fps: dict[str, list] = {}  # per cell, the finished trials' fingerprints (None: recorded before them)
    rows = []  # every trial, any state, for the CSV export
    for t in trials:
        key, seed = t.user_attrs.get("cell_key"), t.user_attrs.get("seed")
        rows.append(_trial_row(t))
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        curve = t.user_attrs.get("curve") or [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
        config = t.user_attrs.get("config")
        planned = json.loads(config)["train"]["epochs"] if isinstance(config, str) else len(curve)
        epochs["run"] += len(curve)
        epochs["planned"] += planned
        if t.datetime_complete is not None:
            finished.append(_finished_record(t))
        fps.setdefault(key, []).append(t.user_attrs.get("fingerprint"))
        if t.state == optuna.trial.TrialState.COMPLETE:
            values.setdefault(key, {})[seed] = t.value
            records.setdefault(key, []).append(t.user_attrs)
            curves.setdefault(key, []).append(list(curve))
        else:
            pruned.append({"key": key, "seed": seed, "epochs": len(curve), "planned": planned,
                           "last": curve[-1] if curve else float("nan"), "config": t.user_attrs.get("config"),
                           "compute_s": t.user_attrs.get("compute_s", 0.0)})
    final, retry = _failures(study, trials)
    running, here, pending = _progress(study, trials)
    return {"values": values, "records": records, "failed": final, "retry": retry, "pruned": pruned,
            "running": running, "running_here": here, "pending": pending, "epochs": epochs, "finished": finished,
            "run": ostudy.user_attrs.get("last_run", {}), "curves": curves, "fingerprints": fps, "trials": rows}


def _trial_row(t) -> dict:
    """One trial of any state as the CSV export needs it (values as stored)."""
    from ..storage import records as st

    attrs = t.user_attrs
    curve = attrs.get("curve") or [t.intermediate_values[s] for s in sorted(t.intermediate_values)]
    config = attrs.get("config")
    try:
        cell = json.loads(attrs["cell"]) if isinstance(attrs.get("cell"), str) else dict(attrs.get("cell") or {})
    except ValueError:
        cell = {}
    return {"number": t.number, "key": attrs.get("cell_key"), "seed": attrs.get("seed"), "state": t.state.name.lower(),
            "fail_kind": t.system_attrs.get(st.ATTR + "fail_kind"), "value": t.value, "curve": list(curve), "cell": cell,
            "planned": json.loads(config)["train"]["epochs"] if isinstance(config, str) else None,
            "mechanism": json.loads(config).get("mechanism") if isinstance(config, str) else None,
            **{k: attrs.get(k) for k in ("best_val_miou", "attention_params", "attention_flops", "total_params",
                                         "wall_s", "compute_s")},
            **{k: attrs[k] for k in ("upsample_params", "upsample_flops") if k in attrs},  # a CARAFE head's only
            "fail_reason": t.system_attrs.get(st.ATTR + "fail_reason")}


def _finished_record(t) -> dict:
    from ..storage import records as st

    attrs = t.system_attrs
    owner = (attrs.get(st.ATTR + "host"), attrs.get(st.ATTR + "pid"), attrs.get(st.ATTR + "start"))
    return {"when": t.datetime_complete.timestamp(), "compute": t.user_attrs.get("compute_s", 0.0),
            "start": t.datetime_start.timestamp() if t.datetime_start else None,
            "owner": owner if owner[1] is not None else None, "run": attrs.get(st.ATTR + "run") or None}


def _failures(study, trials) -> tuple[list, list]:
    """(key, seed, reason) of the trials that failed for a reason of their own (final), and of
    those that failed for the harness's and were not run again since (the next run retries)."""
    from ..storage import records as st

    pair = lambda t: (t.user_attrs.get("cell_key"), t.user_attrs.get("seed"))  # noqa: E731
    settled = {pair(t) for t in trials if st.trial_status(t) in ("done", "running")}
    final, retry = [], {}
    for t in trials:
        kind = t.system_attrs.get(st.ATTR + "fail_kind")
        reason = t.system_attrs.get(st.ATTR + "fail_reason", "")
        if kind == "error":
            final.append((*pair(t), reason))
        elif kind == "harness" and pair(t) not in settled:
            retry[pair(t)] = (*pair(t), reason)  # the latest attempt's reason
    if study.search and len(settled) >= study.search["n_trials"]:
        retry = {}  # a search's failed samples are replaced by new ones; the budget is spent
    return final, list(retry.values())


def _progress(study, trials) -> tuple[int, int, int]:
    """Trials running (their worker alive), of which on this machine, and trials still to run."""
    from ..storage import records as st
    from ..storage import states

    now, grace = time.time(), st.grace_s()
    live = [t for t in trials if st.trial_status(t) == "running" and st.ATTR + "pid" in t.system_attrs
            and states.alive(t.system_attrs, now, grace)]
    here = sum(states.same_machine(t.system_attrs) for t in live)
    settled = {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) for t in trials
               if st.trial_status(t) == "done"}
    if study.search:
        pending = max(0, study.search["n_trials"] - len(settled) - len(live))
    else:
        live_pairs = {(t.user_attrs.get("cell_key"), t.user_attrs.get("seed")) for t in live}
        pending = sum((c.key, s) not in settled | live_pairs for c, s in study.trials())
    return len(live), here, pending


def failures(study, url: str) -> tuple[list, list]:
    """The study's final failures and failures to retry, as (cell key, seed, reason)."""
    data = collect(study, url)
    return data["failed"], data["retry"]


def block_costs(cells: list, world_size: int = 1, device: str | None = None, head=None) -> dict:
    """Forward+backward latency and peak memory of each cell's attention block at its training
    input shape (:func:`ablate.costs.cell_costs`: once per distinct block, CUDA if there is one,
    the input's gradient subtracted from the peak). Returns cell key -> (Cost, extra peak bytes),
    ``"_device"`` and ``"_threads"``."""
    from ..costs.blocks import cell_costs

    return cell_costs([(c.key, c.mechanism, c.args, block_shape(c, world_size, head)) for c in cells],
                      device, repeats=COST_REPEATS, warmup=COST_WARMUP)


def write_report(study, url: str, reports_dir: str = "reports", run_info: dict | None = None,
                 wandb: bool | None = None, run_dir: str | Path | None = None, reuse_costs: bool = False,
                 data: dict | None = None, findings: list | None = None) -> Path:
    """Write ``<study>.md`` and beside it the figures, HTML, TeX, CSV and JSON
    (:mod:`ablate.report.formats`); with ``wandb`` (default: at the end of a run whose study and
    command line did not turn W&B off) an offline W&B summary run under ``run_dir``
    (:mod:`ablate.report.wandb`); ``reuse_costs``: the latency and memory of the previous
    ``<study>.json`` there (:mod:`ablate.report.costs`) instead of measuring; ``data``: what
    :func:`collect` read, if read already; ``findings``: the doctor's, from the run's pre-flight
    (None: the doctor checks the blocks now; the Markdown renderer never runs it). Returns the
    Markdown's path.

    Every file is written atomically (:mod:`ablate.config.atomic`): a write that fails (disk full, quota,
    ``ulimit -f``, a folder made read-only) leaves that file as it was, the hand-written notes
    below the Markdown's last line included, and raises :class:`ablate.config.errors.RetryableError`."""
    from ..storage import records as st
    from ..config.atomic import make_folder, write_text
    from .costs import reuse
    from .formats import write_formats

    data = collect(study, url) if data is None else data  # the runner passes what it read at the finish
    cells = search_cells(study, data) if study.search else study.cells()
    done = [c for c in cells if c.key in data["records"]]
    if done and data["running_here"]:
        data["costs_skipped"] = data["running_here"]  # timings under a training load are not the block's
    elif done:
        data["cost_shapes"] = {c.key: block_shape(c, study.trainer.world_size, study.head) for c in done}
        prev = reuse(Path(reports_dir) / f"{study.name}.json", data["cost_shapes"]) if reuse_costs else None
        data["costs"] = prev or {**block_costs(done, study.trainer.world_size, head=study.head),
                                 "_measured": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    if run_info:  # the runner writes its run record to storage (ablate.run.run_record); the report only reads
        run_info = run_totals(run_info, data["finished"])
        data["run"] = run_info
    out = Path(reports_dir) / f"{study.name}.md"
    make_folder(out.parent)
    tab = table(study, data)
    figs = _figures(study, tab, data)
    from ..doctor.check import health_lines

    md = render(study, data, st.redact(url), tab, [(f"{study.name}/{stem}.svg", cap) for stem, cap, _, _ in figs],
                health=health_lines(study, findings))
    md = _with_cost_notes(md, data, {c.key: c.title() for c in cells}) + _notes(out)
    write_text(out, md)  # whole or not at all: a failed write keeps the previous report and its notes
    write_formats(study, data, tab, md, [(stem, cap, text) for stem, cap, text, _ in figs], out.parent)
    if wandb if wandb is not None else _wandb_wanted(study, run_info):
        from .wandb import log_study

        log_study(study, tab, data, figs, run_dir or _run_dir_of(study, url))
    return out


def _with_cost_notes(md: str, data: dict, titles: dict) -> str:
    """The Markdown with a paragraph, above its last generated line, on each cell whose block
    was measured with a batch of one (the study's batch would not fit) or not measured at all
    (:func:`ablate.costs.cell_costs`: "not measured: <reason>")."""
    costs, shapes = data.get("costs") or {}, data.get("cost_shapes") or {}
    lines = [f"- {titles.get(k, k)}: not measured: {why}." for k, why in (costs.get("_not_measured") or {}).items()]
    for k, v in costs.items():
        shape = getattr(v[0], "shape", None) if isinstance(v, tuple) else None
        if shape and k in shapes and tuple(shape) != tuple(shapes[k]):
            lines.append(f"- {titles.get(k, k)}: measured with a batch of {shape[0]} at the study's resolution "
                         f"{tuple(shape)}; the study's batch {tuple(shapes[k])} would not fit in memory here.")
    if not lines:
        return md
    head, sep, tail = md.rpartition("\nReport written ")
    note = "\n".join(["", "Attention-block costs, where the training input could not be measured:", ""] + lines) + "\n"
    return head + note + sep + tail if sep else md + note


def _notes(path: Path) -> str:
    """Notes written by hand below the last generated line ("Report written ...") of the report
    at ``path``: rewriting the report keeps them (and the HTML shows them)."""
    if not path.is_file():
        return ""
    lines = path.read_text().splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.startswith("Report written ")), default=None)
    tail = "\n".join(lines[last + 1:]).strip("\n") if last is not None else ""
    return f"\n{tail}\n" if tail.strip() else ""


def _figures(study, tab: dict, data: dict) -> list[tuple[str, str, str, bytes]]:
    """(stem, caption, SVG text, PNG bytes) of each figure the study has (:mod:`ablate.report.figures`)."""
    from . import figures

    out = []
    for stem, cap, fig in figures.figures(study, tab, data):
        out.append((stem, cap, figures.svg(fig, f"{study.name}-{stem}"), figures.png(fig)))
    return out


def _run_dir_of(study, url: str) -> Path:
    """The run folder of a storage: the folder of the embedded journal ``<run dir>/optuna.journal``
    (:func:`ablate.storage.storage_url`), else the default ``runs/<study>``."""
    from ..storage import records as st

    if "://" not in url and Path(url).name == "optuna.journal":
        return Path(url).parent
    return st.default_run_dir(study.name)


def _wandb_wanted(study, run_info: dict | None) -> bool:
    """At the end of a run, a W&B summary run unless the study or the command turned W&B off
    (``ablate.run`` does not pass its --no-wandb here, so the command line recorded in run_info
    is read); ``python -m ablate.report`` makes one only with --wandb."""
    if not run_info or not study.tracking.get("wandb", True):
        return False
    return "--no-wandb" not in str(run_info.get("command", "")).split()


def run_totals(run_info: dict, finished: list[dict]) -> dict:
    """The invocation's own trials (by its run id in their owner records; by completion time for
    records without one), their compute, and its overhead over its workers' wall time. A pruned
    trial's epochs were work too."""
    run = run_info.get("run")
    if run and any(f.get("run") for f in finished):
        here = [f["compute"] for f in finished if f.get("run") == run]
    else:
        here = [f["compute"] for f in finished if f["when"] >= run_info.get("started", 0.0)]
    info = {**run_info, "compute_s": sum(here), "trials_here": len(here), "trials_total": len(finished),
            "compute_total_s": sum(f["compute"] for f in finished)}
    busy = info["wall_s"] * info["workers"]
    info["overhead"] = max(0.0, 1 - info["compute_s"] / busy) if busy else 0.0
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.split("\n")[0])
    p.add_argument("study")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="the same command-line overrides the run was given (they name its study)")
    p.add_argument("--storage")
    p.add_argument("--run-dir")
    p.add_argument("--reports-dir", default="reports")
    p.add_argument("--reuse-costs", action="store_true",
                   help="reuse the attention-block latency and memory of the previous report's JSON in the "
                        "reports folder instead of measuring them (a busy machine times blocks badly)")
    p.add_argument("--wandb", action="store_true",
                   help="also log an offline W&B summary run of the study (job_type report, the trials' group) "
                        "under the run folder")
    args = p.parse_intermixed_args(argv)
    from ..storage import records as st
    from ..study.load import load_study

    try:  # the report reads storage alone: a real dataset's folder or weights need not be on this machine
        if args.overrides:
            from ..study.overrides import load_with_overrides
            study = load_with_overrides(args.study, args.overrides, check_files=False)
        else:
            study = load_study(args.study, check_files=False)
        if args.storage:
            st.check_storage(args.storage, "--storage")
        elif os.environ.get(st.STORAGE_ENV):
            st.check_storage(os.environ[st.STORAGE_ENV], "$" + st.STORAGE_ENV)
        reports = Path(args.reports_dir)
        if reports.exists() and not reports.is_dir():
            raise StudyError("command line", "--reports-dir", f"the reports folder {reports} is a file, not a folder.")
    except StudyError as e:
        exit_with(e)
    run_dir = Path(args.run_dir) if args.run_dir else st.default_run_dir(study.name)
    url = st.storage_url(run_dir, args.storage)
    if "://" not in url and not Path(url).exists():
        exit_with(StudyError(args.study, "", f"no results yet: the storage {st.redact(url)} does not exist. Run "
                             f"python -m ablate.run {args.study} first, or give --storage / --run-dir."))
    try:
        path = write_report(study, url, args.reports_dir, wandb=args.wandb, run_dir=run_dir,
                            reuse_costs=args.reuse_costs)
    except StudyError as e:
        exit_with(e)
    except RetryableError as e:  # a full disk, a read-only reports folder: the previous files are intact
        exit_retry(e)
    others = ", ".join(f"{path.stem}.{ext}" for ext in ("html", "tex", "csv", "json"))
    print(f"report written to {path} (and {others}, figures in {path.parent / path.stem}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
