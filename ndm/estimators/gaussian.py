"""Gaussian calibration case: data x ~ N(m, S) in R^D with everything exact.

With a linear transformation F(x, t) = C_t x (the identity included) the forward
marginal z_t = alpha_t C_t x + sigma_t eps is jointly Gaussian with x, so

    E[x | z_t] = m + S C^T alpha (alpha^2 C S C^T + sigma^2 I)^{-1} (z_t - alpha C m)

and, because F is linear, F(E[x|z_t], t) = E[F(x, t) | z_t]: plugging this x_hat
into the reverse process gives the exact time reversal of the forward process.
The exact NLL of the data is the Gaussian log-density. Every estimator in `ndm`
is checked against these values (docs/math.md, Checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class GaussianSpec:
    """A D-dimensional Gaussian with a known mean and a full covariance."""

    mean: Tensor  # (D,) float64
    cov: Tensor  # (D, D) float64, symmetric positive definite

    @staticmethod
    def make(dim: int, seed: int, min_var: float = 0.05, max_var: float = 0.6) -> "GaussianSpec":
        """A reproducible Gaussian whose scale resembles image data in [-1, 1].

        Eigenvalues are log-uniform in [min_var, max_var] and the eigenbasis is a
        random rotation, so the covariance is full (not diagonal) and the
        posterior mean mixes coordinates, which is what the tests need.
        """
        if dim < 1:
            raise ValueError(f"gaussian dim must be >= 1, got {dim}")
        g = torch.Generator().manual_seed(int(seed))
        mean = 0.3 * torch.randn(dim, generator=g, dtype=torch.float64)
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed rotation
        u = torch.rand(dim, generator=g, dtype=torch.float64)
        eig = torch.exp(math.log(min_var) + u * (math.log(max_var) - math.log(min_var)))
        cov = (q * eig) @ q.T
        return GaussianSpec(mean=mean, cov=0.5 * (cov + cov.T))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples, (n, D) float64."""
        chol = torch.linalg.cholesky(self.cov)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean + eps @ chol.T

    def nll(self, x: Tensor) -> Tensor:
        """Exact -log N(x; m, S) per example, in nats, shape (n,)."""
        x = x.to(torch.float64)
        chol = torch.linalg.cholesky(self.cov)
        diff = (x - self.mean).T
        sol = torch.linalg.solve_triangular(chol, diff, upper=False)
        maha = (sol**2).sum(0)
        logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
        return 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def expected_nll(self) -> float:
        """E_x[-log p(x)] = entropy = 1/2 (D log(2 pi e) + log det S), in nats."""
        logdet = torch.logdet(self.cov).item()
        return 0.5 * (self.dim * math.log(2 * math.pi * math.e) + logdet)


# C(t): (B,) times -> (B, D, D) matrices of the linear transformation F(x, t) = C_t x.
LinearMap = Callable[[Tensor], Tensor]


def posterior_mean(
    spec: GaussianSpec, z: Tensor, alpha: Tensor, sigma: Tensor, c_t: Tensor | None = None
) -> Tensor:
    """E[x | z_t] for z_t = alpha C x + sigma eps, x ~ N(m, S); per example.

    z: (B, D); alpha, sigma: (B,); c_t: (B, D, D) or None for the identity.
    """
    dtype = z.dtype
    z = z.to(torch.float64)
    a = alpha.to(torch.float64).view(-1, 1, 1)
    s2 = (sigma.to(torch.float64) ** 2).view(-1, 1, 1)
    batch, dim = z.shape
    eye = torch.eye(dim, dtype=torch.float64)
    c = eye.expand(batch, dim, dim) if c_t is None else c_t.to(torch.float64)
    m, cov = spec.mean, spec.cov
    gain_left = cov @ c.transpose(1, 2) * a  # S C^T alpha, (B, D, D)
    cov_z = a**2 * (c @ cov @ c.transpose(1, 2)) + s2 * eye  # Cov[z_t], (B, D, D)
    resid = z - a.view(-1, 1) * (c @ m)  # z - alpha C m, (B, D)
    sol = torch.linalg.solve(cov_z, resid.unsqueeze(-1))
    return (m + (gain_left @ sol).squeeze(-1)).to(dtype)


