"""Few-step samplers (issue 13): time grids, DPM-Solver++(2M) and its NDM generalisation,
EDM's Heun; their orders on the Gaussian oracle and their exact NFE.

The identity-F solvers are checked against literal transcriptions of k-diffusion's
sample_dpmpp_2m and sample_heun (in EDM's variables x = z / alpha, s = sigma / alpha, around
the denoiser wrapper D(x, s) = x_hat(alpha x, t(s))), so "DPM-Solver++(2M)" and "EDM's Heun"
mean exactly the published algorithms. Orders are fitted slopes of log error against log
steps, against the exact flow map (F = identity) or a dopri5 solution at tolerance 1e-10
(non-identity F, where no closed form exists).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from test_sampling import CountingNet, FastGaussianOracle, SmoothF, exact_flow, oracle, randomize

from ndm.estimators.gaussian import GaussianSpec
from ndm.estimators.multistep import dpmpp_2m, edm_heun, ndm_2m
from ndm.names import sampler_spec
from ndm.estimators.sampling import SamplerSettings, decode, expected_nfe, sample, seed_generator, solve
from ndm.estimators.time_grids import EDM_RHO, TIME_GRIDS, make_time_grid
from ndm.model.networks import NetworkConfig
from ndm.model.schedules import invert_gamma
from ndm.model.transforms import NeuralTransform
from ndm.model.variants import ModelConfig, build_model
from ndm.names import FIXED_STEP_SAMPLERS, SAMPLERS

F64 = torch.float64
MLP = NetworkConfig(kind="mlp", hidden=8, depth=1)


def _z1(n: int = 32, seed: int = 1) -> Tensor:
    return torch.randn(n, 4, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _slope(steps: tuple[int, ...], errors: list[float]) -> float:
    """The fitted order p of error ~ steps^-p."""
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


# ------------------------------------------------------------------ grids


@pytest.mark.parametrize("variant", ["ddpm", "vdm", "flow"])
def test_time_grids_follow_their_definitions(variant):
    m = build_model(ModelConfig(variant=variant, network=MLP), (4,), None).double()
    n = 9
    for kind in TIME_GRIDS:
        t = make_time_grid(n, kind, m.schedule, dtype=F64)
        assert t.shape == (n + 1,) and t[0] == 1.0 and t[-1] == 0.0
        assert bool((t[1:] < t[:-1]).all()), kind
    gamma = lambda kind: m.schedule.values(make_time_grid(n, kind, m.schedule, dtype=F64)).gamma.detach()
    g = gamma("uniform-logsnr")
    torch.testing.assert_close(g[1:] - g[:-1], torch.full((n,), float(g[1] - g[0]), dtype=F64), rtol=1e-9, atol=1e-9)
    root = torch.exp(gamma("edm") / 2) ** (1 / EDM_RHO)  # s^(1/rho), s = sigma / alpha
    torch.testing.assert_close(root[1:] - root[:-1], torch.full((n,), float(root[1] - root[0]), dtype=F64), rtol=1e-9, atol=1e-9)
    # uniform-t is the grid the samplers always used, float for float
    legacy = torch.arange(n, -1, -1, dtype=torch.float64).div(n).to(torch.float32)
    assert torch.equal(make_time_grid(n, "uniform-t"), legacy)


def test_default_grid_leaves_existing_samples_unchanged():
    m, _ = oracle("vdm-fixed")
    z1 = _z1()
    for sampler in ("ddim", "ode-heun"):
        assert torch.equal(solve(m, z1, SamplerSettings(sampler, 7)), solve(m, z1, SamplerSettings(sampler, 7, time_grid="uniform-t")))


def test_bad_grid_arguments_fail_clearly():
    m, _ = oracle("ddpm")
    with pytest.raises(ValueError, match="unknown time grid"):
        make_time_grid(5, "karras", m.schedule)
    with pytest.raises(ValueError, match="needs the model's schedule"):
        make_time_grid(5, "edm")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        make_time_grid(0, "uniform-t")
    with pytest.raises(ValueError, match="eval.time_grid"):
        sample(m, 2, SamplerSettings("dpmpp-2m", 3, time_grid="log"))
    assert {"dpmpp-2m", "edm-heun"} <= set(FIXED_STEP_SAMPLERS) <= set(SAMPLERS)


# ------------------------------------------- published algorithms (F = identity)


def _denoiser(m):
    """k-diffusion's model(x, sigma) for our model: D(x, s) = x_hat(alpha_t x, t), s = sigma_t / alpha_t."""

    def model(x: Tensor, s: Tensor) -> Tensor:
        t = invert_gamma(m.schedule, 2.0 * torch.log(s))
        return m.x_hat(x * m.values(t).alpha[:, None], t)

    return model


