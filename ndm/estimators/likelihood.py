"""Likelihood estimators: NELBO in continuous and discrete time, each with its standard error.

Every estimator returns per-example values, so the standard error is taken across
independent examples (the time samples of one example are stratified, which makes
the per-example estimates less noisy but not independent of each other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ndm.estimators.eval_mode import eval_mode
from ndm.model.diffusion import DiffusionModel, bits_per_dim
from ndm.model.time_sampling import draw_steps, draw_times, gamma_uniform_times


@dataclass
class Estimate:
    """Per-example values of an estimator (nats) and their summary in bits/dim."""

    name: str
    per_example: Tensor  # (N,) nats
    dims: int
    terms: dict[str, Tensor] | None = None  # per-example components, nats
    nfe: float | None = None  # network evaluations per example, where it applies

    @property
    def mean_nats(self) -> float:
        return self.per_example.mean().item()

    @property
    def stderr_nats(self) -> float:
        n = self.per_example.numel()
        return self.per_example.std().item() / math.sqrt(n) if n > 1 else float("nan")

    @property
    def bpd(self) -> float:
        return float(bits_per_dim(self.mean_nats, self.dims))

    @property
    def bpd_stderr(self) -> float:
        return float(bits_per_dim(self.stderr_nats, self.dims))

    def summary(self) -> dict:
        out = {
            "estimator": self.name,
            "bpd": self.bpd,
            "bpd_stderr": self.bpd_stderr,
            "nats_per_dim": self.mean_nats / self.dims,
            "n_examples": int(self.per_example.numel()),
        }
        if self.terms:
            out["terms_bpd"] = {k: float(bits_per_dim(v.mean().item(), self.dims)) for k, v in self.terms.items()}
        if self.nfe is not None:
            out["nfe"] = self.nfe
        return out


def _randn(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


@torch.no_grad()
def continuous_nelbo(
    model: DiffusionModel,
    x: Tensor,
    n_time_samples: int = 64,
    importance: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int = 4096,
) -> Estimate:
    """Continuous-time NELBO per example with n_time_samples stratified times each.

    importance=True samples gamma uniformly between the end points (t = gamma^{-1}(gamma))
    and weights by p(t)^{-1} = (gamma_1 - gamma_0) / gamma'(t): the same expectation,
    much less variance for schedules that are steep at an end (ndm.model.time_sampling).
    """
    n, k = x.shape[0], n_time_samples
    sampling = "gamma" if importance else "uniform"
    t, weight = draw_times(model.schedule, n, k, sampling, generator=generator, device=x.device, dtype=x.dtype)
    x_rep = x.repeat_interleave(k, dim=0)
    eps = _randn(x_rep.shape, x_rep, generator)
    diff = torch.cat(
        [
            model.diffusion_loss(xb, tb, eb)[0] * wb
            for xb, tb, eb, wb in zip(
                x_rep.split(batch_size), t.split(batch_size), eps.split(batch_size), weight.split(batch_size)
            )
        ]
    ).view(n, k).mean(1)
    recon = model.reconstruction_loss(x, _randn(x.shape, x, generator))
    prior = model.prior_loss(x)
    terms = {"reconstruction": recon, "diffusion": diff, "prior": prior}
    return Estimate("nelbo_continuous", recon + diff + prior, model.dims, terms, nfe=float(k + 1))


@torch.no_grad()
def discrete_nelbo(
    model: DiffusionModel,
    x: Tensor,
    n_steps: int,
    n_step_samples: int | None = 64,
    generator: torch.Generator | None = None,
    batch_size: int = 4096,
) -> Estimate:
    """T-step NELBO per example: sum_{i=1..T} KL_i + reconstruction + prior.

    n_step_samples=None sums all T steps exactly (T network calls per example); an
    integer m draws m stratified steps per example and scales by T / m (unbiased).
    """
    n = x.shape[0]
    m = n_steps if n_step_samples is None else min(n_step_samples, n_steps)
    i = draw_steps(n_steps, n, m, generator=generator, device=x.device)
    x_rep = x.repeat_interleave(m, dim=0)
    eps = _randn(x_rep.shape, x_rep, generator)
    kl = torch.cat(
        [
            model.diffusion_kl_step(xb, ib, n_steps, eb)
            for xb, ib, eb in zip(x_rep.split(batch_size), i.split(batch_size), eps.split(batch_size))
        ]
    ).view(n, m)
    diff = kl.sum(1) * (n_steps / m)
    recon = model.reconstruction_loss(x, _randn(x.shape, x, generator))
    prior = model.prior_loss(x)
    terms = {"reconstruction": recon, "diffusion": diff, "prior": prior}
    return Estimate(f"nelbo_T{n_steps}", recon + diff + prior, model.dims, terms, nfe=float(m + 1))


# ------------------------------------------------------------------------------
# NLL through the probability-flow ODE (docs/math.md "Samplers and the ODE likelihood")
#
# The model's z_0 has the density p_0 that the probability-flow ODE dz/dt = h(z, t)
# transports from p_1 = N(0, I). Along a trajectory d/dt log p_t(z_t) = -div h(z_t, t), so
#     log p_0(z_0) = log N(z_1; 0, I) + int_0^1 div h(z_t, t) dt,
# integrated from t = 0 (z_0 given) to t = 1 on the augmented state (z, int div).
# The samplers output x = z_0 / alpha_0 (F(x, 0) = x), so the density of that output is
#     log p_x(x) = log p_0(alpha_0 x) + D log alpha_0.
# Discrete data (K levels, bins of width Delta = 2/K around the centres) is dequantized,
# x + u with u ~ U(-Delta/2, Delta/2)^D, and by Jensen
#     -log P(v) = -log E_u[p_x(x + u)] - D log Delta <= -log p_x(x + u) - D log Delta   (in expectation),
# a bound on the NLL of the levels the samplers return (nearest bin centre).

DIVERGENCES = ("exact", "hutchinson")
ODE_METHODS = ("heun", "dopri5")
PROBES = ("rademacher", "gaussian")


@dataclass(frozen=True)
class OdeSolver:
    """How the probability-flow ODE is integrated and its divergence taken; checked on creation.

    method "heun": `steps` fixed Heun steps on a grid uniform in gamma = -log SNR (2 N
    evaluations of h; see gamma_uniform_grid); "dopri5": torchdiffeq's adaptive solver with
    rtol/atol on the augmented state (one step size for the batch). divergence "exact"
    (D vector-Jacobian products) or "hutchinson" (`probes` probes of kind `probe` per example).
    """

    method: str = "dopri5"
    steps: int = 100  # heun only
    rtol: float = 1e-5  # dopri5 only
    atol: float = 1e-5  # dopri5 only
    divergence: str = "exact"
    probes: int = 1  # hutchinson only
    probe: str = "rademacher"  # hutchinson only

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        if self.method not in ODE_METHODS:
            raise ValueError(f"method must be one of {ODE_METHODS}, got {self.method!r}")
        if self.divergence == "hutchinson" and self.probes < 1:
            raise ValueError(f"probes must be >= 1, got {self.probes}")
        if self.divergence == "hutchinson" and self.probe not in PROBES:
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {self.probe!r}")
        if self.method == "heun" and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def name(self) -> str:
        """The estimator's name in results: ode_<divergence>_<method>[<heun steps>]."""
        return f"ode_{self.divergence}_{self.method}" + (str(self.steps) if self.method == "heun" else "")


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """x + u, u ~ U(-Delta/2, Delta/2) per dimension, Delta = 2/K: uniform over each level's bin."""
    delta = 2.0 / levels
    u = torch.rand(x.shape, generator=generator, device=generator.device if generator is not None else x.device, dtype=x.dtype)
    return x + (u.to(x.device) - 0.5) * delta


