"""The papers' exact claims, computed on the Gaussian oracle (`ndm claims`, docs/math.md "Claims checked").

The ground truth is the F = identity oracle in closed form (ndm.estimators.oracle_closed_form):
exact ELBOs, the exact T-step bound, the exact variance of the time-sampled estimator, and
VDM's variance-minimising schedule, all without sampling.

Each check returns a `Claim`: the measured figure, what the paper says it should be, a tolerance,
and pass/fail. Each takes the piece a broken claim would change (the schedules, the continuous
limit, the loss weights, F) as an argument, so a test can break the claim on purpose and see it fail.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ndm.estimators.gaussian import GaussianOracle, GaussianSpec
from ndm.estimators.oracle_closed_form import (
    F64, ConstantIntegrandSchedule, schedule_ends, diffusion_closed_form, discrete_diffusion, estimator_moments,
    exact_elbo_t, oracle_with_schedule, variance_lower_bound,
)  # fmt: skip
from ndm.model.diffusion import DiffusionModel
from ndm.model.schedules import CosineSchedule, DDPMSchedule, LearnedSchedule, LinearSchedule, Schedule, ScheduleValues
from ndm.model.specs import VDM_GAMMA_MAX, VDM_GAMMA_MIN
from ndm.model.time_sampling import draw_times

DISCRETE_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


@dataclass(frozen=True)
class Claim:
    """One claim's check. relation "abs": |measured - expected| <= tolerance; "le": measured <= expected."""

    id: str
    source: str
    statement: str
    measured: float
    expected: float
    tolerance: float
    relation: str
    unit: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        if not math.isfinite(self.measured):
            return False
        if self.relation == "abs":
            return abs(self.measured - self.expected) <= self.tolerance
        return self.measured <= self.expected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def learned_schedule(gamma_min: float = VDM_GAMMA_MIN, gamma_max: float = VDM_GAMMA_MAX, seed: int = 0) -> LearnedSchedule:
    """VDM's monotone network with a seeded random interior far from linear (its linear part scaled down)."""
    sched = LearnedSchedule(gamma_min, gamma_max, n_features=64, seed=seed).double()
    gap = gamma_max - gamma_min
    with torch.no_grad():
        sched.gamma_0.fill_(gamma_min)  # the end points exactly, not their float32 initialisation
        sched.delta.fill_(gap + math.log(-math.expm1(-gap)))
        sched.w1.fill_(0.5)
        sched.w2.mul_(6.0)
    return sched


def equal_end_schedules(spec: GaussianSpec, gamma_min: float = VDM_GAMMA_MIN, gamma_max: float = VDM_GAMMA_MAX) -> dict[str, Schedule]:
    """Fixed, learned-form and variance-optimal schedules, all from gamma_min to gamma_max."""
    return {
        "linear": LinearSchedule(gamma_min, gamma_max),
        "cosine": CosineSchedule(gamma_min, gamma_max),
        "learned": learned_schedule(gamma_min, gamma_max),
        "vdm_optimal": ConstantIntegrandSchedule(spec, gamma_min, gamma_max),
    }


# ------------------------------------------------------------------ VDM: schedule invariance


def schedule_invariance(spec: GaussianSpec, schedules: dict[str, Schedule], tolerance: float = 1e-9) -> Claim:
    """Spread (nats/dim) of the exact continuous ELBO over schedules that should share their end points."""
    elbos = {name: exact_elbo_t(spec, s) for name, s in schedules.items()}
    totals = [e["total"] / spec.dim for e in elbos.values()]
    ref = next(iter(schedules.values()))
    g0, g1 = schedule_ends(ref)
    closed = diffusion_closed_form(spec, g0, g1)
    return Claim(
        "vdm_schedule_invariance", "VDM", "the continuous-time VLB depends on gamma only through gamma(0) and gamma(1)",
        max(totals) - min(totals), 0.0, tolerance, "abs", "nats/dim",
        {"elbo_nats_per_dim": {k: e["total"] / spec.dim for k, e in elbos.items()},
         "end_points": {k: schedule_ends(s) for k, s in schedules.items()},
         "diffusion_closed_form_nats": closed,
         "diffusion_t_quadrature_nats": {k: e["diffusion"] for k, e in elbos.items()},
         "diffusion_u_quadrature_nats": {k: e["diffusion_u_quadrature"] for k, e in elbos.items()}},
    )  # fmt: skip


