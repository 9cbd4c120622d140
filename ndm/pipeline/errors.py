"""How a job can fail on its input or end early: config errors (named keys, closest valid names),
divergence, preemption and the exit code that tells the scheduler to rerun a job.

Torch-free and free of package imports, so the training loop, the job recorder (which marks a preempted
job's MLflow run KILLED) and the command line can all name these without importing each other.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: checkpointed on a signal, rerun to resume


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM/SIGUSR1 arrived; a checkpoint was written and the job should be rerun."""


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and what to write instead."""


def unknown_name(what: str, name: Any, valid: Iterable[str]) -> str:
    """'unknown <what> <name>; did you mean <closest>? valid: ...' (the closest by difflib, when one is close)."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {name!r}; {hint}valid: {', '.join(valid)}"