class GaussianOracle(nn.Module):
    """The exact predictor x_hat(z_t, t) = E[x | z_t] for Gaussian data.

    It plays the role of the x_hat network (parameterization "x"), so the model
    built around it is the exact reverse process; estimators of the NELBO and
    the ODE likelihood must then reproduce the exact NLL up to the two ends.
    """

    def __init__(self, spec: GaussianSpec, schedule: nn.Module, linear_map: LinearMap | None = None):
        super().__init__()
        self.spec = spec
        # Held outside the module tree: the schedule belongs to the model.
        self.__dict__["_schedule"] = schedule
        self.linear_map = linear_map

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        v = self._schedule.values(t)
        c_t = None if self.linear_map is None else self.linear_map(t)
        return posterior_mean(self.spec, z, v.alpha, v.sigma, c_t)


def exact_elbo_terms(
    spec: GaussianSpec,
    model: nn.Module,
    linear_map: LinearMap | None = None,
    n_quad: int = 20000,
) -> dict[str, float]:
    """The exact expected NELBO terms (nats) of the Gaussian-oracle model, without sampling.

    For linear F(x, t) = C_t x and x_hat = E[x | z_t], x - x_hat has covariance
    P_t = Cov[x | z_t] (independent of z_t), and the continuous diffusion term is
        E L_diff(t) = SNR(t) / (2 gamma'(t)) tr(A_t P_t A_t^T),  A_t = gamma'(t) C_t - dC_t/dt.
    It is integrated over t by the midpoint rule in u = (gamma - gamma_0) / (gamma_1 - gamma_0),
    where the integrand is smooth for every schedule. The reconstruction term (Gaussian
    decoder around z_0 / alpha_0, F(x, 0) = x) and the prior term have closed forms.
    `model` is a DiffusionModel on continuous data with F = identity or a linear F.
    """
    from ndm.model.time_sampling import gamma_uniform_times

    dim = spec.dim
    sched = model.schedule
    dtype = torch.float64
    ends = sched.values(torch.tensor([0.0, 1.0], dtype=dtype))
    u = (torch.arange(n_quad, dtype=dtype) + 0.5) / n_quad
    t, dt_du = gamma_uniform_times(sched, u)  # midpoints in u; dt = du (gamma_1 - gamma_0) / gamma'(t)
    v = sched.values(t)
    eye = torch.eye(dim, dtype=dtype)
    if linear_map is None:
        c = eye.expand(n_quad, dim, dim)
        dc = torch.zeros(n_quad, dim, dim, dtype=dtype)
    else:
        c, dc = torch.func.jvp(linear_map, (t,), (torch.ones_like(t),))
    a = v.alpha.view(-1, 1, 1)
    s2 = (v.sigma**2).view(-1, 1, 1)
    cov = spec.cov
    gain = cov @ c.transpose(1, 2) * a
    cov_z = a**2 * (c @ cov @ c.transpose(1, 2)) + s2 * eye
    post_cov = cov - gain @ torch.linalg.solve(cov_z, gain.transpose(1, 2))
    amat = v.dgamma.view(-1, 1, 1) * c - dc
    integrand = v.snr / (2 * v.dgamma) * torch.einsum("bij,bjk,bik->b", amat, post_cov, amat)
    diffusion = (integrand * dt_du).mean().item()

    scale2 = (ends.sigma[0] / ends.alpha[0]).item() ** 2
    reconstruction = 0.5 * dim * math.log(2 * math.pi * scale2) + 0.5 * dim
    a1, s1 = ends.alpha[1].item(), ends.sigma[1].item()
    c1 = eye if linear_map is None else linear_map(torch.ones(1, dtype=dtype))[0]
    second_moment = torch.trace(c1 @ cov @ c1.T).item() + float((c1 @ spec.mean).pow(2).sum())
    prior = 0.5 * (dim * (s1**2 - 1.0 - math.log(s1**2)) + a1**2 * second_moment)
    total = reconstruction + diffusion + prior
    return {"reconstruction": reconstruction, "diffusion": diffusion, "prior": prior, "total": total}
