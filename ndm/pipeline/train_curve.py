"""The convergence curve: the EMA model's test NELBO every `train.eval_every` steps.

Each point is the continuous-time NELBO (bits/dim) of the first `train.eval_examples` test
examples with `train.eval_time_samples` importance-sampled times each. Every point uses the
same times and noise (a generator seeded from the run's seed, separate from the training
streams, so switching the curve on does not change the training), so the differences between
points are the model's, not the estimator's. The log line also carries the cumulative training
seconds and training FLOPs, which put every variant on a common compute axis (the study's
matched-compute comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ndm.estimators.eval_mode import eval_mode
from ndm.estimators.likelihood import continuous_nelbo
from ndm.pipeline.config import RunConfig

# Offset of the curve's generator seed from the run's seed (any constant apart from the
# training streams' offsets).
CURVE_SEED_OFFSET = 7_919


@dataclass
class TestCurve:
    x_test: Tensor
    time_samples: int
    seed: int

    @classmethod
    def for_run(cls, run: RunConfig, device: torch.device) -> TestCurve | None:
        """The curve's fixed test batch, or None when train.eval_every is 0 (off)."""
        tc = run.train
        if not tc.eval_every:
            return None
        from ndm.pipeline.data import load_split

        x_test, _ = load_split(run, "test", tc.eval_examples)
        return cls(x_test.to(device), tc.eval_time_samples, run.seed + CURVE_SEED_OFFSET)

    def due(self, step: int, every: int, done: bool) -> bool:
        return done or step % every == 0

    def evaluate(self, model) -> dict[str, float]:
        """test_nelbo_bpd and its standard error over the test examples."""
        gen = torch.Generator(device=self.x_test.device).manual_seed(self.seed)
        with eval_mode(model):
            est = continuous_nelbo(model, self.x_test, self.time_samples, importance=True, generator=gen)
        return {"test_nelbo_bpd": est.bpd, "test_nelbo_se": est.bpd_stderr}


__all__ = ["TestCurve"]
