"""``ablate bench storage``: how claims and reports scale with the trials a study holds.

For each N it writes a grid study (C learning-rate cells x S seeds, C x S >= N plus the claims
to come), fills a storage with the first N (cell, seed) of its plan as finished trials in
ablate's own record format (the user attributes :func:`ablate.run.claims.trial_attrs` and the
trainer write: config, cell, per-epoch curve, class IoU, costs, fingerprint, wall time; owner
system attributes; per-epoch intermediate values), then measures

* claim latency: W worker processes claim tiny fake trials (no training: a claim, then the
  result recorded at once) through :func:`ablate.storage.claim_next`, each after its first claim
  (which builds its index: reported apart as "first claim"); p50 and p99 over every later claim,
  the study lock's wait included; the claims per second all workers made; and how long each
  claim held the study lock (p50, p99): the part of a claim no other worker can overlap, so W
  workers' claims queue once claims/s x hold nears 1;
* ``python -m ablate.report`` on the filled storage: wall time, CPU time and peak RSS of that
  process, with empty seeds-advice and figure caches ("cold") and again with them filled ("warm":
  a report rewritten from the same results); its attention-block costs are measured once by an
  untimed first run and reused;
* ``ablate status`` on the filled storage: wall and CPU time.

Storages: a journal file, and PostgreSQL when ``initdb`` and ``pg_ctl`` are found (a throwaway
server in a temporary folder, as the tests start one). ``--code DIR`` runs the workers and the
report with the ``ablate`` package of DIR (an older checkout) to compare. The table is Markdown.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS = 20


def study_file(folder: Path, n: int, claims: int) -> Path:
    """A grid study of learning-rate cells whose plan holds ``n`` + ``claims`` pairs or more."""
    import yaml

    cells = max(2, round(math.sqrt(n + claims)))
    seeds = math.ceil((n + claims) / cells)
    lrs = [round(0.001 * (1 + i), 6) for i in range(cells)]
    study = {"name": f"scale{n}", "question": "storage scale benchmark",
             "model": {"backbone": {"name": "small_cnn", "width": 8}, "mechanism": "glore", "args": {"K": 4}},
             "data": {"task": "global_cue", "train_images": 64, "val_images": 32},
             "train": {"epochs": EPOCHS, "batch_size": 16, "threads": 1},
             "factors": {"train.lr": lrs}, "seeds": list(range(seeds)), "baseline": {"train.lr": lrs[0]}}
    path = folder / f"scale{n}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def record(study, cell, seed: int, i: int, rng, choices: dict):
    """A finished trial of (cell, seed) as the runner writes it: a rising, saturating curve."""
    import datetime as dt

    from optuna.distributions import CategoricalDistribution
    from optuna.trial import FrozenTrial, TrialState

    from ablate.run.claims import trial_attrs
    from ablate.storage.states import owner_attrs

    config = study.trial(cell, seed)
    attrs = {**trial_attrs(cell, seed, config), **result(rng, i)}
    curve, wall = attrs["curve"], attrs["wall_s"]
    end = dt.datetime(2026, 1, 1) + dt.timedelta(seconds=30 * i)
    params = dict(cell.label)
    dists = {k: CategoricalDistribution(choices[k]) for k in params}  # as the runner declares them
    system = {**owner_attrs(), "ablate:pid": 1000 + i, "ablate:start": "1"}
    return FrozenTrial(number=-1, state=TrialState.COMPLETE, value=curve[-1], datetime_start=end - dt.timedelta(
        seconds=wall), datetime_complete=end, params=params, distributions=dists, user_attrs=attrs,
        system_attrs=system, intermediate_values=dict(enumerate(curve)), trial_id=-1)


def result(rng, i: int = 0) -> dict:
    """What the trainer records for a finished trial: a rising, saturating curve and its costs."""
    plateau, tau = 0.55 + 0.3 * rng.random(), 2 + 4 * rng.random()
    curve = [min(1.0, max(0.0, plateau * (1 - math.exp(-(e + 1) / tau)) + rng.gauss(0, 0.01))) for e in range(EPOCHS)]
    wall = 20 + 10 * rng.random()
    return {"value": curve[-1], "final_val_miou": curve[-1], "best_val_miou": max(curve), "curve": curve,
            "class_iou": [rng.random() for _ in range(5)], "val_pixels": 387072, "pruned_epoch": None,
            "attention_params": 4808, "attention_flops": 2883584, "total_params": 24461, "compute_s": wall - 2,
            "train_s": wall - 1, "threads": 1, "world_size": 1, "pid": 1000 + i, "wall_s": wall,
            "fingerprint": {"git": {"commit": "0" * 40, "dirty": False}, "versions": {"python": "3.11"}}}


class _MemoryBackend:
    """A journal backend in memory: the fill is written to the file in one go afterwards."""

    def __init__(self):
        self.logs: list[dict] = []

    def read_logs(self, log_number_from: int):
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict]) -> None:
        self.logs.extend(json.loads(json.dumps(logs)))


def fill(url: str, study_path: Path, n: int, seed: int = 0) -> None:
    """The first ``n`` pairs of the study's plan, finished, into the storage ``url``."""
    import random

    import optuna

    from ablate.storage import records as st
    from ablate.study.load import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, rng = load_study(study_path), random.Random(seed)
    if "://" in url:
        store = st.open_storage(url)
        ostudy = st.load_or_create(store, study.name)
        choices = _choices(study)
        trials = (record(study, cell, s, i, rng, choices) for i, (cell, s) in enumerate(study.trials()[:n]))
        return _bulk_rdb(store._backend, ostudy._study_id, trials)
    else:
        backend = _MemoryBackend()
        store = optuna.storages.JournalStorage(backend)  # the plain journal, written out below
    ostudy = st.load_or_create(store, study.name)
    choices = _choices(study)
    for i, (cell, s) in enumerate(study.trials()[:n]):
        store.create_new_trial(ostudy._study_id, template_trial=record(study, cell, s, i, rng, choices))
    with open(url, "w") as f:
        f.writelines(json.dumps(log, separators=(",", ":")) + "\n" for log in backend.logs)


