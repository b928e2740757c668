"""The cluster path: several workers on one PostgreSQL server, as on several machines.

A real PostgreSQL server is started for this module (initdb into a temporary folder, loopback
only, password authentication); the tests skip with the reason when none can be started, and
fail instead under ``ABLATE_REQUIRE_POSTGRES=1`` (CI sets it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from ablate.storage import opening, states
from ablate.storage import records as st
from ablate.study.load import load_study

from support import tiny_study

COMPLETE, RUNNING, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL


# --------------------------------------------------------------------------------------
# a throwaway PostgreSQL server
# --------------------------------------------------------------------------------------















# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}


def _trials(url: str, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=st.open_storage(url)).get_trials(deepcopy=False)


def _complete_pairs(trials) -> Counter:
    return Counter((t.user_attrs["cell_key"], t.user_attrs["seed"]) for t in trials if t.state == COMPLETE)


def _worker(study: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m ablate.run STUDY ...`` as its own process group (so kill -9 takes its helpers
    too), its stdout and stderr in a log file under ``cwd/logs`` (a pipe nobody reads could fill)."""
    (cwd / "logs").mkdir(exist_ok=True)
    log = cwd / "logs" / f"worker-{len(list((cwd / 'logs').iterdir()))}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ablate.run", str(study), *args], cwd=cwd, env=env or ENV,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a worker; its output."""
    proc.wait(timeout=timeout)
    return proc.log.read_text()


def _table(report: str) -> list[str]:
    """The report's deterministic parts: the ablation table without the costs measured when the
    report is written (milliseconds, MiB), the verdicts, and each cell's per-class IoU."""
    head, tail = report.split("## Per-class IoU", 1)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in head.splitlines()
            if line.startswith("| ")]
    keep = [i for i, h in enumerate(rows[0]) if not h.endswith((" ms", " MiB"))]
    assert {"cell", "mIoU mean ± std", "seeds"} <= {rows[0][i] for i in keep}, rows[0]
    table = [" | ".join(row[i] for i in keep) for row in rows]
    verdicts = [line for line in head.splitlines() if line.startswith("- ")]
    per_class = [" | ".join(line.split(" | ")[:2]) for line in tail.splitlines()
                 if line.startswith("| ") and not line.startswith("| cell")]
    return table + verdicts + per_class


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# --------------------------------------------------------------------------------------
# storage.py's pieces
# --------------------------------------------------------------------------------------

def test_redact_hides_passwords_in_urls_and_command_lines():
    r = st.redact
    assert r("postgresql://u:s3cret@10.0.0.1:5432/db") == "postgresql://u:***@10.0.0.1:5432/db"
    assert r("postgresql+psycopg2://u:p@ss:w@host/db") == "postgresql+psycopg2://u:***@host/db"
    assert r("python -m ablate.run x.yaml --storage=postgresql://u:pw@h/db --run-dir r") == \
        "python -m ablate.run x.yaml --storage=postgresql://u:***@h/db --run-dir r"
    assert r("postgresql://u@h/db?sslmode=require&password=pw") == "postgresql://u@h/db?sslmode=require&password=***"
    for kept in ("postgresql://u@h:5432/db", "sqlite:///runs/x.db", "runs/x/optuna.journal"):
        assert r(kept) == kept


def test_storage_url_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(st.STORAGE_ENV, raising=False)
    assert st.storage_url(tmp_path, None) == str(tmp_path / "optuna.journal")
    monkeypatch.setenv(st.STORAGE_ENV, "postgresql://u@h/db")
    assert st.storage_url(tmp_path, None) == "postgresql://u@h/db"
    assert st.storage_url(tmp_path, "sqlite:///x.db") == "sqlite:///x.db", "--storage wins over the environment"


def test_advisory_lock_key_is_the_same_in_every_process():
    """Workers on different machines must derive one key: SHA-1 of the study name, never the
    per-process salted hash(); the value is pinned so that versions of ablate agree too."""
    code = "from ablate.storage.opening import advisory_key; print(advisory_key('gcn_effect'))"
    keys = {subprocess.run([sys.executable, "-c", code], env={**ENV, "PYTHONHASHSEED": str(seed)},
                           capture_output=True, text=True, check=True).stdout.strip() for seed in (1, 2, 3)}
    assert keys == {str(st.advisory_key("gcn_effect"))} == {"-4430240542348836816"}
    assert -2**63 <= st.advisory_key("x") < 2**63 and st.advisory_key("x") != st.advisory_key("y")


