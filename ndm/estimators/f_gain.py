"""What a learned F can win on Gaussian data: the exact NELBO of a linear F path, its optimum,
and the marginal bound (docs/math.md, "What a learned F can win").

For x ~ N(0, S) and a linear F(x, t) = C_t x that scales each eigen-direction of S (variance v)
by c(t), c(0) = 1, the x_hat = E[x | z_t] is exact and the NELBO terms that depend on c are, in
nats per direction (ndm.estimators.gaussian.exact_elbo_terms with C_t diagonal in S's eigenbasis),

    J[c] = int_0^1 SNR_t / (2 gamma'_t) (gamma'_t c - c')^2 v / (1 + SNR_t c^2 v) dt
           + 1/2 alpha_1^2 c(1)^2 v                          (+ terms free of c).

F = identity is c = 1. Two numbers bound what F can win:
    marginal_bound     KL(N(0, alpha_1^2 S + sigma_1^2 I) || N(0, I)), z_1's marginal mismatch:
                       the gain if the prior and diffusion terms traded one for one (I-MMSE);
    optimal_gain       J[1] - min_c J[c], found numerically: moving F costs diffusion through
                       (gamma' c - c')^2, so the optimum stays below the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

F64 = torch.float64


@dataclass(frozen=True)
class PathGrid:
    """The schedule on N midpoints of [0, 1] (the path's knots are the N + 1 cell ends)."""

    t: Tensor  # (N,) midpoints
    snr: Tensor
    dgamma: Tensor
    alpha_1: float
    sigma_1: float

    @staticmethod
    def of(schedule, n: int = 2000) -> "PathGrid":
        with torch.no_grad():
            t = (torch.arange(n, dtype=F64) + 0.5) / n
            v = schedule.double().values(t)
            end = schedule.double().values(torch.ones(1, dtype=F64))
        return PathGrid(t, v.snr, v.dgamma, float(end.alpha[0]), float(end.sigma[0]))


def path_cost(log_c: Tensor, variance: Tensor, grid: PathGrid) -> Tensor:
    """J[c] per direction (nats) for c = exp(log_c) piecewise linear in log c on the N + 1 knots
    (log_c: (K, N + 1) with log_c[:, 0] = 0; variance: (K,)). Differentiable in log_c."""
    n = grid.t.shape[0]
    c_knots = torch.exp(log_c)
    c = 0.5 * (c_knots[:, 1:] + c_knots[:, :-1])
    dc = (c_knots[:, 1:] - c_knots[:, :-1]) * n
    v = variance.view(-1, 1)
    a = grid.dgamma * c - dc
    integrand = grid.snr / (2.0 * grid.dgamma) * a**2 * v / (1.0 + grid.snr * c**2 * v)
    return integrand.mean(1) + 0.5 * grid.alpha_1**2 * c_knots[:, -1] ** 2 * variance


def identity_cost(variance: Tensor, grid: PathGrid) -> Tensor:
    return path_cost(torch.zeros(variance.shape[0], grid.t.shape[0] + 1, dtype=F64), variance, grid)


def bernstein_basis(degree: int, n_knots: int) -> Tensor:
    """B_k(t) = binom(K, k) t^k (1 - t)^(K - k), k = 1..K, at n_knots points of [0, 1]: (K, n_knots).
    B_0 is left out, so every combination vanishes at t = 0 (c(0) = 1)."""
    t = torch.linspace(0.0, 1.0, n_knots, dtype=F64)
    return torch.stack([math.comb(degree, k) * t**k * (1 - t) ** (degree - k) for k in range(1, degree + 1)])


def optimal_path(variance: Tensor, grid: PathGrid, degree: int = 12, iterations: int = 500) -> tuple[Tensor, Tensor]:
    """min_c J[c] per direction, log c a polynomial of `degree` in t with log c(0) = 0 (Bernstein
    coefficients, L-BFGS: a smooth family in which the optimum converges; a finer family can only
    win more, so the result is a lower bound on the optimal gain that is tight as degree grows).
    Returns (the minimum per direction, log c at the knots)."""
    basis = bernstein_basis(degree, grid.t.shape[0] + 1)
    coef = torch.zeros(variance.shape[0], degree, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([coef], lr=1.0, max_iter=iterations, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def full() -> Tensor:
        return coef @ basis

    def closure() -> Tensor:
        opt.zero_grad()
        loss = path_cost(full(), variance, grid).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return path_cost(full(), variance, grid), full().detach()


def marginal_bound(variance: Tensor, alpha_1: float, sigma_1: float) -> Tensor:
    """KL(N(0, alpha_1^2 v + sigma_1^2) || N(0, 1)) per direction (nats)."""
    w = alpha_1**2 * variance + sigma_1**2
    return 0.5 * (w - 1.0 - torch.log(w))


@dataclass(frozen=True)
class Gain:
    """What the best linear F wins over F = identity on a Gaussian with the data's covariance
    (bits per dimension of the data), the marginal bound, and the optimal F's slope
    tr(C_t S) / tr(S) at a few t (what `ndm.estimators.gauge.linear_slope` measures on a model)."""

    optimal_bpd: float
    bound_bpd: float
    dims: int
    slopes: dict[float, float]

    def as_dict(self) -> dict:
        return {
            "expected_gain_bpd": self.optimal_bpd,
            "marginal_bound_bpd": self.bound_bpd,
            "dims": self.dims,
            "predicted_slope": {f"{t:g}": v for t, v in self.slopes.items()},
            "predicted_slope_t1": self.slopes.get(1.0, math.nan),
        }


def expected_gain(cov: Tensor, schedule, n: int = 2000, times: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)) -> Gain:
    """The gain of the optimal linear F for x ~ N(0, cov) under `schedule` (the Gaussian part of
    what a learned F can win on centred data with this covariance)."""
    variance = torch.linalg.eigvalsh(cov.to(F64)).clamp_min(0.0)
    grid = PathGrid.of(schedule, n)
    best, log_c = optimal_path(variance, grid)
    gain = float((identity_cost(variance, grid) - best).sum())
    bound = float(marginal_bound(variance, grid.alpha_1, grid.sigma_1).sum())
    c = torch.exp(log_c)
    slopes = {t: float((c[:, round(t * n)] * variance).sum() / variance.sum()) for t in times}
    d = int(variance.shape[0])
    return Gain(gain / d / math.log(2.0), bound / d / math.log(2.0), d, slopes)
