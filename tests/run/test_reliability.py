"""What a crash, a broken environment or a careless command line may not do to a study (issue 10):
failures are classed as the trial's own (final) or the harness's (retried by the next run); a torn
or broken journal, a stale lock and an ownerless trial are recovered or stopped with a repair
command; storages and folders are checked before any trial runs; the exit status says whether
trials failed; the report counts every worker and says when the study is partial."""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from ablate.storage import records as st
from ablate.trainer import tracking
from ablate.config.errors import StudyError
from ablate.report.command import write_report
from ablate.study.load import load_study

from support import REPO, run_cli, tiny_study
from support.runs import owned_trial, read_only

COMPLETE, RUNNING, FAIL = TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL


def _trials(journal: Path, name: str = "tiny"):
    store = st.open_storage(str(journal))
    return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


def _complete_pairs(trials) -> Counter:
    return Counter((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in trials if t.state == COMPLETE)


def _all_once(path: Path, journal: Path) -> bool:
    """Every cell x seed of the study's plan is COMPLETE exactly once."""
    pairs = _complete_pairs(_trials(journal))
    plan = [(c.key, s) for c, s in load_study(path).trials()]
    return sorted(pairs) == sorted(plan) and set(pairs.values()) == {1}




# --------------------------------------------------------------------------------------------
# 1. the trial's own failures are final, the harness's are retried by the next run
# --------------------------------------------------------------------------------------------

def test_a_failing_tracker_fails_trials_that_the_next_run_completes_exactly_once(tmp_path, in_process, monkeypatch,
                                                                                 capsys):
    """W&B refuses a setting (project given as a list: pydantic's ValidationError) for the seed-0
    trials: they fail as the harness's, the invocation does not retry them itself, exit 3; once
    tracking works, the next run runs exactly those and every cell x seed is complete once."""
    import wandb

    path = tiny_study(tmp_path, train={"epochs": 1})
    real = tracking.make_logger

    def broken(config, run_dir, project, entity, name):
        if name.endswith("seed=0"):
            wandb.Settings(project=["a", "b"])  # the ValidationError wandb.init raises for this setting
        return None  # no W&B run in this process: its service would outlive the test

    monkeypatch.setattr(tracking, "make_logger", broken)
    assert in_process(path, "--run-dir", "runs/tiny") == 3
    out = capsys.readouterr()
    journal = tmp_path / "runs/tiny/optuna.journal"
    trials = _trials(journal)
    failed = [t for t in trials if t.state == FAIL]
    assert len(failed) == 2 and {t.user_attrs["seed"] for t in failed} == {0}, "each failed once, not retried"
    assert {t.system_attrs[st.ATTR + "fail_kind"] for t in failed} == {"harness"}
    assert all("ValidationError" in t.system_attrs[st.ATTR + "fail_reason"] for t in failed)
    assert "run the same command again to retry them" in out.err
    report = (tmp_path / "reports/tiny.md").read_text()
    assert "## Trials to run again (the harness or its environment failed)" in report
    assert "## Failed trials" not in report and report.count("ValidationError") == 2

    monkeypatch.setattr(tracking, "make_logger", real)  # tracking fixed
    assert in_process(path, "--run-dir", "runs/tiny", "--no-wandb") == 0
    assert _all_once(path, journal)
    assert sum(t.state == FAIL for t in _trials(journal)) == 2
    assert "Trials to run again" not in (tmp_path / "reports/tiny.md").read_text()


def test_a_harness_failing_every_trial_stops_the_worker(tmp_path, in_process, monkeypatch, capsys):
    path = tiny_study(tmp_path, train={"epochs": 1})  # 4 trials

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking, "make_logger", broken)
    assert in_process(path, "--run-dir", "runs/tiny", "--no-report") == 3
    assert "stopping: 3 trials in a row failed" in capsys.readouterr().out
    trials = _trials(tmp_path / "runs/tiny/optuna.journal")
    assert [t.state for t in trials] == [FAIL] * 3