# ------------------------------------------------------------------ VDM: variance, not value


def _mc_std(spec: GaussianSpec, schedule: Schedule, sampling: str, n: int, seed: int) -> float:
    """The same estimator by Monte Carlo through the package's draws and DiffusionModel.diffusion_loss."""
    gen = torch.Generator().manual_seed(seed)
    model = oracle_with_schedule(spec, schedule)
    x = spec.sample(n, gen)
    t, w = draw_times(model.schedule, n, 1, sampling, generator=gen, dtype=F64)
    eps = torch.randn(x.shape, generator=gen, dtype=F64)
    with torch.no_grad():
        return float((model.diffusion_loss(x, t, eps)[0] * w).std())


def variance_reduction(spec: GaussianSpec, base: Schedule, learned: Schedule, n_mc: int = 4096, seed: int = 0) -> Claim:
    """Std of the one-sample estimator: uniform t and importance in gamma on `base`, uniform t on `learned`.

    The claim holds when `learned` has the least std of the three (measured: its std over the best
    other). That its mean, the ELBO, is unchanged is the invariance claim's (the variance-optimal
    schedule is one of its schedules); details keep the means' spread, the t-part Var_t E[wL | t]
    (0 for the constant-integrand schedule), the Cauchy-Schwarz lower bound over all schedules and
    a Monte Carlo check of each std through the package's own draws and loss.
    """
    schemes = {"uniform": (base, "uniform"), "importance_gamma": (base, "gamma"), "learned_schedule": (learned, "uniform")}
    moments = {k: estimator_moments(spec, s, m) for k, (s, m) in schemes.items()}
    std = {k: math.sqrt(max(v["var"], 0.0)) for k, v in moments.items()}
    best_other = min(std["uniform"], std["importance_gamma"])
    g0, g1 = schedule_ends(base)
    means = [v["mean"] for v in moments.values()]
    return Claim(
        "vdm_learned_schedule_variance", "VDM", "a variance-minimising schedule lowers the std of the VLB estimator (ratio below 1), not its value",
        std["learned_schedule"] / best_other, 1.0, 0.0, "le", "std ratio",
        {"std_nats": std, "std_lower_bound_nats": math.sqrt(max(variance_lower_bound(spec, g0, g1), 0.0)),
         "t_part_std_nats": {k: math.sqrt(max(v["var_t"], 0.0)) for k, v in moments.items()},
         "mean_spread_nats": max(means) - min(means),
         "mc_std_nats": {k: _mc_std(spec, s, m, n_mc, seed) for k, (s, m) in schemes.items()},
         "learned_schedule": "closed form (gamma' proportional to 1 / E[SNR ||x - x_hat||^2]), not fitted"},
    )  # fmt: skip


# ------------------------------------------------------------------ VDM: T steps


def discrete_convergence(
    spec: GaussianSpec, schedule: Schedule, continuous: float | None = None, steps: tuple[int, ...] = DISCRETE_STEPS,
    fit_from: int = 1000, tolerance: float = 0.02, diffusion_T: Callable[[GaussianSpec, Schedule, int], float] = discrete_diffusion,
) -> tuple[Claim, Claim]:
    """L_T - L_inf (nats/dim) at each T: it falls with T (monotone) and as T^p with p = -1 (fitted for T >= fit_from).

    continuous: the limit's diffusion term (default: the closed form at the schedule's end points);
    diffusion_T: the T-step term (default: `discrete_diffusion`).
    """
    if continuous is None:
        continuous = diffusion_closed_form(spec, *schedule_ends(schedule))
    excess = {T: (diffusion_T(spec, schedule, T) - continuous) / spec.dim for T in steps}
    values = [excess[T] for T in steps]
    rise = max(b - a for a, b in zip(values, values[1:]))
    fit = [(math.log(T), math.log(e)) for T, e in excess.items() if T >= fit_from and e > 0]
    slope = float(np.polyfit(*zip(*fit), 1)[0]) if len(fit) >= 2 else float("nan")
    # First-order Richardson extrapolation 2 L_2T - L_T removes the 1/T term: it should land on the limit.
    richardson = 2 * excess[steps[-1]] - excess[steps[-2]] if steps[-1] == 2 * steps[-2] else None
    details = {"excess_nats_per_dim": {str(T): e for T, e in excess.items()}, "continuous_diffusion_nats": continuous,
               "richardson_limit_error_nats_per_dim": richardson}  # fmt: skip
    monotone = Claim(
        "vdm_discrete_improves_with_T", "VDM", "the T-step VLB decreases as T grows (largest increase between successive T)",
        rise, 0.0, 0.0, "le", "nats/dim", details,
    )
    rate = Claim(
        "vdm_discrete_rate", "VDM", f"L_T - L_inf falls as T^p toward the continuous limit, p = -1 (fitted from T = {fit_from})",
        slope, -1.0, tolerance, "abs", "exponent p", {**details, "fit_points": len(fit)},
    )
    return monotone, rate