def _sigmas(m, grid: Tensor) -> Tensor:
    v = m.values(grid)
    return v.sigma / v.alpha


def k_diffusion_dpmpp_2m(model, x, sigmas):
    """k_diffusion.sampling.sample_dpmpp_2m (v0.1.1), transcribed; sigmas end at sigma_min > 0."""
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda t: t.neg().exp()
    t_fn = lambda sigma: sigma.log().neg()
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def k_diffusion_heun(model, x, sigmas):
    """k_diffusion.sampling.sample_heun (v0.1.1) with s_churn = 0, transcribed."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in)
            d_2 = (x_2 - denoised_2) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@pytest.mark.parametrize("variant", ["ddpm", "vdm-fixed", "flow"])
def test_identity_F_solvers_are_the_published_algorithms(variant):
    """dpmpp_2m and edm_heun equal k-diffusion's samplers in EDM's variables, on every grid."""
    m, _ = oracle(variant)
    z1 = _z1()
    for kind in TIME_GRIDS:
        grid = make_time_grid(6, kind, m.schedule, dtype=F64)
        sig = _sigmas(m, grid)
        a1, a0 = m.values(grid[:1]).alpha, m.values(grid[-1:]).alpha
        with torch.no_grad():
            ref = k_diffusion_dpmpp_2m(_denoiser(m), z1 / a1, sig) * a0
            torch.testing.assert_close(dpmpp_2m(m, z1, grid), ref, rtol=1e-9, atol=1e-9)
            ref = k_diffusion_heun(_denoiser(m), z1 / a1, sig) * a0
            torch.testing.assert_close(edm_heun(m, z1, grid), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variant", ["ddpm", "vdm-fixed", "flow"])
def test_ndm_integrator_with_identity_F_is_dpmpp_2m(variant):
    m, _ = oracle(variant)
    z1 = _z1()
    for kind in TIME_GRIDS:
        grid = make_time_grid(8, kind, m.schedule, dtype=F64)
        with torch.no_grad():
            torch.testing.assert_close(ndm_2m(m, z1, grid), dpmpp_2m(m, z1, grid), rtol=1e-12, atol=1e-12)


def test_first_ndm_step_is_ddim():
    """One step has no previous x_hat: the integrator is the exact frozen-x_hat step, DDIM."""
    m, _ = oracle("ndm-blur")
    z1 = _z1()
    assert torch.allclose(solve(m, z1, SamplerSettings("dpmpp-2m", 1)), solve(m, z1, SamplerSettings("ddim", 1)), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- orders

STEPS = (20, 40, 80, 160)


@pytest.mark.parametrize("variant", ["ddpm", "vdm-fixed", "flow"])
def test_identity_F_orders_against_the_exact_flow_map(variant):
    """Max error over 32 samples against the exact flow map: second order for both new
    solvers on every grid (DDIM, first order, as the control)."""
    m, spec = oracle(variant)
    z1 = _z1()
    exact = exact_flow(m, spec, z1)
    for kind in ("uniform-logsnr", "edm"):
        orders = {}
        for sampler in ("ddim", "dpmpp-2m", "edm-heun"):
            err = [(decode(m, solve(m, z1, SamplerSettings(sampler, n, time_grid=kind))) - exact).abs().max().item() for n in STEPS]
            orders[sampler] = _slope(STEPS, err)
            if sampler != "ddim":
                assert err[-1] < 1e-2, (kind, sampler, err)
        print(variant, kind, orders)
        assert 0.8 < orders["ddim"] < 1.2
        assert 1.8 < orders["dpmpp-2m"] < 2.4 and 1.8 < orders["edm-heun"] < 2.4, orders


def _learned_F_oracle():
    """ndm's learned-F code path (F = x + t NN(x, t), dF/dt by JVP) around the Gaussian oracle."""
    m = build_model(ModelConfig(variant="ndm", parameterization="x", network=MLP), (4,), None).double()
    m.transform = NeuralTransform(SmoothF(4, 0))
    m.net = FastGaussianOracle(GaussianSpec.make(4, 0), m.schedule)
    return m.eval()