def _choices(study) -> dict:
    """Each factor's values over the cells, as the runner declares them (a trial's distributions)."""
    choices: dict = {}
    for c in study.cells():
        for k, v in c.label:
            if v not in choices.setdefault(k, []):
                choices[k].append(v)
    return choices


def _bulk_rdb(rdb, study_id: int, trials, batch: int = 500) -> None:
    """Finished trials into an Optuna database, ``batch`` per transaction, with the rows Optuna's
    own ``create_new_trial`` writes (one at a time it takes ~0.2 s a trial here)."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models as m

    finite = m.TrialValueModel.TrialValueType.FINITE
    step_finite = m.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    number, session = 0, rdb.scoped_session()
    try:
        for t in trials:
            session.add(m.TrialModel(
                number=number, study_id=study_id, state=t.state, datetime_start=t.datetime_start,
                datetime_complete=t.datetime_complete,
                values=[m.TrialValueModel(objective=0, value=t.value, value_type=finite)],
                params=[m.TrialParamModel(param_name=k, param_value=t.distributions[k].to_internal_repr(v),
                                          distribution_json=distribution_to_json(t.distributions[k])) for k, v in t.params.items()],
                user_attributes=[m.TrialUserAttributeModel(key=k, value_json=json.dumps(v))
                                 for k, v in t.user_attrs.items()],
                system_attributes=[m.TrialSystemAttributeModel(key=k, value_json=json.dumps(v))
                                   for k, v in t.system_attrs.items()],
                intermediate_values=[m.TrialIntermediateValueModel(step=k, intermediate_value=v,
                                                                   intermediate_value_type=step_finite)
                                     for k, v in t.intermediate_values.items()]))
            number += 1
            if number % batch == 0:
                session.commit()
        session.commit()
    finally:
        session.close()


def worker(url: str, study_path: str, claims: int, ready: str, go: str, out: str, trial_s: str = "0") -> None:
    """One simulated worker: open, first claim, wait for the start, then ``claims`` claims, each
    followed by its fake trial (``trial_s`` seconds, jittered uniformly by ±50% so that workers
    drift apart as real ones do; 0: none) and its recorded result; writes {"first": s, "claims":
    [s, ...]} to ``out``. With fake trials, a worker's first claim after the start waits a random
    part of one trial: the workers of a running study are out of phase (each claims when its
    trial ends), not all at one instant as the benchmark's common start would have them."""
    import contextlib
    import functools
    import random

    import optuna

    from ablate.storage import records as st
    from ablate.run.claims import choose
    from ablate.run.worker import open_worker
    from ablate.study.load import load_study

    import ablate.trainer.checkpoints  # noqa: F401 - imported by a real worker before its first claim (Lightning, seconds)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = argparse.Namespace(worker=False, worker_index=0, threads=1, workers=1, max_trials=0)
    w = open_worker(load_study(study_path), url, Path(tempfile.gettempdir()), args)
    rng = random.Random(os.getpid())
    new = hasattr(st, "TrialIndex")  # the code under test may be from before the index
    held: list[float] = []  # seconds each claim held the study lock: the part that serialises the workers

    @contextlib.contextmanager
    def timed_lock(*a, lock=st.study_lock, **k):
        with lock(*a, **k):
            t0 = time.perf_counter()
            yield
            held.append(time.perf_counter() - t0)
    st.study_lock = timed_lock

    def claim():
        t0 = time.perf_counter()
        if new:
            c, w.index = st.claim_next(url, w.ostudy, functools.partial(choose, w), w.index)
        else:
            c, _ = st.claim_next(url, w.ostudy, functools.partial(choose, w))
        took = time.perf_counter() - t0
        if c is not None:
            if float(trial_s) > 0:
                time.sleep(float(trial_s) * rng.uniform(0.5, 1.5))
            st.record_result(w.store, c.trial_id, result(rng))
        return took

    first = claim()
    Path(ready).touch()
    while not os.path.exists(go):
        time.sleep(0.01)
    if float(trial_s) > 0:
        time.sleep(float(trial_s) * rng.random())  # out of phase, as a cluster's workers are after their first trials
    del held[:]
    times = [claim() for _ in range(claims)]
    Path(out).write_text(json.dumps({"first": first, "claims": times, "held": held}))


