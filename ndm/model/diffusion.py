"""The NDM model family: marginals, posterior, x_hat, the NELBO and bits/dim.

Forward marginal q(z_t | x) = N(alpha_t F(x, t), sigma_t^2 I); reverse step
p_theta(z_s | z_t) = q(z_s | z_t, x = x_hat_theta(z_t, t)). The NELBO
    -log p(x) <= L_recon + L_diff + L_prior
is written out, with its discrete and continuous diffusion terms and the one method that
computes each term, in docs/math.md "The NELBO"; `DiffusionModel.nelbo` is that sum.
All losses are per example, in nats; `bits_per_dim` converts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ndm.model.schedules import Schedule, ScheduleValues
from ndm.model.time_sampling import BatchRows, draw_noise, draw_steps, draw_times, global_batch_rows
from ndm.model.specs import PARAMETERIZATIONS
from ndm.model.transforms import SeparableTransform, Transform


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """Negative log-likelihood in nats per example -> bits per dimension: nats / (D ln 2).

    The package's only conversion; bits_per_dim(1.0, D) is the factor per nat.
    """
    return nats / (dims * math.log(2.0))


def data_to_levels(x: Tensor, levels: int) -> Tensor:
    """Inverse of x = 2 (k + 1/2) / K - 1: the level index k (long)."""
    return torch.round((x + 1.0) * levels / 2.0 - 0.5).clamp(0, levels - 1).long()


def levels_to_data(level: Tensor, levels: int, dtype=torch.float32) -> Tensor:
    """x = 2 (k + 1/2) / K - 1 in [-1, 1] for level index k (docs/data.md)."""
    return (2.0 * (level.to(dtype) + 0.5) / levels - 1.0).to(dtype)


@dataclass
class NelboTerms:
    """The three NELBO terms per example, in nats, each (B,)."""

    reconstruction: Tensor
    diffusion: Tensor
    prior: Tensor

    @property
    def total(self) -> Tensor:
        return self.reconstruction + self.diffusion + self.prior


class DiffusionModel(nn.Module):
    """One NDM: a schedule, a transformation F, and a network giving x_hat_theta(z_t, t)."""

    def __init__(
        self,
        schedule: Schedule,
        transform: Transform,
        net: nn.Module,
        *,
        event_shape: tuple[int, ...],
        levels: int | None,
        parameterization: str = "v",
    ):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        if parameterization == "eps" and not transform.is_identity:
            raise ValueError(
                "parameterization 'eps' needs F = identity (x_hat = (z - sigma eps) / alpha inverts "
                "only the identity); use 'v' or 'x' for learned or fixed non-identity F"
            )
        self.schedule = schedule
        self.transform = transform
        self.net = net
        self.event_shape = tuple(event_shape)
        self.levels = levels
        self.parameterization = parameterization
        # Mixed precision for the x_hat network only (None = off). Not for F: the loss weights
        # dF/dt errors by SNR(t) / gamma'(t) (~3e4 at t = 0 for VDM's schedule), so bf16's 2^-8
        # rounding of F's output would dominate the loss at low noise (docs/performance.md).
        self.x_hat_autocast: torch.dtype | None = None
        # When F(x, 0) != x (ndm-latent) the decoder reads x off z_0 through x_hat(z_0, 0),
        # which cannot invert F to within sigma_0 / alpha_0 (1e-3 for VDM's schedule): a
        # decoder of that width would put almost no mass on the right level. Any p(x | z_0)
        # keeps the bound valid, so such models learn the decoder's extra width s_dec:
        # scale^2 = (sigma_0 / alpha_0)^2 + s_dec^2, initialised at one bin (or 0.1).
        self.decoder_log_scale: nn.Parameter | None = None
        if not transform.identity_at_zero:
            init = 2.0 / levels if levels else 0.1
            self.decoder_log_scale = nn.Parameter(torch.tensor(math.log(init)))

    def use_precision(self, precision: str) -> DiffusionModel:
        """train.precision / eval.precision: "bf16" runs x_hat under bf16 autocast (any device),
        "fp32" turns it off. Only x_hat: gamma, alpha, sigma, F, dF/dt and every term of the
        NELBO stay in the model's dtype."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.x_hat_autocast = torch.bfloat16 if precision == "bf16" else None
        return self

    # ------------------------------------------------------------------ basics
    @property
    def dims(self) -> int:
        return int(math.prod(self.event_shape))

    def _bc(self, per_example: Tensor) -> Tensor:
        """(B,) -> (B, 1, ..., 1) to broadcast against data."""
        return per_example.view(-1, *([1] * len(self.event_shape)))

    @staticmethod
    def _sum(per_dim: Tensor) -> Tensor:
        """Sum over all but the batch dimension."""
        return per_dim.flatten(1).sum(1)

    def values(self, t: Tensor) -> ScheduleValues:
        return self.schedule.values(t)

    def marginal(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean alpha_t F(x, t) and std sigma_t (as (B,)) of q(z_t | x)."""
        sched_t = self.values(t)
        return self._bc(sched_t.alpha) * self.transform(x, t), sched_t.sigma

    def x_hat(self, z: Tensor, t: Tensor, sched_t: ScheduleValues | None = None) -> Tensor:
        """The network's prediction of x from z_t, through the parameterization.

        eps: x_hat = (z - sigma eps_hat) / alpha (identity F only);
        x:   x_hat = NN(z, t);
        v:   x_hat = alpha z / (alpha^2 + sigma^2) + sigma / sqrt(alpha^2 + sigma^2) NN(z, t),
             the linear skip that is optimal for unit-variance data plus a scaled
             residual; for variance-preserving schedules this is v-prediction.

        With `x_hat_autocast` set (train.precision bf16) the network runs under autocast in
        that dtype and its output is cast back; F and the loss stay in the model's dtype.
        """
        if self.x_hat_autocast is not None:
            with torch.autocast(z.device.type, dtype=self.x_hat_autocast):
                out = self.net(z, t)
            out = out.to(z.dtype)
        else:
            out = self.net(z, t)
        if self.parameterization == "x":
            return out
        sched_t = self.values(t) if sched_t is None else sched_t
        a, s = self._bc(sched_t.alpha), self._bc(sched_t.sigma)
        if self.parameterization == "eps":
            return (z - s * out) / a
        norm2 = a**2 + s**2
        return a * z / norm2 + s / torch.sqrt(norm2) * out

    # ------------------------------------------------------------- posterior
    def posterior(
        self, z_t: Tensor, x: Tensor, s: Tensor, t: Tensor, eta: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance (as (B,)) of q(z_s | z_t, x); eta = 1 ancestral, eta = 0 DDIM.

        The variance is eta^2 r sigma_s^2, r sigma_s^2 the Markovian (DDPM) posterior variance,
        r = 1 - SNR(t) / SNR(s) = -expm1(gamma_s - gamma_t) (docs/math.md).
        """
        sched_s, sched_t = self.values(s), self.values(t)
        r = -torch.expm1(sched_s.gamma - sched_t.gamma)
        var = eta**2 * r * sched_s.sigma**2
        coef = torch.sqrt(torch.clamp(sched_s.sigma**2 - var, min=0.0)) / sched_t.sigma
        f_s, f_t = self.transform(x, s), self.transform(x, t)
        mean = self._bc(sched_s.alpha) * f_s + self._bc(coef) * (z_t - self._bc(sched_t.alpha) * f_t)
        return mean, var

    # ---------------------------------------------------------------- drifts
    def drifts(self, z: Tensor, t: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Forward, reverse and probability-flow drifts at (z, t) given x (docs/math.md).

        f = mu' + (sigma'/sigma - g^2/(2 sigma^2)) (z - mu)      forward SDE
        b = mu' + (sigma'/sigma + g^2/(2 sigma^2)) (z - mu)      reverse SDE
        h = mu' + (sigma'/sigma) (z - mu)                        probability-flow ODE
        with mu = alpha F(x, t), mu' = alpha' F + alpha dF/dt, g^2 = sigma^2 gamma'.
        """
        sched_t = self.values(t)
        f_x, df_x = self.transform.with_time_derivative(x, t)
        mu = self._bc(sched_t.alpha) * f_x
        dmu = self._bc(sched_t.dalpha) * f_x + self._bc(sched_t.alpha) * df_x
        k = self._bc(sched_t.dsigma / sched_t.sigma)
        half_g2_over_s2 = self._bc(0.5 * sched_t.dgamma)  # g^2 / (2 sigma^2) = gamma' / 2
        return {
            "forward": dmu + (k - half_g2_over_s2) * (z - mu),
            "reverse": dmu + (k + half_g2_over_s2) * (z - mu),
            "ode": dmu + k * (z - mu),
            "g2": sched_t.g2,
        }

    # ------------------------------------------------------------- the NELBO
    # docs/math.md "The NELBO": L_recon reconstruction_loss; L_diff diffusion_loss at drawn times
    # (continuous) or diffusion_loss_discrete (T steps); L_prior prior_loss. nelbo is their sum.
    def nelbo(
        self,
        x: Tensor,
        n_steps: int | None = None,
        t: Tensor | None = None,
        variance_box: dict | None = None,
        time_sampling: str = "uniform",
        rows: BatchRows | None = None,
    ) -> NelboTerms:
        """One-sample NELBO terms per example: L_recon + L_diff + L_prior (docs/math.md "The NELBO").

        n_steps None: continuous time, L_diff = w(t) L_diff(t) with (t, w) drawn by
        `time_sampling` ("uniform": w = 1; "gamma": uniform in gamma, w = (gamma_1 - gamma_0) /
        gamma'(t)), or at the given t with w = 1. n_steps = T: L_diff = T KL_i at a uniform step i.
        variance_box: the learned schedule's gradient hook (training_loss fills it).
        Random draws, in this order: eps_0 (z_0), eps_t (z_t), then the times or the step; with
        rows (x = those rows of a global batch), each is the global batch's draw at these rows.
        """
        eps_0, eps_t = draw_noise(x, rows), draw_noise(x, rows)
        f_fixed = self._time_independent_f(x)
        reconstruction = self.reconstruction_loss(x, eps_0, f0=f_fixed)
        if n_steps is None:
            if t is None:
                t, weight = draw_times(self.schedule, x.shape[0], sampling=time_sampling, device=x.device, dtype=x.dtype, rows=rows)
            else:
                weight = torch.ones_like(t)
            diffusion_at_t, _, f1 = self._diffusion_loss_and_f1(x, t, eps_t, variance_box, f_fixed, want_f1=True)
            diffusion = diffusion_at_t * weight
        else:
            diffusion, f1 = self.diffusion_loss_discrete(x, n_steps, eps_t, draw_steps(n_steps, x.shape[0], device=x.device, rows=rows)), f_fixed
        prior = self.prior_loss(x, f1)
        return NelboTerms(reconstruction, diffusion, prior)

    def _time_independent_f(self, x: Tensor) -> Tensor | None:
        """F(x) when F does not depend on t (ndm-latent), else None.

        Saves two F passes per step: this one pass is F(x, 0) of the reconstruction term,
        F(x, t) of the diffusion term (with dF/dt = 0: no forward-mode pass) and F(x, 1) of the
        prior term.
        """
        if self.transform.time_dependent:
            return None
        return self.transform(x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))

    # ------------------------------------------------------------ the terms
    def reconstruction_loss(self, x: Tensor, eps: Tensor, f0: Tensor | None = None) -> Tensor:
        """L_recon = E_q[-log p(x | z_0)] (one sample), nats per example.

        The decoder reads x off z_0: its mean is z_0 / alpha_0 when F(x, 0) = x (VDM's
        decoder), else x_hat(z_0, 0); its scale is sigma_0 / alpha_0. For data with K
        levels it is a categorical over the levels with logits -(mean - x_k)^2 / (2 scale^2)
        (VDM); for continuous data a Gaussian density. f0: F(x, 0) when the caller has it.
        """
        t0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        sched_0 = self.values(t0)
        if self.transform.identity_at_zero:  # F(x, 0) = x by construction: no F network pass
            z0 = self._bc(sched_0.alpha) * x + self._bc(sched_0.sigma) * eps
            mean = z0 / self._bc(sched_0.alpha)
        else:
            z0 = self._bc(sched_0.alpha) * (self.transform(x, t0) if f0 is None else f0) + self._bc(sched_0.sigma) * eps
            mean = self.x_hat(z0, t0, sched_0)
        scale = self._bc(sched_0.sigma / sched_0.alpha)
        if self.decoder_log_scale is not None:
            scale = torch.sqrt(scale**2 + torch.exp(2.0 * self.decoder_log_scale).to(scale.dtype))
        if self.levels is None:
            nll = 0.5 * ((x - mean) / scale) ** 2 + torch.log(scale) + 0.5 * math.log(2 * math.pi)
            return self._sum(nll)
        return self._sum(discretized_nll(x, mean, scale, self.levels, max_scale=self.reconstruction_scale_bound()))

    def reconstruction_scale_bound(self) -> float | None:
        """sigma_0 / alpha_0 = exp(gamma(0) / 2) as a Python float for a fixed schedule (computed
        once on the CPU, so the reconstruction term's window needs no host-device sync); None
        for a learned schedule, whose gamma(0) is a parameter on the device."""
        if self.schedule.learned or any(True for _ in self.schedule.parameters()) or self.decoder_log_scale is not None:
            return None
        cached = getattr(self, "_scale_bound_cache", None)
        if cached is None:  # one sync, once (fixed schedules hold no tensors, so this is CPU work)
            buffers = list(self.schedule.buffers())
            t0 = torch.zeros(1, dtype=torch.float64, device=buffers[0].device if buffers else "cpu")
            sched_0 = self.schedule.values(t0)
            cached = float((sched_0.sigma / sched_0.alpha)[0]) * (1.0 + 1e-6)
            self._scale_bound_cache = cached
        return cached

    def prior_loss(self, x: Tensor, f1: Tensor | None = None) -> Tensor:
        """L_prior = KL(q(z_1 | x) || N(0, I)) = 1/2 sum (sigma_1^2 + alpha_1^2 F(x,1)^2 - 1 - log sigma_1^2).

        f1: F(x, 1) when the caller already has it (nelbo gets it from the diffusion term's pass).
        """
        t1 = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        sched_1 = self.values(t1)
        f1 = self.transform(x, t1) if f1 is None else f1
        s2 = self._bc(sched_1.sigma**2)
        kl = 0.5 * (s2 + self._bc(sched_1.alpha**2) * f1**2 - 1.0 - torch.log(s2))
        return self._sum(kl)

    def diffusion_loss(
        self, x: Tensor, t: Tensor, eps: Tensor, variance_box: dict | None = None
    ) -> tuple[Tensor, Tensor]:
        """Continuous-time diffusion term L_diff(t) at times t (one z_t sample each); returns (L_diff, x_hat).

        L_diff(t) = SNR(t) / (2 gamma') || gamma' dF_t - d/dt dF_t ||^2, dF_t = F(x,t) - F(x_hat,t),
        dF/dt at fixed x and at fixed x = x_hat: one forward-mode pass in t at each point (the
        pass at x also gives the F(x, t) of z_t, so no point is evaluated twice). For
        F = identity it is VDM's 1/2 gamma'(t) SNR(t) ||x - x_hat||^2.
        """
        loss, x_hat, _ = self._diffusion_loss_and_f1(x, t, eps, variance_box)
        return loss, x_hat

    def _diffusion_loss_and_f1(
        self, x: Tensor, t: Tensor, eps: Tensor, variance_box: dict | None = None,
        f_fixed: Tensor | None = None, want_f1: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """diffusion_loss, plus F(x, 1) for the prior term when it comes with the same F pass (else None).

        Saves one F pass per step for a separable F (F(x, t) = sum_r a_r(t) G_r(x): F(x, 1) is a
        second combination of the same G(x), asked for by want_f1) and for a time-independent F
        (f_fixed = F(x): it is F(x, t) and F(x, 1), with dF/dt = 0, so no forward-mode pass).
        F = identity gives F(x, 1) = x.
        """
        sched_t = self.schedule.values(t, variance_box)
        if self.transform.is_identity:
            z = self._bc(sched_t.alpha) * x + self._bc(sched_t.sigma) * eps
            x_hat = self.x_hat(z, t, sched_t)
            return 0.5 * sched_t.snr * sched_t.dgamma * self._sum((x - x_hat) ** 2), x_hat, x
        f1 = None
        if f_fixed is not None:
            f_x, df_x, f1 = f_fixed, torch.zeros_like(f_fixed), f_fixed
        elif want_f1 and isinstance(self.transform, SeparableTransform):
            f_x, df_x, f1 = self.transform.with_time_derivative_and_value(x, t, torch.ones_like(t))
        else:
            f_x, df_x = self.transform.with_time_derivative(x, t)
        z = self._bc(sched_t.alpha) * f_x + self._bc(sched_t.sigma) * eps
        x_hat = self.x_hat(z, t, sched_t)
        f_hat, df_hat = self.transform.with_time_derivative(x_hat, t)
        resid = self._bc(sched_t.dgamma) * (f_x - f_hat) - (df_x - df_hat)
        return 0.5 * sched_t.snr / sched_t.dgamma * self._sum(resid**2), x_hat, f1

    def diffusion_kl_step(self, x: Tensor, i: Tensor, n_steps: int, eps: Tensor) -> Tensor:
        """KL_i = KL(q(z_s|z_t,x) || p(z_s|z_t)) for step i in 1..T (s = (i-1)/T, t = i/T), one z_t sample.

        KL_i = SNR(s) / (2 r) || r dF_t + (dF_s - dF_t) ||^2, r = -expm1(gamma_s - gamma_t): for
        F = identity VDM's 1/2 (SNR(s) - SNR(t)) ||x - x_hat||^2, accurate for T = 10^4 steps.
        """
        t = i.to(x.dtype) / n_steps
        s = (i.to(x.dtype) - 1.0) / n_steps
        sched_s, sched_t = self.values(s), self.values(t)
        f_xt = self.transform(x, t)
        z_t = self._bc(sched_t.alpha) * f_xt + self._bc(sched_t.sigma) * eps
        x_hat = self.x_hat(z_t, t, sched_t)
        r = -torch.expm1(sched_s.gamma - sched_t.gamma)
        if self.transform.is_identity:
            return 0.5 * sched_s.snr * r * self._sum((x - x_hat) ** 2)
        f = self.transform(torch.cat([x_hat, x, x_hat]), torch.cat([t, s, s]))
        n = x.shape[0]
        delta_t = f_xt - f[:n]
        delta_s = f[n : 2 * n] - f[2 * n :]
        return 0.5 * sched_s.snr / r * self._sum((self._bc(r) * delta_t + (delta_s - delta_t)) ** 2)

    def diffusion_loss_discrete(self, x: Tensor, n_steps: int, eps: Tensor, i: Tensor | None = None) -> Tensor:
        """T-step diffusion term: T * KL_i at a uniformly drawn step i (unbiased for sum_i KL_i)."""
        if i is None:
            i = draw_steps(n_steps, x.shape[0], device=x.device)
        return n_steps * self.diffusion_kl_step(x, i, n_steps, eps)
    def training_loss(
        self, x: Tensor, n_steps: int | None = None, time_sampling: str = "uniform", rows: BatchRows | None = None
    ) -> tuple[Tensor, NelboTerms]:
        """Mean NELBO in bits/dim for a batch, with VDM's variance objective for learned schedules
        (a learned "variance" schedule's interior gets the gradient of mean(L_diff^2), its end points
        and all networks the NELBO's: LearnedSchedule). With rows (x = those rows of a global
        batch) every random draw, the networks' dropout masks included, is the global batch's."""
        box: dict = {}
        with global_batch_rows(rows):
            terms = self.nelbo(x, n_steps=n_steps, variance_box=box if n_steps is None else None, time_sampling=time_sampling, rows=rows)
        bits_per_nat = bits_per_dim(1.0, self.dims)
        box["weight"] = 2.0 * terms.diffusion.detach() * bits_per_nat
        return terms.total.mean() * bits_per_nat, terms


def discretized_nll(x: Tensor, mean: Tensor, scale: Tensor, levels: int, max_scale: float | None = None) -> Tensor:
    """-log p(level | mean) per dimension for a categorical over K levels with Gaussian-shaped logits.

    logits_k = -(mean - x_k)^2 / (2 scale^2), x_k = 2 (k + 1/2) / K - 1, `level` the k of x.
    Only levels within 10 scales of the mean (plus one bin) carry weight above e^-45 of
    the largest, so the normaliser is summed over that window: exact to float precision
    and O(window) memory instead of O(K).

    max_scale: an upper bound on scale as a Python float (fixed schedules know it); without
    it the window is read off the scale tensor, a host-device sync on a GPU.
    """
    level = data_to_levels(x, levels)
    bin_width = 2.0 / levels
    if max_scale is None:
        max_scale = float(scale.detach().max())
    half = int(min(levels, math.ceil(10.0 * max_scale / bin_width) + 1))
    center = data_to_levels(mean.detach(), levels)
    offsets = torch.arange(-half, half + 1, device=x.device)
    k = center.unsqueeze(-1) + offsets  # (..., W)
    valid = (k >= 0) & (k < levels)
    x_k = levels_to_data(k.clamp(0, levels - 1), levels, dtype=mean.dtype)
    logits = -((mean.unsqueeze(-1) - x_k) ** 2) / (2.0 * scale.unsqueeze(-1) ** 2)
    logits = torch.where(valid, logits, torch.full_like(logits, -torch.inf))
    log_norm = torch.logsumexp(logits, dim=-1)
    # The true level may fall outside the window only when the mean is far off (a
    # hopeless prediction); its logit is computed directly, so the loss stays exact.
    x_level = levels_to_data(level, levels, dtype=mean.dtype)
    logit_level = -((mean - x_level) ** 2) / (2.0 * scale**2)
    outside = (level - center).abs() > half
    log_norm = torch.logaddexp(log_norm, torch.where(outside, logit_level, torch.full_like(logit_level, -torch.inf)))
    return log_norm - logit_level
