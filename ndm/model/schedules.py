"""Noise schedules: gamma(t) = -log SNR(t) with alpha_t, sigma_t and their derivatives.

Variance-preserving schedules (docs/math.md, Notation):
    alpha_t^2 = sigmoid(-gamma(t)),  sigma_t^2 = sigmoid(gamma(t)),
    alpha_t' = -1/2 alpha_t sigma_t^2 gamma'(t),  sigma_t' = 1/2 sigma_t alpha_t^2 gamma'(t).
The flow-matching path is not variance preserving: it defines alpha_t and sigma_t
directly and gamma(t) = log(sigma_t^2 / alpha_t^2) follows from them.
Every schedule is increasing in t (gamma'(t) > 0), which the losses rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as tnf
from torch import Tensor, nn

from ndm.model.specs import VDM_GAMMA_MAX, VDM_GAMMA_MIN  # re-exported: the schedules own these values


@dataclass(frozen=True)
class ScheduleValues:
    """gamma, alpha, sigma and their time derivatives at a batch of times t, each (B,)."""

    gamma: Tensor
    dgamma: Tensor
    alpha: Tensor
    sigma: Tensor
    dalpha: Tensor
    dsigma: Tensor

    @property
    def snr(self) -> Tensor:
        return torch.exp(-self.gamma)

    @property
    def g2(self) -> Tensor:
        """Squared diffusion coefficient of the forward SDE, g(t)^2 = sigma_t^2 gamma'(t)."""
        return self.sigma**2 * self.dgamma


def vp_values(gamma: Tensor, dgamma: Tensor) -> ScheduleValues:
    """alpha, sigma and derivatives of a variance-preserving schedule from gamma, gamma'."""
    alpha = torch.sqrt(torch.sigmoid(-gamma))
    sigma = torch.sqrt(torch.sigmoid(gamma))
    dalpha = -0.5 * alpha * sigma**2 * dgamma
    dsigma = 0.5 * sigma * alpha**2 * dgamma
    return ScheduleValues(gamma, dgamma, alpha, sigma, dalpha, dsigma)


class Schedule(nn.Module):
    """Base class. Subclasses define gamma(t) and gamma'(t) (or override `values`)."""

    learned: bool = False

    def gamma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dgamma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def values(self, t: Tensor, variance_box: dict | None = None) -> ScheduleValues:
        return vp_values(self.gamma(t), self.dgamma(t))

    def forward(self, t: Tensor) -> Tensor:
        return self.gamma(t)


class LinearSchedule(Schedule):
    """VDM's fixed linear schedule gamma(t) = gamma_min + (gamma_max - gamma_min) t."""

    def __init__(self, gamma_min: float = VDM_GAMMA_MIN, gamma_max: float = VDM_GAMMA_MAX):
        super().__init__()
        if not gamma_max > gamma_min:
            raise ValueError(f"need gamma_max > gamma_min, got {gamma_min}, {gamma_max}")
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)

    def gamma(self, t: Tensor) -> Tensor:
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t

    def dgamma(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.gamma_max - self.gamma_min)


