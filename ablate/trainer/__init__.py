"""One trial: Lightning training and validation from a :class:`~ablate.config.trial.TrialConfig`,
in this process or an isolated one (DDP) (:mod:`.trial`, :mod:`.fit`, :mod:`.process`); mid-trial
checkpoints and resume (:mod:`.checkpoints`); W&B tracking (:mod:`.tracking`); the attention probes
(:mod:`.probes`) and the provenance fingerprint (:mod:`.fingerprint`).

The package's names load on first use, so that a reader of one light module (the report reads
:mod:`.fingerprint`) does not import Lightning."""

__all__ = ["is_isolated", "run_trial"]


def __getattr__(name: str):
    if name in __all__:
        from . import trial

        return getattr(trial, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
