"""``ablate submit`` / ``ablate status`` on a real one-node SLURM cluster, and their checks that
need no cluster.

The cluster (tests/support/slurm_cluster.py: slurmctld, slurmd and munged started as root with a
throwaway config) and a PostgreSQL server (tests/storage/test_postgres.py's) are started once for the
module; the cluster tests skip with the reason when either cannot start here, and fail instead
under ``ABLATE_REQUIRE_SLURM=1``. One submission is shared by them: a 2-cell study as a 2-task
array plus the report job; every task is sent SIGUSR1 (SLURM's time-limit signal) once its trial
has checkpointed, requeues itself and resumes a trial from its checkpoint. A DDP study (2 ranks)
is submitted on its own: its trial's ranks are a 2-task srun step of the array task."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from ablate.run import slurm as slurm_mod
from ablate.run import status as status_mod
from ablate.run import submit as submit_mod
from ablate.storage import records as st
from ablate.study.load import load_study

from support import tiny_study

COMPLETE, RUNNING, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
REQUIRE_ENV = "ABLATE_REQUIRE_SLURM"
EPOCHS = 40  # long enough that both tasks are mid-trial together when they are signalled


def _unavailable(why: str):
    if os.environ.get(REQUIRE_ENV, "0") not in ("", "0"):
        pytest.fail(f"{REQUIRE_ENV} is set but the SLURM tests cannot run: {why}")
    pytest.skip(f"no SLURM cluster for these tests: {why}")


# --------------------------------------------------------------------------------------------------
# without a cluster: the dry run, the refusals, the time forms, the status of a storage
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """A PATH with python but no SLURM program, in a fresh folder with the tiny study."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.chdir(tmp_path)
    return tiny_study(tmp_path)


def _submit(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = submit_mod.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())  # stderr's paragraph unwrapped (it is cut at 100 columns)


def test_dry_run_prints_the_array_and_the_dependent_report_job_without_a_cluster(no_slurm, capsys):
    code, out, err = _submit([str(no_slurm), "--dry-run", "--workers", "3", "--partition", "gpu",
                              "--gpus-per-worker", "1", "--cpus-per-worker", "4", "--time", "12:00:00", "--mem", "16G",
                              "--account", "lab", "--qos", "high", "--slurm", "constraint=a100",
                              "--storage", "postgresql://ablate@db.example.org/ablate"], capsys)
    assert code == 0, err
    array, report = out.split("# the report job")
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --time=720", "#SBATCH --mem=16G", "#SBATCH --account=lab",
                 "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --signal=USR1@120", "#SBATCH --requeue",
                 "export SUBMITIT_PREEMPT_SIGNAL=USR1", "-m submitit.core._submit"):
        assert line in array, line
    assert "#SBATCH --dependency=afterany:ARRAY_ID" in report
    assert "--array" not in report and "--gpus-per-node" not in report and "--requeue" not in report
    assert "#SBATCH --cpus-per-task=1" in report
    # away from the cluster, where its nodes are unknown, a local run folder is a warning, not a refusal
    assert "would refuse" in err and "--run-dir" not in out
    assert not Path("runs").exists(), "a dry run writes nothing"


def test_refuses_a_password_in_the_storage_url(no_slurm, capsys):
    code, out, err = _submit([str(no_slurm), "--dry-run", "--storage", "postgresql://ablate:s3cret@db/ablate"], capsys)
    assert code == 2 and "~/.pgpass" in err and "s3cret" not in err + out and "Nothing was run" in err


def test_refuses_without_sbatch(no_slurm, capsys):
    code, _, err = _submit([str(no_slurm), "--storage", "postgresql://ablate@db/ablate"], capsys)
    assert code == 2 and "sbatch is not on PATH" in err


