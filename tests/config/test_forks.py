"""fork_map: the answers of a list comprehension, computed in forked processes when that is safe."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

from ablate.config.forks import fork_map


def test_fork_map_runs_closures_in_forked_processes_with_the_same_answers():
    # in a process of its own: this one may have threads left by earlier tests (then it runs here)
    code = """
import os
from ablate.config.forks import fork_map
table = {i: i * i for i in range(10)}  # a closure's state: inherited by the fork, never pickled
out = fork_map(lambda i: (table[i] + 1, os.getpid()), range(10), processes=2)
assert [v for v, _ in out] == [table[i] + 1 for i in range(10)], out
pids = {pid for _, pid in out}
assert os.getpid() not in pids and len(pids) <= 2, pids
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_fork_map_runs_here_while_another_thread_runs_or_with_one_process():
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # a fork would copy only this thread, and any lock the other one holds
        assert {pid for pid in fork_map(lambda _: os.getpid(), range(4), processes=2)} == {os.getpid()}
    finally:
        stop.set()
        other.join()
    assert {pid for pid in fork_map(lambda _: os.getpid(), range(4), processes=1)} == {os.getpid()}
    assert fork_map(lambda x: x, []) == []


def test_fork_map_in_a_process_whose_signals_raise_ends_its_pieces_without_a_traceback():
    """A worker turns SIGTERM and SIGINT into KeyboardInterrupt; the report it writes at the end of
    a run forks its pieces: they must end quietly, not print a KeyboardInterrupt each."""
    code = """
import signal
def stop(*_):
    raise KeyboardInterrupt
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
    signal.signal(sig, stop)
from ablate.config.forks import fork_map
assert fork_map(lambda x: x * 2, range(6), processes=2) == [0, 2, 4, 6, 8, 10]
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok" and res.stderr == "", res.stderr



def test_run_together_gives_each_pending_its_own_answers_in_order_from_one_pool():
    """The report hands its figures and its advice simulations to one run: each finish must get
    its own items' answers, in order, whatever else ran beside them (an empty one included)."""
    code = """
import os
from ablate.config.forks import Pending, run_together
seen = []
jobs = [Pending(lambda x: (x * 10, os.getpid()), [1, 2, 3], lambda a: [v for v, _ in a]),
        Pending(None, [], lambda a: ("empty", a)),
        Pending(lambda s: (s.upper(), os.getpid()), ["a", "b"], lambda a: seen.extend(p for _, p in a) or "".join(v for v, _ in a))]
out = run_together(jobs, processes=2)
assert out == [[10, 20, 30], ("empty", []), "AB"], out
assert seen and os.getpid() not in seen, seen
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
