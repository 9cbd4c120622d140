"""NDM's gauge freedom: the input-independent offset of a learned F, measured and removed.

The NELBO sees F only through F(x, 0) (reconstruction), F(x, 1) (prior) and the differences
F(x, t) - F(x_hat, t) with their t-derivatives (diffusion terms). Adding a(t) to F and shifting
x_hat's input by alpha_t a(t) therefore leaves every term unchanged when a(0) = a(1) = 0
(docs/math.md "Gauge freedom of F"); training drifts along these null directions, and the
offset's derivative a'(t) enters the probability-flow drift, which is what makes the ODE stiff.

    offset_decomposition(model, x, times)  F(x, t) - x = c(t) + rest: rms of c (the mean over the
                                           examples) and of the input-dependent rest, and of dF/dt's split
    offset_metrics(model, x)               a few of those numbers for the training log
    gauge_transform(model, offset)         the model with F + a(t) and x_hat(z - alpha_t a(t), t)
    remove_gauge(model, x_ref)             gauge_transform with a = -(c(t) - t c(1)), c from x_ref:
                                           the same NELBO exactly, the stiff offset gone
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor

from ndm.estimators.eval_mode import eval_mode
from ndm.model.diffusion import DiffusionModel
from ndm.model.transforms import Transform

# The times the training log reports the offset at (t = 0 is omitted: F(x, 0) = x there).
LOG_TIMES = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class OffsetSplit:
    """F(x, t) - x = c(t) + r(x, t) at one t, c(t) = mean over the examples; root mean squares
    over examples and dimensions: offset_rms = rms of c, input_rms = rms of r; the *_rate_rms the
    same for dF/dt = c'(t) + dr/dt (c' is what enters the probability-flow drift as alpha_t c')."""

    t: float
    offset_rms: float
    input_rms: float
    offset_rate_rms: float
    input_rate_rms: float
    n_examples: int

    def as_dict(self) -> dict:
        return asdict(self)


def _rms(v: Tensor) -> float:
    return math.sqrt(float(v.double().pow(2).mean()))


def _split(d: Tensor) -> tuple[Tensor, Tensor]:
    c = d.mean(0, keepdim=True)
    return c, d - c


@torch.no_grad()
def offset_decomposition(
    model: DiffusionModel, x: Tensor, times: tuple[float, ...] | list[float], *, rates: bool = True, batch_size: int = 1024
) -> list[OffsetSplit]:
    """The offset / input-dependent split of F(x, t) - x (and of dF/dt with rates=True) at each t.

    x: a sample of data (the test split in the report, the batch in training). The split is a
    statistic of F on this sample; for F = identity or a fixed F it is not about the gauge, so
    the callers restrict it to learned F (`model.transform.learned`).
    """
    if x.shape[0] < 2:
        raise ValueError(f"the offset split needs at least 2 examples (a mean and a rest), got {x.shape[0]}")
    out: list[OffsetSplit] = []
    with eval_mode(model):
        for t_value in times:
            fs, dfs = [], []
            for xb in x.split(batch_size):
                t = torch.full((xb.shape[0],), float(t_value), dtype=xb.dtype, device=xb.device)
                if rates:
                    f, df = model.transform.with_time_derivative(xb, t)
                    dfs.append(df)
                else:
                    f = model.transform(xb, t)
                fs.append(f - xb)
            c, r = _split(torch.cat(fs))
            dc, dr = _split(torch.cat(dfs)) if rates else (torch.full((1,), math.nan), torch.full((1,), math.nan))
            out.append(OffsetSplit(float(t_value), _rms(c), _rms(r), _rms(dc), _rms(dr), int(x.shape[0])))
    return out


def offset_metrics(model: DiffusionModel, x: Tensor, times: tuple[float, ...] = LOG_TIMES) -> dict[str, float]:
    """{"offset_rms_t0.75": ..., "input_rms_t0.75": ..., ...} for the training log; {} when F is
    not learned (so the training loop can call it for every variant). Values of F only (no
    dF/dt): one forward pass of F over x per time."""
    if not model.transform.learned or x.shape[0] < 2:
        return {}
    out: dict[str, float] = {}
    for s in offset_decomposition(model, x, times, rates=False):
        out[f"offset_rms_t{s.t:g}"] = s.offset_rms
        out[f"input_rms_t{s.t:g}"] = s.input_rms
    return out


