"""NLL through the probability-flow ODE (issue 3) against exact values.

Gaussian data x ~ N(m, S) with the exact predictor (ndm.estimators.calibrate.oracle_model): the model's
ODE density is the data density up to the prior end (q(z_1) vs N(0, I)) and the decoder
noise at t = 0, both < 1e-3 nats/dim here, so the ODE NLL must equal GaussianSpec.nll per
example. For the linear non-identity F of ndm-blur the ELBO is loose (docs/math.md) but the
ODE likelihood is still exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from trained_digits import trained_digits

from ndm.estimators.calibrate import calibrate, oracle_model
from ndm.model.diffusion import data_to_levels, levels_to_data
from ndm.estimators.gaussian import GaussianSpec, exact_elbo_terms
from ndm.estimators.likelihood import OdeSolver, _flow_and_divergence, continuous_nelbo, ode_log_density, ode_nll
from ndm.model.networks import NetworkConfig
from ndm.estimators.sampling import ode_drift, seed_generator
from ndm.model.variants import ModelConfig, build_model

F64 = torch.float64
N_EXAMPLES = 1000


def paired(est, reference: torch.Tensor, dim: int) -> tuple[float, float]:
    """Mean and standard error of (estimate - reference) per example, nats/dim."""
    d = est.per_example - reference
    return d.mean().item() / dim, d.std().item() / math.sqrt(d.numel()) / dim


@pytest.fixture(scope="module")
def gaussian():
    spec = GaussianSpec.make(4, 0)
    x = spec.sample(N_EXAMPLES, torch.Generator().manual_seed(11))
    return spec, x, spec.nll(x)


@pytest.mark.parametrize("variant", ["vdm-fixed", "ddpm", "flow", "ndm-blur"])
def test_ode_nll_exact_divergence_equals_exact_nll(gaussian, variant):
    """dopri5 (rtol = atol = 1e-5) with the exact divergence: within 0.005 nats/dim of the exact NLL,
    paired per example. For ndm-blur the exact ELBO is 0.05+ nats/dim looser at the same time."""
    spec, x, nll = gaussian
    model, linear_map = oracle_model(spec, variant)
    est = ode_nll(model, x, OdeSolver(divergence="exact", method="dopri5"))
    gap, se = paired(est, nll, spec.dim)
    print(f"{variant}: ODE NLL - NLL = {gap:.5f} +- {se:.5f} nats/dim, nfe {est.nfe}")
    assert abs(gap) < 0.005
    assert est.nfe > 10
    assert set(est.terms) == {"prior", "divergence", "scale"}
    torch.testing.assert_close(sum(est.terms.values()), est.per_example)
    if variant == "ndm-blur":
        with torch.no_grad():
            elbo = exact_elbo_terms(spec, model, linear_map)["total"]
        elbo_gap = (elbo - spec.expected_nll()) / spec.dim
        print(f"ndm-blur: exact ELBO - NLL = {elbo_gap:.4f} nats/dim")
        assert elbo_gap > 0.05 > 10 * abs(gap)


def test_fixed_step_heun_converges_with_exact_nfe(gaussian):
    """Heun with N steps costs exactly 2N evaluations per example; its error against the exact NLL
    falls with N (ddpm, whose gamma' ~ 1200 at t = 0 makes few steps inaccurate)."""
    spec, x, nll = gaussian
    model, _ = oracle_model(spec, "ddpm")
    gaps = []
    for steps in (5, 40):
        est = ode_nll(model, x[:200], OdeSolver(divergence="exact", method="heun", steps=steps))
        assert est.nfe == 2 * steps and est.name == f"ode_exact_heun{steps}"
        gaps.append(abs(paired(est, nll[:200], spec.dim)[0]))
    print("heun |gap| at 5, 40 steps:", gaps)
    assert gaps[1] < 0.005 and gaps[1] < gaps[0] / 5


def test_hutchinson_agrees_with_exact_divergence(gaussian):
    """Same examples, same fixed Heun grid (so the same trajectories): the Hutchinson estimate minus
    the exact one is zero within its standard error, for Rademacher and Gaussian probes; 4 probes
    halve the per-example noise (1/sqrt(4))."""
    spec, x, nll = gaussian
    model, _ = oracle_model(spec, "vdm-fixed")
    exact = ode_nll(model, x, OdeSolver(divergence="exact", method="heun", steps=20))
    noise = {}
    for probe, probes in (("rademacher", 1), ("gaussian", 1), ("rademacher", 4)):
        hutch = ode_nll(model, x, OdeSolver(divergence="hutchinson", probe=probe, probes=probes, method="heun", steps=20), generator=seed_generator(probes))
        d = hutch.per_example - exact.per_example
        mean, se = d.mean().item(), d.std().item() / math.sqrt(d.numel())
        print(f"{probe} x{probes}: hutchinson - exact = {mean:.4f} +- {se:.4f} nats; reported stderr {hutch.stderr_nats:.4f}")
        assert abs(mean) < 4 * se
        assert abs(hutch.mean_nats - exact.mean_nats) < 4 * hutch.stderr_nats
        assert d.std() > 0  # the probes really are random
        noise[(probe, probes)] = d.std().item()
        assert hutch.nfe == exact.nfe == 40
    assert 0.35 < noise[("rademacher", 4)] / noise[("rademacher", 1)] < 0.7


def test_dequantized_nll_equals_its_closed_form(gaussian):
    """Discrete data (K = 8 levels, Delta = 1/4) under the exact Gaussian model:
    E_u[-log N(x + u; m, S)] - D log Delta = -log N(x; m, S) + Delta^2 / 24 tr(S^-1) - D log Delta
    per example. The paired difference must vanish within its standard error, which is small
    enough to see the Delta^2 term (~0.02 nats/dim) and the -D log Delta term."""
    spec, x, _ = gaussian
    levels = 8
    delta = 2.0 / levels
    xd = levels_to_data(data_to_levels(x, levels), levels, F64)  # bin centres
    model, _ = oracle_model(spec, "vdm-fixed")
    est = ode_nll(model, xd, OdeSolver(divergence="exact", method="dopri5"), levels=levels, generator=seed_generator(5))
    quad = delta**2 / 24.0 * torch.trace(torch.linalg.inv(spec.cov)).item()
    expected = spec.nll(xd) + quad - spec.dim * math.log(delta)
    gap, se = paired(est, expected, spec.dim)
    print(f"dequantized: gap {gap:.5f} +- {se:.5f} nats/dim; Delta^2 term {quad / spec.dim:.4f} nats/dim")
    assert abs(gap) < 4 * se + 1e-3
    assert quad / spec.dim > 5 * se  # the test sees the quadratic term
    torch.testing.assert_close(est.terms["dequantization"], torch.full_like(est.per_example, -spec.dim * math.log(delta)))


def test_ndm_latent_is_refused_with_a_reason():
    cfg = ModelConfig(variant="ndm-latent", network=NetworkConfig(kind="mlp", hidden=8, depth=1))
    model = build_model(cfg, (4,), None)
    with pytest.raises(ValueError, match=r"F\(x, 0\) = E\(x\)"):
        ode_nll(model, torch.zeros(2, 4))


@pytest.mark.parametrize("method", ["heun", "dopri5"])
def test_ode_trajectory_carries_no_graph_to_the_parameters(method):
    """The ODE is evaluation: each step's h must not keep a graph to the (grad-requiring)
    parameters, or z_{i+1} = z_i + dt h chains every step's graph into the next (this cost
    10.9 GB and 8x the time on 3x32x32 patches at 25 Heun steps)."""
    cfg = ModelConfig(variant="ndm", network=NetworkConfig(kind="mlp", hidden=16, depth=1))
    model = build_model(cfg, (4,), None).double()
    assert all(p.requires_grad for p in model.parameters())
    z0 = torch.randn(3, 4, dtype=F64)
    log_prior, int_div, z1 = ode_log_density(model, z0, OdeSolver(method=method, steps=3, divergence="hutchinson", rtol=1e-3, atol=1e-3))
    assert not (log_prior.requires_grad or int_div.requires_grad or z1.requires_grad)
    assert torch.isfinite(int_div).all()


def test_exact_divergence_through_learned_F_matches_the_jacobian_trace():
    """div h for ndm on 4x4 images (U-Net x_hat and U-Net F, dF/dt by a JVP inside h): the
    D = 16 vector-Jacobian products equal the trace of the full Jacobian."""
    cfg = ModelConfig(variant="ndm", network=NetworkConfig(kind="unet", channels=8, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[2]))
    model = build_model(cfg, (1, 4, 4), 17).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=F64) * 0.05)
    model.eval()
    z = torch.randn(2, 1, 4, 4, generator=g, dtype=F64)
    t = torch.tensor([0.3, 0.7], dtype=F64)
    h, div = _flow_and_divergence(model, z, t, None)
    jac = torch.autograd.functional.jacobian(lambda zz: ode_drift(model, zz, t), z).reshape(2, 16, 2, 16)
    trace = torch.stack([torch.diagonal(jac[i, :, i, :]).sum() for i in range(2)])
    torch.testing.assert_close(div, trace, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h, ode_drift(model, z, t))
    assert trace.abs().min() > 1e-3