class DDPMSchedule(Schedule):
    """DDPM's linear-beta schedule (N = 1000 steps, beta from 1e-4 to 0.02) as a continuous gamma.

    DDPM's alpha_bar_i = prod_{j<=i} (1 - beta_j), so -log alpha_bar_i = sum_{j<=i} -log(1 - beta_j)
    = sum_j (beta_j + beta_j^2 / 2) + O(sum beta^3). With beta_j = a + b j linear in the step,
    both sums are polynomials in i; B(s) evaluates them at a continuous step s in [1, N], so
    B(i) matches DDPM's -log alpha_bar_i at every integer step up to sum beta^3 / 3 < 1e-3.
    Then gamma = log(sigma^2 / alpha^2) = log(expm1(B)). Our time t in [0, 1] maps to
    s = 1 + (N - 1) t: t = 0 is DDPM's first noisy latent x_1 (gamma(0) = log(beta_1 / (1 - beta_1))
    ~ -9.21, the level DDPM's decoder L_0 sees) and t = 1 is step N (gamma(1) ~ 10.0), so a
    T = N - 1 = 999 step grid on our time axis visits exactly DDPM's 1000 steps.
    """

    def __init__(self, beta_1: float = 1e-4, beta_n: float = 0.02, n_steps: int = 1000):
        super().__init__()
        self.beta_1, self.beta_n, self.n_steps = float(beta_1), float(beta_n), int(n_steps)
        self.b = (self.beta_n - self.beta_1) / (self.n_steps - 1)
        self.a = self.beta_1 - self.b  # beta_j = a + b j

    def _step(self, t: Tensor) -> Tensor:
        return 1.0 + (self.n_steps - 1) * t

    def _big_b(self, s: Tensor) -> Tensor:
        """sum_{j<=s} (beta_j + beta_j^2 / 2) as a polynomial in s."""
        a, b = self.a, self.b
        sum_beta = a * s + b * s * (s + 1) / 2
        sum_beta2 = a * a * s + a * b * s * (s + 1) + b * b * s * (s + 1) * (2 * s + 1) / 6
        return sum_beta + 0.5 * sum_beta2

    def _big_b_prime(self, s: Tensor) -> Tensor:
        a, b = self.a, self.b
        d_sum_beta = a + b * (2 * s + 1) / 2
        d_sum_beta2 = a * a + a * b * (2 * s + 1) + b * b * (6 * s * s + 6 * s + 1) / 6
        return d_sum_beta + 0.5 * d_sum_beta2

    def gamma(self, t: Tensor) -> Tensor:
        return torch.log(torch.expm1(self._big_b(self._step(t))))

    def dgamma(self, t: Tensor) -> Tensor:
        s = self._step(t)
        # d/dt log(e^B - 1) = B' / (1 - e^{-B}) times ds/dt.
        return self._big_b_prime(s) * (self.n_steps - 1) / (-torch.expm1(-self._big_b(s)))


class CosineSchedule(Schedule):
    """Cosine schedule: alpha_t = cos(u), sigma_t = sin(u), u = a t + b, so gamma = 2 log tan(u).

    a and b are chosen so that gamma runs from gamma_min to gamma_max (the truncation
    that keeps both ends finite; Nichol & Dhariwal's offset plays the same role).
    """

    def __init__(self, gamma_min: float = VDM_GAMMA_MIN, gamma_max: float = 13.3):
        super().__init__()
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.b = math.atan(math.exp(0.5 * gamma_min))
        self.a = math.atan(math.exp(0.5 * gamma_max)) - self.b

    def gamma(self, t: Tensor) -> Tensor:
        return 2.0 * torch.log(torch.tan(self.a * t + self.b))

    def dgamma(self, t: Tensor) -> Tensor:
        # d/du 2 log tan u = 2 / (sin u cos u) = 4 / sin(2u)
        return 4.0 * self.a / torch.sin(2.0 * (self.a * t + self.b))


class FlowSchedule(Schedule):
    """Flow-matching linear path alpha_t = 1 - (1 - eps) t, sigma_t = eps + (1 - eps) t.

    The floor eps keeps gamma finite at both ends: gamma(0) = 2 log eps ~ -13.8 for
    eps = 1e-3 (comparable to VDM's -13.3) and gamma(1) = -2 log eps. Not variance
    preserving; the forward SDE still has g^2 = sigma^2 gamma' (docs/math.md, Notation).
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        if not 0.0 < eps < 0.5:
            raise ValueError(f"flow schedule floor eps must be in (0, 0.5), got {eps}")
        self.eps = float(eps)

    def values(self, t: Tensor, variance_box: dict | None = None) -> ScheduleValues:
        e = self.eps
        alpha = 1.0 - (1.0 - e) * t
        sigma = e + (1.0 - e) * t
        dalpha = torch.full_like(t, -(1.0 - e))
        dsigma = torch.full_like(t, 1.0 - e)
        gamma = 2.0 * (torch.log(sigma) - torch.log(alpha))
        dgamma = 2.0 * (dsigma / sigma - dalpha / alpha)
        return ScheduleValues(gamma, dgamma, alpha, sigma, dalpha, dsigma)

    def gamma(self, t: Tensor) -> Tensor:
        return self.values(t).gamma

    def dgamma(self, t: Tensor) -> Tensor:
        return self.values(t).dgamma


class _ScaleGradByBox(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by box["weight"].

    Used for VDM's variance minimisation: with weight = 2 L (per example, detached)
    the gradient of mean(L) becomes the gradient of mean(L^2) for the parameters
    upstream of this node, i.e. the schedule's interior.
    """

    @staticmethod
    def forward(ctx, x: Tensor, box: dict) -> Tensor:  # type: ignore[override]
        ctx.box = box
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        weight = ctx.box.get("weight")
        if weight is None:
            return grad, None
        return grad * weight.to(grad.dtype).reshape(grad.shape), None


