"""The ``ablate run`` command (:mod:`.command`): the run folder and storage prepared, workers
started, the report written at the end; the worker loop claim -> train -> record (:mod:`.worker`);
what to claim next (:mod:`.claims`); the statistics pre-flight (:mod:`.preflight`); progress lines
(:mod:`.progress`); smoke mode (:mod:`.smoke`); ``ablate estimate`` (:mod:`.estimate`) and the
storage benchmark (:mod:`.bench_storage`). The top layer: it may import every other package, and
none imports it. ``main`` is imported on first use, so that a worker importing
:mod:`ablate.run.worker` does not load the command and the report."""
__all__ = ["main"]


def __getattr__(name):
    if name == "main":
        from .command import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