def test_calibrate_reports_the_ode_estimators():
    """`ndm calibrate` reports ode_exact and ode_hutchinson by default, each with its NFE and its
    paired gap to the exact NLL (exact: < 0.005 nats/dim)."""
    report = calibrate(dim=2, seed=0, n_examples=300, time_samples=8, discrete_steps=(10,))
    est = report["estimators"]
    assert {"ode_exact", "ode_hutchinson", "nelbo_continuous", "nelbo_T10"} <= set(est)
    for name in ("ode_exact", "ode_hutchinson"):
        assert est[name]["nfe"] > 10
    assert abs(est["ode_exact"]["gap_bpd"]) < 0.005 / math.log(2)
    assert abs(est["ode_hutchinson"]["gap_bpd"]) < 4 * est["ode_hutchinson"]["gap_bpd_stderr"] + 0.005
    with pytest.raises(ValueError, match="unknown extra estimator"):
        calibrate(dim=2, seed=0, n_examples=10, extra_estimators=("nope",))


# ------------------------------------------------------- trained digits model


@pytest.fixture(scope="module")
def digits_test_x():
    from ndm.pipeline.data import load_dataset, to_model_space

    ds = load_dataset("digits", seed=0)
    return to_model_space(ds.test[:24], ds.levels), ds.levels


