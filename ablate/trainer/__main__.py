"""``python -m ablate.trainer JOB``: one trial in its own process (DDP ranks), started by
:mod:`ablate.trainer.process`."""
import sys

from .process import trial_process

sys.exit(trial_process(sys.argv[1]))
