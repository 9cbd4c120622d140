"""Closed forms of the Gaussian oracle with F = identity, the ground truth of `ndm claims`.

For x ~ N(m, S) with eigenvalues lambda_i of S (l_i = log lambda_i), the oracle x_hat = E[x | z_t]
leaves x - x_hat ~ N(0, P_t), P_t = (S^-1 + SNR(t) I)^-1, so with
q_i(gamma) = SNR lambda_i / (1 + SNR lambda_i) = sigmoid(l_i - gamma):

    E[L_diff(t)]   = 1/2 gamma'(t) sum_i q_i(gamma(t))
    E[L_diff(t)^2] = 1/4 gamma'(t)^2 h(gamma(t)),   h = (sum_i q_i)^2 + 2 sum_i q_i^2
    L_diff (continuous) = 1/2 int sum_i q_i dgamma = 1/2 sum_i [softplus(l_i - gamma_0) - softplus(l_i - gamma_1)]
    L_diff (T steps)    = sum_i 1/2 (SNR(s) - SNR(t)) tr P_t = sum_i 1/2 expm1(gamma_t - gamma_s) sum_j q_j(gamma_t)

The module also holds VDM's variance-minimising schedule for this oracle in closed form and the
exact moments of the one-sample diffusion estimator under each time sampling.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ndm.estimators.gaussian import GaussianOracle, GaussianSpec, exact_elbo_terms
from ndm.model.diffusion import DiffusionModel
from ndm.model.schedules import Schedule, ScheduleValues, invert_gamma, vp_values
from ndm.model.specs import VDM_GAMMA_MAX, VDM_GAMMA_MIN, ModelConfig, NetworkConfig
from ndm.model.variants import build_model

F64 = torch.float64


def _log_eig(spec: GaussianSpec) -> Tensor:
    return torch.log(torch.linalg.eigvalsh(spec.cov))


def q_sum(spec: GaussianSpec, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """sum_i q_i and sum_i q_i^2 at each gamma (q_i = SNR tr-share of the posterior covariance)."""
    q = torch.sigmoid(_log_eig(spec) - gamma.to(F64).unsqueeze(-1))
    return q.sum(-1), (q**2).sum(-1)


def diffusion_closed_form(spec: GaussianSpec, gamma_0: float, gamma_1: float) -> float:
    """The exact continuous diffusion term (nats): depends on the schedule through its end points only."""
    le = _log_eig(spec)
    sp = torch.nn.functional.softplus
    return 0.5 * float((sp(le - gamma_0) - sp(le - gamma_1)).sum())


def oracle_with_schedule(spec: GaussianSpec, schedule: Schedule, variant: str = "vdm-fixed", parameterization: str = "x") -> DiffusionModel:
    """A float64 model of `variant` on R^D with `schedule` and the exact x_hat = E[x | z_t]."""
    cfg = ModelConfig(variant=variant, parameterization="x", network=NetworkConfig(kind="mlp", hidden=8, depth=1))
    model = build_model(cfg, (spec.dim,), None).double()
    model.schedule = schedule.double()
    model.net = GaussianOracle(spec, model.schedule)
    model.parameterization = parameterization
    return model.eval()


@torch.no_grad()
def schedule_ends(schedule: Schedule) -> tuple[float, float]:
    g = schedule.values(torch.tensor([0.0, 1.0], dtype=F64)).gamma
    return float(g[0]), float(g[1])


class ConstantIntegrandSchedule(Schedule):
    """VDM's variance-minimising schedule for the oracle, in closed form (not fitted).

    gamma(t) solves G(gamma) = t G(gamma_1), G(gamma) = sum_i softplus(l_i - gamma_0) - softplus(l_i - gamma),
    so gamma'(t) = G(gamma_1) / sum_i q_i(gamma) and E[L_diff(t)] = G(gamma_1) / 2 for every t: uniform
    times then carry no variance from t at all (only from x and eps).
    """

    def __init__(self, spec: GaussianSpec, gamma_min: float = VDM_GAMMA_MIN, gamma_max: float = VDM_GAMMA_MAX):
        super().__init__()
        self.log_eig = _log_eig(spec)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.total = self._g(torch.tensor(self.gamma_max, dtype=F64))

    def _g(self, gamma: Tensor) -> Tensor:
        sp = torch.nn.functional.softplus
        return (sp(self.log_eig - self.gamma_min) - sp(self.log_eig - gamma.unsqueeze(-1))).sum(-1)

    def values(self, t: Tensor, variance_box: dict | None = None) -> ScheduleValues:
        target = t.to(F64) * self.total
        lo = torch.full_like(target, self.gamma_min)
        hi = torch.full_like(target, self.gamma_max)
        for _ in range(64):  # bisection: G is increasing; 64 halvings of the gap reach float64 resolution
            mid = 0.5 * (lo + hi)
            below = self._g(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        gamma = 0.5 * (lo + hi)
        dgamma = self.total / torch.sigmoid(self.log_eig - gamma.unsqueeze(-1)).sum(-1)
        return vp_values(gamma.to(t.dtype), dgamma.to(t.dtype))

    def gamma(self, t: Tensor) -> Tensor:
        return self.values(t).gamma

    def dgamma(self, t: Tensor) -> Tensor:
        return self.values(t).dgamma


def discrete_diffusion(spec: GaussianSpec, schedule: Schedule, n_steps: int) -> float:
    """The exact T-step diffusion term sum_i E KL_i (nats) of the oracle model."""
    i = torch.arange(1, n_steps + 1, dtype=F64)
    with torch.no_grad():
        g_s = schedule.double().values((i - 1) / n_steps).gamma
        g_t = schedule.values(i / n_steps).gamma
    return float((0.5 * torch.expm1(g_t - g_s) * q_sum(spec, g_t)[0]).sum())


def _graded_gauss_legendre(n_side: int = 300, order: int = 8) -> tuple[Tensor, Tensor]:
    """Nodes and weights on [0, 1], panels graded geometrically towards both ends (where
    schedules such as the cosine one are steep), so the integral is taken in t itself."""
    half = np.concatenate([[0.0], np.geomspace(1e-10, 0.5, n_side)])
    edges = np.unique(np.concatenate([half, 1.0 - half[::-1]]))
    x, w = np.polynomial.legendre.leggauss(order)
    a, b = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (b - a) * x + 0.5 * (b + a)).ravel()
    weights = (0.5 * (b - a) * w).ravel()
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def exact_elbo_t(spec: GaussianSpec, schedule: Schedule) -> dict[str, float]:
    """The exact expected NELBO (nats), its diffusion term integrated in t with the schedule's own
    gamma(t) and gamma'(t); reconstruction and prior from ndm.estimators.gaussian.exact_elbo_terms."""
    t, w = _graded_gauss_legendre()
    with torch.no_grad():
        v = schedule.double().values(t)
        diffusion = float((w * 0.5 * v.dgamma * q_sum(spec, v.gamma)[0]).sum())
        ends = exact_elbo_terms(spec, oracle_with_schedule(spec, schedule), n_quad=2000)
    total = ends["reconstruction"] + diffusion + ends["prior"]
    return {"reconstruction": ends["reconstruction"], "diffusion": diffusion, "prior": ends["prior"], "total": total, "diffusion_u_quadrature": ends["diffusion"]}


