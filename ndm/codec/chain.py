"""The bits-back chain of a T-step model: which latent is popped or pushed with which Gaussian.

Latents z_l at t_l = l / T, l = 0..T (docs/compression.md). The model's T-step NELBO is
    E_q[ -log p(x | z_0) - sum_l log p(z_l | z_{l+1}) - log N(z_T; 0, I) + log q(z_{0..T} | x) ],
with p(z_l | z_{l+1}) = q(z_l | z_{l+1}, x_hat(z_{l+1}, t_{l+1})) (DiffusionModel.posterior, eta = 1)
and q(z_{0..T} | x) = q(z_T | x) prod_l q(z_l | z_{l+1}, x). Bits-back coding pops every latent
from q (gaining -log2 q) and pushes it with p (paying -log2 p), so the net code length is that
NELBO. Two orders code the same chain:

- "posterior" (any F): the encoder pops z_T ~ q(z_T | x), then z_l ~ q(z_l | z_{l+1}, x) down
  to z_0, pushes x, then z_0..z_{T-1} with p and z_T with the prior. The decoder needs x to push
  q back, and x is the last thing it decodes, so every latent is popped before anything is
  pushed: the initial bits cover all T + 1 latents of the first batch.
- "bitswap" (F = identity only): the forward step q(z_l | z_{l-1}) = N(alpha_{l|l-1} z_{l-1},
  r_l sigma_l^2), r_l = -expm1(gamma_{l-1} - gamma_l), does not depend on x, so pops and pushes
  interleave (Kingma et al. 2019, Bit-Swap) and the initial bits cover about two latents.
  For F != identity the forward step is N(alpha_{l|l-1} z_{l-1} + alpha_l (F_l(x) - F_{l-1}(x)), ...):
  it needs x, so NDM-family variants use "posterior".
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ndm.codec.ans import Stack
from ndm.model.diffusion import DiffusionModel, levels_to_data

ORDERS = ("posterior", "bitswap")
WINDOW_STDS = 10.0  # Gaussian mass beyond 10 std is 1.5e-23: below constriction's 2^-24 floor
_HALF_LOG2_2PIE = 0.5 * math.log2(2.0 * math.pi * math.e)


def model_tensor_kind(model: DiffusionModel) -> torch.Tensor:
    """A tensor with the model's dtype and device (its first parameter or buffer)."""
    for t in model.parameters():
        return t
    for t in model.buffers():
        return t
    return torch.zeros(())


def default_order(model: DiffusionModel) -> str:
    return "bitswap" if model.transform.is_identity else "posterior"


