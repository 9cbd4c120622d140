"""The papers' claims on the Gaussian oracle (ndm.estimators.claims): each holds within its
tolerance, each check fails when the claim is broken on purpose, and the closed forms behind
them agree with the package's own estimators."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ndm.estimators import claims as C
from ndm.estimators.gaussian import GaussianSpec
from ndm.estimators.likelihood import discrete_nelbo
from ndm.estimators.oracle_closed_form import (
    ConstantIntegrandSchedule, diffusion_closed_form, discrete_diffusion, estimator_moments, oracle_with_schedule, q_sum,
)  # fmt: skip
from ndm.model.schedules import CosineSchedule, LinearSchedule
from ndm.model.time_sampling import draw_times

F64 = torch.float64


@pytest.fixture(scope="module")
def spec():
    return GaussianSpec.make(6, 1)


# ------------------------------------------------------------------ schedule invariance


def test_schedule_invariance_holds(spec):
    claim = C.schedule_invariance(spec, C.equal_end_schedules(spec))
    assert claim.passed, claim.details
    # and the t-quadrature reproduces the closed form, so the spread is not an artefact of one quadrature
    for d in claim.details["diffusion_t_quadrature_nats"].values():
        assert d == pytest.approx(claim.details["diffusion_closed_form_nats"], rel=1e-9)


def test_schedule_invariance_fails_when_an_end_point_moves(spec):
    schedules = C.equal_end_schedules(spec)
    schedules["cosine"] = CosineSchedule(-13.3, 5.5)
    assert not C.schedule_invariance(spec, schedules).passed


# ------------------------------------------------------------------ variance, not value


def test_learned_schedule_lowers_variance_not_value(spec):
    sched = C.equal_end_schedules(spec)
    claim = C.variance_reduction(spec, sched["cosine"], sched["vdm_optimal"], n_mc=512)
    assert claim.passed, claim.details
    d = claim.details
    assert d["mean_spread_nats"] < 1e-8  # the same value under every scheme
    assert d["t_part_std_nats"]["learned_schedule"] < 1e-5 * d["std_nats"]["learned_schedule"]  # integrand constant in t
    assert d["std_lower_bound_nats"] <= d["std_nats"]["learned_schedule"] * (1 + 1e-9)


def test_variance_check_fails_for_a_schedule_that_is_not_variance_minimising(spec):
    sched = C.equal_end_schedules(spec)
    assert not C.variance_reduction(spec, sched["linear"], sched["cosine"], n_mc=512).passed


def test_constant_integrand_schedule_is_consistent(spec):
    """gamma' is the derivative of gamma (finite differences), the ends are exact, and
    E[L_diff(t)] = 1/2 gamma' SNR tr P_t (P_t from the covariance itself) is constant in t."""
    s = ConstantIntegrandSchedule(spec)
    t = torch.linspace(0.02, 0.98, 25, dtype=F64)
    h = 1e-6
    fd = (s.values(t + h).gamma - s.values(t - h).gamma) / (2 * h)
    assert torch.allclose(s.values(t).dgamma, fd, rtol=1e-6)
    ends = s.values(torch.tensor([0.0, 1.0], dtype=F64)).gamma
    assert ends.tolist() == pytest.approx([-13.3, 5.0], abs=1e-9)
    v = s.values(t)
    prec = torch.linalg.inv(spec.cov)
    tr_p = torch.stack([torch.trace(torch.linalg.inv(prec + snr * torch.eye(spec.dim, dtype=F64))) for snr in v.snr])
    integrand = 0.5 * v.dgamma * v.snr * tr_p
    assert (integrand.max() / integrand.min() - 1) < 1e-9
    assert torch.allclose(q_sum(spec, v.gamma)[0], v.snr * tr_p, rtol=1e-10)


def test_exact_moments_match_the_package_estimator(spec):
    """Mean and std of w(t) L_diff(t) from the closed form against Monte Carlo through draw_times and
    DiffusionModel.diffusion_loss (linear and cosine schedules, uniform and gamma sampling)."""
    n = 40000
    for schedule, sampling in ((LinearSchedule(), "uniform"), (CosineSchedule(-13.3, 5.0), "gamma")):
        exact = estimator_moments(spec, schedule, sampling)
        model = oracle_with_schedule(spec, schedule)
        g = torch.Generator().manual_seed(3)
        x = spec.sample(n, g)
        t, w = draw_times(model.schedule, n, 1, sampling, generator=g, dtype=F64)
        with torch.no_grad():
            est = model.diffusion_loss(x, t, torch.randn(x.shape, generator=g, dtype=F64))[0] * w
        se = est.std().item() / math.sqrt(n)
        assert abs(est.mean().item() - exact["mean"]) < 4 * se
        assert est.std().item() == pytest.approx(math.sqrt(exact["var"]), rel=0.1)


# ------------------------------------------------------------------ T steps


def test_discrete_bound_improves_at_rate_one_over_T(spec):
    monotone, rate = C.discrete_convergence(spec, LinearSchedule())
    assert monotone.passed and rate.passed, (monotone.measured, rate.measured)