def test_study_lock_excludes_other_processes_with_one_cached_engine(pg_url, tmp_path):
    """The advisory lock serialises processes; each process keeps one engine per URL, and a
    forked child builds its own instead of sharing its parent's connections."""
    opening.lock_engines.clear()
    with st.study_lock(pg_url, "tiny"):
        pass
    with st.study_lock(pg_url, "tiny"):
        engine = opening.lock_engines[pg_url]
    assert list(opening.lock_engines) == [pg_url] and opening.lock_engines[pg_url] is engine

    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import sys, time
        from ablate.storage import records as st
        print("waiting", flush=True)
        with st.study_lock(sys.argv[1], "tiny"):
            print(f"got {time.time()}", flush=True)
    """))
    with st.study_lock(pg_url, "tiny"):
        child = subprocess.Popen([sys.executable, str(probe), pg_url], env=ENV, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(2.0)  # the child is blocked on the lock meanwhile
        released = time.time()
    got = float(child.communicate(timeout=60)[0].split()[-1])
    assert child.returncode == 0 and got >= released

    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's engine, and must get the lock
        code = 1
        try:
            with st.study_lock(pg_url, "tiny"):
                code = 0 if opening.lock_engines[pg_url] is not engine else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with st.study_lock(pg_url, "tiny"):  # the parent's pooled connection survived the child
        assert opening.lock_engines[pg_url] is engine


def test_workers_starting_together_on_an_empty_database_all_start(pg_url, tmp_path):
    """Optuna creates its tables on first use; PostgreSQL's CREATE TABLE is check-then-insert in
    the catalog, so workers starting at once on an empty database would race (a duplicate-key
    error kills the losers) unless table creation is serialised."""
    go = tmp_path / "go"
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import os, sys, time
        from ablate.storage import records as st
        open(f"{sys.argv[2]}.ready.{os.getpid()}", "w").close()
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.01)
        store = st.open_storage(sys.argv[1])
        with st.study_lock(sys.argv[1], "tiny"):
            st.load_or_create(store, "tiny")
        print("ok", flush=True)
    """))
    procs = [subprocess.Popen([sys.executable, str(probe), pg_url, str(go)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("go.ready.*"))) < len(procs) and time.time() < deadline:
        time.sleep(0.05)  # until every process has imported and waits for the start signal
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    failed = [err[-600:] for p, (out, err) in zip(procs, results) if p.returncode != 0 or out.strip() != "ok"]
    assert not failed, failed


# --------------------------------------------------------------------------------------
# workers on one server
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["wrong password", "no such database", "no such role"])
def test_a_storage_that_refuses_the_login_is_one_paragraph_before_any_run_folder(pg_url, pg_server, tmp_path, fault):
    """Wrong password, missing database, unknown role: exit 2 with one paragraph naming the
    redacted URL, no traceback, no password, and no run folder left behind."""
    url = {"wrong password": pg_url.replace(pg_server.password, "wrongpw" + pg_server.password[:6]),
           "no such database": pg_url.rsplit("/", 1)[0] + "/nosuchdb",
           "no such role": pg_url.replace(f"//{pg_server.user}:", "//nosuchrole:")}[fault]
    study = tiny_study(tmp_path)
    res = subprocess.run([sys.executable, "-m", "ablate.run", str(study), "--storage", url, "--no-wandb"], cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    flat = " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr and "it cannot be used: " in flat and "Nothing was run." in flat
    assert ":***@127.0.0.1" in flat
    for secret in (pg_server.password, "wrongpw"):
        assert secret not in res.stdout + res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_four_workers_one_killed_run_each_trial_once_and_match_a_single_worker(pg_url, pg_server, tmp_path):
    """Four independent `ablate.run` processes on one PostgreSQL URL (as on four machines), one
    of them killed with SIGKILL mid-trial: every cell x seed of the 12 finishes exactly once, the
    killed trial is recorded as lost and rerun by another worker, the report equals a single
    worker's on the default journal file, and the password is nowhere in what they wrote."""
    # 10 epochs: the kill lands in the first half of a trial, however fast the machine (with 2, a
    # trial seen running could finish between the look and the kill on CI's)
    study = tiny_study(tmp_path, seeds=[0, 1, 2, 3, 4, 5], train={"epochs": 10})
    plan = [(c.key, s) for c, s in load_study(study).trials()]
    assert len(plan) == 12
    procs = [_worker(study, tmp_path, "--storage", pg_url, "--run-dir", "runs/tiny", "--threads", "1",
                     "--reports-dir", f"reports/w{i}") for i in range(4)]
    victim = procs[0]
    killed = None
    deadline = time.time() + 300
    try:
        while killed is None and time.time() < deadline:
            time.sleep(0.2)
            try:
                trials = _trials(pg_url)
            except KeyError:  # no worker has created the study yet
                continue
            mine = [t for t in trials if t.state == RUNNING and t.system_attrs.get(st.ATTR + "pid") == victim.pid
                    and len(t.intermediate_values) <= 4]
            if mine:  # at most 4 of its 10 epochs done: kill -9 well inside the trial
                os.killpg(victim.pid, signal.SIGKILL)
                killed = mine[0]
        outs = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert killed is not None, "worker 0 never had a running trial"
    assert victim.returncode == -signal.SIGKILL
    for p, out in zip(procs[1:], outs[1:]):
        assert p.returncode == 0, out

    trials = _trials(pg_url)
    pairs = _complete_pairs(trials)
    assert sorted(pairs) == sorted(plan) and set(pairs.values()) == {1}, f"each cell x seed once: {pairs}"
    assert Counter(t.state for t in trials) == {COMPLETE: 12, FAIL: 1}
    lost = trials[killed.number]
    assert lost.state == FAIL and lost.system_attrs[st.ATTR + "fail_kind"] == "lost"
    key = (killed.user_attrs["cell_key"], killed.user_attrs["seed"])
    rerun = [t for t in trials if t.state == COMPLETE and (t.user_attrs["cell_key"], t.user_attrs["seed"]) == key]
    assert rerun[0].system_attrs[st.ATTR + "pid"] != victim.pid, "another worker ran the killed trial again"
    assert len({t.system_attrs[st.ATTR + "pid"] for t in trials if t.state == COMPLETE}) >= 2

    # the report from storage, against a single worker on the embedded journal file
    res = subprocess.run([sys.executable, "-m", "ablate.report", str(study), "--storage", pg_url,
                          "--reports-dir", "reports/cluster"], cwd=tmp_path, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    single = subprocess.run([sys.executable, "-m", "ablate.run", str(study), "--run-dir", "runs/single",
                             "--threads", "1", "--no-wandb", "--reports-dir", "reports/single"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    cluster = (tmp_path / "reports/cluster/tiny.md").read_text()
    alone = (tmp_path / "reports/single/tiny.md").read_text()
    # same rows, columns and values: a trial is a function of its config, seed and thread count
    assert _table(cluster) == _table(alone)
    assert "6/6" in cluster and "Failed trials" not in cluster
    values = {(t.user_attrs["cell_key"], t.user_attrs["seed"]): t.value for t in trials if t.state == COMPLETE}
    single_values = {(t.user_attrs["cell_key"], t.user_attrs["seed"]): t.value
                     for t in _trials(str(tmp_path / "runs/single/optuna.journal")) if t.state == COMPLETE}
    assert values == single_values

    # the password is in no output, report, W&B record, run folder file or storage record
    secret = pg_server.password
    texts = outs + [res.stdout + res.stderr]
    assert not [t for t in texts if secret in t], "a worker printed the password"
    assert not _files_containing(tmp_path, secret.encode()), "a written file holds the password"
    assert list((tmp_path / "runs/tiny/wandb").glob("offline-run-*")), "W&B offline runs were written"
    assert not pg_server.rows_containing(pg_url, secret), "the storage records hold the password"
    assert "postgresql://ablate:***@127.0.0.1" in cluster, "the report names the storage, password hidden"


@pytest.mark.slow
def test_workers_option_keeps_the_url_off_child_command_lines(pg_url, pg_server, tmp_path):
    """`--workers 2` against PostgreSQL: children share the study, and the password is neither
    on their command lines (what `ps` shows on a shared machine) nor in their W&B records."""
    study = tiny_study(tmp_path, seeds=[0, 1], train={"epochs": 1})
    parent = _worker(study, tmp_path, "--storage", pg_url, "--run-dir", "runs/tiny", "--workers", "2")
    seen: dict[int, str] = {}
    try:
        while parent.poll() is None:
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit() and int(proc.name) not in seen:
                    try:
                        stat = (proc / "stat").read_text()
                        if int(stat.rsplit(")", 1)[1].split()[1]) == parent.pid:
                            seen[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    except (OSError, ValueError, IndexError):
                        pass
            time.sleep(0.1)
        out = _finish(parent)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 0, out
    children = [c for c in seen.values() if "--worker" in c]
    assert len(children) == 2, seen
    assert not [c for c in children if pg_server.password in c], "a child's command line holds the password"
    pairs = _complete_pairs(_trials(pg_url))
    assert len(pairs) == 4 and set(pairs.values()) == {1}
    assert len({t.system_attrs[st.ATTR + "pid"] for t in _trials(pg_url)}) == 2, "both children took trials"
    assert pg_server.password not in out
    assert not _files_containing(tmp_path, pg_server.password.encode())


@pytest.mark.slow
def test_a_lost_trial_on_another_host_is_reaped_once_its_heartbeat_is_stale(pg_url, tmp_path):
    """Another machine's process table is out of sight: its trials live by their heartbeat. A
    trial whose remote owner stopped beating is reaped after the grace period and run again; one
    whose remote owner keeps beating is left alone, whatever its age."""
    study = tiny_study(tmp_path, factors={"gcn": [True]}, seeds=[0, 1, 2], train={"epochs": 1})
    grace = 4.0
    from ablate.run.claims import trial_attrs as _trial_attrs

    spec = load_study(study)
    store = st.open_storage(pg_url)
    ostudy = st.load_or_create(store, "tiny")
    cell = spec.cells()[0]

    def remote_trial(seed: int, beat_age: float) -> int:
        tid = st.create_running_trial(ostudy, dict(cell.label), {k: [v] for k, v in cell.label},
                                      _trial_attrs(cell, seed, spec.trial_config(cell, seed)))
        remote = {st.ATTR + "host": "node-b.cluster", st.ATTR + "node": "other-boot/pid:[1]",
                  st.ATTR + "pid": os.getpid(), st.ATTR + "start": states.proc_start(os.getpid()),
                  st.ATTR + "heartbeat": time.time() - beat_age}
        for k, v in remote.items():  # what a worker on node-b would have written (its pid is alive here)
            store.set_trial_system_attr(tid, k, v)
        return tid

    dead = remote_trial(0, beat_age=10 * grace)  # node-b's worker died long ago
    alive = remote_trial(1, beat_age=0.0)  # node-b's worker is still running this one
    env = {**ENV, "ABLATE_HEARTBEAT_GRACE_S": str(grace)}
    args = ("--storage", pg_url, "--run-dir", "runs/tiny", "--threads", "1", "--no-wandb")
    with st.Heartbeat(store, alive, every=0.5):
        worker = _worker(study, tmp_path, *args, env=env)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and len(_complete_pairs(_trials(pg_url))) < 2 and worker.poll() is None:
                time.sleep(0.5)
            trials = {t._trial_id: t for t in _trials(pg_url)}
            assert sorted(_complete_pairs(trials.values())) == [(cell.key, 0), (cell.key, 2)]
            assert trials[dead].state == FAIL and trials[dead].system_attrs[st.ATTR + "fail_kind"] == "lost"
            assert "node-b.cluster" in trials[dead].system_attrs[st.ATTR + "fail_reason"]
            time.sleep(2 * grace)  # the worker claims again meanwhile, if it is still there
            assert {t._trial_id: t for t in _trials(pg_url)}[alive].state == RUNNING, \
                "a remote trial with a fresh heartbeat is not reaped, whatever its age"
            assert time.time() - store.get_trial(alive).system_attrs[st.ATTR + "heartbeat"] < 2.0
        except BaseException:
            os.killpg(worker.pid, signal.SIGKILL)
            raise
    # node-b's worker dies now (its heartbeat stops): once the grace period has passed, a worker
    # still waiting for it, or else the same command run again, reaps it and runs its seed
    out = _finish(worker)
    assert worker.returncode == 0, out
    if (cell.key, 1) not in _complete_pairs(_trials(pg_url)):
        rerun = _worker(study, tmp_path, *args, env=env)
        out = _finish(rerun)
        assert rerun.returncode == 0, out
    trials = {t._trial_id: t for t in _trials(pg_url)}
    assert trials[alive].state == FAIL and trials[alive].system_attrs[st.ATTR + "fail_kind"] == "lost"
    pairs = _complete_pairs(trials.values())
    assert sorted(pairs) == [(cell.key, s) for s in (0, 1, 2)] and set(pairs.values()) == {1}