def check_order(model: DiffusionModel, order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "bitswap" and not model.transform.is_identity:
        raise ValueError("order 'bitswap' needs F = identity (its forward step must not depend on x); use 'posterior'")


@torch.no_grad()
def _schedule_table(model: DiffusionModel, steps: int) -> dict[str, list[float]]:
    """alpha, sigma, gamma at t_l = l / T as Python floats, computed once with the model's dtype."""
    p = model_tensor_kind(model)
    t = torch.arange(steps + 1, dtype=p.dtype, device=p.device) / steps
    v = model.values(t)
    return {k: getattr(v, k).double().cpu().tolist() for k in ("alpha", "sigma", "gamma")}


def latent_stds(model: DiffusionModel, steps: int, order: str) -> tuple[list[float], list[float]]:
    """Per level l: (std of the distribution z_l is popped from, std of the one it is pushed with)."""
    tab = _schedule_table(model, steps)
    sig, gam = tab["sigma"], tab["gamma"]
    r = [float("nan")] + [-math.expm1(gam[l - 1] - gam[l]) for l in range(1, steps + 1)]  # r_l for step (l-1, l)
    push = [math.sqrt(r[l + 1]) * sig[l] for l in range(steps)] + [1.0]
    if order == "posterior":
        pop = [math.sqrt(r[l + 1]) * sig[l] for l in range(steps)] + [sig[steps]]
    else:
        pop = [sig[0]] + [math.sqrt(r[l]) * sig[l] for l in range(1, steps + 1)]
    return pop, push


def latent_grid(model: DiffusionModel, steps: int, order: str, bins_per_std: float, window_stds: float = WINDOW_STDS) -> list[tuple[float, int]]:
    """(grid step delta_l, window W_l in grid steps) per level.

    delta_l: the smaller of the level's two stds over bins_per_std, so both discretised Gaussians
    are within O(1 / bins_per_std^2) of their densities and the grid's log delta cancels between
    pop and push. W_l: window_stds of the larger std (beyond it a value is coded by escape).
    """
    pop, push = latent_stds(model, steps, order)
    out = []
    for a, b in zip(pop, push):
        delta = min(a, b) / bins_per_std
        out.append((delta, int(math.ceil(window_stds * max(a, b) / delta))))
    return out


def level_pop_bits(model: DiffusionModel, steps: int, order: str, grid: list[tuple[float, int]]) -> list[float]:
    """Expected bits per example of the pop at each level (entropy of its discretised Gaussian)."""
    pop, _ = latent_stds(model, steps, order)
    return [model.dims * max(math.log2(s / d) + _HALF_LOG2_2PIE, 1.0) for s, (d, _) in zip(pop, grid)]


def pop_bits_per_example(model: DiffusionModel, steps: int, order: str, grid: list[tuple[float, int]]) -> float:
    """Expected bits one example takes off the stack before it pushes anything back (entropy of the
    discretised Gaussians it pops first): all T + 1 latents ("posterior"), z_0 and z_1 ("bitswap")."""
    pop, _ = latent_stds(model, steps, order)
    per_dim = [max(math.log2(s / d) + _HALF_LOG2_2PIE, 1.0) for s, (d, _) in zip(pop, grid)]
    first = per_dim if order == "posterior" else per_dim[:2]
    return model.dims * sum(first)


# ------------------------------------------------------------------------ distributions
def _times(x: Tensor, l: int, steps: int) -> Tensor:
    return torch.full((x.shape[0],), l / steps, dtype=x.dtype, device=x.device)


def _full(model: DiffusionModel, std: Tensor, like: Tensor) -> Tensor:
    return model._bc(std).expand_as(like)


def _posterior(model: DiffusionModel, z_next: Tensor, x: Tensor, l: int, steps: int) -> tuple[Tensor, Tensor]:
    """q(z_l | z_{l+1}, x): mean and std (full shape)."""
    mean, var = model.posterior(z_next, x, _times(x, l, steps), _times(x, l + 1, steps))
    return mean, _full(model, torch.sqrt(var), mean)


def _reverse(model: DiffusionModel, z_next: Tensor, l: int, steps: int) -> tuple[Tensor, Tensor]:
    """p(z_l | z_{l+1}) = q(z_l | z_{l+1}, x_hat(z_{l+1}, t_{l+1}))."""
    return _posterior(model, z_next, model.x_hat(z_next, _times(z_next, l + 1, steps)), l, steps)


def _forward(model: DiffusionModel, z_prev: Tensor, l: int, steps: int) -> tuple[Tensor, Tensor]:
    """q(z_l | z_{l-1}) = N(alpha_l / alpha_{l-1} z_{l-1}, r_l sigma_l^2) for F = identity."""
    vs, vt = model.values(_times(z_prev, l - 1, steps)), model.values(_times(z_prev, l, steps))
    r = -torch.expm1(vs.gamma - vt.gamma)
    mean = model._bc(vt.alpha / vs.alpha) * z_prev
    return mean, _full(model, vt.sigma * torch.sqrt(r), mean)


def _marginal(model: DiffusionModel, x: Tensor, l: int, steps: int) -> tuple[Tensor, Tensor]:
    mean, std = model.marginal(x, _times(x, l, steps))
    return mean, _full(model, std, mean)


def decoder_probs(model: DiffusionModel, z0: Tensor) -> Tensor:
    """p(x | z_0) per dimension as (B * D, K) probabilities: the categorical over the K levels of
    DiffusionModel.reconstruction_loss (logits -(mean - x_k)^2 / (2 scale^2)), in float64."""
    t0 = torch.zeros(z0.shape[0], dtype=z0.dtype, device=z0.device)
    s0 = model.values(t0)
    if model.transform.identity_at_zero:
        mean = z0 / model._bc(s0.alpha)
    else:
        mean = model.x_hat(z0, t0, s0)
    scale = model._bc(s0.sigma / s0.alpha)
    if model.decoder_log_scale is not None:
        scale = torch.sqrt(scale**2 + torch.exp(2.0 * model.decoder_log_scale).to(scale.dtype))
    scale = scale.expand_as(mean).reshape(-1, 1).double()
    x_k = levels_to_data(torch.arange(model.levels, device=z0.device), model.levels, dtype=torch.float64)
    logits = -((mean.reshape(-1, 1).double() - x_k) ** 2) / (2.0 * scale**2)
    return torch.softmax(logits, dim=-1)


def _zero_prior(like: Tensor) -> tuple[Tensor, Tensor]:
    return torch.zeros_like(like), torch.ones_like(like)


# ------------------------------------------------------------------------- one batch
def _no_scramble(level: int) -> None:
    return None


@torch.no_grad()
def encode_batch(
    stack: Stack, model: DiffusionModel, levels: Tensor, steps: int, order: str, grid: list[tuple[float, int]], scramble: Callable[[int], None] = _no_scramble
) -> None:
    """Push one batch of level indices (B, *event_shape) onto the stack by bits-back coding.

    scramble(l): called (order "bitswap") before the pop of z_l, l >= 1, which follows a push.
    """
    x = levels_to_data(levels, model.levels, dtype=model_tensor_kind(model).dtype)
    T = steps
    if order == "posterior":
        z: list[Tensor | None] = [None] * (T + 1)
        z[T] = stack.pop_gaussian(*_marginal(model, x, T, T), *grid[T], False)
        for l in range(T - 1, -1, -1):
            z[l] = stack.pop_gaussian(*_posterior(model, z[l + 1], x, l, T), *grid[l], False)
        stack.push_categorical(levels, decoder_probs(model, z[0]))
        for l in range(T):
            stack.push_gaussian(z[l], *_reverse(model, z[l + 1], l, T), *grid[l], True)
        stack.push_gaussian(z[T], *_zero_prior(z[T]), *grid[T], True)
        return
    prev = stack.pop_gaussian(*_marginal(model, x, 0, T), *grid[0], False)
    stack.push_categorical(levels, decoder_probs(model, prev))
    for l in range(1, T + 1):
        scramble(l)
        cur = stack.pop_gaussian(*_forward(model, prev, l, T), *grid[l], False)
        stack.push_gaussian(prev, *_reverse(model, cur, l - 1, T), *grid[l - 1], True)
        prev = cur
    stack.push_gaussian(prev, *_zero_prior(prev), *grid[T], True)


@torch.no_grad()
def decode_batch(
    stack: Stack, model: DiffusionModel, n: int, steps: int, order: str, grid: list[tuple[float, int]], scramble: Callable[[int], None] = _no_scramble
) -> Tensor:
    """Pop one batch of n examples: the exact inverse of encode_batch, step by step in reverse."""
    p = model_tensor_kind(model)
    T = steps
    like = torch.zeros((n, *model.event_shape), dtype=p.dtype, device=p.device)
    top = stack.pop_gaussian(*_zero_prior(like), *grid[T], True)
    if order == "posterior":
        z: list[Tensor | None] = [None] * (T + 1)
        z[T] = top
        for l in range(T - 1, -1, -1):
            z[l] = stack.pop_gaussian(*_reverse(model, z[l + 1], l, T), *grid[l], True)
        levels = stack.pop_categorical(decoder_probs(model, z[0])).view(like.shape).to(p.device)
        x = levels_to_data(levels, model.levels, dtype=p.dtype)
        for l in range(T):
            stack.push_gaussian(z[l], *_posterior(model, z[l + 1], x, l, T), *grid[l], False)
        stack.push_gaussian(z[T], *_marginal(model, x, T, T), *grid[T], False)
        return levels
    cur = top
    for l in range(T, 0, -1):
        prev = stack.pop_gaussian(*_reverse(model, cur, l - 1, T), *grid[l - 1], True)
        stack.push_gaussian(cur, *_forward(model, prev, l, T), *grid[l], False)
        scramble(l)
        cur = prev
    levels = stack.pop_categorical(decoder_probs(model, cur)).view(like.shape).to(p.device)
    x = levels_to_data(levels, model.levels, dtype=p.dtype)
    stack.push_gaussian(cur, *_marginal(model, x, 0, T), *grid[0], False)
    return levels
