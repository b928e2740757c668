"""Trial records in Optuna storage: who owns a trial, whether its worker lives, its status.

A trial is one (cell, seed). Its record carries the cell key, the seed and the resolved
configuration as user attributes, and the worker's identity and heartbeat as system attributes
(prefix :data:`ATTR`). A worker knows a trial's owner is on its own machine when the owner's
host name *and* node (boot id and PID namespace) equal its own; only then is the process table
authoritative. Any other owner is judged by its heartbeat, which assumes the machines' clocks
agree to well within the grace period (NTP). ``ABLATE_HEARTBEAT_S`` and
``ABLATE_HEARTBEAT_GRACE_S`` override the heartbeat interval and the grace period.

Claiming and recording through these is :mod:`ablate.storage`'s.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 10.0
GRACE_S = 120.0
ATTR = "ablate:"  # prefix of our system attributes
RUN_ENV = "ABLATE_RUN_ID"  # one id per invocation of the runner, shared by its --workers


def heartbeat_s() -> float:
    return float(os.environ.get("ABLATE_HEARTBEAT_S", HEARTBEAT_S))


def grace_s() -> float:
    return float(os.environ.get("ABLATE_HEARTBEAT_GRACE_S", GRACE_S))


def proc_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def node_id() -> str:
    """This machine's boot and PID namespace: two containers may share a host name, but only
    processes with the same node see each other's process table."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{boot}/{pidns}"


def owner_attrs() -> dict:
    """System attributes naming this process as a trial's owner, with a fresh heartbeat."""
    pid = os.getpid()
    return {ATTR + "host": socket.gethostname(), ATTR + "node": node_id(), ATTR + "pid": pid,
            ATTR + "start": proc_start(pid), ATTR + "heartbeat": time.time(),
            ATTR + "run": os.environ.get(RUN_ENV, "")}


def same_machine(attrs: dict) -> bool:
    if attrs.get(ATTR + "host") != socket.gethostname():
        return False
    node = attrs.get(ATTR + "node")
    return node is None or node == node_id()  # records from before the node attribute: host name alone


def alive(attrs: dict, now: float, grace: float) -> bool:
    pid, start = attrs.get(ATTR + "pid"), attrs.get(ATTR + "start")
    if same_machine(attrs) and isinstance(pid, int):
        # same machine: the process table is authoritative (and catches kill -9 at once)
        return proc_start(pid) == start and start != ""
    beat = attrs.get(ATTR + "heartbeat", 0.0)
    return now - float(beat) < grace


def trial_status(t: FrozenTrial, run: str | None = None) -> str:
    """'done' (complete/pruned/final failure), 'running', 'free' (lost, interrupted, or a harness
    failure of an earlier invocation), 'failed here' (a harness failure of invocation ``run``:
    not retried by it) or 'other'."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "done"
    if t.state == TrialState.FAIL:
        kind = t.system_attrs.get(ATTR + "fail_kind")
        if kind == "error":
            return "done"
        if kind == "harness" and run and t.system_attrs.get(ATTR + "run") == run:
            return "failed here"
        return "free"
    if t.state == TrialState.RUNNING:
        return "running"
    return "other"


TAKEN = ("done", "running", "failed here")  # statuses whose (cell, seed) an invocation does not claim


def reap_lost(storage, trials: list[FrozenTrial], grace: float | None = None) -> int:
    """Mark RUNNING trials whose worker is gone as FAIL(lost), and RUNNING trials with no owner at
    all (a claim that failed before it was complete). Call with the study lock held: every claim
    names its owner before the lock is released."""
    grace = grace_s() if grace is None else grace
    now = time.time()
    n = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        attrs = t.system_attrs
        if ATTR + "pid" not in attrs:
            mark_failed(storage, t._trial_id, "lost", "a RUNNING trial with no owner (its claim failed half-way); "
                        "its cell x seed is free again")
        elif not alive(attrs, now, grace):
            mark_failed(storage, t._trial_id, "lost",
                        f"worker {attrs.get(ATTR + 'host')}:{attrs.get(ATTR + 'pid')}"
                        " stopped mid-trial (killed or lost); the trial is run again")
        else:
            continue
        n += 1
    return n


def mark_failed(storage, trial_id: int, kind: str, reason: str) -> None:
    """FAIL a trial with its kind: 'error' is final; 'harness' is retried by the next invocation;
    'lost' and 'interrupted' free its cell x seed at once."""
    storage.set_trial_system_attr(trial_id, ATTR + "fail_kind", kind)
    storage.set_trial_system_attr(trial_id, ATTR + "fail_reason", reason[:500])
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def create_running_trial(study: optuna.Study, params: dict, choices: dict, user_attrs: dict,
                         system_attrs: dict | None = None) -> int:
    """Create a trial directly in state RUNNING, owned by this process (plus ``system_attrs``);
    returns its trial id."""
    dists = {k: CategoricalDistribution(choices[k]) for k in params}
    template = FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, datetime_start=dt.datetime.now(),
        datetime_complete=None, params=params, distributions=dists, user_attrs=user_attrs,
        system_attrs={**owner_attrs(), **(system_attrs or {})}, intermediate_values={}, trial_id=-1)
    from .create import create_trial  # a database: one transaction of a few statements, not ~2 per attribute

    tid = create_trial(study._storage, study._study_id, template)
    return tid if tid is not None else study._storage.create_new_trial(study._study_id, template_trial=template)


class Heartbeat:
    """Background thread stamping the trial's heartbeat every ``heartbeat_s()`` seconds."""

    def __init__(self, storage, trial_id: int, every: float | None = None):
        self.storage, self.trial_id, self.every = storage, trial_id, heartbeat_s() if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):
                self.storage.set_trial_system_attr(self.trial_id, ATTR + "heartbeat", time.time())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
