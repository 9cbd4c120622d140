"""How a training job can end early, and the exit code that tells the scheduler to rerun it.

Torch-free and import-free, so the training loop, the job recorder (which marks a preempted
job's MLflow run KILLED) and the command line can all name these without importing each other.
"""

from __future__ import annotations

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: checkpointed on a signal, rerun to resume


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM/SIGUSR1 arrived; a checkpoint was written and the job should be rerun."""
