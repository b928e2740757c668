"""``python -m ablate.report STUDY.yaml`` (``ablate report``): a study's report from its storage
alone. The one module of the report package that reads storage (:mod:`ablate.storage.summary`)
and asks the doctor (:func:`ablate.doctor.check.health_lines`); everything else in the package
renders what it is given (:func:`ablate.report.build.write`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config.errors import RetryableError, StudyError, exit_retry, exit_with
from ..storage import records as st
from ..storage.opening import located
from ..storage.summary import collect, run_totals
from .build import write


def write_report(study, url: str, reports_dir: str = "reports", run_info: dict | None = None,
                 wandb: bool | None = None, run_dir: str | Path | None = None, reuse_costs: bool = False,
                 data: dict | None = None, findings: list | None = None) -> Path:
    """Read the study's storage at ``url`` once (or take ``data``, what :func:`collect` read), the
    doctor's ``findings`` (checked now when None) and write the report (:func:`ablate.report.build.write`:
    ``<study>.md`` and beside it the figures, HTML, TeX, CSV, JSON and, with ``wandb``, an offline
    W&B summary run under ``run_dir``). ``run_info``: the runner's run record (its totals are taken
    over the stored trials here). Returns the Markdown's path."""
    data = collect(study, url) if data is None else data
    if run_info:
        run_info = run_totals(run_info, data["finished"])
    return write(study, data, st.redact(url), reports_dir, run_info, wandb, run_dir or _run_dir_of(study, url),
                 reuse_costs, _health(study, findings))


def _health(study, findings: list | None):
    """The health section's lines from the run's ``findings``; without them (None), the doctor's
    check of the blocks as work for the report to run beside its figures
    (:class:`ablate.config.forks.Pending`): torch is then imported in that piece alone."""
    from ..config.forks import Pending

    def lines(s, found=findings):
        from ..doctor.check import health_lines

        return health_lines(s, found)

    if findings is not None:
        return lines(study)
    return Pending(lines, [study], lambda out: out[0])


def _run_dir_of(study, url: str) -> Path:
    """The run folder of a storage: the folder of the embedded journal ``<run dir>/optuna.journal``
    (:func:`ablate.storage.storage_url`), else the default ``runs/<study>``."""
    if "://" not in url and Path(url).name == "optuna.journal":
        return Path(url).parent
    return st.default_run_dir(study.name)



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
    from ..study.load import load_study

    try:  # the report reads storage alone: a real dataset's folder or weights need not be on this machine
        if args.overrides:
            from ..study.overrides import load_with_overrides
            study = load_with_overrides(args.study, args.overrides, check_files=False)
        else:
            study = load_study(args.study, check_files=False)
        run_dir, url = located(study.name, args.storage, args.run_dir)
        reports = Path(args.reports_dir)
        if reports.exists() and not reports.is_dir():
            raise StudyError("command line", "--reports-dir", f"the reports folder {reports} is a file, not a folder.")
    except StudyError as e:
        exit_with(e)
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

