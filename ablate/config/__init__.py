"""The lowest layer: what a study file may say and the plain records it becomes, before anything is
built. The one-paragraph user error (:mod:`.errors`), atomic file writes (:mod:`.atomic`), seed
streams (:mod:`.seeds`), the typed trial configuration storage keeps (:mod:`.trial`), the ``eval:``
mapping (:mod:`.evaluation`), the YAML reader (:mod:`.text`), the one spec parser (:mod:`.specs`),
smoke-mode caps (:mod:`.smoke`), side-by-side pieces in forked processes (:mod:`.forks`) and the
factor vocabulary every mechanism declares (:mod:`.vocab`).
Nothing here imports another ablate package, so every package may import this one."""
from .errors import RetryableError, StudyError
from .evaluation import EvalSpec, parse_eval
from .trial import HeadSpec, TrainerSpec, TrainSpec, TrialConfig

__all__ = ["EvalSpec", "HeadSpec", "RetryableError", "StudyError", "TrainSpec", "TrainerSpec", "TrialConfig",
           "parse_eval"]