def test_discrete_checks_fail_for_a_wrong_limit_or_a_kl_at_the_wrong_end(spec):
    wrong_limit = diffusion_closed_form(spec, -13.3, 4.0)  # the limit of another end point
    assert not C.discrete_convergence(spec, LinearSchedule(), continuous=wrong_limit)[1].passed

    def kl_at_s(spec_, schedule, n_steps):  # E||x - x_hat||^2 taken at s instead of t: converges from below
        i = torch.arange(1, n_steps + 1, dtype=F64)
        g_s, g_t = schedule.values((i - 1) / n_steps).gamma, schedule.values(i / n_steps).gamma
        return float((0.5 * -torch.expm1(g_s - g_t) * q_sum(spec_, g_s)[0]).sum())

    monotone, _ = C.discrete_convergence(spec, LinearSchedule(), diffusion_T=kl_at_s)
    assert not monotone.passed


def test_discrete_closed_form_matches_the_package_estimator(spec):
    model = oracle_with_schedule(spec, LinearSchedule())
    g = torch.Generator().manual_seed(5)
    x = spec.sample(4000, g)
    est = discrete_nelbo(model, x, 10, n_step_samples=None, generator=g)
    diff = est.terms["diffusion"]
    se = diff.std().item() / math.sqrt(len(diff))
    assert abs(diff.mean().item() - discrete_diffusion(spec, LinearSchedule(), 10)) < 4 * se


# ------------------------------------------------------------------ parameterisations


def test_parameterisations_give_one_nelbo(spec):
    claim = C.parameterisation_equivalence(spec, CosineSchedule(-13.3, 5.0), n=128)
    assert claim.passed, claim.details


def test_parameterisation_check_fails_for_a_wrong_weighting(spec):
    wrong = {**C.LOSS_WEIGHTS, "eps": C.LOSS_WEIGHTS["x"]}  # x-prediction's SNR weight on the eps error
    assert not C.parameterisation_equivalence(spec, CosineSchedule(-13.3, 5.0), weights=wrong, n=128).passed


# ------------------------------------------------------------------ NDM special case


def test_ndm_with_identity_F_is_vdm_term_by_term(spec):
    pairs = {"vdm-fixed": (C.ndm_identity_model(spec, LinearSchedule()), oracle_with_schedule(spec, LinearSchedule()))}
    assert C.ndm_reduces(spec, pairs, n=64).passed


def test_ndm_check_fails_when_F_is_not_the_identity(spec):
    ndm = C.ndm_identity_model(spec, LinearSchedule())
    with torch.no_grad():
        ndm.transform.net.out.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    pairs = {"vdm-fixed": (ndm, oracle_with_schedule(spec, LinearSchedule()))}
    assert not C.ndm_reduces(spec, pairs, n=64).passed


# ------------------------------------------------------------------ command line and table


def test_ndm_claims_command_writes_every_claim(tmp_path):
    from ndm.cli.main import main
    from ndm.report.claims import claims_table

    out = tmp_path / "claims.json"
    assert main(["claims", "--out", str(out), "--dim", "4"]) == 0
    report = json.loads(out.read_text())
    assert report["all_passed"] and len(report["claims"]) == 6
    assert "provenance" in report
    table = claims_table(out)
    assert list(table.data["id"]) == [c["id"] for c in report["claims"]]
    assert table.data["passed"].all()


# ------------------------------------------------------------------ the trained models' estimator std


def test_estimator_std_orders_the_time_samplings_as_the_closed_form(spec):
    """evaluate-likelihood's estimator_std block on the oracle with the cosine schedule: importance
    in gamma has a far smaller std than uniform times (closed form of the one-sample estimator: 41 vs
    299 nats at D = 8). Antithetic pairs barely help here: the integrand is a spike at t = 0, not a
    trend, so no ordering between uniform and antithetic is asserted."""
    from ndm.pipeline.evaluate import estimator_std

    model = oracle_with_schedule(spec, CosineSchedule(-13.3, 5.0))
    x = spec.sample(2000, torch.Generator().manual_seed(0))
    block = estimator_std(model, x, torch.Generator().manual_seed(1))
    std = block["std_bpd"]
    assert set(std) == {"uniform", "antithetic", "importance_gamma"} and block["time_samples"] == 2
    assert std["importance_gamma"] < 0.5 * std["uniform"]
    assert std["importance_gamma"] < 0.5 * std["antithetic"]


def test_estimator_std_table_reads_likelihood_files(tmp_path):
    from ndm.report.claims import estimator_std_table
    from ndm.report.collect import collect

    config = {"datasets": {"toy2d": {}}, "variants": ["vdm", "ndm"], "seeds": [0, 1]}
    for seed, u in ((0, 2.0), (1, 4.0)):
        run = tmp_path / "toy2d" / "vdm" / f"seed{seed}"
        run.mkdir(parents=True)
        block = {"std_bpd": {"uniform": u, "antithetic": 1.0, "importance_gamma": 0.5}, "time_samples": 2}
        (run / "likelihood.json").write_text(json.dumps({"estimator_std": block}))
    table = estimator_std_table(collect(config, tmp_path))
    row = table.data.set_index("variant").loc["vdm"]
    assert row["seeds"] == 2 and row["uniform_std_bpd"] == pytest.approx(3.0)
    assert row["importance_over_uniform"] == pytest.approx(0.5 / 3.0)
    assert "ndm" not in set(table.data["variant"])  # no results, no row (the likelihood table marks missing runs)
