"""NDM's gauge freedom (docs/math.md "Gauge freedom of F"), in float64.

- The invariance: F + a(t) P with x_hat's input shifted by alpha_t a(t) P leaves every NELBO
  term per example unchanged (continuous, T-step, and both estimators), on the Gaussian oracle
  and on small random NDMs; a(1) != 0 moves only the prior term, by its closed form; a(0) != 0
  moves the reconstruction term (and gauge_transform refuses it).
- The reference gauge F = x + t (NN(x,t) - NN(x_ref,t) + v): F(x, 0) = x, F(x_ref, t) = x_ref + t v,
  an input-independent b(t) added to NN changes nothing (it does without the gauge), and the
  closed-form tests of tests/test_diffusion.py and tests/test_fast_paths.py pass with it on.
- The offset decomposition against a known offset, and post-hoc removal: same NELBO, same
  exact ODE flow map, the stiff offset gone.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import test_diffusion
import test_fast_paths
from ndm.estimators.gaussian import GaussianOracle, GaussianSpec
from ndm.estimators.gauge import gauge_transform, offset_decomposition, offset_metrics, remove_gauge
from ndm.estimators.likelihood import continuous_nelbo, discrete_nelbo
from ndm.model import variants
from ndm.model.networks import NetworkConfig
from ndm.model.specs import ModelConfig
from ndm.model.variants import build_model

F64 = torch.float64
MLP = NetworkConfig(kind="mlp", hidden=32, depth=2, fourier_features=[1, 2])


def randomize(module: torch.nn.Module, std: float = 0.15, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def direction(shape, seed=3) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def offset_fn(profile, p: torch.Tensor):
    """a(t) P as a function of the (B,) times."""
    return lambda t: profile(t).view(-1, *([1] * p.dim())) * p


BOTH_ENDS_ZERO = lambda t: 4.0 * t * (1.0 - t) * (1.0 + 2.0 * t)  # noqa: E731  a(0) = a(1) = 0, exactly
END_NONZERO = lambda t: t * (1.0 + t)  # noqa: E731  a(0) = 0, a(1) = 2
START_NONZERO = lambda t: 1.0 - t * t  # noqa: E731  a(0) = 1, a(1) = 0


def oracle_model(variant: str, dim: int = 4):
    spec = GaussianSpec.make(dim, 0)
    m = build_model(ModelConfig(variant=variant, network=MLP, parameterization="x", blur_sigma_max=2.0), (dim,), None).double()
    m.net = GaussianOracle(spec, m.schedule, m.transform.matrix if variant == "ndm-blur" else None)
    return m, spec.sample(12, torch.Generator().manual_seed(1))


def random_ndm(variant: str, **kw):
    m = build_model(ModelConfig(variant=variant, network=MLP, parameterization="v", **kw), (4,), 17).double()
    randomize(m.net, seed=4)
    randomize(m.transform, seed=5)
    x = torch.randint(0, 17, (12, 4), generator=torch.Generator().manual_seed(6)).double() * (2 / 17) - 1 + 1 / 17
    return m, x


def all_terms(m, x) -> dict[str, torch.Tensor]:
    """Every NELBO term per example, each with its own fixed random numbers."""
    out = {}
    torch.manual_seed(0)
    t = m.nelbo(x)
    out.update({f"continuous.{k}": getattr(t, k) for k in ("reconstruction", "diffusion", "prior")})
    torch.manual_seed(1)
    t = m.nelbo(x, n_steps=10)
    out.update({f"T10.{k}": getattr(t, k) for k in ("reconstruction", "diffusion", "prior")})
    for k, v in continuous_nelbo(m, x, n_time_samples=4, generator=torch.Generator().manual_seed(2)).terms.items():
        out[f"continuous_nelbo.{k}"] = v
    for k, v in discrete_nelbo(m, x, n_steps=7, n_step_samples=None, generator=torch.Generator().manual_seed(3)).terms.items():
        out[f"discrete_nelbo.{k}"] = v
    return out


def assert_terms_equal(a: dict, b: dict, skip: tuple[str, ...] = ()) -> None:
    for k in a:
        if not k.endswith(skip):
            torch.testing.assert_close(b[k], a[k], rtol=1e-10, atol=1e-10, msg=lambda m: f"{k}: {m}")


CASES = [("oracle", "vdm-fixed", {}), ("oracle", "ndm-blur", {}), ("random", "ndm", {}), ("random", "ndm-vdm", {}), ("random", "ndm", {"transform_time": "separable"})]


def build(kind, variant, kw):
    return oracle_model(variant) if kind == "oracle" else random_ndm(variant, **kw)


@pytest.mark.parametrize("kind,variant,kw", CASES)
def test_offset_with_both_ends_zero_leaves_every_nelbo_term_unchanged(kind, variant, kw):
    m, x = build(kind, variant, kw)
    p = direction(x.shape[1:])
    g = gauge_transform(m, offset_fn(lambda t: 3.0 * BOTH_ENDS_ZERO(t), p))
    t = torch.full((x.shape[0],), 0.4, dtype=F64)
    # the transformation is real: F and the marginal mean move by a(t) P and alpha_t a(t) P
    torch.testing.assert_close(g.transform(x, t) - m.transform(x, t), (3.0 * BOTH_ENDS_ZERO(t))[:, None] * p)
    assert float((g.marginal(x, t)[0] - m.marginal(x, t)[0]).detach().abs().max()) > 0.1
    base, moved = all_terms(m, x), all_terms(g, x)
    assert_terms_equal(base, moved)
    # without the shift of x_hat's input the same offset is not a symmetry
    unshifted = gauge_transform(m, offset_fn(lambda t: 3.0 * BOTH_ENDS_ZERO(t), p))
    unshifted.x_hat = lambda z, t, v=None: m.x_hat(z, t, v)
    torch.manual_seed(0)
    naive = unshifted.nelbo(x).diffusion
    assert float((naive - base["continuous.diffusion"]).detach().abs().max()) > 1e-3 * float(base["continuous.diffusion"].detach().abs().max())


@pytest.mark.parametrize("kind,variant,kw", CASES[:3])
def test_offset_with_a1_nonzero_moves_only_the_prior_by_its_closed_form(kind, variant, kw):
    m, x = build(kind, variant, kw)
    p = direction(x.shape[1:])
    g = gauge_transform(m, offset_fn(END_NONZERO, p))
    base, moved = all_terms(m, x), all_terms(g, x)
    assert_terms_equal(base, moved, skip=("prior",))
    one = torch.ones(x.shape[0], dtype=F64)
    a1, f1 = 2.0 * p, m.transform(x, one)
    alpha1_sq = float(m.values(one[:1]).alpha[0]) ** 2
    expected = 0.5 * alpha1_sq * (2.0 * (f1 * a1).flatten(1).sum(1) + (a1**2).sum())
    for k in ("continuous.prior", "T10.prior", "continuous_nelbo.prior", "discrete_nelbo.prior"):
        torch.testing.assert_close(moved[k] - base[k], expected, rtol=1e-9, atol=1e-12)
    assert float(expected.detach().abs().min()) > 1e-4


def _reconstruction_from_F0(m, x, eps):
    """-log p(x | z_0) for continuous data by its definition: z_0 = alpha_0 F(x, 0) + sigma_0 eps,
    decoder N(z_0 / alpha_0, (sigma_0 / alpha_0)^2) (the decoder of a model with F(x, 0) = x)."""
    t0 = torch.zeros(x.shape[0], dtype=F64)
    v0 = m.values(t0)
    mean = m.transform(x, t0) + (v0.sigma / v0.alpha)[:, None] * eps
    scale = (v0.sigma / v0.alpha)[:, None]
    return (0.5 * ((x - mean) / scale) ** 2 + torch.log(scale) + 0.5 * math.log(2 * math.pi)).sum(1)


def test_offset_with_a0_nonzero_moves_the_reconstruction_and_is_refused():
    m, x = oracle_model("vdm-fixed")
    p = direction(x.shape[1:])
    eps = direction(x.shape, seed=9)
    # the definition reproduces the model's term when a(0) = 0 ...
    g = gauge_transform(m, offset_fn(BOTH_ENDS_ZERO, p))
    torch.testing.assert_close(_reconstruction_from_F0(g, x, eps), m.reconstruction_loss(x, eps), rtol=1e-12, atol=1e-9)
    # ... and moves when a(0) != 0: the decoder z_0 / alpha_0 no longer centres on x
    with pytest.raises(ValueError, match="a\\(0\\)"):
        gauge_transform(m, offset_fn(START_NONZERO, p))
    from ndm.estimators.gauge import FunctionOffset, GaugeTransformedModel

    broken = GaugeTransformedModel(m, FunctionOffset(offset_fn(START_NONZERO, p)))
    delta = _reconstruction_from_F0(broken, x, eps) - m.reconstruction_loss(x, eps)
    assert float(delta.min()) > 1.0


# ----------------------------------------------------------- the reference gauge


def ref_model(transform_time: str, gauge: str = "reference"):
    return build_model(ModelConfig(variant="ndm", network=MLP, parameterization="x", transform_time=transform_time, transform_gauge=gauge), (4,), 17).double()


class OffsetNet(torch.nn.Module):
    """net(x, t) + b(t): an input-independent change of NN (the null direction of the bound)."""

    supports_time_derivative = True

    def __init__(self, net, b):
        super().__init__()
        self.inner, self.b = net, b

    def forward(self, x, t, time_derivative=False):
        b, db = torch.func.jvp(self.b, (t,), (torch.ones_like(t),))
        if time_derivative:
            out, dout = self.inner(x, t, time_derivative=True)
            return out + b, dout + db
        return self.inner(x, t) + b


@pytest.mark.parametrize("transform_time", ["jvp", "separable"])
def test_reference_gauge_pins_F_at_x_ref_and_removes_input_independent_offsets(transform_time):
    m = ref_model(transform_time)
    g = torch.Generator().manual_seed(7)
    x, t = torch.randn(8, 4, generator=g, dtype=F64), torch.rand(8, generator=g, dtype=F64)
    f, df = m.transform.with_time_derivative(x, t)
    assert torch.equal(f, x) and torch.equal(df, torch.zeros_like(x))  # fresh: F = identity
    randomize(m.transform, seed=8)
    v = m.transform.end_offset
    torch.testing.assert_close(m.transform(x, torch.zeros(8, dtype=F64)), x, rtol=0, atol=0)
    x_ref = torch.zeros(8, 4, dtype=F64)
    torch.testing.assert_close(m.transform(x_ref, t), t[:, None] * v, rtol=1e-14, atol=1e-14)
    f, df = m.transform.with_time_derivative(x, t)
    _, df_jvp = torch.func.jvp(lambda tt: m.transform(x, tt), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(df, df_jvp, rtol=1e-11, atol=1e-11)
    h = 1e-6
    torch.testing.assert_close(df, (m.transform(x, t + h) - m.transform(x, t - h)) / (2 * h), rtol=1e-5, atol=1e-5)
    # an input-independent b(t) added to NN (to G for the separable F) leaves F and dF/dt as they were
    per_channel = direction((4 * (m.transform.rank if transform_time == "separable" else 1),), seed=10)
    b = (lambda tt: torch.cos(3.0 * tt)[:, None] * per_channel) if transform_time == "jvp" else (lambda tt: (1.0 + 0 * tt)[:, None] * per_channel)
    free = ref_model(transform_time, gauge="none")
    free.transform.net.load_state_dict(m.transform.net.state_dict())
    for model in (m, free):
        before = model.transform.with_time_derivative(x, t)
        model.transform.net = OffsetNet(model.transform.net, b)
        after = model.transform.with_time_derivative(x, t)
        moved = max(float((a - c).detach().abs().max()) for a, c in zip(before, after))
        if model is m:
            assert moved < 1e-12
        else:
            assert moved > 0.1  # the paper's F drifts with NN's offset


@pytest.fixture
def reference_gauge_on(monkeypatch):
    """build_model as the tests call it, with transform_gauge = "reference" in every ModelConfig."""
    original = variants.build_transform
    monkeypatch.setattr(variants, "build_transform", lambda kind, cfg, *a, **k: original(kind, dataclasses.replace(cfg, transform_gauge="reference"), *a, **k))


EXISTING = [
    (test_diffusion.test_general_F_continuous_term_equals_drift_form, ("ndm",)),
    (test_diffusion.test_general_F_continuous_term_equals_drift_form, ("ndm-vdm",)),
    (test_diffusion.test_discrete_kl_equals_gaussian_kl_of_the_posteriors, ("ndm",)),
    (test_diffusion.test_discrete_term_converges_to_continuous, ("ndm",)),
    (test_fast_paths.test_restructured_continuous_loss_equals_original, ("ndm", test_fast_paths.UNET, (1, 8, 8))),
    (test_fast_paths.test_restructured_continuous_loss_equals_original, ("ndm-vdm", test_fast_paths.MLP, (4,))),
    (test_fast_paths.test_separable_transform_boundary_identity_and_finite_differences, ()),
    (test_fast_paths.test_separable_continuous_loss_equals_drift_form, ("ndm", test_fast_paths.MLP, (4,))),
    (test_fast_paths.test_separable_continuous_loss_equals_drift_form, ("ndm", test_fast_paths.UNET, (1, 8, 8))),
    (test_fast_paths.test_separable_prior_from_shared_pass_equals_direct, ()),
    (test_fast_paths.test_nelbo_with_shared_passes_equals_separate_terms, ("ndm", {})),
    (test_fast_paths.test_nelbo_with_shared_passes_equals_separate_terms, ("ndm", {"transform_time": "separable"})),
]


@pytest.mark.parametrize("test,args", EXISTING, ids=[f"{t.__name__}{list(a)[:1]}" for t, a in EXISTING])
def test_closed_form_tests_pass_in_the_reference_gauge(reference_gauge_on, test, args):
    probe = build_model(ModelConfig(variant="ndm", network=MLP), (4,), None)
    assert probe.transform.gauge == "reference"  # the fixture is in force
    test(*args)


# ------------------------------------------------ decomposition and post-hoc removal


def test_offset_decomposition_recovers_a_known_offset():
    """F = x + a(t) P on an identity-F model: offset rms = rms(a(t) P), rest 0, rates from a'(t)."""
    m, x = oracle_model("vdm-fixed")
    p = direction(x.shape[1:])
    g = gauge_transform(m, offset_fn(BOTH_ENDS_ZERO, p))
    times = [0.0, 0.3, 0.75, 1.0]
    rows = offset_decomposition(g, x, times)
    rms_p = float(p.pow(2).mean().sqrt())
    for r, tv in zip(rows, times):
        t = torch.tensor([tv], dtype=F64, requires_grad=True)
        a = BOTH_ENDS_ZERO(t)
        (da,) = torch.autograd.grad(a, t)
        assert r.offset_rms == pytest.approx(abs(float(a.detach())) * rms_p, abs=1e-12)
        assert r.offset_rate_rms == pytest.approx(abs(float(da)) * rms_p, rel=1e-10)
        assert r.input_rms < 1e-12 and r.input_rate_rms < 1e-12 and r.n_examples == x.shape[0]