# What the evaluation job records of a learned F (likelihood.json "transform"), so that the report
# reads F's split from result files: the first SPLIT_EXAMPLES test examples at SPLIT_TIMES.
SPLIT_EXAMPLES = 128
SPLIT_TIMES = tuple(round(i / 20, 2) for i in range(21))


def transform_record(model: DiffusionModel, x: Tensor, times: tuple[float, ...] = SPLIT_TIMES) -> dict:
    """F's offset / input-dependent split at each t (offset_decomposition on x) with the noise
    scale sigma_t / alpha_t = exp(gamma(t) / 2) that the input-dependent part is compared with."""
    splits = offset_decomposition(model, x, times)
    with torch.no_grad(), eval_mode(model):
        t = torch.tensor([s.t for s in splits], dtype=torch.float64)
        gamma = model.schedule.gamma(t.to(next(model.parameters()).dtype)).double()
        slopes = [linear_slope(model, x, s.t) for s in splits]
    noise = torch.exp(0.5 * gamma).tolist()
    xc = x.double() - x.double().mean(0)
    return {
        "n_examples": int(x.shape[0]),
        "data_rms": float(xc.pow(2).mean().sqrt()),  # rms of x - mean(x): the scale F's input-dependent part is read against
        "splits": [{**s.as_dict(), "sigma_over_alpha": float(n), "slope": b} for s, n, b in zip(splits, noise, slopes)],
    }


# The transformation figure's snapshot: F at SNAPSHOT_TIMES for a few test images (or many toy
# points), and the offset c(t) over the SPLIT_EXAMPLES of the split.
SNAPSHOT_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
SNAPSHOT_IMAGES = 3
SNAPSHOT_POINTS = 1500


def _rounded(v: Tensor | list | float) -> list | float:
    """A tensor as nested lists of 6-significant-digit floats (a compact JSON record)."""
    if isinstance(v, Tensor):
        v = v.tolist()
    return [_rounded(a) for a in v] if isinstance(v, list) else float(f"{v:.6g}")


@torch.no_grad()
def transform_snapshot(model: DiffusionModel, x_show: Tensor, x_split: Tensor, times: tuple[float, ...] = SNAPSHOT_TIMES) -> dict:
    """F(x, t) of the examples x_show at each t, and the offset c(t) = mean over x_split of
    F(x, t) - x: what the report draws of a non-identity F without loading the model."""
    out: dict = {"t": list(times), "x": _rounded(x_show.double()), "F": [], "offset": []}
    with eval_mode(model):
        for t_value in times:
            f = model.transform(x_show, torch.full((x_show.shape[0],), float(t_value), dtype=x_show.dtype, device=x_show.device))
            ts = torch.full((x_split.shape[0],), float(t_value), dtype=x_split.dtype, device=x_split.device)
            c = (model.transform(x_split, ts) - x_split).double().mean(0)
            out["F"].append(_rounded(f.double()))
            out["offset"].append(_rounded(c))
    return out


@torch.no_grad()
def schedule_curve(model: DiffusionModel, n: int = 101) -> dict:
    """gamma(t) = -log SNR on n points of [0, 1] (the schedules figure reads it)."""
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    with eval_mode(model):
        gamma = model.schedule.values(t.to(next(model.parameters()).dtype)).gamma.double()
    return {"t": _rounded(t), "gamma": _rounded(gamma)}