def test_errors_inside_the_fit_are_the_trials_own_and_io_errors_the_harnesss(tmp_path, monkeypatch):
    from ablate.models.segmenter import SegmentationModule
    from ablate.trainer.trial import HarnessFailed, TrialFailed, failure_kind, run_trial

    study = load_study(tiny_study(tmp_path, train={"epochs": 1}))
    config = study.trial_config(*study.trials()[0])

    def io_error(epoch, miou):  # as a storage write that fails in the epoch hook
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError) as e:
        run_trial(config, io_error)
    assert failure_kind(e.value) == "harness"
    assert failure_kind(ValueError("raised while making the W&B run")) == "harness"
    assert failure_kind(HarnessFailed("pretrained weights not found")) == "harness"

    def bad_step(self, batch, batch_idx):
        raise ValueError("shapes do not match in the block")

    monkeypatch.setattr(SegmentationModule, "training_step", bad_step)
    with pytest.raises(TrialFailed, match="ValueError in training .*shapes do not match") as e:
        run_trial(config)
    assert failure_kind(e.value) == "error"


# --------------------------------------------------------------------------------------------
# 2. the journal: a torn last line, a broken middle line, a stale lock
# --------------------------------------------------------------------------------------------

TORN = b'{"op_code":6,"worker_id":"dead","trial_id":1,"par'  # a record cut short by a kill


def _partial_run(tmp_path: Path) -> tuple[Path, Path]:
    """A two-trial study of which one trial finished (``--max-trials 1``)."""
    path = tiny_study(tmp_path, seeds=[0], train={"epochs": 1})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb", "--no-report", "--max-trials",
                   "1"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    journal = tmp_path / "runs/tiny/optuna.journal"
    assert len(_complete_pairs(_trials(journal))) == 1
    return path, journal


def test_a_torn_last_line_is_cut_after_a_backup_and_the_rerun_completes_the_study(tmp_path):
    path, journal = _partial_run(tmp_path)
    before = journal.read_bytes()
    finished = {t.number: t.value for t in _trials(journal) if t.state == COMPLETE}
    journal.write_bytes(before + TORN)
    torn_line = before.count(b"\n") + 1

    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    note = " ".join(res.stderr.split())
    assert f"{journal.relative_to(tmp_path)}: line {torn_line} was cut short" in note
    backups = list(journal.parent.glob("optuna.journal.torn-*"))
    assert len(backups) == 1 and str(backups[0].relative_to(tmp_path)) in note
    assert backups[0].read_bytes() == before + TORN, "the backup is the file as it was"
    assert journal.read_bytes().startswith(before), "every record before the torn line is kept, in place"
    assert _all_once(path, journal)
    assert {n: v for n, v in finished.items()} == {t.number: t.value for t in _trials(journal) if t.number in finished}


def test_a_broken_middle_line_stops_with_the_repair_command_and_the_repair_loses_no_record(tmp_path):
    path, journal = _partial_run(tmp_path)
    lines = journal.read_bytes().split(b"\n")
    records = len(lines) - 1
    lines[2] = TORN + lines[2]  # a writer died mid-line, the next appended onto its fragment
    broken = b"\n".join(lines)
    journal.write_bytes(broken)

    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "started" not in res.stdout
    flat = " ".join(res.stderr.split())
    assert f"error in runs/tiny/optuna.journal: line 3 of the journal is broken" in flat
    assert "python -m ablate.storage repair runs/tiny/optuna.journal" in flat
    assert journal.read_bytes() == broken, "nothing is changed without the user's say"

    rep = subprocess.run([sys.executable, "-m", "ablate.storage", "repair", "runs/tiny/optuna.journal"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert "line 3: kept its complete record" in rep.stdout
    assert len(journal.read_bytes().split(b"\n")) - 1 == records, "every complete record is kept"
    assert [p.read_bytes() for p in journal.parent.glob("optuna.journal.before-repair-*")] == [broken]
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert _all_once(path, journal)


def test_a_stale_lock_neither_stalls_nor_breaks_a_rerun(tmp_path):
    """Optuna's own lock file left by a killed writer, and a writer killed while holding ours."""
    path, journal = _partial_run(tmp_path)
    (journal.parent / "optuna.journal.lock").touch()  # what Optuna's file lock leaves behind a kill -9

    def timed_write(value: int) -> float:
        t0 = time.perf_counter()
        ostudy = optuna.load_study(study_name="tiny", storage=st.open_storage(str(journal)))
        ostudy.set_user_attr("probe", value)  # a write: takes the writers' lock
        return time.perf_counter() - t0

    assert timed_write(1) < 10, "the write waited for a lock nobody holds"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ablate.storage.journal import JournalFlock; "
                               "JournalFlock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
                               str(journal)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)  # killed while holding the writers' lock
    holder.wait(timeout=30)
    assert timed_write(2) < 10, "the lock of a killed writer is still held"
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "Forcibly releasing" not in res.stderr and "taking longer" not in res.stderr
    assert _all_once(path, journal)


def test_a_read_only_journal_is_reported_as_it_is(tmp_path, capsys):
    """An archived journal in a folder nobody may write: the report reads it, a torn last line is
    skipped and said, and nothing is written next to it."""
    study = load_study(tiny_study(tmp_path, seeds=[0]))
    archive = tmp_path / "archive"
    url = str(archive / "optuna.journal")
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, study.name)
    for cell, seed in study.trials():
        owned_trial(store, ostudy, study, cell, seed, time.time() - 20, 10.0, 1, "r", 8.0)
    (archive / "optuna.journal.write-lock").unlink()
    with open(url, "ab") as f:
        f.write(TORN)
    before = Path(url).read_bytes()
    with read_only(archive):
        text = write_report(study, url, str(tmp_path / "rep")).read_text()
    assert "**Partial.**" not in text and all(f"| {c.title()} |" in text for c in study.cells())
    assert "it is skipped, and left in place" in capsys.readouterr().err
    assert Path(url).read_bytes() == before and sorted(p.name for p in archive.iterdir()) == ["optuna.journal"]