def _fake(bindir: Path, name: str, script: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


def test_refuses_a_journal_on_a_disk_the_other_nodes_do_not_see(no_slurm, tmp_path, capsys, monkeypatch):
    bindir = tmp_path / "bin"
    _fake(bindir, "sbatch", "exit 1")
    _fake(bindir, "sinfo", "echo 'node1 debug*'; echo 'node2 debug*'")  # two nodes, neither of them this machine
    code, _, err = _submit([str(no_slurm)], capsys)
    assert code == 2 and "--run-dir" in err and "do not see" in err and "node1, node2" in err
    # the run and reports folders on NFS, the journal given on the local disk: the journal is refused
    shared = tmp_path / "shared"
    real = submit_mod.filesystem_of
    monkeypatch.setattr(submit_mod, "filesystem_of",
                        lambda p: ("nfs4", str(shared)) if str(Path(p).absolute()).startswith(str(shared)) else real(p))
    code, _, err = _submit([str(no_slurm), "--run-dir", str(shared / "run"), "--reports-dir", str(shared / "rep"),
                            "--storage", str(tmp_path / "local.journal")], capsys)
    assert code == 2 and "'--storage'" in err and "journal file" in err and "PostgreSQL" in err
    assert not (tmp_path / "local.journal").exists() and not shared.exists()


def test_slurm_time_forms_and_option_checks():
    assert [submit_mod.slurm_minutes(t) for t in ("90", "30:30", "12:00:00", "2-00:00:00", "1-2", "1-0:30")] == \
        [90, 31, 720, 2880, 1560, 1470]
    from ablate.config.errors import StudyError

    for bad in ("", "0", "12h", "1:2:3:4"):
        with pytest.raises(StudyError):
            submit_mod.slurm_minutes(bad)
    assert submit_mod.extra_options(["constraint=a100", "exclusive=true", "mail-type=END"]) == \
        {"constraint": "a100", "exclusive": True, "mail_type": "END"}
    for bad in ("array=0-9", "signal=USR2@60", "constraint", "--dependency=afterok:1"):
        with pytest.raises(StudyError):
            submit_mod.extra_options([bad])


def test_ablate_run_submit_is_ablate_submit(no_slurm, capsys):
    from ablate.__main__ import main

    assert main(["run", str(no_slurm), "--submit", "--dry-run", "--workers", "2",
                 "--storage", "postgresql://ablate@db/ablate"]) == 0
    assert "#SBATCH --array=0-1%2" in capsys.readouterr().out


def test_a_ddp_study_asks_a_cpu_per_rank_and_its_ranks_are_an_srun_step_only_when_asked(no_slurm, tmp_path, capsys,
                                                                                         monkeypatch):
    from ablate.config.trial import TrialConfig
    from ablate.trainer.process import LAUNCH_ENV, srun_launch

    path = tiny_study(tmp_path, name="ddp2", trainer={"devices": 2})
    code, _, err = _submit([str(path), "--dry-run", "--storage", "postgresql://ablate@db/ablate"], capsys)
    assert code == 2 and "--cpus-per-worker 2 or more" in err and "2 DDP ranks" in err
    code, _, err = _submit([str(path), "--dry-run", "--cpus-per-worker", "2", "--storage",
                            "postgresql://ablate@db/ablate"], capsys)
    assert code == 0, err
    study = load_study(path)
    config = TrialConfig.of(study.trial_config(*study.trials()[0]))
    _fake(tmp_path / "bin", "srun", "exit 0")
    for name in (LAUNCH_ENV, "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_CPUS_PER_TASK", "SLURMD_NODENAME"):
        monkeypatch.delenv(name, raising=False)
    assert srun_launch(config) is None  # not asked for: Lightning starts the ranks
    monkeypatch.setenv(LAUNCH_ENV, "srun")
    assert srun_launch(config) is None  # asked for, outside a SLURM job
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setenv("SLURMD_NODENAME", "node3")
    cmd = srun_launch(config)
    assert cmd[0] == "srun" and {"--overlap", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=4",
                                 "--mem=0", "--nodelist=node3"} <= set(cmd)
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # a job where Lightning ignores SLURM's tasks
    assert srun_launch(config) is None


def test_sigusr1_stops_a_worker_as_ctrl_c_does():
    from ablate.run.worker import interrupt_status, interrupt_words, stopping_on_signals

    with pytest.raises(KeyboardInterrupt):
        with stopping_on_signals():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)
    assert interrupt_words() == "interrupted (SIGUSR1)" and interrupt_status() == 138