class LearnedSchedule(Schedule):
    """VDM's learned monotone schedule with learned end points.

        gamma(t) = gamma_0 + (gamma_1 - gamma_0) u(t),
        u(t) = (u~(t) - u~(0)) / (u~(1) - u~(0)),
        u~(t) = |w1| t + (1/n) sum_k |w3_k| (2 sigmoid(|w2_k| (2t - 1) + b2_k) - 1),

    u~ is VDM's monotone network (dense layers with non-negative weights), so u is
    increasing with u(0) = 0 and u(1) = 1 exactly: the end points are the two
    scalars gamma_0 and gamma_1 = gamma_0 + softplus(delta) (kept ordered), initialised
    at -13.3 and 5.0. The interior shape u does not change the continuous-time
    NELBO of an F = identity model (only the end points do); VDM trains it to
    minimise the variance of the loss estimator instead, which `objective="variance"`
    does through a gradient hook (see `_ScaleGradByBox`).
    """

    learned = True

    def __init__(
        self,
        gamma_min: float = VDM_GAMMA_MIN,
        gamma_max: float = VDM_GAMMA_MAX,
        n_features: int = 1024,
        objective: str = "nelbo",
        seed: int = 0,
    ):
        super().__init__()
        if objective not in ("nelbo", "variance"):
            raise ValueError(f"schedule objective must be 'nelbo' or 'variance', got {objective!r}")
        self.objective = objective
        self.n_features = int(n_features)
        g = torch.Generator().manual_seed(seed)
        self.gamma_0 = nn.Parameter(torch.tensor(float(gamma_min)))
        # softplus^{-1}(gamma_max - gamma_min)
        gap = float(gamma_max - gamma_min)
        self.delta = nn.Parameter(torch.tensor(gap + math.log(-math.expm1(-gap))))
        # VDM initialises its first layer to the linear schedule and the rest at random.
        self.w1 = nn.Parameter(torch.tensor(gap))
        self.w2 = nn.Parameter(torch.randn(self.n_features, generator=g))
        self.b2 = nn.Parameter(torch.zeros(self.n_features))
        self.w3 = nn.Parameter(torch.randn(self.n_features, generator=g))

    @property
    def gamma_1(self) -> Tensor:
        return self.gamma_0 + tnf.softplus(self.delta)

    def _u_tilde_and_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        w2, w3 = self.w2.abs(), self.w3.abs()
        h = (2.0 * t - 1.0).unsqueeze(-1) * w2 + self.b2  # (..., n)
        s = torch.sigmoid(h)
        u = self.w1.abs() * t + ((2.0 * s - 1.0) * w3).sum(-1) / self.n_features
        du = self.w1.abs() + (2.0 * s * (1.0 - s) * 2.0 * w2 * w3).sum(-1) / self.n_features
        return u, du

    def _interior(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """u(t) and u'(t)."""
        if t.numel() > 1 and t.device.type == "cpu" and bool((t == t.reshape(-1)[0]).all()):
            # Samplers pass one time for the whole batch: evaluate the n_features-wide network
            # once, not once per example (on a CPU that was most of a sampler's time; on a GPU
            # the full evaluation is cheap and this check would cost a host sync).
            u, du = self._interior(t.reshape(-1)[:1])
            return u.reshape([1] * t.dim()).expand(t.shape).clone(), du.reshape([1] * t.dim()).expand(t.shape).clone()
        ends = torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device)
        u_ends, _ = self._u_tilde_and_derivative(ends)
        span = u_ends[1] - u_ends[0]
        u_t, du_t = self._u_tilde_and_derivative(t)
        return (u_t - u_ends[0]) / span, du_t / span

    def values(self, t: Tensor, variance_box: dict | None = None) -> ScheduleValues:
        u, du = self._interior(t)
        if variance_box is not None and self.objective == "variance":
            u = _ScaleGradByBox.apply(u, variance_box)
            du = _ScaleGradByBox.apply(du, variance_box)
        g0, g1 = self.gamma_0.to(t.dtype), self.gamma_1.to(t.dtype)
        gamma = g0 + (g1 - g0) * u
        dgamma = (g1 - g0) * du
        return vp_values(gamma, dgamma)

    def gamma(self, t: Tensor) -> Tensor:
        return self.values(t).gamma

    def dgamma(self, t: Tensor) -> Tensor:
        return self.values(t).dgamma