def estimator_moments(spec: GaussianSpec, schedule: Schedule, sampling: str, n_quad: int = 4000) -> dict[str, float]:
    """Exact mean, variance and t-part variance (nats^2) of the one-sample diffusion estimator w(t) L_diff(t)
    over (x, eps, t), for times drawn by ndm.model.time_sampling ("uniform": p(t) = 1; "gamma": p = gamma'/dgamma).

    Integrated in gamma (dt = dgamma / gamma'), where every integrand is smooth:
    E[(wL)^2] = 1/4 int gamma' h / p dgamma, E_t[E[wL|t]^2] = 1/4 int gamma' (sum q)^2 / p dgamma.
    """
    g0, g1 = schedule_ends(schedule)
    gam = g0 + (g1 - g0) * (torch.arange(n_quad, dtype=F64) + 0.5) / n_quad
    with torch.no_grad():
        dgam = schedule.double().values(invert_gamma(schedule, gam)).dgamma
    s1, s2 = q_sum(spec, gam)
    p = torch.ones_like(dgam) if sampling == "uniform" else dgam / (g1 - g0)
    mean_ = 0.5 * float(s1.mean()) * (g1 - g0)
    second = 0.25 * float((dgam * (s1**2 + 2 * s2) / p).mean()) * (g1 - g0)
    t_second = 0.25 * float((dgam * s1**2 / p).mean()) * (g1 - g0)
    return {"mean": mean_, "var": second - mean_**2, "var_t": t_second - mean_**2}


def variance_lower_bound(spec: GaussianSpec, gamma_0: float, gamma_1: float, n_quad: int = 4000) -> float:
    """The least variance any schedule (or time density) reaches: 1/4 (int sqrt h dgamma)^2 - mean^2 (Cauchy-Schwarz)."""
    gam = gamma_0 + (gamma_1 - gamma_0) * (torch.arange(n_quad, dtype=F64) + 0.5) / n_quad
    s1, s2 = q_sum(spec, gam)
    root = float(torch.sqrt(s1**2 + 2 * s2).mean()) * (gamma_1 - gamma_0)
    return 0.25 * root**2 - diffusion_closed_form(spec, gamma_0, gamma_1) ** 2
