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

from .diffusion import DiffusionModel, bits_per_dim
from .schedules import invert_gamma


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


def stratified_uniform(n: int, k: int, generator: torch.Generator | None, device, dtype) -> Tensor:
    """(n, k) samples u_ij = (u_i + j / k) mod 1: each row stratified, each entry U(0, 1)."""
    u0 = torch.rand(n, 1, generator=generator, device=device, dtype=dtype)
    return torch.remainder(u0 + torch.arange(k, device=device, dtype=dtype) / k, 1.0)


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
    much less variance for schedules that are steep at an end.
    """
    n, k = x.shape[0], n_time_samples
    u = stratified_uniform(n, k, generator, x.device, x.dtype).reshape(-1)
    if importance:
        ends = model.values(torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype))
        g0, g1 = ends.gamma[0], ends.gamma[1]
        t = invert_gamma(model.schedule, g0 + u * (g1 - g0))
        weight = (g1 - g0) / model.values(t).dgamma
    else:
        t, weight = u, torch.ones_like(u)
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
    if n_step_samples is None or n_step_samples >= n_steps:
        m = n_steps
        i = torch.arange(1, n_steps + 1, device=x.device).repeat(n)
    else:
        m = n_step_samples
        u = stratified_uniform(n, m, generator, x.device, torch.float64).reshape(-1)
        i = (torch.floor(u * n_steps).long() + 1).clamp(1, n_steps)
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