# ------------------------------------------------------------------ Luo: parameterisations


class _FromXHat(nn.Module):
    """The oracle's x_hat expressed as another parameterisation's network output."""

    def __init__(self, oracle: GaussianOracle, schedule: Schedule, kind: str):
        super().__init__()
        self.oracle, self.kind = oracle, kind
        self.__dict__["_schedule"] = schedule

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        v = self._schedule.values(t)
        a, s, xh = v.alpha[:, None], v.sigma[:, None], self.oracle(z, t)
        if self.kind == "eps":
            return (z - a * xh) / s
        n = torch.sqrt(a**2 + s**2)
        return (xh - a * z / n**2) * n / s  # "v": the residual DiffusionModel.x_hat scales by sigma / n


# Loss weight of each parameterisation's own squared error, so that all equal 1/2 gamma' SNR ||x - x_hat||^2.
LOSS_WEIGHTS: dict[str, Callable[[ScheduleValues], Tensor]] = {
    "x": lambda v: 0.5 * v.dgamma * v.snr,
    "eps": lambda v: 0.5 * v.dgamma,
    "v": lambda v: 0.5 * v.dgamma * v.alpha**2 / (v.alpha**2 + v.sigma**2),
    "score": lambda v: 0.5 * v.g2,
}


def parameterisation_equivalence(
    spec: GaussianSpec, schedule: Schedule, weights: dict[str, Callable] | None = None, n: int = 512, seed: int = 0, tolerance: float = 1e-9
) -> Claim:
    """NELBO of one x_hat through eps-, x-, v- and score-prediction, with common random numbers.

    Two routes per parameterisation: its own squared error times LOSS_WEIGHTS (Luo's reweighting),
    and for eps and v the DiffusionModel built with that parameterisation (its x_hat conversion).
    Measured: the largest |NELBO_p - NELBO_x| relative to the mean NELBO.
    """
    weights = LOSS_WEIGHTS if weights is None else weights
    gen = torch.Generator().manual_seed(seed)
    base = oracle_with_schedule(spec, schedule)
    x = spec.sample(n, gen)
    t = torch.rand(n, generator=gen, dtype=F64)
    eps, eps0 = (torch.randn(x.shape, generator=gen, dtype=F64) for _ in range(2))
    with torch.no_grad():
        v = base.schedule.values(t)
        a, s = v.alpha[:, None], v.sigma[:, None]
        z = a * x + s * eps
        ends = base.reconstruction_loss(x, eps0) + base.prior_loss(x)
        xh = base.net(z, t)
        preds = {"x": (x, xh), "score": (-eps / s, -(z - a * xh) / s**2)}
        nets = {k: _FromXHat(base.net, base.schedule, k) for k in ("eps", "v")}
        n_ = torch.sqrt(a**2 + s**2)
        preds["eps"] = (eps, nets["eps"](z, t))
        preds["v"] = ((x - a * z / n_**2) * n_ / s, nets["v"](z, t))
        nelbo = {k: ends + weights[k](v) * ((tgt - p) ** 2).sum(1) for k, (tgt, p) in preds.items()}
        for k, net in nets.items():
            m = oracle_with_schedule(spec, schedule, parameterization=k)
            m.net = net
            nelbo[f"model_{k}"] = ends + m.diffusion_loss(x, t, eps)[0]
    ref = nelbo["x"]
    scale = float(ref.mean().abs())
    dev = {k: float((val - ref).abs().max()) / scale for k, val in nelbo.items()}
    return Claim(
        "luo_parameterisations_equivalent", "Luo", "eps-, x-, v- and score-prediction of one x_hat give one NELBO under their weights",
        max(dev.values()), 0.0, tolerance, "abs", "relative difference",
        {"relative_difference": dev, "nelbo_nats_per_dim": {k: float(val.mean()) / spec.dim for k, val in nelbo.items()}},
    )  # fmt: skip


