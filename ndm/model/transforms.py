"""Transformations F_phi(x, t) of the NDM forward marginal q(z_t|x) = N(alpha_t F(x,t), sigma_t^2 I).

- identity:  F(x, t) = x                     (DDPM, VDM, flow matching)
- neural:    F(x, t) = x + t NN_phi(x, t)     (NDM; F(x, 0) = x, so z_0 / alpha_0 decodes x)
- latent:    F(x, t) = E_phi(x) = x + NN_phi(x) (time independent; latent-diffusion style)
- blur:      F(x, t) = C_t x                  (fixed linear heat dissipation in the DCT basis,
                                              blurring-diffusion style; F(x, 0) = x)
- separable: F(x, t) = x + t sum_k c_k(t) G_phi,k(x), c_k(t) = cos(k pi t)
                                             (ModelConfig.transform_time = "separable": a
                                              time-separable NDM F whose dF/dt is exact and
                                              nearly free; one G pass gives F and dF/dt at
                                              every t, see docs/performance.md)
- gauge "reference" (ModelConfig.transform_gauge) for neural and separable:
             NN(x, t) above becomes NN(x, t) - NN(x_ref, t) + v (x_ref = 0, v a learned vector),
             which pins F(x_ref, t) = x_ref + t v and so removes the input-independent offsets
             a(t), a(0) = a(1) = 0, that leave every NELBO term unchanged (docs/math.md
             "Gauge freedom of F").

Every transformation gives F and dF/dt at fixed x. The default dF/dt is one forward-mode
JVP in t: for the U-Net and MLP written out per layer (`net(x, t, time_derivative=True)`,
ndm/model/networks/), for any other network torch.func.jvp; both exact and a single pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ndm.model.specs import GAUGES


def _bc(v: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-example (B,) tensor against a (B, ...) tensor."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class Transform(nn.Module):
    is_identity: bool = False
    # F(x, 0) = x: the decoder can read x off z_0 / alpha_0 without a network.
    identity_at_zero: bool = True
    time_dependent: bool = True
    learned: bool = False

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def with_time_derivative(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """F(x, t) and dF/dt(x, t) at fixed x, by forward-mode autodiff in t."""
        if not self.time_dependent:
            f = self(x, t)
            return f, torch.zeros_like(f)
        return torch.func.jvp(lambda tt: self(x, tt), (t,), (torch.ones_like(t),))

    def with_time_derivative_and_value(self, x: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """F(x, t), dF/dt(x, t) and F(x, s) (the NELBO's prior term needs F(x, 1)); a
        transform that gets them from one pass (SeparableTransform) overrides this."""
        f, df = self.with_time_derivative(x, t)
        return f, df, self(x, s)


class IdentityTransform(Transform):
    is_identity = True

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x

    def with_time_derivative(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.zeros_like(x)




def _init_gauge(module: nn.Module, gauge: str, event_shape: tuple[int, ...] | None) -> None:
    """The reference gauge's x_ref (a buffer, zero) and end offset v (a parameter, zero-initialised
    so that a fresh model is still its F = identity special case)."""
    if gauge not in GAUGES:
        raise ValueError(f"transform gauge must be one of {GAUGES}, got {gauge!r}")
    module.gauge = gauge
    if gauge == "reference":
        if event_shape is None:
            raise ValueError("the reference gauge needs the data's event_shape (for x_ref and v)")
        # x_ref = 0 (mid-range in model space [-1, 1]) until set_reference sets another fixed point
        # (the training mean): fixed, so F stays a per-example function.
        module.register_buffer("reference", torch.zeros(event_shape))
        module.end_offset = nn.Parameter(torch.zeros(event_shape))


@torch.no_grad()
def set_reference(transform: nn.Module, x_ref: Tensor) -> bool:
    """Set the reference gauge's x_ref (ModelConfig.transform_reference "data_mean": the training
    mean, before the first step; the buffer is saved with the model). False for a transform
    without the reference gauge (F = identity, fixed or time independent: the option is moot)."""
    if getattr(transform, "gauge", "none") != "reference":
        return False
    if tuple(x_ref.shape) != tuple(transform.reference.shape):
        raise ValueError(f"x_ref has shape {tuple(x_ref.shape)}, the transform's events {tuple(transform.reference.shape)}")
    transform.reference.copy_(x_ref.to(transform.reference))
    return True


def _with_reference(x: Tensor, t: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """The batch [x; x_ref, ..., x_ref] with times [t; t]: NN(x, t) and NN(x_ref, t) in one pass."""
    return torch.cat([x, reference.to(dtype=x.dtype).expand_as(x)]), torch.cat([t, t])


class NeuralTransform(Transform):
    """NDM's learned transformation F(x, t) = x + t NN_phi(x, t).

    The factor t pins F(x, 0) = x (the reconstruction term then needs no decoder
    network), and the zero-initialised last layer of NN makes a fresh NDM equal
    to its F = identity special case.

    gauge "reference": F(x, t) = x + t (NN(x, t) - NN(x_ref, t) + v). An input-independent
    a(t) added to NN cancels, so training cannot drift along the bound's null directions;
    v keeps F(x_ref, 1) free for the prior term (docs/math.md "Gauge freedom of F"). NN runs
    on [x; x_ref] at the batch's times: one pass of twice the rows.
    """

    learned = True

    def __init__(self, net: nn.Module, gauge: str = "none", event_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.net = net
        # "manual": the network's own forward-mode pass when it has one (U-Net, MLP), else
        # torch.func.jvp; "functorch": always torch.func.jvp (the reference; benchmarks).
        self.tangent = "manual"
        _init_gauge(self, gauge, event_shape)

    def _nn(self, x: Tensor, t: Tensor, time_derivative: bool) -> Tensor | tuple[Tensor, Tensor]:
        """NN(x, t) in this transform's gauge (and its t-derivative at fixed x)."""
        if self.gauge == "none":
            return self.net(x, t, time_derivative=True) if time_derivative else self.net(x, t)
        n = x.shape[0]
        xx, tt = _with_reference(x, t, self.reference)
        v = self.end_offset.to(x.dtype)
        if time_derivative:
            out, dout = self.net(xx, tt, time_derivative=True)
            return out[:n] - out[n:] + v, dout[:n] - dout[n:]
        out = self.net(xx, tt)
        return out[:n] - out[n:] + v

    def forward(self, x: Tensor, t: Tensor, time_derivative: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        tb = _bc(t, x)
        if time_derivative:  # d/dt [x + t NN(x, t)] = NN + t dNN/dt
            out, dout = self._nn(x, t, True)
            return x + tb * out, out + tb * dout
        return x + tb * self._nn(x, t, False)

    def with_time_derivative(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # Through self(...) so that forward hooks (ndm.estimators.sampling.EvalCounter) see the call.
        if self.tangent == "manual" and getattr(self.net, "supports_time_derivative", False):
            return self(x, t, time_derivative=True)
        return super().with_time_derivative(x, t)


class SeparableTransform(Transform):
    """A time-separable learned F(x, t) = x + t sum_{k<K} c_k(t) G_phi,k(x), c_k(t) = cos(k pi t).

    G is one network (the same family and size as NeuralTransform's) with K outputs per
    channel, run once per x (its time input is held at 0). Then for every t
        F(x, t)  = x + sum_k u_k(t) G_k(x),       u_k(t) = t cos(k pi t),
        dF/dt    = sum_k u_k'(t) G_k(x),          u_k'(t) = cos(k pi t) - k pi t sin(k pi t),
    exact, from the same G pass: the continuous-time loss needs G at x and at x_hat only
    (F(x, t), dF/dt and the prior's F(x, 1) all come from G(x)), where the JVP form needs a
    forward-mode pass through F at both points plus F(x, 1). F(x, 0) = x as for the JVP form,
    and the zero-initialised last layer makes a fresh model its F = identity special case.
    It is a different (rank-K in time) family than F = x + t NN(x, t): an option
    (ModelConfig.transform_time = "separable"), not the paper's default.

    gauge "reference": G_k(x) becomes G_k(x) - G_k(x_ref) and F gains t v (as NeuralTransform),
    at the cost of one more row (x_ref) in the single G pass.
    """

    learned = True

    def __init__(self, net: nn.Module, rank: int, gauge: str = "none", event_shape: tuple[int, ...] | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"the separable transform needs rank >= 1, got {rank}")
        self.net = net
        self.rank = int(rank)
        _init_gauge(self, gauge, event_shape)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """u_k(t) = t cos(k pi t) and u_k'(t), each (B, K)."""
        k = torch.arange(self.rank, device=t.device, dtype=t.dtype) * math.pi
        kt = t.unsqueeze(-1) * k
        c = torch.cos(kt)
        return t.unsqueeze(-1) * c, c - kt * torch.sin(kt)

    def factors(self, x: Tensor) -> Tensor:
        """G(x) as (B, K, *event_shape); in the reference gauge G(x) - G(x_ref)."""
        n = x.shape[0]
        if self.gauge == "reference":
            x = torch.cat([x, self.reference.to(dtype=x.dtype).unsqueeze(0)])
        g = self.net(x, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype))
        g = g.reshape(x.shape[0], self.rank, *x.shape[1:])
        return g[:n] - g[n:] if self.gauge == "reference" else g

    def _end(self, t: Tensor, like: Tensor) -> Tensor | float:
        """t v in the reference gauge (0 otherwise)."""
        return _bc(t, like) * self.end_offset.to(like.dtype) if self.gauge == "reference" else 0.0

    @staticmethod
    def _combine(u: Tensor, g: Tensor) -> Tensor:
        return torch.einsum("bk,bk...->b...", u, g)

    def forward(
        self, x: Tensor, t: Tensor, time_derivative: bool = False, also_at: Tensor | None = None
    ) -> Tensor | tuple[Tensor, ...]:
        g = self.factors(x)
        u, du = self.coefficients(t)
        f = x + self._combine(u, g) + self._end(t, x)
        if not time_derivative:
            return f
        out = (f, self._combine(du, g) + self._end(torch.ones_like(t), x))
        if also_at is not None:
            out = out + (x + self._combine(self.coefficients(also_at)[0], g) + self._end(also_at, x),)
        return out

    def with_time_derivative(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return self(x, t, time_derivative=True)

    def with_time_derivative_and_value(self, x: Tensor, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self(x, t, time_derivative=True, also_at=s)


class LatentTransform(Transform):
    """A time-independent learned F(x, t) = E_phi(x) = x + NN_phi(x) (latent-diffusion style).

    F(x, 0) != x in general, so the reconstruction term decodes with x_hat(z_0, 0).
    """

    learned = True
    identity_at_zero = False
    time_dependent = False

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x + self.net(x, torch.zeros_like(t))


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal DCT-II matrix M (n x n): X = M x, x = M^T X."""
    k = torch.arange(n, dtype=dtype).unsqueeze(1)
    i = torch.arange(n, dtype=dtype).unsqueeze(0)
    m = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    m[0] = m[0] / math.sqrt(2.0)
    return m


class BlurTransform(Transform):
    """Fixed linear F(x, t) = C_t x: heat dissipation (Gaussian blur) in the DCT basis.

    C_t = M^T diag(d_t) M with d_t = (1 - d_min) exp(-lambda tau_t) + d_min,
    lambda = pi^2 (k_h^2 / H^2 + k_w^2 / W^2) (per axis for vectors), tau_t = sigma_b(t)^2 / 2
    and blur width sigma_b(t) = sigma_max sin^2(pi t / 2) (Hoogeboom & Salimans'
    blurring diffusion). C_0 = I. Images are blurred per channel over (H, W);
    vectors (D,) are treated as a 1-D signal, which gives the Gaussian calibration
    case a non-trivial linear F with an exact posterior.
    """

    def __init__(self, event_shape: tuple[int, ...], sigma_max: float, d_min: float = 1e-3):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.sigma_max, self.d_min = float(sigma_max), float(d_min)
        if len(event_shape) == 3:
            h, w = event_shape[1], event_shape[2]
            self.register_buffer("m_h", dct_matrix(h))
            self.register_buffer("m_w", dct_matrix(w))
            kh = torch.arange(h, dtype=torch.float64).unsqueeze(1)
            kw = torch.arange(w, dtype=torch.float64).unsqueeze(0)
            lam = math.pi**2 * (kh**2 / h**2 + kw**2 / w**2)
        elif len(event_shape) == 1:
            d = event_shape[0]
            self.register_buffer("m_h", dct_matrix(d))
            lam = math.pi**2 * torch.arange(d, dtype=torch.float64) ** 2 / d**2
        else:
            raise ValueError(f"blur needs images (C, H, W) or vectors (D,), got {event_shape}")
        # Kept in float64; cast to the input dtype at use.
        self.register_buffer("lam", lam)

    def frequency_gains(self, t: Tensor) -> Tensor:
        """d_t per frequency: (B, H, W) for images, (B, D) for vectors."""
        sigma_b = self.sigma_max * torch.sin(0.5 * math.pi * t) ** 2
        tau = 0.5 * sigma_b**2
        lam = self.lam.to(t.dtype)
        tau = tau.view(-1, *([1] * lam.dim()))
        return (1.0 - self.d_min) * torch.exp(-lam * tau) + self.d_min

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        d = self.frequency_gains(t)
        m_h = self.m_h.to(x.dtype)
        if x.dim() == 4:
            m_w = self.m_w.to(x.dtype)
            freq = m_h @ x @ m_w.T  # per channel: M_h x M_w^T
            return m_h.T @ (freq * d.unsqueeze(1)) @ m_w
        freq = x @ m_h.T
        return (freq * d) @ m_h

    def matrix(self, t: Tensor) -> Tensor:
        """C_t as (B, D, D) matrices (vector data only), for the exact Gaussian posterior."""
        if len(self.event_shape) != 1:
            raise ValueError("BlurTransform.matrix is defined for vector data only")
        d = self.frequency_gains(t).to(torch.float64)
        m = self.m_h.to(torch.float64)
        return m.T @ (d.unsqueeze(-1) * m)