@pytest.mark.parametrize("variant", ["ddpm", "ndm"])
def test_trained_digits_ode_nll_beside_nelbo(tmp_path_factory, digits_test_x, variant):
    """The dequantized ODE NLL of a trained digits model, reported beside its NELBO: finite, an upper
    bound on a discrete NLL (so > 0 bits/dim within its error), with the -D log Delta term of
    K = 17 levels (log2(17/2) = 3.09 bits/dim) included. For ddpm the Hutchinson estimate agrees
    with the exact divergence (64 vjps per evaluation) on the same examples and grid; for ndm
    (a vjp through F's JVP per probe) only Hutchinson is run, to keep the test fast."""
    model, _ = trained_digits(variant, tmp_path_factory.getbasetemp())
    x, levels = digits_test_x
    xs = x[:6]
    hutch = ode_nll(model, xs, OdeSolver(divergence="hutchinson", method="heun", steps=6), generator=seed_generator(1))
    nelbo = continuous_nelbo(model, x, 16, generator=seed_generator(2))
    estimates = [hutch]
    line = f"{variant}: ODE NLL (Hutchinson, heun6) {hutch.bpd:.3f} +- {hutch.bpd_stderr:.3f} bpd (nfe {hutch.nfe}, nfe of F with each)"
    if variant == "ddpm":
        exact = ode_nll(model, xs, OdeSolver(divergence="exact", method="heun", steps=6), generator=seed_generator(1))
        estimates.append(exact)
        line += f", exact divergence {exact.bpd:.3f} +- {exact.bpd_stderr:.3f}"
        d = hutch.per_example - exact.per_example  # same dequantization noise (same seed), same grid
        assert abs(d.mean().item()) < 4 * d.std().item() / math.sqrt(d.numel()) + 1e-6
    print(f"{line}; NELBO {nelbo.bpd:.3f} +- {nelbo.bpd_stderr:.3f} bpd; terms {hutch.summary()['terms_bpd']}")
    for est in estimates:
        assert torch.isfinite(est.per_example).all()
        assert est.bpd + 3 * est.bpd_stderr > 0
        assert est.nfe == 12
        assert est.summary()["terms_bpd"]["dequantization"] == pytest.approx(math.log2(levels / 2), rel=1e-6)
    assert math.isfinite(nelbo.bpd)