# --------------------------------------------------------------------------------------------
# 4. RUNNING trials without an owner
# --------------------------------------------------------------------------------------------

def test_ownerless_running_trials_are_reaped_and_do_not_eat_a_search_budget(tmp_path):
    path = tiny_study(tmp_path, train={"epochs": 1}, seeds=[0], baseline={},
                      factors={"K": {"low": 2, "high": 8}, "gcn": [True, False]},
                      search={"n_trials": 2, "sampler": "random"})
    journal = tmp_path / "runs/tiny/optuna.journal"
    ostudy = st.load_or_create(st.open_storage(str(journal)), "tiny")
    ghost = ostudy.ask()  # what a run that failed half-way through a claim left: RUNNING, no owner
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/tiny", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    trials = _trials(journal)
    assert sum(t.state == COMPLETE for t in trials) == 2, "the whole budget ran"
    assert trials[ghost.number].state == FAIL and trials[ghost.number].system_attrs[st.ATTR + "fail_kind"] == "lost"
    assert not any(t.state == RUNNING for t in trials)


def test_a_grid_trial_without_an_owner_is_reaped(tmp_path):
    study = load_study(tiny_study(tmp_path))
    store = st.open_storage(str(tmp_path / "optuna.journal"))
    ostudy = st.load_or_create(store, study.name)
    cell, seed = study.trials()[0]
    template = FrozenTrial(number=-1, state=RUNNING, value=None, datetime_start=dt.datetime.now(),
                           datetime_complete=None, params={}, distributions={}, intermediate_values={}, trial_id=-1,
                           user_attrs={"cell_key": cell.key, "seed": seed}, system_attrs={})
    store.create_new_trial(ostudy._study_id, template_trial=template)
    trials = ostudy.get_trials(deepcopy=False)
    assert st.trial_status(trials[0]) == "running"
    assert st.reap_lost(store, trials) == 1
    t = ostudy.get_trials(deepcopy=False)[0]
    assert t.state == FAIL and st.trial_status(t) == "free"


def test_a_search_claim_that_fails_leaves_no_running_trial(tmp_path, monkeypatch):
    from ablate.run import claims as run
    from ablate.study.load import Study

    study = load_study(tiny_study(tmp_path, seeds=[0], baseline={}, factors={"K": {"low": 2, "high": 8}},
                                  search={"n_trials": 2, "sampler": "random"}))
    store = st.open_storage(str(tmp_path / "optuna.journal"))
    ostudy = st.load_or_create(store, study.name)

    def refuse(self, params):
        raise StudyError("study.yaml", "factors.K", "the block refuses this K.")

    monkeypatch.setattr(Study, "search_cell", refuse)
    with pytest.raises(StudyError):
        run.claim_search(study, ostudy, store, [])
    (t,) = ostudy.get_trials(deepcopy=False)
    assert t.state == FAIL and t.system_attrs[st.ATTR + "fail_kind"] == "harness"
    assert t.system_attrs[st.ATTR + "pid"] == os.getpid()


# --------------------------------------------------------------------------------------------
# 6. --storage: a known URL or a journal file; no password in any message
# --------------------------------------------------------------------------------------------