def test_offset_metrics_for_the_training_log():
    m, x = random_ndm("ndm")
    metrics = offset_metrics(m, x)
    assert set(metrics) == {f"{k}_rms_t{t:g}" for k in ("offset", "input") for t in (0.25, 0.5, 0.75, 1.0)}
    rows = {r.t: r for r in offset_decomposition(m, x, [0.75])}
    assert metrics["offset_rms_t0.75"] == pytest.approx(rows[0.75].offset_rms, rel=1e-12)
    assert all(v > 0 for v in metrics.values())
    assert offset_metrics(oracle_model("vdm-fixed")[0], x) == {}  # no learned F: nothing to log


def test_remove_gauge_keeps_the_nelbo_and_the_exact_flow_and_removes_the_offset():
    from ndm.estimators.sampling import ode_drift

    m, x = random_ndm("ndm")
    x = x[:6]
    p = direction((4,))
    # a trained model's situation: a large, sharply varying offset the bound does not see
    drifted = gauge_transform(m, offset_fn(lambda t: 5.0 * torch.sin(math.pi * t) ** 2 * torch.sin(4 * math.pi * t), p))
    x_ref = torch.randn(32, 4, generator=torch.Generator().manual_seed(12), dtype=F64) * 0.5
    fixed = remove_gauge(drifted, x_ref)
    before = offset_decomposition(drifted, x_ref, [0.3, 0.6])
    after = offset_decomposition(fixed, x_ref, [0.3, 0.6, 1.0])
    c1 = offset_decomposition(drifted, x_ref, [1.0])[0].offset_rms
    assert min(b.offset_rms for b in before) > 1.0
    for a in after:  # what is left on x_ref is t c(1), exactly
        assert a.offset_rms == pytest.approx(a.t * c1, rel=1e-9, abs=1e-12)
        assert a.offset_rate_rms == pytest.approx(c1, rel=1e-9)
    assert_terms_equal(all_terms(drifted, x), all_terms(fixed, x))
    # the same probability-flow ODE in shifted coordinates: if z(t) solves m's, z + alpha_t a(t)
    # solves fixed's (a = F_fixed - F_m, a(0) = a(1) = 0: the same flow map z_1 -> z_0), i.e.
    # h_fixed(z + alpha a, t) = h_m(z, t) + alpha' a + alpha a' (the offset's rate, large for the
    # drifted model, is what fixed-step ODE samplers stumble on; above it is down to c(1))
    g = torch.Generator().manual_seed(13)
    z, t = torch.randn(6, 4, generator=g, dtype=F64), torch.rand(6, generator=g, dtype=F64)
    zero = torch.zeros(6, 4, dtype=F64)
    with torch.no_grad():
        (f_fixed, df_fixed), (f_m, df_m) = fixed.transform.with_time_derivative(zero, t), m.transform.with_time_derivative(zero, t)
        a, da = f_fixed - f_m, df_fixed - df_m
        v = m.values(t)
        shifted = ode_drift(fixed, z + v.alpha[:, None] * a, t)
        torch.testing.assert_close(shifted, ode_drift(m, z, t) + v.dalpha[:, None] * a + v.alpha[:, None] * da, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="learned time-dependent F"):
        remove_gauge(oracle_model("vdm-fixed")[0], x_ref)


