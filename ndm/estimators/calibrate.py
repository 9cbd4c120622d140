"""`ndm calibrate`: every likelihood estimator on Gaussian data with the exact (oracle) model.

For x ~ N(m, S) in R^D the NLL is exact, the oracle x_hat(z_t, t) = E[x | z_t] is exact,
and the expected ELBO has a quadrature formula (ndm.estimators.gaussian.exact_elbo_terms). Each
estimator is reported in bits/dim (of a continuous density, so it can be negative)
beside the exact NLL of the same samples, with its standard error, so a reader sees
at once whether an estimator is biased and by how much.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ndm.model.diffusion import bits_per_dim
from ndm.estimators.gaussian import GaussianOracle, GaussianSpec, exact_elbo_terms
from ndm.estimators.likelihood import Estimate, OdeSolver, continuous_nelbo, discrete_nelbo, ode_nll
from ndm.model.networks import NetworkConfig
from ndm.model.variants import ModelConfig, build_model, get_variant

# Variants whose F is linear (or the identity): the oracle is exact for them.
CALIBRATABLE = ("ddpm", "vdm-fixed", "flow", "ndm-blur")


def oracle_model(spec: GaussianSpec, variant: str = "vdm-fixed", blur_sigma_max: float = 2.0):
    """A float64 DiffusionModel of `variant` on R^D whose predictor is the exact E[x | z_t]."""
    if variant not in CALIBRATABLE:
        raise ValueError(
            f"calibration needs F linear and a fixed schedule; variant {variant!r} has F = "
            f"{get_variant(variant).transform}. Choose one of {CALIBRATABLE}"
        )
    cfg = ModelConfig(variant=variant, parameterization="x", network=NetworkConfig(kind="mlp", hidden=8, depth=1), blur_sigma_max=blur_sigma_max)
    model = build_model(cfg, (spec.dim,), None).double()
    linear_map = model.transform.matrix if variant == "ndm-blur" else None
    model.net = GaussianOracle(spec, model.schedule, linear_map)
    return model.eval(), linear_map


def _paired(est: Estimate, nll: torch.Tensor) -> dict[str, float]:
    """Estimator minus exact NLL per example: the bias, with a much smaller standard error."""
    diff = est.per_example - nll
    n = diff.numel()
    return {
        "gap_bpd": float(bits_per_dim(diff.mean().item(), est.dims)),
        "gap_bpd_stderr": float(bits_per_dim(diff.std().item() / math.sqrt(n), est.dims)),
    }


def calibrate(
    dim: int,
    seed: int,
    variant: str = "vdm-fixed",
    n_examples: int = 2000,
    time_samples: int = 64,
    discrete_steps: tuple[int, ...] = (10, 100, 1000),
    extra_estimators: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the estimators and return a JSON-able report (see module docstring)."""
    spec = GaussianSpec.make(dim, seed)
    model, linear_map = oracle_model(spec, variant)
    gen = torch.Generator().manual_seed(seed + 12345)
    x = spec.sample(n_examples, gen)
    nll = spec.nll(x)
    with torch.no_grad():
        exact = exact_elbo_terms(spec, model, linear_map)
    report: dict[str, Any] = {
        "dim": dim,
        "seed": seed,
        "variant": variant,
        "n_examples": n_examples,
        "units": "bits/dim of a continuous density (nats / (D ln 2))",
        "exact_nll_bpd": float(bits_per_dim(spec.expected_nll(), dim)),
        "sample_nll_bpd": float(bits_per_dim(nll.mean().item(), dim)),
        "exact_elbo_bpd": float(bits_per_dim(exact["total"], dim)),
        "exact_elbo_terms_bpd": {k: float(bits_per_dim(v, dim)) for k, v in exact.items() if k != "total"},
        "exact_elbo_gap_bpd": float(bits_per_dim(exact["total"] - spec.expected_nll(), dim)),
        "estimators": {},
    }
    runs = [("nelbo_continuous", lambda: continuous_nelbo(model, x, time_samples, generator=gen))]
    runs += [(f"nelbo_T{T}", lambda T=T: discrete_nelbo(model, x, T, n_step_samples=time_samples, generator=gen)) for T in discrete_steps]
    unknown = [e for e in extra_estimators if e not in EXTRA_ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown extra estimator {unknown[0]!r}; choose from {sorted(EXTRA_ESTIMATORS)}")
    # The probability-flow ODE estimators are always reported (DEFAULT_EXTRA), further ones on request.
    for name in DEFAULT_EXTRA + tuple(e for e in extra_estimators if e not in DEFAULT_EXTRA):
        runs.append((name, EXTRA_ESTIMATORS[name](model, x, gen)))
    for name, fn in runs:
        t0 = time.time()
        est = fn()
        entry = est.summary()
        entry.update(_paired(est, nll))
        entry["seconds"] = round(time.time() - t0, 3)
        report["estimators"][name] = entry
    return report


# Further estimators register here as name -> (model, x, generator) -> (() -> Estimate),
# e.g. the probability-flow ODE likelihood.
EXTRA_ESTIMATORS: dict[str, Any] = {}


def _ode_estimator(solver: OdeSolver):
    """NLL through the probability-flow ODE (ndm.estimators.likelihood.ode_nll) with `solver`."""

    def make(model, x, gen):
        return lambda: ode_nll(model, x, solver, generator=gen)

    return make


EXTRA_ESTIMATORS.update(
    {
        "ode_exact": _ode_estimator(OdeSolver(divergence="exact")),  # dopri5, rtol = atol = 1e-5
        "ode_hutchinson": _ode_estimator(OdeSolver(divergence="hutchinson")),  # dopri5, one Rademacher probe per example
        "ode_exact_heun100": _ode_estimator(OdeSolver(method="heun", steps=100)),  # 100 fixed Heun steps (200 NFE), exact divergence
    }
)
DEFAULT_EXTRA: tuple[str, ...] = ("ode_exact", "ode_hutchinson")
