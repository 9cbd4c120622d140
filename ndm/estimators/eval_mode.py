"""A context manager that puts a module in eval mode and restores its previous mode on exit.

Estimators and samplers evaluate a model that may be in the middle of training: dropout and
other train-only behaviour must be off while they run, and the caller's mode must come back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