def test_transform_gauge_option_validated_and_hash_stable_at_default():
    from ndm.pipeline.config import ConfigError, DataConfig, RunConfig, TrainConfig, validate_values

    plain = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm"), TrainConfig())
    explicit = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_gauge="none"), TrainConfig())
    gauged = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_gauge="reference"), TrainConfig())
    assert plain.hash() == explicit.hash() != gauged.hash()
    validate_values(gauged, "datasets.digits")
    bad = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_gauge="batch-mean"), TrainConfig())
    with pytest.raises(ConfigError, match="transform_gauge"):
        validate_values(bad, "datasets.digits")
    with pytest.raises(ValueError, match="transform_gauge"):
        build_model(ModelConfig(variant="ndm", network=MLP, transform_gauge="batch-mean"), (4,), None)
    # variants without a learned time-dependent F ignore the option, as they ignore transform_time
    assert build_model(ModelConfig(variant="ndm-latent", network=MLP, transform_gauge="reference"), (4,), None).transform.learned


def test_data_mean_reference_is_the_training_mean_saved_and_resumed(tmp_path):
    """transform_reference: data_mean puts x_ref at the training split's mean before the first
    step; the saved model and a resumed run keep it, and F(x_ref, t) = x_ref + t v holds there."""
    from ndm.pipeline.config import ConfigError, resolve_run_config
    from ndm.pipeline.train import load_trained_model, train

    model = {"network": {"kind": "mlp", "hidden": 32, "depth": 2}, "transform_gauge": "reference", "transform_reference": "data_mean"}
    config = {"datasets": {"toy2d": {"data": {"name": "toy2d", "options": {"n_train": 512, "n_test": 64}}, "model": model,
                                     "train": {"steps": 6, "batch_size": 32, "checkpoint_every": 3, "log_every": 3}}}}  # fmt: skip
    run = resolve_run_config(config, "toy2d", "ndm", seed=0)
    from ndm.pipeline.train import load_training_data  # the data train() reads

    x_train = load_training_data(run)[0]
    assert x_train.mean(0).abs().max() > 1e-3  # a mean that differs from the zero default
    whole = train(run, tmp_path / "whole", progress=False)
    train(run, tmp_path / "split", progress=False, stop_after=3)
    split = train(run, tmp_path / "split", progress=False)
    m, _ = load_trained_model(whole.model_path)
    torch.testing.assert_close(m.transform.reference, x_train.mean(0))
    m2, _ = load_trained_model(split.model_path)
    for (name, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), name  # the resumed run is the uninterrupted one, x_ref included
    t = torch.tensor([0.3, 0.9])
    x_ref = m.transform.reference.expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(m.transform(x_ref, t), x_ref + t[:, None] * m.transform.end_offset)
    # data_mean without the reference gauge is a clear config error
    with pytest.raises(ConfigError, match="transform_gauge: reference"):
        resolve_run_config({"datasets": {"toy2d": {"model": {"transform_reference": "data_mean"}}}}, "toy2d", "ndm", seed=0)