@torch.no_grad()
def linear_slope(model: DiffusionModel, x: Tensor, t_value: float) -> float:
    """The least-squares slope b of F(x, t) on x over the sample, both centred:
    b = sum (F - mean F).(x - mean x) / sum |x - mean x|^2 (1 for F = identity; for a linear
    F = C x on data of covariance S it tends to tr(C S) / tr(S), ndm.estimators.f_gain)."""
    with eval_mode(model):
        t = torch.full((x.shape[0],), float(t_value), dtype=x.dtype, device=x.device)
        f = model.transform(x, t).double().flatten(1)
    xc = x.double().flatten(1)
    xc = xc - xc.mean(0)
    return float(((f - f.mean(0)) * xc).sum() / xc.pow(2).sum().clamp_min(1e-300))


# ------------------------------------------------------------------ offsets a(t)


class FunctionOffset:
    """a(t) from a function of the (B,) times to (B, *event_shape), differentiable in t
    (a'(t) by forward-mode AD)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        self.fn = fn

    def __call__(self, t: Tensor) -> Tensor:
        return self.fn(t)

    def with_time_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.jvp(self.fn, (t,), (torch.ones_like(t),))


class MeanOffset:
    """a(t) = -(c(t) - t c(1)) (keep_prior) or -c(t), with c(t) = mean_j F(x_j, t) - x_j over the
    reference examples x_j: the offset of `transform` itself, evaluated exactly at every t
    (F at the reference examples for each distinct time in the batch; the samplers use one).

    keep_prior: a(1) = 0, so the gauge-transformed model has the same NELBO term by term; the
    linear t c(1) it leaves in F is smooth (its derivative c(1) is constant) and pinned by the prior.
    """

    def __init__(self, transform: Transform, x_ref: Tensor, keep_prior: bool = True):
        if x_ref.shape[0] < 1:
            raise ValueError("remove_gauge needs at least one reference example")
        self.transform, self.x_ref = transform, x_ref
        self.end: Tensor | None = None
        if keep_prior:
            with torch.no_grad():
                self.end = self._mean(torch.ones(1, dtype=x_ref.dtype, device=x_ref.device), rates=False)[0][0]

    def _mean(self, t: Tensor, rates: bool) -> tuple[Tensor, Tensor | None]:
        """(c(t), c'(t)) per row of t."""
        times, index = torch.unique(t, return_inverse=True)
        n = self.x_ref.shape[0]
        cs, dcs = [], []
        for tu in times:
            tt = tu.expand(n).clone()  # a real (B,) tensor: forward-mode AD writes tangents into it
            if rates:
                f, df = self.transform.with_time_derivative(self.x_ref, tt)
                dcs.append(df.mean(0))
            else:
                f = self.transform(self.x_ref, tt)
            cs.append((f - self.x_ref).mean(0))
        c = torch.stack(cs)[index]
        return c, (torch.stack(dcs)[index] if rates else None)

    def __call__(self, t: Tensor) -> Tensor:
        c, _ = self._mean(t, rates=False)
        if self.end is not None:
            c = c - t.view(-1, *([1] * (c.dim() - 1))) * self.end
        return -c

    def with_time_derivative(self, t: Tensor) -> tuple[Tensor, Tensor]:
        c, dc = self._mean(t, rates=True)
        if self.end is not None:
            c = c - t.view(-1, *([1] * (c.dim() - 1))) * self.end
            dc = dc - self.end
        return -c, -dc


class OffsetTransform(Transform):
    """F'(x, t) = F(x, t) + a(t) for an offset a (FunctionOffset, MeanOffset)."""

    is_identity = False
    time_dependent = True

    def __init__(self, inner: Transform, offset: FunctionOffset | MeanOffset):
        super().__init__()
        self.inner = inner
        self.offset = offset
        self.identity_at_zero = inner.identity_at_zero
        self.learned = inner.learned

    def forward(self, x: Tensor, t: Tensor, time_derivative: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if time_derivative:
            f, df = self.inner.with_time_derivative(x, t)
            a, da = self.offset.with_time_derivative(t)
            return f + a, df + da
        return self.inner(x, t) + self.offset(t)

    def with_time_derivative(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # Through self(...) so that forward hooks (ndm.estimators.sampling.EvalCounter) count it.
        return self(x, t, time_derivative=True)


class GaugeTransformedModel(DiffusionModel):
    """The model with F' = F + a(t) and x_hat'(z, t) = x_hat(z - alpha_t a(t), t), sharing the
    original's schedule, networks and decoder: its z_t is the original's plus alpha_t a(t), so
    every x_hat' sees the input the original's x_hat saw."""

    def __init__(self, model: DiffusionModel, offset: FunctionOffset | MeanOffset):
        super().__init__(
            model.schedule,
            OffsetTransform(model.transform, offset),
            model.net,
            event_shape=model.event_shape,
            levels=model.levels,
            parameterization=model.parameterization,
        )
        self.x_hat_autocast = model.x_hat_autocast
        if model.decoder_log_scale is not None:
            self.decoder_log_scale = model.decoder_log_scale
        # The original's own x_hat (itself gauge-transformed, possibly), outside the module tree:
        # its modules are already this model's.
        self.__dict__["_base"] = model

    def x_hat(self, z: Tensor, t: Tensor, v=None) -> Tensor:
        v = self.values(t) if v is None else v
        return self._base.x_hat(z - self._bc(v.alpha) * self.transform.offset(t), t, v)


def gauge_transform(model: DiffusionModel, offset: FunctionOffset | MeanOffset | Callable[[Tensor], Tensor]) -> GaugeTransformedModel:
    """The gauge-transformed model (F + a(t), x_hat(z - alpha_t a(t), t)).

    Its reconstruction and diffusion terms (continuous and every T) equal the original's per
    example; its prior term differs by alpha_1^2/2 (2 a(1).F(x,1) + |a(1)|^2), 0 when a(1) = 0.
    a(0) must be 0 when F(x, 0) = x: the decoder then reads x off z_0 / alpha_0 without x_hat,
    so a(0) != 0 would move it (refused here).
    """
    if not isinstance(offset, (FunctionOffset, MeanOffset)):
        offset = FunctionOffset(offset)
    if model.transform.identity_at_zero:
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        like = {"dtype": param.dtype, "device": param.device} if param is not None else {"dtype": torch.float64}
        with torch.no_grad():
            a0 = offset(torch.zeros(1, **like))
        if float(a0.abs().max()) > 1e-12:
            raise ValueError(
                f"not a gauge transformation: a(0) = {float(a0.abs().max()):.3g} != 0, but this model's F(x, 0) = x "
                "and its decoder reads x off z_0 / alpha_0; use an offset with a(0) = 0 (e.g. t * g(t))"
            )
    return GaugeTransformedModel(model, offset)


def remove_gauge(model: DiffusionModel, x_ref: Tensor, keep_prior: bool = True) -> GaugeTransformedModel:
    """Post-hoc gauge fixing of a trained model for sampling: F' = F - (c(t) - t c(1)) (keep_prior)
    or F - c(t), x_hat' accordingly, with c(t) the mean of F(x, t) - x over x_ref (training or
    test images; a few hundred suffice, any c with c(0) = 0 is a valid gauge).

    With keep_prior the NELBO is unchanged term by term; without it only the prior term moves.
    For a time-dependent learned F with F(x, 0) = x (ndm, ndm-vdm); ndm-latent's offset is
    constant in t (c' = 0) and leaves nothing stiff to remove.
    """
    tr = model.transform
    if not (tr.learned and tr.time_dependent and tr.identity_at_zero):
        raise ValueError(
            f"remove_gauge is for a learned time-dependent F with F(x, 0) = x (ndm, ndm-vdm); this model's F is "
            f"{type(tr).__name__} (learned={tr.learned}, time_dependent={tr.time_dependent}, F(x,0)=x: {tr.identity_at_zero})"
        )
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None:
        x_ref = x_ref.to(device=param.device, dtype=param.dtype)
    return gauge_transform(model, MeanOffset(tr, x_ref, keep_prior=keep_prior))


__all__ = [
    "LOG_TIMES",
    "FunctionOffset",
    "GaugeTransformedModel",
    "MeanOffset",
    "OffsetSplit",
    "OffsetTransform",
    "gauge_transform",
    "offset_decomposition",
    "offset_metrics",
    "remove_gauge",
]
