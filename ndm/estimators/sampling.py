"""Reverse-process samplers at any step count, each counting its network evaluations (NFE).

Every sampler starts from z_1 ~ N(0, I), runs the model's reverse process from t = 1 to
t = 0, and decodes the state z_0 it reaches (docs/math.md, Notation and
"Samplers and the ODE likelihood"). On a descending grid from t = 1 to t = 0 (by default
uniform, t_i = i / N, i = N, ..., 0), a step goes from t = t_i to s = t_{i-1} < t:

    ancestral     z_s ~ p_theta(z_s | z_t) = q(z_s | z_t, x = x_hat(z_t, t))        (eta = 1)
    ddim          z_s = mean of q(z_s | z_t, x = x_hat(z_t, t)) with variance 0     (eta = 0)
    ode-euler     z_s = z_t + (s - t) h(z_t, t)
    ode-heun      z~ = z_t + (s - t) h(z_t, t);  z_s = z_t + (s - t)/2 [h(z_t, t) + h(z~, s)]
    ode-adaptive  dopri5 (torchdiffeq) on dz/dt = h(z, t) from t = 1 to 0, tolerances rtol, atol
    sde-em        z_s = z_t + (s - t) b(z_t, t) + sqrt(g^2(t) (t - s)) xi,   xi ~ N(0, I)
    dpmpp-2m      DPM-Solver++(2M) (F = identity) and its NDM generalisation (any F)
    edm-heun      EDM's Heun on x = z / alpha in s = sigma / alpha (any F)

(the last two in ndm.estimators.multistep, derived in docs/math.md "Few-step samplers").
The grid t_i of every fixed-step sampler is chosen by `time_grid`
(ndm.estimators.time_grids: uniform-t, the default, uniform-logsnr or edm).

with the probability-flow drift h(z, t) = mu_t' + (sigma_t'/sigma_t)(z - mu_t),
mu_t = alpha_t F(x_hat(z, t), t), and the reverse-SDE drift b (`DiffusionModel.drifts`).

The output. All samplers end at the state z_0 at t = 0 (never at x_hat of the last step),
which they then decode exactly as the reconstruction term of the NELBO does:
x = z_0 / alpha_0 when F(x, 0) = x (no network call), else x = x_hat(z_0, 0) (one more call,
counted). So every sampler, at every step count, approximates the same distribution (the
model's p(z_0) pushed through the same decoder), and the ODE likelihood in
`ndm.estimators.likelihood.ode_nll` is the density of exactly this output. For discrete data the
levels are the decoder's most likely level, the nearest bin centre (`ndm.model.data_space.from_model_space`).

NFE. `nfe` is the number of evaluations of the x_hat network per sample, counted by hooks on
the network (not computed from a formula), including the decode call where there is one.
`nfe_F` counts, the same way, evaluations of a learned F network (ndm, ndm-vdm, ndm-latent;
0 for fixed F): the posterior evaluates F(x_hat, s) and F(x_hat, t) (2 per step), the drift
F and dF/dt in one forward-mode JVP (1 per x_hat evaluation). With N steps and F(x, 0) = x:

    ancestral, ddim, ode-euler, sde-em, dpmpp-2m: nfe = N;   ode-heun, edm-heun: nfe = 2N;
    ode-adaptive: counted.

dpmpp-2m evaluates F three times per step for a learned time-dependent F (see
ndm.estimators.multistep); edm-heun once per x_hat evaluation (a JVP, as the drift samplers).

The adaptive solver integrates a batch jointly (one step size for the batch, torchdiffeq's
RMS error norm over the batch), so its NFE is per batch and depends on the batch size.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from ndm.estimators.eval_mode import eval_mode
from ndm.estimators.time_grids import make_time_grid
from ndm.model.data_space import from_model_space
from ndm.model.diffusion import DiffusionModel
from ndm.names import FIXED_STEP_SAMPLERS, GRID_SEPARATOR, SAMPLERS, TIME_GRIDS, load_object, sampler_spec, split_sampler


@dataclass
class SampleResult:
    """Samples and what they cost.

    x: (n, *event_shape) decoded samples in model space; levels: uint8 levels for discrete
    data (None for continuous data); nfe / nfe_F: x_hat / learned-F evaluations per sample;
    time_grid: the grid of the fixed-step samplers (ndm.estimators.time_grids).
    """

    x: Tensor
    levels: Tensor | None
    nfe: float
    nfe_F: float
    seconds: float
    sampler: str
    steps: int | None
    time_grid: str = "uniform-t"

    def summary(self) -> dict:
        n = self.x.shape[0]
        return {
            "sampler": self.sampler,
            "steps": self.steps,
            "time_grid": self.time_grid,
            "n": n,
            "nfe": self.nfe,
            "nfe_F": self.nfe_F,
            "seconds": self.seconds,
            "samples_per_s": n / max(self.seconds, 1e-12),
        }


# ------------------------------------------------------------------ counting


class EvalCounter:
    """Counts rows through the x_hat network and a learned F network with forward hooks.

    A hook sees every call, including those inside torch.func.jvp / vjp and inside
    `DiffusionModel.posterior` and `drifts`, so the counts are what was actually run.
    `per_sample(n)` divides the rows by the number of samples: a call on a batch of B
    rows counts B evaluations, one per sample in it.
    """

    def __init__(self, model: DiffusionModel):
        self.model = model
        self.rows = {"x_hat": 0, "F": 0}
        self._handles: list = []

    def _hook(self, key: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            self.rows[key] += int(inputs[0].shape[0])

        return hook

    def __enter__(self) -> "EvalCounter":
        self._handles.append(self.model.net.register_forward_hook(self._hook("x_hat")))
        if self.model.transform.learned:
            self._handles.append(self.model.transform.register_forward_hook(self._hook("F")))
        return self

    def __exit__(self, *exc) -> bool:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def per_sample(self, n: int) -> tuple[float, float]:
        return self.rows["x_hat"] / n, self.rows["F"] / n


# ------------------------------------------------------------------- helpers


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (or buffers); float32 if it has neither."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """N(0, I) noise drawn from `generator` on the generator's own device, then moved.

    A CPU generator therefore gives the same numbers whatever device the model is on.
    """
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _full(value: Tensor | float, like: Tensor) -> Tensor:
    """A (B,) vector of times for the batch `like`."""
    return torch.full((like.shape[0],), float(value), device=like.device, dtype=like.dtype)


def decode(model: DiffusionModel, z0: Tensor) -> Tensor:
    """z_0 -> x: z_0 / alpha_0 when F(x, 0) = x (VDM's decoder mean), else x_hat(z_0, 0)."""
    t0 = _full(0.0, z0)
    v0 = model.values(t0)
    if model.transform.identity_at_zero:
        return z0 / model._bc(v0.alpha)
    return model.x_hat(z0, t0, v0)


def ode_drift(model: DiffusionModel, z: Tensor, t: Tensor) -> Tensor:
    """h(z, t) = mu_t'(x_hat) + (sigma_t'/sigma_t)(z - mu_t(x_hat)), x_hat = x_hat(z, t)."""
    return model.drifts(z, t, model.x_hat(z, t))["ode"]


# ------------------------------------------------------------------ one step


def ancestral_step(model: DiffusionModel, z: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
    x_hat = model.x_hat(z, t)
    mean, var = model.posterior(z, x_hat, s, t, eta=1.0)
    return mean + model._bc(var.sqrt()) * randn(tuple(z.shape), generator, z.device, z.dtype)


def ddim_step(model: DiffusionModel, z: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
    mean, _ = model.posterior(z, model.x_hat(z, t), s, t, eta=0.0)
    return mean


def euler_step(model: DiffusionModel, z: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
    return z + model._bc(s - t) * ode_drift(model, z, t)


def heun_step(model: DiffusionModel, z: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
    dt = model._bc(s - t)
    k1 = ode_drift(model, z, t)
    k2 = ode_drift(model, z + dt * k1, s)
    return z + 0.5 * dt * (k1 + k2)


def em_step(model: DiffusionModel, z: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
    d = model.drifts(z, t, model.x_hat(z, t))
    # dz = b dt + g dw_bar run backwards: dt = s - t < 0, the noise has variance g^2 (t - s).
    noise = randn(tuple(z.shape), generator, z.device, z.dtype)
    return z + model._bc(s - t) * d["reverse"] + model._bc(torch.sqrt(d["g2"] * (t - s))) * noise


def adaptive_solve(model: DiffusionModel, z1: Tensor, rtol: float, atol: float) -> Tensor:
    from torchdiffeq import odeint

    def h(t: Tensor, z: Tensor) -> Tensor:
        # The solver's first-step probe may look just past an end; the clamp keeps every
        # evaluation inside [0, 1], where all schedules are finite.
        return ode_drift(model, z, _full(t.clamp(0.0, 1.0), z))

    times = torch.tensor([1.0, 0.0], dtype=torch.float64, device=z1.device)
    # step_t = [0] makes the last step land exactly on t = 0 instead of stepping past it and
    # interpolating back (which would evaluate the drift at t < 0).
    out = odeint(h, z1, times, method="dopri5", rtol=rtol, atol=atol, options={"step_t": times[1:]})
    return out[-1]


# --------------------------------------------------------------------- public


def _check(sampler: str, steps: int | None, time_grid: str = "uniform-t") -> None:
    if GRID_SEPARATOR in sampler:
        base, grid = split_sampler(sampler)
        raise ValueError(f"sampler {sampler!r}: pass the sampler and its grid apart, SamplerSettings({base!r}, steps, time_grid={grid!r})")
    sampler_spec(sampler)  # unknown sampler: ValueError naming the known ones
    if sampler in FIXED_STEP_SAMPLERS and (steps is None or int(steps) < 1):
        raise ValueError(f"sampler {sampler!r} needs steps >= 1, got {steps}")
    if time_grid not in TIME_GRIDS:
        raise ValueError(f"unknown time grid {time_grid!r}; choose one of {TIME_GRIDS} (eval.time_grid)")


@dataclass(frozen=True)
class SamplerSettings:
    """A sampler (see SAMPLERS) and how it runs: `steps` steps on the grid `time_grid` for the
    fixed-step samplers, tolerances rtol/atol for ode-adaptive. Checked on creation."""

    sampler: str
    steps: int | None = None
    time_grid: str = field(default="uniform-t", kw_only=True)
    rtol: float = field(default=1e-5, kw_only=True)
    atol: float = field(default=1e-5, kw_only=True)

    def __post_init__(self) -> None:
        _check(self.sampler, self.steps, self.time_grid)

    @property
    def fixed_steps(self) -> int | None:
        """The step count, None for an adaptive sampler (which takes as many as its tolerances need)."""
        return int(self.steps) if sampler_spec(self.sampler).fixed_step else None


@torch.no_grad()
def solve(
    model: DiffusionModel,
    z1: Tensor,
    settings: SamplerSettings,
    *,
    generator: torch.Generator | None = None,
    on_step: Callable[[], None] | None = None,
) -> Tensor:
    """Run the sampler of `settings` from the given z_1 (one batch) down to t = 0;
    returns z_0 (not decoded).

    Exposed so that tests can compare deterministic samplers with an exact flow map.
    """
    spec, steps = sampler_spec(settings.sampler), settings.fixed_steps
    run = load_object(spec.function)
    if spec.kind == "adaptive":
        return run(model, z1, settings.rtol, settings.atol)
    grid = make_time_grid(steps, settings.time_grid, model.schedule, device=z1.device, dtype=z1.dtype)
    if spec.kind == "grid":
        return run(model, z1, grid, on_step)
    z = z1
    for i in range(steps):
        z = run(model, z, _full(grid[i], z), _full(grid[i + 1], z), generator)
        if on_step is not None:
            on_step()
    return z


def sample(
    model: DiffusionModel,
    n: int,
    settings: SamplerSettings,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> SampleResult:
    """n samples from `model` with the sampler of `settings`.

    All noise (z_1 and the per-step noise) comes from `generator` (a CPU generator gives the
    same samples on any device), in batches of `batch_size`. device/dtype default to the
    model's. Returns decoded samples in model space, uint8 levels for discrete data, NFE
    per sample (see the module docstring) and the wall time.
    """
    sampler, steps = settings.sampler, settings.fixed_steps
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    device = torch.device(device) if device is not None else model_device(model)
    dtype = dtype or model_dtype(model)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    bar = None
    if progress:
        from tqdm import tqdm

        per_batch = steps if sampler in FIXED_STEP_SAMPLERS else 1
        bar = tqdm(total=len(sizes) * per_batch, desc=f"sample {sampler}", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
    outputs: list[Tensor] = []
    counter = EvalCounter(model)
    t_start = time.perf_counter()
    with eval_mode(model), counter, torch.no_grad():
        for b in sizes:
            z1 = randn((b, *model.event_shape), generator, device, dtype)
            on_step = (lambda: bar.update(1)) if bar is not None and sampler in FIXED_STEP_SAMPLERS else None
            z0 = solve(model, z1, settings, generator=generator, on_step=on_step)
            outputs.append(decode(model, z0))
            if bar is not None and sampler not in FIXED_STEP_SAMPLERS:
                bar.update(1)
        x = torch.cat(outputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    nfe, nfe_f = counter.per_sample(n)
    levels = None
    if model.levels is not None:
        levels = from_model_space(x, model.levels)
    return SampleResult(x=x, levels=levels, nfe=nfe, nfe_F=nfe_f, seconds=seconds, sampler=sampler, steps=steps, time_grid=settings.time_grid)


def expected_nfe(model: DiffusionModel, sampler: str, steps: int) -> tuple[int, int]:
    """(nfe, nfe_F) per sample of a fixed-step sampler, from its record (ndm.names.SamplerSpec):
    x_hat_per_step * N, plus 1 for the decode when F(x, 0) != x; F calls for a learned F only.
    A sampler on a grid of its own ("ddim@edm") counts as the sampler: the grid moves the times,
    not the evaluations."""
    sampler = split_sampler(sampler)[0]
    _check(sampler, steps)
    spec = sampler_spec(sampler)
    if not spec.fixed_step:
        raise ValueError("the adaptive sampler's NFE is counted, not predicted")
    decode_calls = 0 if model.transform.identity_at_zero else 1
    nfe, nfe_f = spec.nfe(int(steps), model.transform.learned, model.transform.time_dependent)
    return nfe + decode_calls, nfe_f


def seed_generator(seed: int) -> torch.Generator:
    """The CPU generator all sampling noise comes from."""
    return torch.Generator().manual_seed(int(seed))


__all__ = [
    "adaptive_solve",
    "EvalCounter",
    "FIXED_STEP_SAMPLERS",
    "SAMPLERS",
    "SampleResult",
    "SamplerSettings",
    "TIME_GRIDS",
    "decode",
    "expected_nfe",
    "ode_drift",
    "sample",
    "seed_generator",
    "solve",
]
