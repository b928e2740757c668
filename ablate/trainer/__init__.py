"""One trial: Lightning training and validation from a :class:`~ablate.config.trial.TrialConfig`,
in this process or an isolated one (DDP) (:mod:`.trial`, :mod:`.fit`, :mod:`.process`); mid-trial
checkpoints and resume (:mod:`.checkpoints`); W&B tracking (:mod:`.tracking`); the attention probes
(:mod:`.probes`) and the provenance fingerprint (:mod:`.fingerprint`)."""
from .trial import is_isolated, run_trial

__all__ = ["is_isolated", "run_trial"]