def test_wandb_run_id_is_one_per_cell_seed_and_study_and_a_resume_replays_the_curve():
    from ablate.trainer.tracking import replay, run_id

    config = {"study": "zoo", "cell_key": "4192c6e35bf5", "seed": 3}
    assert run_id(config) == run_id(dict(config)) and run_id(config).startswith("4192c6e35bf5-s3-")
    for change in ({"seed": 4}, {"cell_key": "cd689869777c"}, {"study": "zoo-epochs_3"}):
        assert run_id({**config, **change}) != run_id(config)

    class Run:
        rows: list = []

        def log(self, row):
            self.rows.append(row)

    logger = type("Logger", (), {"experiment": Run()})()
    replay(logger, {"step": 12, "epoch": 3}, [10.0, 20.0, 30.0])  # 4 steps an epoch
    assert logger.experiment.rows == [{"val_miou": v, "epoch": e, "trainer/global_step": 4 * (e + 1)}
                                      for e, v in enumerate([10.0, 20.0, 30.0])]
    replay(None, {"step": 12, "epoch": 3}, [1.0])  # tracking off: nothing, no error


def test_status_reads_where_each_cell_stands_from_storage(tmp_path, capsys):
    from ablate.storage.states import create_running_trial, mark_failed

    study = load_study(tiny_study(tmp_path, seeds=[0, 1]))
    url = str(tmp_path / "runs/tiny/optuna.journal")
    (tmp_path / "runs/tiny").mkdir(parents=True)
    _, ostudy = st.open_study(url, study.name)
    cells = study.cells()

    def trial(cell, seed):
        return create_running_trial(ostudy, {}, {}, {"cell_key": cell.key, "seed": seed})

    done = trial(cells[0], 0)
    ostudy._storage.set_trial_user_attr(done, "wall_s", 12.0)
    ostudy._storage.set_trial_state_values(done, COMPLETE, [41.5])
    running = trial(cells[0], 1)
    for epoch in range(3):
        ostudy._storage.set_trial_intermediate_value(running, epoch, 10.0 * epoch)
    mark_failed(ostudy._storage, trial(cells[1], 0), "error", "non-finite training loss (nan) at epoch 2")
    ostudy.set_user_attr(slurm_mod.SUBMISSIONS_ATTR, [
        {"array": "41", "report": "42", "workers": 2, "submitted": time.time(), "host": "login1", "logs": "x"}])
    ostudy.set_user_attr(slurm_mod.REQUEUES_ATTR + "41_1", [time.time()])
    text = status_mod.status_text(study, url)
    assert f"{cells[0].title()} (key {cells[0].key}): 1/2 finished, 1 running, 0 failed, 0 waiting" in text
    assert "seed 1: running on " in text and "epoch 3, heartbeat" in text
    assert f"{cells[1].title()} (key {cells[1].key}): 0/2 finished, 0 running, 1 failed, 1 waiting" in text
    assert "seed 0: failed (final): non-finite training loss" in text
    # 2 trials left (the running one and the waiting one), 12 s each, 1 worker running
    assert "total: 1 finished (0 pruned), 1 running, 1 failed, 1 waiting" in text and "ETA 24s with 1 running" in text
    assert "job array 41 (2 workers) and report job 42" in text and "41_1 1x" in text


# --------------------------------------------------------------------------------------------------
# the real cluster
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from support.slurm_cluster import Cluster, missing

    why = missing()
    if why:
        _unavailable(why)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except Exception as e:  # noqa: BLE001 - said as the skip's (or failure's) reason
        c.stop()
        _unavailable(f"the one-node cluster did not start: {e}")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    import support.postgres as tp

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("the PostgreSQL driver psycopg2 is not installed")
    bindir = tp.pg_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    server = tp.Server(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=st.open_storage(url)).get_trials(deepcopy=False)


