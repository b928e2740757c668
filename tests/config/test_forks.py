"""fork_map: the answers of a list comprehension, computed in forked processes when that is safe."""
from __future__ import annotations

import os
import threading

from ablate.config.forks import fork_map


def test_fork_map_runs_closures_in_forked_processes_with_the_same_answers():
    table = {i: i * i for i in range(10)}  # a closure's state: inherited by the fork, never pickled

    def piece(i):
        return table[i] + 1, os.getpid()

    out = fork_map(piece, range(10), processes=2)
    assert [v for v, _ in out] == [table[i] + 1 for i in range(10)]
    assert os.getpid() not in {pid for _, pid in out} and len({pid for _, pid in out}) <= 2


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
