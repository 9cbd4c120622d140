"""Time grids of the fixed-step samplers: where the N steps from t = 1 to t = 0 fall.

Every grid has N + 1 descending times with t_0 = 1 and t_N = 0 exactly (both ends are used,
so every sampler ends at z_0 and decodes it the same way, see ndm.estimators.sampling):

    uniform-t       t_i = 1 - i / N                                   (the default)
    uniform-logsnr  gamma(t_i) = gamma_1 + (i / N) (gamma_0 - gamma_1)  (equal steps in log-SNR)
    edm             s_i = (s_1^(1/rho) + (i / N) (s_0^(1/rho) - s_1^(1/rho)))^rho, rho = 7,
                    with s_t = sigma_t / alpha_t = exp(gamma_t / 2) (Karras et al. 2022, eq. 5)

The last two are defined through gamma, so they need the schedule; gamma is increasing in t
for every schedule, and `invert_gamma` maps the gamma values back to times. EDM's grid is
written here with N + 1 points ending at s_0 > 0 (our schedules keep gamma_0 finite), not
with N points and a final s = 0, so that every sampler ends at t = 0 like the others.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ndm.model.schedules import Schedule, invert_gamma
from ndm.names import TIME_GRIDS

EDM_RHO = 7.0


def make_time_grid(
    steps: int,
    kind: str = "uniform-t",
    schedule: Schedule | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    rho: float = EDM_RHO,
) -> Tensor:
    """The N + 1 descending times t_0 = 1 > ... > t_N = 0 of grid `kind` (see TIME_GRIDS).

    Computed in float64 and cast to `dtype`; the ends are set exactly to 1 and 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if kind not in TIME_GRIDS:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {TIME_GRIDS} (eval.time_grid)")
    if kind == "uniform-t":
        # (N - i) / N, not 1 - i / N: the same floats as the samplers have always used.
        return torch.arange(steps, -1, -1, device=device, dtype=torch.float64).div(steps).to(dtype)
    u = torch.arange(steps + 1, dtype=torch.float64, device=device) / steps  # 0 .. 1
    if schedule is None:
        raise ValueError(f"time grid {kind!r} is defined through gamma and needs the model's schedule")
    ends = schedule.values(torch.tensor([0.0, 1.0], dtype=torch.float64, device=device))
    g0, g1 = ends.gamma[0].to(torch.float64), ends.gamma[1].to(torch.float64)
    if kind == "uniform-logsnr":
        gamma = g1 + u * (g0 - g1)
    else:
        if not rho > 0:
            raise ValueError(f"the EDM grid's rho must be > 0, got {rho}")
        s_max, s_min = torch.exp(0.5 * g1), torch.exp(0.5 * g0)
        s = (s_max ** (1.0 / rho) + u * (s_min ** (1.0 / rho) - s_max ** (1.0 / rho))) ** rho
        gamma = 2.0 * torch.log(s)
    sched_dtype = next((p.dtype for p in list(schedule.parameters()) + list(schedule.buffers()) if p.is_floating_point()), torch.float64)
    with torch.no_grad():
        t = invert_gamma(schedule, gamma.to(sched_dtype)).to(torch.float64)
    t[0], t[-1] = 1.0, 0.0
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"time grid {kind!r} at {steps} steps is not strictly decreasing; fewer steps or another grid")
    return t.to(dtype)


__all__ = ["EDM_RHO", "TIME_GRIDS", "make_time_grid"]
