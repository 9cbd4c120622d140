"""The NDM model family: marginals, posterior, x_hat, NELBO terms and bits/dim.

Notation follows DESIGN.md section 3. Forward marginal
    q(z_t | x) = N(alpha_t F(x, t), sigma_t^2 I),
reverse step p_theta(z_s | z_t) = q(z_s | z_t, x = x_hat_theta(z_t, t)), with the posterior
    q(z_s | z_t, x) = N(alpha_s F(x,s) + sqrt(sigma_s^2 - v) (z_t - alpha_t F(x,t)) / sigma_t, v I),
    v = (sigma_t^2 - (alpha_t^2 / alpha_s^2) sigma_s^2) sigma_s^2 / sigma_t^2 = r sigma_s^2,
    r = 1 - SNR(t) / SNR(s) = -expm1(gamma_s - gamma_t).
All losses are per example, in nats; `bits_per_dim` converts.

Two identities used below (derived in docs/math.md, checked in tests):

Discrete KL term. With dF_u = F(x, u) - F(x_hat, u),
    KL(q(z_s|z_t,x) || p(z_s|z_t)) = SNR(s) / (2 r) || r dF_t + (dF_s - dF_t) ||^2,
which for F = identity is VDM's 1/2 (SNR(s) - SNR(t)) ||x - x_hat||^2. Written with r
from expm1 it stays accurate for T = 10^4 steps.

Continuous diffusion term. With the forward SDE's g^2 = sigma^2 gamma' and the reverse
drift b(z, t, x) = mu_t' + (sigma'/sigma + g^2 / (2 sigma^2)) (z - mu_t), mu_t = alpha_t F(x, t),
    b(z,t,x) - b(z,t,x_hat) = -alpha_t (gamma' dF_t - d/dt dF_t),
so  L_diff = 1/2 ||b(x) - b(x_hat)||^2 / g^2 = SNR(t) / (2 gamma') || gamma' dF_t - d/dt dF_t ||^2,
which for F = identity is VDM's 1/2 gamma'(t) SNR(t) ||x - x_hat||^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ndm.model.schedules import Schedule, ScheduleValues
from ndm.model.transforms import SeparableTransform, Transform

PARAMETERIZATIONS = ("eps", "x", "v")


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """Negative log-likelihood in nats per example -> bits per dimension."""
    return nats / (dims * math.log(2.0))


def antithetic_times(batch: int, *, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> Tensor:
    """VDM's low-discrepancy time sampler: t_i = (u_0 + i / B) mod 1, marginally U(0, 1)."""
    u0 = torch.rand((), generator=generator, device=device, dtype=dtype)
    return torch.remainder(u0 + torch.arange(batch, device=device, dtype=dtype) / batch, 1.0)


def data_to_levels(x: Tensor, levels: int) -> Tensor:
    """Inverse of x = 2 (v + 1/2) / K - 1: the level index v (long)."""
    return torch.round((x + 1.0) * levels / 2.0 - 0.5).clamp(0, levels - 1).long()