def test_redact_covers_every_user_password_form():
    r = st.redact
    assert r("postgresql:/u:secret@host/x") == "postgresql:/u:***@host/x"
    assert r("u:secret@host:1/x") == "u:***@host:1/x"
    assert r("--storage=u:p@ss:w0rd@host/x") == "--storage=u:***@host/x"
    assert r("'mysql://u:/secret@h/x' is bad") == "'mysql://u:***@h/x' is bad"
    assert r("dbname=x password=secret host=h") == "dbname=x password=*** host=h"
    for kept in ("postgresql://u@h:5432/db", "sqlite:////abs/x.db", "runs/x/optuna.journal", "at 12:30 by a@b.org"):
        assert r(kept) == kept


@pytest.mark.parametrize("storage", ["postgresql:/u:secret@host/x", "u:secret@host:1/x", "ftp://u:secret@host/x",
                                     "sqlite:////nonexistent/dir/x.db", "sqlite://", "runs", "nodir/x.journal"])
def test_storage_that_is_neither_a_url_nor_a_journal_is_refused(tmp_path, in_process, capsys, storage):
    path = tiny_study(tmp_path)
    (tmp_path / "runs").mkdir()
    assert in_process(path, "--storage", storage) == 2
    out = capsys.readouterr()
    assert "secret" not in out.out + out.err
    assert "key '--storage'" in " ".join(out.err.split()) and "Nothing was run." in out.err
    assert not list((tmp_path / "runs").iterdir()) and not (tmp_path / "reports").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "tiny.yaml"], "no folder named after the URL"


def test_a_file_that_is_not_a_journal_is_refused_untouched(tmp_path, in_process, capsys):
    path = tiny_study(tmp_path)
    sqlite = tmp_path / "x.db"
    sqlite.write_bytes(b"SQLite format 3\0" + bytes(100) + b"\n{}\n")
    for given, needle in ((path, "this is not an Optuna journal"), (sqlite, f"give --storage sqlite:///{sqlite}")):
        before = Path(given).read_bytes()
        assert in_process(path, "--storage", given, "--run-dir", "runs/tiny") == 2
        assert needle in " ".join(capsys.readouterr().err.split())
        assert Path(given).read_bytes() == before and not list(tmp_path.glob("*.torn-*"))
    assert not (tmp_path / "runs").exists()


def test_known_storages_and_journal_paths_are_accepted(tmp_path):
    (tmp_path / "old.journal").touch()
    for ok in (str(tmp_path / "old.journal"), str(tmp_path / "new.journal"), f"sqlite:///{tmp_path}/x.db",
               "postgresql+psycopg2://u:pw@h:5432/db", "postgres://u@h/db", "mysql+pymysql://u@h/db"):
        st.check_storage(ok)


# --------------------------------------------------------------------------------------------
# 7. storages and folders that cannot be used: one paragraph, exit 2, before any trial
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "no driver"])
def test_an_unusable_server_is_one_paragraph_and_leaves_no_run_folder(tmp_path, in_process, capsys, kind):
    url = (f"postgresql://u:secret@127.0.0.1:{_free_port()}/db" if kind == "refused"
           else "mysql+nosuchdriver://u:secret@127.0.0.1:1/x")
    path = tiny_study(tmp_path)
    assert in_process(path, "--storage", url) == 2
    out = capsys.readouterr()
    flat = " ".join(out.err.split())
    assert "it cannot be used: " in flat and "u:***@127.0.0.1" in flat and "Nothing was run." in flat
    assert "secret" not in out.out + out.err and out.out == ""
    assert not (tmp_path / "runs").exists(), "no empty run folder is left behind"