# ------------------------------------------------------------------ NDM: special cases


def ndm_identity_model(spec: GaussianSpec, schedule: Schedule) -> DiffusionModel:
    """NDM's F(x, t) = x + t NN(x, t) at its initialisation (NN's last layer zero: F = identity)."""
    return oracle_with_schedule(spec, schedule, variant="ndm")


def ndm_reduces(spec: GaussianSpec, pairs: dict[str, tuple[DiffusionModel, DiffusionModel]], n: int = 256, n_steps: int = 1000, seed: int = 0, tolerance: float = 1e-9) -> Claim:
    """Term by term with common random numbers: NDM (general F path) against the F = identity model.

    pairs: name -> (ndm model, baseline model). Terms: reconstruction, continuous diffusion at the
    same (t, eps), the T-step KL at the same (step, eps), prior. Measured: the largest relative difference.
    """
    gen = torch.Generator().manual_seed(seed)
    x = spec.sample(n, gen)
    t = torch.rand(n, generator=gen, dtype=F64)
    i = torch.randint(1, n_steps + 1, (n,), generator=gen)
    eps, eps0 = (torch.randn(x.shape, generator=gen, dtype=F64) for _ in range(2))
    dev: dict[str, dict[str, float]] = {}
    for name, (ndm, base) in pairs.items():
        dev[name] = {}
        for term, fn in {
            "reconstruction": lambda m: m.reconstruction_loss(x, eps0),
            "diffusion": lambda m: m.diffusion_loss(x, t, eps)[0],
            "diffusion_T": lambda m: m.diffusion_kl_step(x, i, n_steps, eps),
            "prior": lambda m: m.prior_loss(x),
        }.items():
            with torch.no_grad():
                a, b = fn(ndm), fn(base)
            dev[name][term] = float((a - b).abs().max() / b.abs().mean().clamp_min(1e-300))
    worst = max(v for d in dev.values() for v in d.values())
    return Claim(
        "ndm_identity_is_vdm", "NDM", "with F = identity NDM's NELBO terms equal VDM's / DDPM's (reconstruction, diffusion, T-step KL, prior)",
        worst, 0.0, tolerance, "abs", "relative difference", {"relative_difference": dev, "T": n_steps},
    )  # fmt: skip


# ------------------------------------------------------------------ all of them


def run_claims(dim: int = 8, seed: int = 0) -> dict[str, Any]:
    """Every claim on the oracle of a D-dimensional Gaussian; a JSON-able report."""
    spec = GaussianSpec.make(dim, seed)
    schedules = equal_end_schedules(spec)
    linear = schedules["linear"]
    pairs = {
        base: (ndm_identity_model(spec, sched), oracle_with_schedule(spec, sched, variant=base))
        for base, sched in (("vdm-fixed", LinearSchedule()), ("ddpm", DDPMSchedule()))
    }
    claims = [
        schedule_invariance(spec, schedules),
        variance_reduction(spec, schedules["cosine"], schedules["vdm_optimal"], seed=seed),
        *discrete_convergence(spec, linear),
        parameterisation_equivalence(spec, schedules["cosine"], seed=seed),
        ndm_reduces(spec, pairs, seed=seed),
    ]
    return {
        "dim": dim,
        "seed": seed,
        "oracle": "x ~ N(m, S), full S with eigenvalues log-uniform in [0.05, 0.6] (ndm.estimators.gaussian.GaussianSpec.make)",
        "end_points": [VDM_GAMMA_MIN, VDM_GAMMA_MAX],
        "all_passed": all(c.passed for c in claims),
        "claims": [c.to_dict() for c in claims],
    }