@pytest.mark.parametrize("case", ["ndm-blur", "learned"])
def test_non_identity_F_orders_against_a_tight_solution(case):
    """F(x, t) = C_t x (fixed) and a learned-F path: dpmpp-2m (the NDM integrator, whose dF/dt
    enters only through F at two times) and edm-heun (D = F + dF/dlambda) converge to the
    probability-flow ODE's solution (the drift mu' + (sigma'/sigma)(z - mu)) at order 2."""
    m = oracle("ndm-blur")[0] if case == "ndm-blur" else _learned_F_oracle()
    z1 = _z1(seed=3)
    ref = solve(m, z1, SamplerSettings("ode-adaptive", rtol=1e-10, atol=1e-10))
    for sampler in ("dpmpp-2m", "edm-heun"):
        err = [(solve(m, z1, SamplerSettings(sampler, n, time_grid="uniform-logsnr")) - ref).abs().max().item() for n in STEPS]
        print(case, sampler, err)
        assert 1.7 < _slope(STEPS[1:], err[1:]) < 2.4 and err[-1] < 2e-3, (sampler, err)
    # F matters: the identity-F solver on the same x_hat ends elsewhere
    grid = make_time_grid(STEPS[-1], "uniform-logsnr", m.schedule, dtype=F64)
    m.transform.is_identity = True  # instance attribute: dpmpp_2m then takes x_hat for F(x_hat, t)
    with torch.no_grad():
        plain = dpmpp_2m(m, z1, grid)
    del m.transform.is_identity
    assert (plain - ref).abs().max() > 1e-2


def test_time_independent_F_shortcut_equals_the_general_update():
    """For F(x, t) = E(x) the integrator evaluates F once per step; the general three-call
    update gives the same numbers."""
    m = build_model(ModelConfig(variant="ndm-latent", parameterization="x", network=MLP), (4,), None).double()
    randomize(m.transform, 0.3, 4)
    m.net = FastGaussianOracle(GaussianSpec.make(4, 0), m.schedule)
    m.eval()
    z1 = _z1()
    grid = make_time_grid(6, "edm", m.schedule, dtype=F64)
    with torch.no_grad():
        short = ndm_2m(m, z1, grid)
        m.transform.time_dependent = True  # instance attribute: forces the general path
        general = ndm_2m(m, z1, grid)
    torch.testing.assert_close(short, general, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- NFE


@pytest.mark.parametrize("variant", ["ddpm", "ndm", "ndm-latent", "ndm-blur"])
def test_nfe_is_counted_exactly_on_every_grid(variant):
    """x_hat and learned-F rows counted by wrappers independent of EvalCounter equal the
    reported NFE and the closed forms: dpmpp-2m N x_hat and 3N - 1 F calls (learned,
    time-dependent F), N for a time-independent F; edm-heun 2N and 2N; plus the decode
    call where F(x, 0) != x."""
    cfg = ModelConfig(variant=variant, network=MLP, blur_sigma_max=2.0)
    m = build_model(cfg, (4,), None)
    randomize(m.net, 0.05, 1)
    m.net = CountingNet(m.net)
    learned = m.transform.learned
    if learned:
        randomize(m.transform, 0.05, 2)
        m.transform.net = CountingNet(m.transform.net)
    m.eval()
    n_steps = 4
    decode_calls = 0 if m.transform.identity_at_zero else 1
    closed = {
        "dpmpp-2m": (n_steps + decode_calls, 0 if not learned else (n_steps if variant == "ndm-latent" else 3 * n_steps - 1)),
        "edm-heun": (2 * n_steps + decode_calls, 2 * n_steps if learned else 0),
    }
    for sampler, want in closed.items():
        assert expected_nfe(m, sampler, n_steps) == want
        assert sampler_spec(sampler).nfe(n_steps, learned, m.transform.time_dependent) == (want[0] - decode_calls, want[1])
        for kind in TIME_GRIDS:
            m.net.rows = 0
            if learned:
                m.transform.net.rows = 0
            res = sample(m, 3, SamplerSettings(sampler, n_steps, time_grid=kind), generator=seed_generator(0), batch_size=2)
            assert torch.isfinite(res.x).all() and res.time_grid == kind
            counted = (m.net.rows / 3, m.transform.net.rows / 3 if learned else 0)
            assert (res.nfe, res.nfe_F) == counted == want, (sampler, kind, counted, want)
            assert res.summary()["time_grid"] == kind


def test_adaptive_sampler_record_has_no_predicted_nfe():
    with pytest.raises(ValueError, match="counted, not predicted"):
        sampler_spec("ode-adaptive").nfe(3, False, True)