SCHEDULES = {
    "linear": LinearSchedule,
    "ddpm": DDPMSchedule,
    "cosine": CosineSchedule,
    "flow": FlowSchedule,
    "learned": LearnedSchedule,
}


def build_schedule(
    name: str,
    gamma_min: float = VDM_GAMMA_MIN,
    gamma_max: float = VDM_GAMMA_MAX,
    objective: str = "nelbo",
    flow_eps: float = 1e-3,
) -> Schedule:
    """A schedule by name; the end points apply to the schedules that have them."""
    if name == "linear":
        return LinearSchedule(gamma_min, gamma_max)
    if name == "ddpm":
        return DDPMSchedule()
    if name == "cosine":
        return CosineSchedule(gamma_min, gamma_max)
    if name == "flow":
        return FlowSchedule(flow_eps)
    if name == "learned":
        return LearnedSchedule(gamma_min, gamma_max, objective=objective)
    raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")


@torch.no_grad()
def invert_gamma(schedule: Schedule, gamma_target: Tensor, grid_size: int = 257, newton_steps: int = 8) -> Tensor:
    """t with gamma(t) = gamma_target (every schedule is increasing in t).

    A grid of gamma values brackets each target, linear interpolation starts Newton's
    method (gamma' is known analytically), and each Newton step is clamped to the
    bracket, so it converges to machine precision in a few steps for any schedule.
    Used to sample times uniformly in gamma (VDM's change of variables), which removes
    the gamma'(t) factor from the continuous-time loss and with it most of the variance
    of schedules that are steep at an end (DDPM's, the flow path's).
    """
    dtype, device = gamma_target.dtype, gamma_target.device
    grid = torch.linspace(0.0, 1.0, grid_size, dtype=dtype, device=device)
    grid_gamma = schedule.values(grid).gamma.contiguous()
    target = torch.minimum(torch.maximum(gamma_target, grid_gamma[0]), grid_gamma[-1])
    idx = torch.searchsorted(grid_gamma, target.contiguous()).clamp(1, grid_size - 1)
    lo, hi = grid[idx - 1], grid[idx]
    g_lo, g_hi = grid_gamma[idx - 1], grid_gamma[idx]
    t = lo + (target - g_lo) / (g_hi - g_lo) * (hi - lo)
    for _ in range(newton_steps):
        v = schedule.values(t)
        t_next = torch.minimum(torch.maximum(t - (v.gamma - target) / v.dgamma, lo), hi)
        # At an exact fixed point further steps change nothing: stopping there gives the same
        # bits as all newton_steps (checked on the CPU only, where it saves a learned schedule's
        # cost; on a GPU the comparison would cost a host sync per step).
        if t.device.type == "cpu" and torch.equal(t_next, t):
            break
        t = t_next
    return t
