"""The one place that draws the times at which the NELBO's diffusion term is evaluated.

The continuous diffusion term is an integral over t in [0, 1] (docs/math.md "The NELBO");
training and the estimators both replace it by sum_j w(t_j) L_diff(t_j) / K over drawn times:

- ``uniform``: t stratified ("antithetic", VDM): t_j = (u + j / K) mod 1 with one u ~ U(0, 1)
  per row, each t_j marginally U(0, 1), weight 1.
- ``gamma``: importance sampling in gamma = -log SNR: the same stratified u mapped through
  t = gamma^{-1}(gamma_0 + u (gamma_1 - gamma_0)), weight 1 / p(t) = (gamma_1 - gamma_0) / gamma'(t).
  Same expectation; much less variance for schedules steep at an end (DDPM's, the flow path's).

The discrete diffusion term is a sum over steps i = 1..T; `draw_steps` picks the steps.
Nothing else in the package draws times: a change of sampler here changes training and
evaluation alike.

Data-parallel training (`BatchRows`): every process draws the whole global batch's noise,
times and steps from the same stream and keeps its own rows, so the draws do not depend on
the number of processes (ndm.pipeline.distributed).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ndm.model.schedules import Schedule, invert_gamma

TIME_SAMPLINGS = ("uniform", "gamma")


@dataclass(frozen=True)
class BatchRows:
    """This process's rows [start, stop) of a global batch of `total` examples."""

    start: int
    stop: int
    total: int

    def take(self, full: Tensor) -> Tensor:
        return full[self.start : self.stop]


# The rows of the training batch being drawn for, while a data-parallel step runs its networks:
# their dropout masks are then the global batch's at these rows (networks/layers.py _ddropout).
_BATCH_ROWS: ContextVar[BatchRows | None] = ContextVar("ndm_batch_rows", default=None)


@contextmanager
def global_batch_rows(rows: BatchRows | None) -> Iterator[None]:
    """Within this block the networks' dropout draws the global batch's mask at `rows` (None: as usual)."""
    token = _BATCH_ROWS.set(rows)
    try:
        yield
    finally:
        _BATCH_ROWS.reset(token)


def current_batch_rows() -> BatchRows | None:
    return _BATCH_ROWS.get()


def draw_noise(x: Tensor, rows: BatchRows | None = None) -> Tensor:
    """Standard normal noise shaped like x; with rows, the global batch's noise at x's rows."""
    if rows is None:
        return torch.randn_like(x)
    return rows.take(torch.randn((rows.total, *x.shape[1:]), dtype=x.dtype, device=x.device))


def stratified_uniform(n: int, k: int, *, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> Tensor:
    """(n, k) samples u_ij = (u_i + j / k) mod 1: each row stratified, each entry U(0, 1).

    One uniform per row is drawn (n draws from the generator, whatever k is).
    """
    u0 = torch.rand(n, 1, generator=generator, device=device, dtype=dtype)
    return torch.remainder(u0 + torch.arange(k, device=device, dtype=dtype) / k, 1.0)


@torch.no_grad()
def gamma_uniform_times(schedule: Schedule, u: Tensor) -> tuple[Tensor, Tensor]:
    """t = gamma^{-1}(gamma_0 + u (gamma_1 - gamma_0)) and its weight (gamma_1 - gamma_0) / gamma'(t).

    u in [0, 1]: drawn (`draw_times`) or a fixed grid (quadrature, the ODE's step grid). The
    times and weights are constants of the loss (no gradient to a learned schedule through
    them: the importance weight makes the estimate unbiased for any sampling density).
    """
    # linspace, not torch.tensor([0, 1]): created on u's device, no host-to-device copy (a sync)
    gamma_ends = schedule.values(torch.linspace(0.0, 1.0, 2, device=u.device, dtype=u.dtype)).gamma
    t = invert_gamma(schedule, gamma_ends[0] + u * (gamma_ends[1] - gamma_ends[0]))
    weight = (gamma_ends[1] - gamma_ends[0]) / schedule.values(t).dgamma
    return t, weight


def draw_times(
    schedule: Schedule,
    n: int,
    k: int | None = None,
    sampling: str = "uniform",
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
    rows: BatchRows | None = None,
) -> tuple[Tensor, Tensor]:
    """Times for the continuous diffusion term and their importance weights, each flat.

    k None: one batch of n stratified times (training: one time per example, the batch shares
    one uniform draw), shape (n,). k an integer: n rows of k stratified times each (the
    estimators: k times per example, one uniform draw per example), shape (n * k,), row-major.
    sampling: "uniform" (weight 1) or "gamma" (importance sampling in gamma); see the module doc.
    rows (k None only): the times of a global batch of rows.total, at these rows (n = the rows').
    """
    if sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time sampling must be one of {TIME_SAMPLINGS}, got {sampling!r}")
    if rows is not None:
        t, weight = draw_times(schedule, rows.total, k, sampling, generator=generator, device=device, dtype=dtype)
        return rows.take(t), rows.take(weight)
    n_rows, cols = (1, n) if k is None else (n, k)
    u = stratified_uniform(n_rows, cols, generator=generator, device=device, dtype=dtype).reshape(-1)
    if sampling == "gamma":
        return gamma_uniform_times(schedule, u)
    return u, torch.ones_like(u)


def draw_steps(
    n_steps: int,
    n: int,
    k: int | None = None,
    *,
    generator: torch.Generator | None = None,
    device=None,
    rows: BatchRows | None = None,
) -> Tensor:
    """Steps i in 1..T (long, flat) for the discrete diffusion term T * KL_i or sum_i KL_i.

    k None: one independent uniform step per example (training), shape (n,). k an integer:
    k stratified steps per example, shape (n * k,); k >= T gives every step 1..T once per
    example (the exact sum). rows (k None only): a global batch's steps, at these rows.
    """
    if rows is not None:
        return rows.take(draw_steps(n_steps, rows.total, k, generator=generator, device=device))
    if k is None:
        return torch.randint(1, n_steps + 1, (n,), generator=generator, device=device)
    if k >= n_steps:
        return torch.arange(1, n_steps + 1, device=device).repeat(n)
    # float64: u carries enough bits to spread k strata evenly over any T
    u = stratified_uniform(n, k, generator=generator, device=device, dtype=torch.float64).reshape(-1)
    return (torch.floor(u * n_steps).long() + 1).clamp(1, n_steps)
