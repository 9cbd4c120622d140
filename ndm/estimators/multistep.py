"""Few-step ODE solvers: DPM-Solver++(2M), its NDM generalisation, and EDM's Heun.

All three integrate the probability-flow ODE dz/dt = mu_t' + (sigma_t'/sigma_t)(z - mu_t),
mu_t = alpha_t F(x_hat(z, t), t), from t_0 = 1 to t_N = 0 on a given descending time grid
(ndm.estimators.time_grids), with lambda = -gamma / 2 = log(alpha / sigma). The derivations
are in docs/math.md, "Few-step samplers"; in short, with y = z / sigma and rho = alpha / sigma
= e^lambda the ODE is exactly

    dy/dt = d/dt [rho_t F(x, t)] at fixed x = x_hat(z_t, t),

so freezing x_hat over a step and integrating exactly gives DDIM, and extrapolating the
frozen-x increment linearly in lambda from the previous x_hat gives a second-order multistep
method:

    dpmpp-2m (F = identity)  z_s = (sigma_s/sigma_t) z_t - alpha_s expm1(-h) D,
                             D = (1 + 1/(2r)) x_hat_t - 1/(2r) x_hat_prev,  h = lambda_s - lambda_t,
                             r = h_prev / h  (first step: D = x_hat_t). Lu et al. 2022, alg. 2;
                             k-diffusion's sample_dpmpp_2m in VP variables.
    ndm-2m (any F)           z_s = (sigma_s/sigma_t) z_t + (1 + 1/(2r)) Delta(x_hat_t) - 1/(2r) Delta(x_hat_prev),
                             Delta(x) = alpha_s F(x, s) - (sigma_s/sigma_t) alpha_t F(x, t)
                             (first step: Delta(x_hat_t) alone, which is DDIM). For F = identity
                             Delta(x) = -alpha_s expm1(-h) x, i.e. dpmpp-2m.
    edm-heun (any F)         Heun's method on x = z / alpha in s = sigma / alpha = e^-lambda,
                             dx/ds = (x - D) / s, D = F(x_hat, t) + dF/dlambda(x_hat, t)
                             (D = x_hat for F = identity: Karras et al. 2022, alg. 1, without
                             its stochastic churn and without the final Euler step to s = 0,
                             since our grids end at s_0 > 0).

Costs per sample with N steps (x_hat network / learned F network):
    dpmpp-2m, ndm-2m: N x_hat calls; F: 2 on the first step and 3 on each later one (F(x_hat_t, t),
        F(x_hat_t, s), F(x_hat_prev, s); F(x_hat_prev, t) is kept from the step before), or one
        per step for a time-independent F (F(x_hat, s) = F(x_hat, t)).
    edm-heun: 2N x_hat calls; F: one forward-mode JVP (F and dF/dt) per x_hat call.
No maintained library fits (docs/math.md says why), so the solvers are written here.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ndm.model.diffusion import DiffusionModel


def _full(value: Tensor, like: Tensor) -> Tensor:
    """A (B,) vector of the scalar time `value` for the batch `like`."""
    return torch.full((like.shape[0],), float(value), device=like.device, dtype=like.dtype)


def _second_order_weights(h: Tensor, h_prev: Tensor | None) -> tuple[Tensor, Tensor]:
    """(1 + 1/(2r), 1/(2r)) with r = h_prev / h: the weights of the current and previous terms
    ((1, 0) on the first step, which has no previous term)."""
    if h_prev is None:
        return torch.ones_like(h), torch.zeros_like(h)
    c = h / (2.0 * h_prev)
    return 1.0 + c, c


def dpmpp_2m(model: DiffusionModel, z: Tensor, grid: Tensor, on_step: Callable[[], None] | None = None) -> Tensor:
    """DPM-Solver++(2M) in data prediction for F = identity: z at grid[0] -> z at grid[-1]."""
    if not model.transform.is_identity:
        raise ValueError("dpmpp_2m is DPM-Solver++(2M) for F = identity; use ndm_2m for a non-identity F")
    x_prev, h_prev = None, None
    for i in range(grid.shape[0] - 1):
        t, s = _full(grid[i], z), _full(grid[i + 1], z)
        vt, vs = model.values(t), model.values(s)
        x_hat = model.x_hat(z, t, vt)
        h = 0.5 * (vt.gamma - vs.gamma)  # lambda_s - lambda_t > 0
        w_cur, w_prev = _second_order_weights(h, h_prev)
        d = model._bc(w_cur) * x_hat if x_prev is None else model._bc(w_cur) * x_hat - model._bc(w_prev) * x_prev
        z = model._bc(vs.sigma / vt.sigma) * z - model._bc(vs.alpha * torch.expm1(-h)) * d
        x_prev, h_prev = x_hat, h
        if on_step is not None:
            on_step()
    return z


def ndm_2m(model: DiffusionModel, z: Tensor, grid: Tensor, on_step: Callable[[], None] | None = None) -> Tensor:
    """The second-order multistep exponential integrator for any F: z at grid[0] -> z at grid[-1].

    Delta(x) = alpha_s F(x, s) - (sigma_s/sigma_t) alpha_t F(x, t) is the exact change of
    z - (sigma_s/sigma_t) z_t over [t, s] with x_hat frozen at x; it is written as
    alpha_s (F(x, s) - F(x, t)) - alpha_s expm1(-h) F(x, t) so that short steps keep their digits.
    """
    transform = model.transform
    x_prev, f_prev_t, h_prev = None, None, None  # x_hat and F(x_hat, .) of the step before
    for i in range(grid.shape[0] - 1):
        t, s = _full(grid[i], z), _full(grid[i + 1], z)
        vt, vs = model.values(t), model.values(s)
        x_hat = model.x_hat(z, t, vt)
        h = 0.5 * (vt.gamma - vs.gamma)
        a_s, em1 = model._bc(vs.alpha), model._bc(torch.expm1(-h))
        b = x_hat.shape[0]
        if transform.is_identity:
            f_t = f_s = x_hat
            fp_t = fp_s = x_prev
        elif not transform.time_dependent:
            f_t = f_s = transform(x_hat, t)
            fp_t = fp_s = f_prev_t
        elif x_prev is None:
            f = transform(torch.cat([x_hat, x_hat]), torch.cat([t, s]))
            f_t, f_s = f[:b], f[b:]
        else:
            # One batched call: F(x_hat_t, t), F(x_hat_t, s), F(x_hat_prev, s).
            f = transform(torch.cat([x_hat, x_hat, x_prev]), torch.cat([t, s, s]))
            f_t, f_s, fp_s = f[:b], f[b : 2 * b], f[2 * b :]
            fp_t = f_prev_t
        delta = a_s * (f_s - f_t) - a_s * em1 * f_t
        z_next = model._bc(vs.sigma / vt.sigma) * z
        if x_prev is None:
            z_next = z_next + delta
        else:
            w_cur, w_prev = _second_order_weights(h, h_prev)
            delta_prev = a_s * (fp_s - fp_t) - a_s * em1 * fp_t
            z_next = z_next + model._bc(w_cur) * delta - model._bc(w_prev) * delta_prev
        z = z_next
        # F(x_hat_t, s) is the next step's F(x_hat_prev, t).
        x_prev, f_prev_t, h_prev = x_hat, f_s, h
        if on_step is not None:
            on_step()
    return z


def edm_denoiser(model: DiffusionModel, z: Tensor, t: Tensor) -> Tensor:
    """D(z, t) = F(x_hat, t) + dF/dlambda(x_hat, t), x_hat = x_hat(z, t); x_hat itself for F = identity.

    dF/dlambda = (dF/dt) / (dlambda/dt) = -2 (dF/dt) / gamma'(t).
    """
    v = model.values(t)
    x_hat = model.x_hat(z, t, v)
    if model.transform.is_identity:
        return x_hat
    f, df = model.transform.with_time_derivative(x_hat, t)
    return f - model._bc(2.0 / v.dgamma) * df


def edm_heun(model: DiffusionModel, z: Tensor, grid: Tensor, on_step: Callable[[], None] | None = None) -> Tensor:
    """Heun's method on dx/ds = (x - D) / s, x = z / alpha, s = sigma / alpha: z at grid[0] -> grid[-1]."""
    for i in range(grid.shape[0] - 1):
        t, s = _full(grid[i], z), _full(grid[i + 1], z)
        vt, vs = model.values(t), model.values(s)
        st, ss = model._bc(vt.sigma / vt.alpha), model._bc(vs.sigma / vs.alpha)
        x = z / model._bc(vt.alpha)
        d1 = (x - edm_denoiser(model, z, t)) / st
        x_euler = x + (ss - st) * d1
        d2 = (x_euler - edm_denoiser(model, x_euler * model._bc(vs.alpha), s)) / ss
        z = (x + 0.5 * (ss - st) * (d1 + d2)) * model._bc(vs.alpha)
        if on_step is not None:
            on_step()
    return z


def multistep_2m(model: DiffusionModel, z: Tensor, grid: Tensor, on_step: Callable[[], None] | None = None) -> Tensor:
    """The `dpmpp-2m` sampler: DPM-Solver++(2M) for F = identity, the NDM integrator otherwise."""
    solver = dpmpp_2m if model.transform.is_identity else ndm_2m
    return solver(model, z, grid, on_step)


__all__ = ["dpmpp_2m", "edm_denoiser", "edm_heun", "multistep_2m", "ndm_2m"]
