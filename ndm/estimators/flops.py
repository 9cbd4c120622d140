"""Network FLOPs, counted on the real computation rather than from a formula.

torch's FlopCounterMode counts the FLOPs of the matrix products and convolutions (2 per
multiply-add, attention included) of whatever runs under it: the x_hat network, F, and F's
forward-mode JVP alike. Elementwise work is not counted, as is usual for network FLOPs.

- `sampling_flops`: FLOPs per sample of a sampler at N steps. A fixed-step sampler's cost is
  affine in N, so it is counted on one sample at 2 and 3 steps and extended to N (counting at
  200 steps would cost more than the sampling it describes). ode-adaptive: its counted NFE
  times the cost of one probability-flow drift evaluation (x_hat and F's JVP), taken from
  ode-heun, whose steps are two such evaluations.
- `training_flops_per_step`: 3 x the forward FLOPs of the training loss on a batch (the
  backward pass costs about twice the forward), counted on a small batch and scaled.

Counting runs under a forked RNG, so it draws nothing from the generators the training or
sampling streams use.
"""

from __future__ import annotations

from typing import Callable

import torch

from ndm.estimators.eval_mode import eval_mode
from ndm.names import sampler_spec


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products and convolutions fn runs (the global RNG is left as it was)."""
    from torch.utils.flop_counter import FlopCounterMode

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _one_sample_flops(model, sampler: str, steps: int, device) -> int:
    from ndm.estimators.sampling import SamplerSettings, sample

    settings = SamplerSettings(sampler, steps)
    return count_flops(lambda: sample(model, 1, settings, generator=torch.Generator(device=device).manual_seed(0), device=device, progress=False))


def sampling_flops(model, sampler: str, steps: int | None, nfe: float | None = None, device: str | torch.device = "cpu", cache: dict | None = None) -> float:
    """FLOPs per sample of `sampler` at `steps` (an adaptive sampler: at its measured `nfe`).

    cache: a dict kept by the caller across calls for one model (the counts at 2 and 3 steps
    do not depend on `steps`)."""
    cache = {} if cache is None else cache

    def at(name: str, n: int) -> int:
        if (name, n) not in cache:
            with eval_mode(model), torch.no_grad():
                cache[(name, n)] = _one_sample_flops(model, name, n, device)
        return cache[(name, n)]

    if not sampler_spec(sampler).fixed_step:
        if nfe is None:
            raise ValueError(f"{sampler}'s FLOPs need its measured NFE")
        # An adaptive solver's evaluation costs what one of ode-heun's two drift evaluations does.
        return float(nfe) * (at("ode-heun", 3) - at("ode-heun", 2)) / 2.0
    return float(at(sampler, 2) + (int(steps) - 2) * (at(sampler, 3) - at(sampler, 2)))


def training_flops_per_step(model, x: torch.Tensor, batch_size: int, n_steps: int | None, time_sampling: str, probe: int = 8) -> float:
    """About 3 x the forward FLOPs of one training step's loss at batch_size."""
    xb = x[: max(1, min(probe, x.shape[0]))]
    with torch.no_grad():
        forward = count_flops(lambda: model.training_loss(xb, n_steps, time_sampling))
    return 3.0 * forward * batch_size / xb.shape[0]


__all__ = ["count_flops", "sampling_flops", "training_flops_per_step"]
