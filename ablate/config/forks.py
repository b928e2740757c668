"""Side-by-side work on the machine's cores for a command that has several independent pieces (the
report's power simulations and figures): :func:`fork_map`; work that several callers hand back
(:class:`Pending`) runs in one :func:`run_together`, so pieces of different kinds share the cores.

The pieces run in forked processes, so they see this process's memory as it is (closures, drawn
state) and only their indices and answers cross the pipe. A fork copies the calling thread alone: a
lock another thread held at that moment (a tracker's, a server's) would stay held in the child, so
with other Python threads running, or with one core, or when a fork fails, the pieces run here one
by one. Either way the answers are the same: each piece must be a pure function of its item, and
each runs with one BLAS and OpenMP thread.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

_work: tuple[Callable, Sequence] | None = None  # what the forked processes run (inherited by the fork)


def _piece(i: int):
    fn, items = _work
    return fn(items[i])


def _child() -> None:
    """A forked piece's signals: the parent's handlers (a worker's stop signals raise
    KeyboardInterrupt) would print a traceback when the pool ends its processes; a Ctrl-C is the
    parent's to handle, which then ends them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def fork_map(fn: Callable, items: Sequence, processes: int | None = None) -> list:
    """``[fn(x) for x in items]``, on up to ``processes`` (default: the cores) forked processes."""
    from threadpoolctl import threadpool_limits

    items = list(items)
    if not items:
        return []
    # one BLAS / OpenMP thread a piece: the processes are the parallelism (OpenBLAS's own threads,
    # two more per process on a 2-core machine, spin while they wait and took the report's
    # simulations from 5 to 7 s of wall time); the limits are given back afterwards
    with threadpool_limits(limits=1):
        return _map(fn, items, min(len(items), processes or os.cpu_count() or 1))


def _map(fn: Callable, items: list, n: int) -> list:
    global _work
    if n > 1 and threading.active_count() == 1 and _work is None:
        import multiprocessing as mp

        _work = (fn, items)
        try:
            with mp.get_context("fork").Pool(n, initializer=_child) as pool:
                out = pool.map(_piece, range(len(items)), chunksize=1)
                pool.close()  # the processes end on their own, not by the pool's SIGTERM
                pool.join()
                return out
        except OSError:
            pass  # no fork (limits, memory): below, one by one
        finally:
            _work = None
    return [fn(x) for x in items]


@dataclass
class Pending:
    """Work handed back to be run beside other work: ``fn`` of each of ``items``, then
    ``finish(answers)`` (the answers in the items' order), whose result is the work's."""

    fn: Callable
    items: list
    finish: Callable[[list], object]
    result: object = field(default=None, init=False)  # what finish returned, once run_together has run it


def run_together(pendings: Sequence[Pending], processes: int | None = None) -> list:
    """Every pending's items in one :func:`fork_map` (the earlier pendings' items first: put the
    long pieces first, the pool hands them out in order), then each ``finish`` in turn; returns the
    finishes' results in order (each also kept as its pending's ``result``)."""
    flat = [(j, x) for j, p in enumerate(pendings) for x in p.items]
    answers = fork_map(lambda jx: pendings[jx[0]].fn(jx[1]), flat, processes)
    at = 0
    for p in pendings:
        p.result = p.finish(answers[at:at + len(p.items)])
        at += len(p.items)
    return [p.result for p in pendings]