def _wait(what: str, until, timeout: float, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = until()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def submitted(cluster, pg, tmp_path_factory):
    """One study submitted as a 2-task array + report job; each task gets SIGUSR1 mid-trial."""
    tmp = tmp_path_factory.mktemp("submit")
    study = tiny_study(tmp, name="slurm", seeds=[0], train={"epochs": EPOCHS},
                       data={"train_images": 32, "val_images": 16})
    url_with_password = pg.new_database()
    url = re.sub(r":[^:@/]+@", "@", url_with_password, count=1)
    pgpass = tmp / "pgpass"
    db = url.rsplit("/", 1)[1]
    pgpass.write_text(f"127.0.0.1:{pg.port}:{db}:{pg.user}:{pg.password}\n")
    pgpass.chmod(0o600)
    env = {**cluster.env(), "PGPASSFILE": str(pgpass), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           "ABLATE_ALLOW_UNDECIDABLE": "1"}
    os.environ["PGPASSFILE"] = str(pgpass)  # this process reads the storage too
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "ablate", "submit", str(study), "--workers", "2", "--storage", url,
                          "--run-dir", "runs/slurm", "--reports-dir", "reports", "--partition", cluster.partition,
                          "--time", "10", "--mem", "1G"], cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert pg.password not in res.stdout + res.stderr
    sub = optuna.load_study(study_name="slurm", storage=st.open_storage(url)).user_attrs[slurm_mod.SUBMISSIONS_ATTR][-1]
    array, report = str(sub["array"]), str(sub["report"])

    # each task is signalled once, as soon as a trial it runs has 3 epochs (and so a checkpoint):
    # whatever the order the tasks start and claim in, both requeue and all trials end in requeued tasks
    ostudy = optuna.load_study(study_name="slurm", storage=st.open_storage(url))
    signalled: dict[str, tuple] = {}
    deadline = time.monotonic() + 150
    while len(signalled) < 2:
        assert time.monotonic() < deadline, f"timed out waiting for both tasks to run a trial: {signalled}"
        for t in ostudy.get_trials(deepcopy=False):
            owner = t.system_attrs.get(st.ATTR + "run", "")
            if t.state == RUNNING and len(t.intermediate_values) >= 3 and owner not in signalled:
                subprocess.run(["scancel", "--signal=USR1", owner.removeprefix("slurm-")], env=cluster.env(),
                               check=True, timeout=30)
                signalled[owner] = (t.number, len(t.intermediate_values), round(time.monotonic() - t0))
        time.sleep(0.2)
    reports = tmp / "reports" / "slurm.md"
    _wait("the report job to write the report and end",
          lambda: reports.exists() and not cluster.squeue("-j", report).strip(), 240, every=1.0)
    return {"tmp": tmp, "url": url, "array": array, "report": report, "study": study, "signalled": signalled,
            "wall": time.monotonic() - t0, "cluster": cluster, "log": res.stdout}