def quantile(xs: list[float], q: float) -> float:
    """The ``q`` quantile, linear between order statistics (Hyndman & Fan 1996, type 7)."""
    xs = sorted(xs)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def _env(code: str | None) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "ABLATE_RUN_ID": "bench"}
    if code:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(code).resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def claim_latency(url: str, study_path: Path, workers: int, claims: int, folder: Path, code: str | None,
                  trial_s: float = 0.0) -> dict:
    """W worker processes, ``claims`` claims each after a common start (each claim followed by a
    fake trial of ~``trial_s`` seconds): p50/p99 of the claims, the slowest first claim."""
    run = folder / f"w{workers}-{time.monotonic_ns()}"
    run.mkdir()
    go = run / "go"
    # this file loaded by path, so that ``ablate`` is the package of ``code`` (first on sys.path)
    start = ("import importlib.util as u, sys; s = u.spec_from_file_location('_bench', sys.argv[1]); "
             "m = u.module_from_spec(s); s.loader.exec_module(m); m.worker(*sys.argv[2:3], sys.argv[3], "
             "int(sys.argv[4]), *sys.argv[5:])")
    procs = [subprocess.Popen([sys.executable, "-c", start, __file__, url, str(study_path), str(claims),
                               str(run / f"ready{i}"), str(go), str(run / f"out{i}.json"), str(trial_s)], env=_env(code),
                              cwd=code or None)
             for i in range(workers)]
    while sum((run / f"ready{i}").exists() for i in range(workers)) < workers:
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError("a benchmark worker failed")
        time.sleep(0.05)
    go.touch()
    t0 = time.perf_counter()
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("a benchmark worker failed")
    wall = time.perf_counter() - t0
    outs = [json.loads((run / f"out{i}.json").read_text()) for i in range(workers)]
    times, held = [t for o in outs for t in o["claims"]], [t for o in outs for t in o["held"]]
    return {"p50": quantile(times, 0.5), "p99": quantile(times, 0.99), "n": len(times),
            "first": max(o["first"] for o in outs), "trial_s": trial_s,
            "held_p50": quantile(held, 0.5), "held_p99": quantile(held, 0.99), "wall": wall,
            "per_s": len(times) / wall}


def timed(cmd: list[str], code: str | None, env: dict | None = None) -> dict:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of the command run as a child
    process."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); r = subprocess.run(sys.argv[1:], "
             "stdout=subprocess.DEVNULL); w = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print(r.returncode, w, u.ru_utime + u.ru_stime, u.ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                         env={**_env(code), **(env or {})}, cwd=code or None)
    rc, wall, cpu, rss = res.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed: {res.stderr[-500:]}")
    return {"wall": float(wall), "cpu": float(cpu), "rss_mb": int(rss) / 1024}