def levels_to_data(v: Tensor, levels: int, dtype=torch.float32) -> Tensor:
    """x = 2 (v + 1/2) / K - 1 in [-1, 1] (DESIGN.md section 3)."""
    return (2.0 * (v.to(dtype) + 0.5) / levels - 1.0).to(dtype)


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

    # ------------------------------------------------------------------ basics
    @property
    def dims(self) -> int:
        return int(math.prod(self.event_shape))

    def _bc(self, v: Tensor) -> Tensor:
        """(B,) -> (B, 1, ..., 1) to broadcast against data."""
        return v.view(-1, *([1] * len(self.event_shape)))

    @staticmethod
    def _sum(v: Tensor) -> Tensor:
        """Sum over all but the batch dimension."""
        return v.flatten(1).sum(1)

    def values(self, t: Tensor) -> ScheduleValues:
        return self.schedule.values(t)

    def marginal(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean alpha_t F(x, t) and std sigma_t (as (B,)) of q(z_t | x)."""
        v = self.values(t)
        return self._bc(v.alpha) * self.transform(x, t), v.sigma

    def x_hat(self, z: Tensor, t: Tensor, v: ScheduleValues | None = None) -> Tensor:
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
        v = self.values(t) if v is None else v
        a, s = self._bc(v.alpha), self._bc(v.sigma)
        if self.parameterization == "eps":
            return (z - s * out) / a
        norm2 = a**2 + s**2
        return a * z / norm2 + s / torch.sqrt(norm2) * out

    # ------------------------------------------------------------- posterior
    def posterior(
        self, z_t: Tensor, x: Tensor, s: Tensor, t: Tensor, eta: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance (as (B,)) of q(z_s | z_t, x); eta = 1 ancestral, eta = 0 DDIM.

        The variance is eta^2 v with v the Markovian (DDPM) posterior variance.
        """
        vs, vt = self.values(s), self.values(t)
        r = -torch.expm1(vs.gamma - vt.gamma)
        var = eta**2 * r * vs.sigma**2
        coef = torch.sqrt(torch.clamp(vs.sigma**2 - var, min=0.0)) / vt.sigma
        f_s, f_t = self.transform(x, s), self.transform(x, t)
        mean = self._bc(vs.alpha) * f_s + self._bc(coef) * (z_t - self._bc(vt.alpha) * f_t)
        return mean, var

    # ---------------------------------------------------------------- drifts
    def drifts(self, z: Tensor, t: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Forward, reverse and probability-flow drifts at (z, t) given x (DESIGN.md section 3).

        f = mu' + (sigma'/sigma - g^2/(2 sigma^2)) (z - mu)      forward SDE
        b = mu' + (sigma'/sigma + g^2/(2 sigma^2)) (z - mu)      reverse SDE
        h = mu' + (sigma'/sigma) (z - mu)                        probability-flow ODE
        with mu = alpha F(x, t), mu' = alpha' F + alpha dF/dt, g^2 = sigma^2 gamma'.
        """
        v = self.values(t)
        f_x, df_x = self.transform.with_time_derivative(x, t)
        mu = self._bc(v.alpha) * f_x
        dmu = self._bc(v.dalpha) * f_x + self._bc(v.alpha) * df_x
        k = self._bc(v.dsigma / v.sigma)
        half_g2_over_s2 = self._bc(0.5 * v.dgamma)  # g^2 / (2 sigma^2) = gamma' / 2
        return {
            "forward": dmu + (k - half_g2_over_s2) * (z - mu),
            "reverse": dmu + (k + half_g2_over_s2) * (z - mu),
            "ode": dmu + k * (z - mu),
            "g2": v.g2,
        }

    # ---------------------------------------------------------- NELBO terms
    def reconstruction_loss(self, x: Tensor, eps: Tensor, f0: Tensor | None = None) -> Tensor:
        """E_q[-log p(x | z_0)] (one sample), nats per example.

        The decoder reads x off z_0: its mean is z_0 / alpha_0 when F(x, 0) = x (VDM's
        decoder), else x_hat(z_0, 0); its scale is sigma_0 / alpha_0. For data with K
        levels it is a categorical over the levels with logits -(mean - x_k)^2 / (2 scale^2)
        (VDM); for continuous data a Gaussian density. f0: F(x, 0) when the caller has it.
        """
        t0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        v0 = self.values(t0)
        if self.transform.identity_at_zero:  # F(x, 0) = x by construction: no F network pass
            z0 = self._bc(v0.alpha) * x + self._bc(v0.sigma) * eps
            mean = z0 / self._bc(v0.alpha)
        else:
            z0 = self._bc(v0.alpha) * (self.transform(x, t0) if f0 is None else f0) + self._bc(v0.sigma) * eps
            mean = self.x_hat(z0, t0, v0)
        scale = self._bc(v0.sigma / v0.alpha)
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
            v0 = self.schedule.values(t0)
            cached = float((v0.sigma / v0.alpha)[0]) * (1.0 + 1e-6)
            self._scale_bound_cache = cached
        return cached

    def prior_loss(self, x: Tensor, f1: Tensor | None = None) -> Tensor:
        """KL(q(z_1 | x) || N(0, I)) = 1/2 sum (sigma_1^2 + alpha_1^2 F(x,1)^2 - 1 - log sigma_1^2).

        f1: F(x, 1) when the caller already has it (nelbo gets it from the diffusion term's pass).
        """
        t1 = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        v1 = self.values(t1)
        f1 = self.transform(x, t1) if f1 is None else f1
        s2 = self._bc(v1.sigma**2)
        kl = 0.5 * (s2 + self._bc(v1.alpha**2) * f1**2 - 1.0 - torch.log(s2))
        return self._sum(kl)

    def diffusion_loss(
        self, x: Tensor, t: Tensor, eps: Tensor, variance_box: dict | None = None
    ) -> tuple[Tensor, Tensor]:
        """Continuous-time diffusion term at times t (one sample each); returns (L_diff, x_hat).

        L_diff = SNR(t) / (2 gamma') || gamma' dF - d/dt dF ||^2 with dF = F(x,t) - F(x_hat,t),
        dF/dt at fixed x and at fixed x = x_hat: one forward-mode pass in t at each point (the
        pass at x also gives the F(x, t) of z_t, so no point is evaluated twice).
        """
        loss, x_hat, _ = self._diffusion_terms(x, t, eps, variance_box)
        return loss, x_hat

    def _diffusion_terms(
        self,
        x: Tensor,
        t: Tensor,
        eps: Tensor,
        variance_box: dict | None = None,
        t_prior: Tensor | None = None,
        f_static: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """diffusion_loss, plus F(x, t_prior) when asked (a separable F gives it from the same pass).

        f_static: F(x) of a time-independent F (the caller's one pass serves every t).
        """
        v = self.schedule.values(t, variance_box)
        if self.transform.is_identity:
            z = self._bc(v.alpha) * x + self._bc(v.sigma) * eps
            x_hat = self.x_hat(z, t, v)
            return 0.5 * v.snr * v.dgamma * self._sum((x - x_hat) ** 2), x_hat, (None if t_prior is None else x)
        f_prior = None
        if f_static is not None:
            f_x, df_x, f_prior = f_static, torch.zeros_like(f_static), (None if t_prior is None else f_static)
        elif t_prior is None:
            f_x, df_x = self.transform.with_time_derivative(x, t)
        else:
            f_x, df_x, f_prior = self.transform.with_time_derivative_and_value(x, t, t_prior)
        z = self._bc(v.alpha) * f_x + self._bc(v.sigma) * eps
        x_hat = self.x_hat(z, t, v)
        f_hat, df_hat = self.transform.with_time_derivative(x_hat, t)
        resid = self._bc(v.dgamma) * (f_x - f_hat) - (df_x - df_hat)
        return 0.5 * v.snr / v.dgamma * self._sum(resid**2), x_hat, f_prior

    def diffusion_kl_step(self, x: Tensor, i: Tensor, n_steps: int, eps: Tensor) -> Tensor:
        """KL(q(z_s|z_t,x) || p(z_s|z_t)) for step i in 1..T (s = (i-1)/T, t = i/T), one z_t sample."""
        t = i.to(x.dtype) / n_steps
        s = (i.to(x.dtype) - 1.0) / n_steps
        vs, vt = self.values(s), self.values(t)
        f_xt = self.transform(x, t)
        z_t = self._bc(vt.alpha) * f_xt + self._bc(vt.sigma) * eps
        x_hat = self.x_hat(z_t, t, vt)
        r = -torch.expm1(vs.gamma - vt.gamma)
        if self.transform.is_identity:
            return 0.5 * vs.snr * r * self._sum((x - x_hat) ** 2)
        f = self.transform(torch.cat([x_hat, x, x_hat]), torch.cat([t, s, s]))
        n = x.shape[0]
        delta_t = f_xt - f[:n]
        delta_s = f[n : 2 * n] - f[2 * n :]
        return 0.5 * vs.snr / r * self._sum((self._bc(r) * delta_t + (delta_s - delta_t)) ** 2)

    def diffusion_loss_discrete(self, x: Tensor, n_steps: int, eps: Tensor, i: Tensor | None = None) -> Tensor:
        """T-step diffusion term: T * KL at a uniformly drawn step i (unbiased for the sum)."""
        if i is None:
            i = torch.randint(1, n_steps + 1, (x.shape[0],), device=x.device)
        return n_steps * self.diffusion_kl_step(x, i, n_steps, eps)

    def nelbo(
        self,
        x: Tensor,
        n_steps: int | None = None,
        t: Tensor | None = None,
        variance_box: dict | None = None,
        time_sampling: str = "uniform",
    ) -> NelboTerms:
        """One-sample NELBO terms per example; n_steps None = continuous time.

        time_sampling "gamma" draws antithetic u, sets t = gamma^{-1}(gamma_0 + u (gamma_1 - gamma_0))
        and weights L_diff by (gamma_1 - gamma_0) / gamma'(t): an unbiased importance sampler.
        """
        b = x.shape[0]
        eps0, eps_t = torch.randn_like(x), torch.randn_like(x)
        # A time-independent learned F (ndm-latent): one pass gives F(x) for every t.
        f_static = self.transform(x, torch.zeros(b, dtype=x.dtype, device=x.device)) if not self.transform.time_dependent else None
        recon = self.reconstruction_loss(x, eps0, f0=f_static)
        f1 = f_static
        if n_steps is None:
            weight = None
            if t is None:
                t = antithetic_times(b, device=x.device, dtype=x.dtype)
                if time_sampling == "gamma":
                    from ndm.model.schedules import invert_gamma

                    with torch.no_grad():
                        # linspace, not torch.tensor([0, 1]): created on the device, no host copy (a sync)
                        ends = self.values(torch.linspace(0.0, 1.0, 2, device=x.device, dtype=x.dtype)).gamma
                        t = invert_gamma(self.schedule, ends[0] + t * (ends[1] - ends[0]))
                        weight = (ends[1] - ends[0]) / self.values(t).dgamma
            # F(x, 1) of the prior term comes with the diffusion term's F pass when that is free.
            t1 = torch.ones(b, dtype=x.dtype, device=x.device) if isinstance(self.transform, SeparableTransform) else None
            if f_static is None:
                diff, _, f1 = self._diffusion_terms(x, t, eps_t, variance_box, t_prior=t1)
            else:
                diff, _, _ = self._diffusion_terms(x, t, eps_t, variance_box, f_static=f_static)
            if weight is not None:
                diff = diff * weight
        else:
            diff = self.diffusion_loss_discrete(x, n_steps, eps_t)
        prior = self.prior_loss(x, f1)
        return NelboTerms(recon, diff, prior)

    def training_loss(
        self, x: Tensor, n_steps: int | None = None, time_sampling: str = "uniform"
    ) -> tuple[Tensor, NelboTerms]:
        """Mean NELBO in bits/dim for a batch, with VDM's variance objective for learned schedules.

        For a learned schedule with objective "variance" the schedule's interior gets the
        gradient of mean(L_diff^2) instead of mean(L_diff) (the end points and all networks
        still get the NELBO's gradient); see LearnedSchedule.
        """
        box: dict = {}
        terms = self.nelbo(x, n_steps=n_steps, variance_box=box if n_steps is None else None, time_sampling=time_sampling)
        scale = 1.0 / (self.dims * math.log(2.0))
        box["weight"] = 2.0 * terms.diffusion.detach() * scale
        return terms.total.mean() * scale, terms


def discretized_nll(x: Tensor, mean: Tensor, scale: Tensor, levels: int, max_scale: float | None = None) -> Tensor:
    """-log p(v | mean) per dimension for a categorical over K levels with Gaussian-shaped logits.

    logits_k = -(mean - x_k)^2 / (2 scale^2), x_k = 2 (k + 1/2) / K - 1, v the level of x.
    Only levels within 10 scales of the mean (plus one bin) carry weight above e^-45 of
    the largest, so the normaliser is summed over that window: exact to float precision
    and O(window) memory instead of O(K).

    max_scale: an upper bound on scale as a Python float (fixed schedules know it); without
    it the window is read off the scale tensor, a host-device sync on a GPU.
    """
    v = data_to_levels(x, levels)
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
    x_v = levels_to_data(v, levels, dtype=mean.dtype)
    logit_v = -((mean - x_v) ** 2) / (2.0 * scale**2)
    log_norm = torch.logaddexp(log_norm, torch.where((v - center).abs() > half, logit_v, torch.full_like(logit_v, -torch.inf)))
    return log_norm - logit_v
