"""What a learned F can win, on the Gaussian oracle, and the options of the F sweep.

- ndm.estimators.f_gain's J[c] equals the exact NELBO of the oracle (exact_elbo_terms) for a
  linear F path, to quadrature precision;
- the optimal linear F's gain lies below z_1's marginal bound and close to it, and a learned
  linear F trained by Adam on the real training loss (DiffusionModel.training_loss with the
  exact x_hat) reaches it;
- train.transform_lr_scale reaches the optimiser (a second parameter group, the lr scaled in a
  training step), model.transform_init "random" gives a non-zero small last layer;
- the U-Net F of the sweep (ndm@unet): dF/dt of the transform equals torch.func.jvp;
- the digits continuous_scale option and the f_learning table's pairing and Holm verdicts.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ndm.estimators.f_gain import PathGrid, bernstein_basis, expected_gain, identity_cost, marginal_bound, optimal_path, path_cost
from ndm.estimators.gaussian import GaussianOracle, GaussianSpec, exact_elbo_terms
from ndm.estimators.oracle_closed_form import oracle_with_schedule
from ndm.model.schedules import build_schedule
from ndm.model.transforms import Transform

F64 = torch.float64


def centred_spec(dim: int = 3, seed: int = 0, min_var: float = 1.0, max_var: float = 12.0) -> GaussianSpec:
    spec = GaussianSpec.make(dim, seed, min_var=min_var, max_var=max_var)
    return GaussianSpec(mean=torch.zeros(dim, dtype=F64), cov=spec.cov)


def linear_schedule():
    return build_schedule("linear", gamma_min=-8.0, gamma_max=0.0)


def test_path_cost_is_the_exact_nelbo_of_a_linear_F():
    """identity - (linear F in S's eigenbasis, log c_i(t) = k_i t^3) by J[c] and by exact_elbo_terms."""
    spec, sched = centred_spec(), linear_schedule()
    variance, q = torch.linalg.eigh(spec.cov)
    k = torch.tensor([-1.0, -0.5, 0.3], dtype=F64)

    def linear_map(t):
        return q @ torch.diag_embed(torch.exp(k * t.view(-1, 1) ** 3)) @ q.T

    model = oracle_with_schedule(spec, sched)
    exact = exact_elbo_terms(spec, model)["total"] - exact_elbo_terms(spec, model, linear_map=linear_map)["total"]
    grid = PathGrid.of(sched, 4000)
    knots = torch.linspace(0, 1, 4001, dtype=F64)
    ours = float((identity_cost(variance, grid) - path_cost(k.view(-1, 1) * knots**3, variance, grid)).sum())
    assert abs(exact) > 0.1  # the path changes the NELBO: the check is not vacuous
    assert ours == pytest.approx(exact, rel=1e-6)


def test_optimal_gain_is_below_the_marginal_bound_and_close_to_it():
    sched = linear_schedule()
    grid = PathGrid.of(sched, 1000)
    variance = torch.tensor([12.0, 2.0, 0.5], dtype=F64)
    best, log_c = optimal_path(variance, grid)
    gain = identity_cost(variance, grid) - best
    bound = marginal_bound(variance, grid.alpha_1, grid.sigma_1)
    assert bool((gain > 0).all()) and bool((gain < bound).all())
    assert float(gain[0] / bound[0]) > 0.9  # a wide direction: F wins most of the mismatch
    # The optimum shrinks wide directions and widens narrow ones, from c(0) = 1.
    c1 = torch.exp(log_c[:, -1])
    assert float(log_c[:, 0].abs().max()) == 0.0 and c1[0] < 0.5 and c1[2] > 1.0
    # A finer family (higher degree) does not find more: the optimum has converged.
    finer, _ = optimal_path(variance, grid, degree=20)
    torch.testing.assert_close(finer, best, rtol=1e-6, atol=1e-9)


class LearnedLinearF(Transform):
    """F(x, t) = Q diag(exp(sum_k a_k B_k(t))) Q^T x with learned a (a learned linear F whose
    exact x_hat the Gaussian oracle knows): the test's stand-in for NDM's NN."""

    learned = True

    def __init__(self, q: torch.Tensor, degree: int = 6):
        super().__init__()
        self.register_buffer("q", q)
        self.degree = degree
        self.coef = nn.Parameter(torch.zeros(q.shape[0], degree, dtype=F64))

    def log_c(self, t: torch.Tensor) -> torch.Tensor:
        k = torch.arange(1, self.degree + 1, dtype=F64)
        binom = torch.tensor([math.comb(self.degree, int(i)) for i in k], dtype=F64)
        tt = t.view(-1, 1)
        basis = binom * tt**k * (1 - tt) ** (self.degree - k)  # (B, K)
        return basis @ self.coef.T  # (B, D)

    def matrix(self, t: torch.Tensor) -> torch.Tensor:
        return self.q @ torch.diag_embed(torch.exp(self.log_c(t))) @ self.q.T

    def forward(self, x, t):
        return torch.einsum("bij,bj->bi", self.matrix(t), x)


def test_learned_linear_F_reaches_the_derived_gain():
    """Adam on the real training loss (exact x_hat for the current F) moves F to within 3% of the
    optimal linear F's gain, and far from F = identity."""
    torch.manual_seed(0)
    spec, sched = centred_spec(dim=2, min_var=3.0, max_var=12.0), linear_schedule()
    variance, q = torch.linalg.eigh(spec.cov)
    model = oracle_with_schedule(spec, sched)
    identity_total = exact_elbo_terms(spec, model)["total"]
    f = LearnedLinearF(q)
    model.transform = f
    model.net = GaussianOracle(spec, model.schedule, f.matrix)
    opt = torch.optim.Adam(f.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        loss, _ = model.training_loss(spec.sample(512, g), time_sampling="gamma")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        learned_gain = identity_total - exact_elbo_terms(spec, model, linear_map=f.matrix)["total"]
    grid = PathGrid.of(sched, 2000)
    best, _ = optimal_path(variance, grid)
    optimal = float((identity_cost(variance, grid) - best).sum())
    print(f"optimal linear F gain {optimal:.4f} nats, learned {learned_gain:.4f}")
    assert optimal > 0.5
    assert learned_gain == pytest.approx(optimal, rel=0.03)


def test_expected_gain_of_a_covariance():
    sched = linear_schedule()
    cov = torch.diag(torch.tensor([12.0, 12.0], dtype=F64))
    gain = expected_gain(cov, sched, n=1000)
    bound = float(marginal_bound(torch.tensor([12.0], dtype=F64), *_ends(sched))) / math.log(2)
    assert gain.bound_bpd == pytest.approx(bound, rel=1e-9)
    assert 0.9 * gain.bound_bpd < gain.optimal_bpd < gain.bound_bpd
    assert gain.slopes[1.0] < 0.5 and gain.slopes[0.25] < 1.0


def _ends(sched):
    v = sched.double().values(torch.ones(1, dtype=F64))
    return float(v.alpha[0]), float(v.sigma[0])


def test_bernstein_basis_vanishes_at_zero():
    b = bernstein_basis(5, 11)
    assert b.shape == (5, 11) and float(b[:, 0].abs().max()) == 0.0
    torch.testing.assert_close(b.sum(0)[1:], 1 - (1 - torch.linspace(0, 1, 11, dtype=F64)[1:]) ** 5)


# ------------------------------------------------------------------ sweep options


def _run(**train):
    from ndm.pipeline.config import DataConfig, RunConfig, TrainConfig
    from ndm.model.specs import ModelConfig, NetworkConfig

    model = ModelConfig(variant="ndm", network=NetworkConfig(kind="mlp", hidden=16, depth=1))
    return RunConfig("toy2d", DataConfig(name="toy2d", options={"n_train": 256, "n_test": 64}), model, TrainConfig(steps=2, batch_size=16, warmup_steps=0, **train))


def test_transform_lr_scale_reaches_the_optimiser():
    from ndm.pipeline.train import train_step
    from ndm.pipeline.train_state import build_state

    torch.manual_seed(0)
    run = _run(lr=1e-3, transform_lr_scale=10.0)
    state = build_state(run, (2,), None, torch.device("cpu"), torch.Generator().manual_seed(0))
    groups = state.opt.param_groups
    f_params = {id(p) for p in state.model.transform.parameters()}
    assert len(groups) == 2 and {id(p) for p in groups[1]["params"]} == f_params
    assert not f_params & {id(p) for p in groups[0]["params"]}
    train_step(state, torch.randn(256, 2), run)
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-2)
    # the default keeps one group (and so the optimiser state of earlier checkpoints)
    one = build_state(_run(), (2,), None, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(one.opt.param_groups) == 1
    # an option at its default leaves the run's hash (finished runs stay finished)
    assert _run().hash() == _run(transform_lr_scale=1.0).hash() != _run(transform_lr_scale=3.0).hash()


def test_transform_init_random_is_small_and_not_zero():
    from ndm.model.specs import ModelConfig, NetworkConfig
    from ndm.model.variants import build_model

    torch.manual_seed(0)
    net = NetworkConfig(kind="mlp", hidden=16, depth=1)
    zero = build_model(ModelConfig(variant="ndm", network=net), (2,), None)
    rand = build_model(ModelConfig(variant="ndm", network=net, transform_init="random"), (2,), None)
    assert float(zero.transform.net.out.weight.detach().abs().max()) == 0.0
    w = rand.transform.net.out.weight.detach()
    assert 0 < float(w.abs().max()) < 0.1 * 1 / math.sqrt(w.shape[1]) + 1e-12
    with pytest.raises(ValueError, match="transform_init"):
        build_model(ModelConfig(variant="ndm", network=net, transform_init="gaussian"), (2,), None)


def test_unet_F_time_derivative_equals_functorch_jvp():
    """The sweep's U-Net F (ndm@unet, configs/f_sweep.yaml) with a random last layer: the
    transform's dF/dt (the U-Net's own tangent pass) equals torch.func.jvp of F in t."""
    from ndm.model.specs import ModelConfig, NetworkConfig
    from ndm.model.variants import build_model

    torch.manual_seed(0)
    unet = NetworkConfig(kind="unet", channels=16, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], fourier_features=[6, 8])
    model = build_model(ModelConfig(variant="ndm", network=unet, transform_network=unet, transform_init="random"), (1, 8, 8), 17).double().eval()
    for p in model.transform.parameters():  # every layer non-zero, so every path is exercised
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.rand(4, 1, 8, 8, dtype=F64) * 2 - 1
    t = torch.rand(4, dtype=F64)
    f, df = model.transform.with_time_derivative(x, t)
    f_ref, df_ref = torch.func.jvp(lambda tt: model.transform(x, tt), (t,), (torch.ones_like(t),))
    assert float(df_ref.detach().abs().max()) > 1e-3
    torch.testing.assert_close(f, f_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(df, df_ref, rtol=1e-9, atol=1e-11)


def test_digits_continuous_scale_is_centred_and_scaled():
    from ndm.pipeline.datasets_common import LoadRequest
    from ndm.pipeline.datasets_packaged import load_digits

    plain = load_digits(LoadRequest())
    ds = load_digits(LoadRequest(), continuous_scale=3.0)
    assert ds.levels is None and ds.train.shape == (plain.train.shape[0], 64) and ds.train.dtype == torch.float32
    assert float(ds.train.mean(0).abs().max()) < 1e-4
    images = (plain.train.double().flatten(1) + 0.5) * (2 / 17) - 1
    ratio = ds.train.double().var(0).sum() / images.var(0).sum()
    assert 8.5 < float(ratio) < 9.5  # 9 up to the dequantization noise's share
    with pytest.raises(ValueError, match="continuous_scale"):
        load_digits(LoadRequest(), continuous_scale=0.0)


# ------------------------------------------------------------------ the table


def _likelihood(path, bpd, prior, splits):
    path.mkdir(parents=True)
    record = {"nelbo_continuous": {"bpd": bpd, "terms_bpd": {"prior": prior, "diffusion": 1.0}}}
    if splits is not None:
        record["transform"] = {"splits": splits}
    (path / "likelihood.json").write_text(json.dumps(record))


def test_f_learning_table_pairs_by_seed_and_judges_with_holm(tmp_path):
    from ndm.report.f_learning import HURTS, IMPROVES, TIE, control_of, f_learning_frame

    assert control_of("ndm@w8", ["vdm-fixed", "vdm-fixed@w8", "ndm@w8"]) == "vdm-fixed@w8"
    assert control_of("ndm@lr3", ["vdm-fixed", "ndm@lr3"]) == "vdm-fixed"
    splits = [{"t": t, "input_rms": 0.1 * t, "offset_rms": 0.01, "sigma_over_alpha": 2.0, "slope": 1 - 0.5 * t} for t in (0.25, 0.5, 0.75, 1.0)]
    gain = {"expected_gain_bpd": 0.4, "marginal_bound_bpd": 0.45, "predicted_slope_t1": 0.5}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "expected_f_gain.json").write_text(json.dumps(gain))
    for s, (base, big, small, noisy) in enumerate([(2.0, 1.6, 2.05, 1.9), (2.1, 1.71, 2.151, 2.3), (1.9, 1.49, 1.949, 1.7)]):
        _likelihood(tmp_path / "d" / "vdm-fixed" / f"seed{s}", base, 1.0, None)
        _likelihood(tmp_path / "d" / "ndm" / f"seed{s}", big, 0.5, splits)
        _likelihood(tmp_path / "d" / "ndm@worse" / f"seed{s}", small, 1.0, splits)
        _likelihood(tmp_path / "d" / "ndm@noisy" / f"seed{s}", noisy, 1.0, splits)
    config = {"results": str(tmp_path), "seeds": [0, 1, 2], "variants": ["vdm-fixed", "ndm", "ndm@worse", "ndm@noisy"], "datasets": {"d": {}}}
    frame = f_learning_frame({"exp": config}).set_index("model")
    assert frame.loc["ndm", "diff_bpd"] == pytest.approx(-0.4, abs=1e-12)
    assert frame.loc["ndm", "verdict"] == IMPROVES and frame.loc["ndm", "p_holm"] < 0.05
    assert frame.loc["ndm@worse", "verdict"] == HURTS
    assert frame.loc["ndm@noisy", "verdict"] == TIE
    # Holm: 3 tests, so the smallest p is multiplied by 3
    first = frame["p"].idxmin()
    assert frame.loc[first, "p_holm"] == pytest.approx(3 * frame.loc[first, "p"], rel=1e-9)
    assert bool((frame["p_holm"] >= frame["p"]).all())
    assert frame.loc["ndm", "ratio_t0.5"] == pytest.approx(0.025) and frame.loc["ndm", "slope_t1"] == pytest.approx(0.5)
    assert frame.loc["ndm", "expected_gain_bpd"] == pytest.approx(0.4) and frame.loc["ndm", "prior_diff_bpd"] == pytest.approx(-0.5)