def _probes(shape: tuple[int, ...], kind: str, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Hutchinson probes with E[eps eps^T] = I: Rademacher (+-1) or standard Gaussian."""
    device = generator.device if generator is not None else like.device
    if kind == "rademacher":
        eps = torch.randint(0, 2, shape, generator=generator, device=device).to(like.dtype) * 2.0 - 1.0
    elif kind == "gaussian":
        eps = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
    else:
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")
    return eps.to(like.device)


def _flow_and_divergence(model: DiffusionModel, z: Tensor, t: Tensor, probes: Tensor | None) -> tuple[Tensor, Tensor]:
    """h(z, t) and div_z h(z, t) per example: exact (D vector-Jacobian products with the unit
    vectors e_j, summing e_j^T J e_j) or Hutchinson (mean over probes of eps^T J eps).

    One forward pass of x_hat (and of F's JVP) per call; the vjp goes through both, so the
    divergence includes the dependence of F(x_hat, t) and dF/dt(x_hat, t) on z.
    Examples do not interact in any network here (no batch norm), so a vjp with a batched
    cotangent gives every example's own row of its Jacobian.
    """
    from ndm.estimators.sampling import ode_drift

    h, vjp_fn = torch.func.vjp(lambda zz: ode_drift(model, zz, t), z)
    b = z.shape[0]
    if probes is None:
        dims = z[0].numel()
        div = torch.zeros(b, dtype=z.dtype, device=z.device)
        basis = torch.zeros(b, dims, dtype=z.dtype, device=z.device)
        for j in range(dims):
            basis[:, j] = 1.0
            (row,) = vjp_fn(basis.view_as(z))  # e_j^T J per example
            div = div + row.reshape(b, dims)[:, j]
            basis[:, j] = 0.0
        return h, div
    div = torch.zeros(b, dtype=z.dtype, device=z.device)
    for eps in probes:
        (eps_j,) = vjp_fn(eps)
        div = div + (eps_j * eps).reshape(b, -1).sum(1)
    return h, div / probes.shape[0]


@torch.no_grad()
def gamma_uniform_grid(model: DiffusionModel, steps: int) -> list[float]:
    """t_0 = 0 < t_1 < ... < t_N = 1 with gamma(t_i) uniform between gamma(0) and gamma(1).

    The probability-flow field scales with gamma'(t): a grid uniform in t puts few steps
    where gamma is steep (DDPM's schedule near both ends), and there fixed-step Heun is far off
    at few steps (docs/math.md, ODE likelihood grid); uniform in gamma, every step moves the SNR by the
    same factor. For VDM's linear gamma the two grids coincide.
    """
    param = next(model.parameters(), None)  # a learned schedule evaluates in its parameters' dtype
    like = {"dtype": param.dtype, "device": param.device} if param is not None else {"dtype": torch.float64}
    t, _ = gamma_uniform_times(model.schedule, torch.linspace(0.0, 1.0, steps + 1, **like))
    grid = [float(v) for v in t]
    grid[0], grid[-1] = 0.0, 1.0
    return grid


# no_grad outside, while torch.func.vjp (a function transform) still differentiates in z inside:
# with grad mode on, each step's h kept a graph to the parameters and z_{i+1} = z_i + dt h chained
# every step's graph into the next (patches, 25 Heun steps: 10.9 GB and 8x the time).
@torch.no_grad()
def ode_log_density(
    model: DiffusionModel, z0: Tensor, solver: OdeSolver = OdeSolver(), *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """log N(z_1; 0, I) and int_0^1 div h dt per example for the ODE trajectory from z0 (one batch).

    Returns (log_prior, int_div, z_1); log p_0(z0) = log_prior + int_div. Hutchinson probes
    are drawn once per example and kept for the whole trajectory (FFJORD), which keeps the
    integrand smooth for the adaptive solver and the per-example estimate unbiased.
    """
    method, steps = solver.method, solver.steps
    eps = None
    if solver.divergence == "hutchinson":
        eps = _probes((solver.probes, *z0.shape), solver.probe, generator, z0)

    def field(t: float | Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        tt = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device).clamp(0.0, 1.0)
        return _flow_and_divergence(model, z, tt, eps)

    b = z0.shape[0]
    int_div = torch.zeros(b, dtype=z0.dtype, device=z0.device)
    if method == "heun":
        z = z0
        grid = gamma_uniform_grid(model, steps)
        for i in range(steps):
            t, s = grid[i], grid[i + 1]
            dt = s - t
            h1, d1 = field(t, z)
            h2, d2 = field(s, z + dt * h1)
            z = z + 0.5 * dt * (h1 + h2)
            int_div = int_div + 0.5 * dt * (d1 + d2)
        z1 = z
    else:
        from torchdiffeq import odeint

        def augmented(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            return field(t, state[0])

        times = torch.tensor([0.0, 1.0], dtype=torch.float64, device=z0.device)
        # step_t = [1]: the last step lands on t = 1 instead of stepping past it (see sampling.adaptive_solve).
        z_traj, div_traj = odeint(augmented, (z0, int_div), times, method="dopri5", rtol=solver.rtol, atol=solver.atol, options={"step_t": times[1:]})
        z1, int_div = z_traj[-1], div_traj[-1]
    log_prior = -0.5 * z1.reshape(b, -1).pow(2).sum(1) - 0.5 * z1[0].numel() * math.log(2 * math.pi)
    return log_prior, int_div, z1


def ode_nll(
    model: DiffusionModel,
    x: Tensor,
    solver: OdeSolver = OdeSolver(),
    *,
    levels: int | None = -1,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> Estimate:
    """Negative log-likelihood per example through the probability-flow ODE, in nats.

    Continuous data: -log p_x(x) = -log p_0(alpha_0 x) - D log alpha_0.
    Discrete data (levels K; default: model.levels, pass None to treat x as continuous):
    -log p_x(x + u) - D log(2/K) with uniform dequantization u, an upper bound on the NLL
    of the discrete levels. Terms (nats): prior = -log N(z_1; 0, I), divergence =
    -int div h dt, scale = -D log alpha_0, dequantization = -D log Delta.
    nfe: evaluations of h per example (each one x_hat forward pass plus D vjps for the exact
    divergence or probes for Hutchinson; the F network's JVP runs with each), counted.

    Needs F(x, 0) = x. ndm-latent (F(x, 0) = E(x)) is refused: its ODE gives the density of
    z_0 = alpha_0 E(x) + noise, and its decoder x_hat(z_0, 0) is not the inverse of E, so
    the density of x is not a change of variables of p_0 (the NELBO is reported for it).
    """
    from ndm.estimators.sampling import EvalCounter

    if not model.transform.identity_at_zero:
        raise ValueError(
            f"the ODE likelihood of x needs F(x, 0) = x (z_0 = alpha_0 x); this model's F "
            f"({type(model.transform).__name__}) has F(x, 0) = E(x) != x and decodes with x_hat(z_0, 0), so "
            "log p(x) is not log p_0(alpha_0 x) + D log alpha_0 (the decoder is not the inverse of E). "
            "Report its NELBO (continuous_nelbo / discrete_nelbo) instead."
        )
    levels = model.levels if levels == -1 else levels
    n, dims = x.shape[0], model.dims
    terms: dict[str, list[Tensor]] = {"prior": [], "divergence": [], "scale": []}
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"ode nll ({solver.divergence}, {solver.method})", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
    counter = EvalCounter(model)
    try:
        with eval_mode(model), counter:
            for xb in x.split(batch_size):
                if levels is not None:
                    xb = dequantize(xb, levels, generator)
                t0 = torch.zeros(xb.shape[0], dtype=xb.dtype, device=xb.device)
                alpha_0 = model.values(t0).alpha
                z0 = model._bc(alpha_0) * xb  # alpha_0 F(x, 0), F(x, 0) = x
                log_prior, int_div, _ = ode_log_density(model, z0, solver, generator=generator)
                terms["prior"].append(-log_prior)
                terms["divergence"].append(-int_div)
                terms["scale"].append(-dims * torch.log(alpha_0))
                if bar is not None:
                    bar.update(xb.shape[0])
    finally:
        if bar is not None:
            bar.close()
    out = {k: torch.cat(v) for k, v in terms.items()}
    if levels is not None:
        out["dequantization"] = torch.full_like(out["prior"], -dims * math.log(2.0 / levels))
    total = sum(out.values())
    return Estimate(solver.name, total, dims, out, nfe=counter.per_sample(n)[0])