def test_submit_runs_every_trial_once_and_the_report_job_writes_the_report(submitted):
    trials = _trials(submitted["url"], "slurm")
    pairs = Counter((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in trials if t.state == COMPLETE)
    assert len(pairs) == 2 and set(pairs.values()) == {1}, pairs
    assert not [t for t in trials if t.state == RUNNING]
    report = (submitted["tmp"] / "reports" / "slurm.md").read_text()
    assert "gcn=on" in report and "gcn=off" in report
    print(f"\nSLURM run: signalled (owner: trial, epochs, at s) {submitted['signalled']}; report written at "
          f"{submitted['wall']:.0f}s")


def test_each_cell_seed_has_one_wandb_run_id_across_its_attempts(submitted):
    from ablate.trainer.tracking import run_id

    study = load_study(submitted["study"])
    wanted = {run_id({"study": study.name, "cell_key": c.key, "seed": 0}) for c in study.cells()}
    runs = sorted((submitted["tmp"] / "runs/slurm/wandb").glob("offline-run-*"))
    found = Counter(next(w for w in wanted if r.name.split("-", 3)[3].startswith(w)) for r in runs)
    attempts = Counter(run_id({"study": study.name, "cell_key": t.user_attrs["cell_key"], "seed": 0})
                       for t in _trials(submitted["url"], "slurm"))
    assert found == attempts and set(found) == wanted, runs  # one record an attempt, all under the cell x seed's id


def test_a_task_signalled_mid_trial_requeues_and_its_trial_resumes_from_its_checkpoint(submitted):
    trials = sorted(_trials(submitted["url"], "slurm"), key=lambda t: t.number)
    array = submitted["array"]
    interrupted = [t for t in trials if t.state == FAIL]
    assert len(interrupted) == len(submitted["signalled"]) == 2, [(t.number, t.state, t.system_attrs) for t in trials]
    for t in interrupted:
        assert t.system_attrs[st.ATTR + "fail_kind"] == "interrupted"
        assert "SIGUSR1" in t.system_attrs[st.ATTR + "fail_reason"]
        done = [d for d in trials if d.state == COMPLETE and d.user_attrs["cell_key"] == t.user_attrs["cell_key"]]
        assert len(done) == 1
        resumed = done[0].system_attrs.get(st.RESUMED_ATTR)
        # the epochs the interrupted attempt reported are not trained again (a checkpoint after every epoch)
        assert resumed and resumed["epoch"] >= max(1, len(t.intermediate_values) - 1), (resumed, t.intermediate_values)
        assert done[0].system_attrs[st.ATTR + "run"].startswith(f"slurm-{array}_")
    cluster, logs = submitted["cluster"], ""
    for task in ("0", "1"):
        info = cluster.run("scontrol", "-o", "show", "job", f"{array}_{task}").stdout
        assert "Restarts=1" in info and "JobState=COMPLETED" in info, info
        log = next((submitted["tmp"] / "runs/slurm/slurm").glob(f"{array}_{task}/*_log.out")).read_text()
        assert f"task {array}_{task} requeued." in log and "(requeued 1x)" in log, log
        logs += log
    resumed = [t for t in trials if t.system_attrs.get(st.RESUMED_ATTR)]
    assert logs.count("resumed from its checkpoint") == len(resumed) >= 2, logs
    # bit for bit what one uninterrupted local trial gives
    from ablate.trainer.trial import run_trial

    study = load_study(submitted["study"])
    cell = next(c for c in study.cells() if c.key == interrupted[0].user_attrs["cell_key"])
    done = next(d for d in trials if d.state == COMPLETE and d.user_attrs["cell_key"] == cell.key)
    assert done.user_attrs["curve"] == run_trial(study.trial_config(cell, 0), threads=1)["curve"]
    text = status_mod.status_text(study, submitted["url"])
    assert f"job array {array} (2 workers)" in text and "requeued" in text and "2 finished" in text, text


def test_a_ddp_trial_runs_as_a_two_task_srun_step_and_equals_the_local_two_process_run(cluster, tmp_path):
    """A ``trainer: {devices: 2}`` study submitted as one array task of 2 CPUs: its worker starts the
    trial's ranks as a 2-task srun step (gloo, CPU), whose tasks Lightning's SLURMEnvironment takes
    as rank and world; the curve is bit for bit that of the same trial's 2 local processes."""
    from ablate.trainer.trial import run_trial

    path = tiny_study(tmp_path, name="ddp_slurm", seeds=[0], factors={"gcn": [True]}, trainer={"devices": 2},
                      train={"epochs": 2, "batch_size": 8}, data={"train_images": 16, "val_images": 8})
    env = {**cluster.env(), "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "ABLATE_ALLOW_UNDECIDABLE": "1"}
    env.pop("ABLATE_TRIAL_LAUNCH", None)
    t0 = time.monotonic()
    sub = subprocess.Popen([sys.executable, "-m", "ablate", "submit", str(path), "--workers", "1", "--cpus-per-worker",
                            "2", "--run-dir", "runs/ddp", "--partition", cluster.partition, "--time", "10", "--mem", "1G",
                            "--no-wandb"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    study = load_study(path)
    local = run_trial(study.trial_config(*study.trials()[0]))  # meanwhile: the 2 ranks forked by Lightning here
    local_s = time.monotonic() - t0
    out, _ = sub.communicate(timeout=120)
    assert sub.returncode == 0, out
    url = str(tmp_path / "runs/ddp/optuna.journal")
    array, report = re.search(r"job array (\d+) .* report job (\d+)", out).groups()
    trial = _wait("the DDP trial to end", lambda: next((t for t in _trials(url, "ddp_slurm")
                                                        if t.state in (COMPLETE, FAIL)), None), 180, every=0.5)
    done_s = time.monotonic() - t0
    cluster.run("scancel", report, array, check=False)  # the report job is the other test's subject
    _wait("the jobs to end", lambda: not cluster.squeue("-j", f"{array},{report}").strip(), 60)
    log = "".join(f.read_text() for f in (tmp_path / "runs/ddp/slurm").glob(f"**/{array}_0_log.out"))
    assert trial.state == COMPLETE, (trial.system_attrs, log)
    assert trial.user_attrs["world_size"] == 2 == local["world_size"]
    for rank in (0, 1):  # each rank a task of the worker's srun step, its rank SLURM's
        assert re.search(rf"trial rank {rank} of 2: SLURM task of step {array}\.[1-9]", log), log
    assert trial.user_attrs["curve"] == local["curve"], (trial.user_attrs["curve"], local["curve"])
    print(f"\nDDP under srun: the trial done {done_s:.0f}s after the submission (the local 2-process run beside it "
          f"took {local_s:.0f}s)")