def test_a_run_folder_or_reports_folder_that_is_a_file_is_refused_before_any_trial(tmp_path, in_process, capsys):
    path = tiny_study(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert in_process(path, "--run-dir", "afile") == 2
    assert "the run folder afile is a file" in " ".join(capsys.readouterr().err.split())
    assert in_process(path, "--run-dir", "afile/sub") == 2
    assert "afile is a file" in capsys.readouterr().err
    assert in_process(path, "--run-dir", "runs/tiny", "--reports-dir", "afile") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "key '--reports-dir'" in err and "the reports folder afile is a file" in err
    assert not (tmp_path / "runs").exists(), "refused before the run folder or any trial"




def test_read_only_folders_are_refused_before_any_trial(tmp_path, in_process, capsys):
    path = tiny_study(tmp_path)
    (tmp_path / "ro").mkdir()
    # the reports folder is checked first: the default command in a read-only folder fails on it
    cases = {"read-only run folder": (["--run-dir", "ro"], "--run-dir", [tmp_path / "ro"]),
             "read-only working folder": ([], "--reports-dir", [tmp_path]),
             "read-only working folder, no report": (["--no-report"], "--run-dir", [tmp_path])}
    for case, (extra, key, folders) in cases.items():
        with read_only(*folders):
            assert in_process(path, "--no-wandb", *extra) == 2, case
        flat = " ".join(capsys.readouterr().err.split())
        assert f"key '{key}'" in flat and "not writable" in flat and "Nothing was run." in flat, (case, flat)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro", "tiny.yaml"]


# --------------------------------------------------------------------------------------------
# 8. threads, negative counts, provenance with several runners, a report mid-run
# --------------------------------------------------------------------------------------------

def test_the_studys_train_threads_is_what_the_trial_uses(tmp_path):
    from ablate.trainer.trial import run_trial

    study = load_study(tiny_study(tmp_path, train={"epochs": 1, "threads": 1}))
    result = run_trial(study.trial_config(*study.trials()[0]), threads=2)  # the runner's default, or --threads 2
    assert result["threads"] == 1


@pytest.mark.parametrize("flag", ["--threads", "--max-trials", "--workers"])
def test_negative_counts_are_refused(tmp_path, in_process, capsys, flag):
    path = tiny_study(tmp_path)
    assert in_process(path, flag, "-1") == 2
    assert f"key '{flag}': -1: give" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "runs").exists()




def test_provenance_counts_every_worker_of_independent_runners(tmp_path):
    """Three runner processes on one storage ran two trials each, at the same time: the report of
    one of them counts its own two trials, and the workers line counts all three processes."""
    study = load_study(tiny_study(tmp_path, seeds=[0, 1, 2]))  # 6 trials
    url = str(tmp_path / "runs" / "optuna.journal")
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, study.name)
    t0 = time.time() - 100
    for i, (cell, seed) in enumerate(study.trials()):
        w = i % 3  # worker w runs trials w and w + 3, back to back: 10 s each, 8 s of compute
        owned_trial(store, ostudy, study, cell, seed, t0 + 10 * (i // 3), 10.0, 1000 + w, f"run{w}", 8.0)
    text = write_report(study, url, str(tmp_path / "rep"), run_info={
        "wall_s": 40.0, "started": t0 - 1, "workers": 1, "run": "run0", "command": "python -m ablate.run x.yaml"})
    text = " ".join(text.read_text().split())
    assert "ran 2 of the 6 finished trials in 40 s wall time, 16 s of trial compute, harness overhead 60.0%" in text
    assert ("Workers: 3 worker process(es) in 3 invocation(s) of the runner ran the 6 finished trials (by the trials' "
            "owner records); trial compute 48 s, harness overhead 20.0% of their busy time") in text


def test_a_report_written_mid_run_says_partial_and_does_not_time_blocks_under_load(tmp_path):
    study = load_study(tiny_study(tmp_path))  # 2 cells x 2 seeds
    url = str(tmp_path / "runs" / "optuna.journal")
    store = st.open_storage(url)
    ostudy = st.load_or_create(store, study.name)
    (c0, s0), (c1, s1) = study.trials()[:2]
    owned_trial(store, ostudy, study, c0, s0, time.time() - 20, 10.0, 1, "r", 8.0)
    st.create_running_trial(ostudy, dict(c1.label), {k: [v] for k, v in c1.label}, {"cell_key": c1.key, "seed": s1})
    text = write_report(study, url, str(tmp_path / "rep")).read_text()
    flat = " ".join(text.split())
    assert "**Partial.** This report was written while the study was unfinished: 1 trial(s) running, 2 still to run" \
        in flat
    assert "latency and peak memory were not measured: 1 trial(s) were training on this machine" in flat
    row = next(line for line in text.splitlines() if line.startswith(f"| {c0.title()} |"))
    head = next(line for line in text.splitlines() if "attn fwd+bwd ms" in line)  # the column by its name
    ms = row.split("|")[[c.strip() for c in head.split("|")].index("attn fwd+bwd ms")].strip()
    assert ms == "", "no latency measured under a training load"