def report(url: str, study_path: Path, folder: Path, code: str | None) -> dict:
    """``python -m ablate.report`` on the storage (:func:`timed`): an untimed first run measures the
    attention-block costs (reused after), then "cold", with empty seeds-advice and figure caches
    (``$ABLATE_CACHE`` a new folder), then "warm", the same report again (a report rewritten from
    the same results reads both caches). Returns the warm run's numbers and the cold one's under "cold"."""
    cmd = [sys.executable, "-m", "ablate.report", str(study_path), "--storage", url, "--reports-dir",
           str(folder / "reports"), "--reuse-costs"]
    timed(cmd, code)
    cache = {"ABLATE_CACHE": tempfile.mkdtemp(prefix="cache-", dir=folder)}
    cold = timed(cmd, code, cache)
    return {**timed(cmd, code, cache), "cold": cold}


def status(url: str, study_path: Path, code: str | None) -> dict:
    """``ablate status`` on the storage (:func:`timed`, one run)."""
    return timed([sys.executable, "-m", "ablate.run.status", str(study_path), "--storage", url], code)


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb into a temporary folder; run as the
    'postgres' or 'nobody' account under root, which initdb refuses), trust authentication."""

    def __init__(self):
        import shutil

        self.bindir = next((Path(p).parent for p in [shutil.which("initdb")] if p), None)
        self.base = Path(tempfile.mkdtemp(prefix="ablate-bench-pg-"))
        self.run_as: dict = {}
        self.port, self.n = 0, 0

    def start(self) -> bool:
        import pwd
        import socket

        if self.bindir is None or not (self.bindir / "pg_ctl").exists():
            return False
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    a = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.run_as = {"user": a.pw_uid, "group": a.pw_gid, "extra_groups": []}
                os.chown(self.base, a.pw_uid, a.pw_gid)
                break
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        data = self.base / "data"
        if self._pg("initdb", "-D", str(data), "-U", "bench", "-A", "trust", "--no-sync").returncode:
            return False
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c max_connections=200"
        return self._pg("pg_ctl", "-D", str(data), "-l", str(self.base / "log"), "-o", opts, "-w", "start").returncode == 0

    def _pg(self, *args: str):
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True, cwd=self.base,
                              timeout=120, **self.run_as)

    def database(self) -> str:
        import psycopg2

        self.n += 1
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="bench", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE bench{self.n}")
        conn.close()
        return f"postgresql://bench@127.0.0.1:{self.port}/bench{self.n}"

    def stop(self) -> None:
        import shutil

        self._pg("pg_ctl", "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def run(args) -> list[dict]:
    """Every (storage, N) filled once; W workers' claims and the report on it."""
    folder = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    pg = PostgresServer() if args.postgres != "off" else None
    if pg is not None and not pg.start():
        print("no PostgreSQL server could be started (initdb/pg_ctl); journal only", file=sys.stderr)
        pg = None
    rows = []
    try:
        for kind in (["journal"] if args.postgres != "only" else []) + (["postgresql"] if pg else []):
            for n in _ints(args.trials):
                workers = _ints(args.workers)
                most = max(workers, default=0)
                path = study_file(folder, n, args.claims * most + most)
                url = pg.database() if kind == "postgresql" else str(folder / f"{kind}{n}.journal")
                t0 = time.perf_counter()
                fill(url, path, n)
                row = {"storage": kind, "n": n, "fill_s": time.perf_counter() - t0, "claims": {}}
                print(f"{kind} N={n}: filled in {row['fill_s']:.1f} s", file=sys.stderr, flush=True)
                for w in workers:
                    per = max(1, args.claims // w) if args.split else args.claims
                    row["claims"][w] = claim_latency(url, path, w, per, folder, args.code, args.trial_s)
                    print(f"  W={w}: {row['claims'][w]}", file=sys.stderr, flush=True)
                if not args.no_report and (kind == "journal" or args.report_postgres):
                    row["status"] = status(url, path, args.code)
                    print(f"  status: {row['status']}", file=sys.stderr, flush=True)
                    row["report"] = report(url, path, folder, args.code)
                    print(f"  report: {row['report']}", file=sys.stderr, flush=True)
                rows.append(row)
    finally:
        if pg is not None:
            pg.stop()
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table: one line per storage, N and W (the report and status once per storage and N;
    the report warm, cold in brackets, the larger peak RSS of the two)."""
    out = ["| storage | trials N | workers W | claims | claims/s | claim p50 ms | claim p99 ms | lock held p50 ms | "
           "lock held p99 ms | first claim ms | report wall s (cold) | report CPU s (cold) | report peak RSS MB | "
           "status wall s | status CPU s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep, stat = r.get("report"), r.get("status")
        for w, c in (r["claims"] or {None: None}).items():
            head = (f"{w} | {c['n']}" + (f" (~{c['trial_s']:g} s trials)" if c.get("trial_s") else "")
                    + f" | {c['per_s']:.1f} | {1000 * c['p50']:.1f} | {1000 * c['p99']:.1f} | {1000 * c['held_p50']:.1f}"
                    f" | {1000 * c['held_p99']:.1f} | {1000 * c['first']:.0f}" if c
                    else "– | – | – | – | – | – | – | –")
            cold = rep.get("cold") if rep else None
            tail = (f"{rep['wall']:.1f}" + (f" ({cold['wall']:.1f})" if cold else "") + f" | {rep['cpu']:.1f}"
                    + (f" ({cold['cpu']:.1f})" if cold else "")
                    + f" | {max(rep['rss_mb'], cold['rss_mb'] if cold else 0):.0f}") if rep else "– | – | –"
            tail += f" | {stat['wall']:.2f} | {stat['cpu']:.2f}" if stat else " | – | –"
            out.append(f"| {r['storage']} | {r['n']} | {head} | {tail} |")
            rep = stat = None
    return "\n".join(out)


def record_cost(results: int = 40) -> str:
    """Recording a finished trial's result on a throwaway PostgreSQL server, one process:
    :func:`ablate.storage.records.record_result` (one transaction) against Optuna's own calls (an
    attribute at a time, then the state), ``results`` of each in turn; a Markdown table of medians."""
    import random
    import statistics

    from optuna.trial import TrialState

    from ablate.storage import records as st

    pg = PostgresServer()
    if not pg.start():
        return "no PostgreSQL server could be started (initdb/pg_ctl)"
    try:
        store = st.open_storage(pg.database())
        ostudy = st.load_or_create(store, "record")
        res = result(random.Random(0))
        ours, theirs = [], []
        for i in range(results):
            a = st.create_running_trial(ostudy, {}, {}, {"cell_key": "k", "seed": i}, {})
            b = st.create_running_trial(ostudy, {}, {}, {"cell_key": "k", "seed": results + i}, {})
            t = time.perf_counter()
            st.record_result(store, a, res)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            for k, v in res.items():
                store.set_trial_user_attr(b, k, v)
            store.set_trial_state_values(b, TrialState.COMPLETE, [res["value"]])
            theirs.append(time.perf_counter() - t)
    finally:
        pg.stop()
    return "\n".join(["| recording a result (%d attributes), PostgreSQL | median ms | results |" % len(res),
                      "|---|---|---|",
                      f"| ablate (one transaction) | {1000 * statistics.median(ours):.1f} | {results} |",
                      f"| Optuna's calls | {1000 * statistics.median(theirs):.1f} | {results} |"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ablate bench storage", description=__doc__.split("\n")[0])
    p.add_argument("--trials", default="1000,10000", help="N, comma-separated (default 1000,10000)")
    p.add_argument("--workers", default="1,8", help="W, comma-separated (default 1,8; empty: no claims)")
    p.add_argument("--claims", type=int, default=100, help="claims per measurement (default 100)")
    p.add_argument("--split", action="store_true", help="split --claims among the W workers (else each makes them)")
    p.add_argument("--trial-s", type=float, default=0.0, help="seconds of each fake trial between a claim and its "
                   "result, jittered by ±50%% (default 0: claims back to back, the worst case)")
    p.add_argument("--postgres", choices=("auto", "off", "only"), default="auto",
                   help="auto: the journal, and PostgreSQL when a server can be started; only: PostgreSQL alone")
    p.add_argument("--report-postgres", action="store_true", help="also time the report on PostgreSQL")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--code", help="run workers and report with the ablate package in this folder (an older checkout)")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--record", action="store_true", help="time recording a result on PostgreSQL instead "
                   "(one transaction against Optuna's calls; record_cost)")
    args = p.parse_args(argv)
    if args.record:
        print(record_cost())
        return 0
    rows = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
