"""The pre-registered primary endpoints (ndm.report.endpoint) on constructed per-seed results
whose envelopes, differences, intervals and verdicts are known by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ndm.pipeline.report_config import EndpointConfig, ReportConfig
from ndm.report.collect import CURVE_COLUMNS, FD_COLUMNS, LIKELIHOOD_COLUMNS, Results
from ndm.report.endpoint import AT_FLOOR, BETTER, EQUIVALENT, INCONCLUSIVE, endpoint_frame, judge, lower_envelope
from ndm.report.roles import using_roles

ROLES = ReportConfig(endpoint=EndpointConfig(metrics={"toy": "fd_x", "pts": "ed_x"}, log_after_mean=["pts"], nfes=[2, 5],
                                             nelbo_margins={"toy": 0.02}, baselines=["vdm-fixed", "ddpm"]))  # fmt: skip


def _fd(rows: list[tuple]) -> pd.DataFrame:
    """(dataset, variant, seed, sampler, steps, nfe, metric, value)."""
    out = []
    for d, v, s, sampler, steps, nfe, metric, value in rows:
        out.append({"dataset": d, "variant": v, "seed": s, "sampler": sampler, "time_grid": "uniform-t", "steps": steps, "nfe": float(nfe),
                    "nfe_F": 0.0, "flops_per_sample": 1.0, "metric": metric, "value": value, "stderr": 0.1, "stderr_method": "",
                    "n_samples": 100, "feature_extractor": "x"})  # fmt: skip
    return pd.DataFrame(out, columns=FD_COLUMNS)


def _results(fd: pd.DataFrame, nelbo: dict[str, list[float]] | None = None, datasets=("toy",)) -> Results:
    lik = [{"dataset": "toy", "variant": v, "seed": s, "estimator": "nelbo", "T": math.inf, "bpd": x, "stderr": 0.001, "n_examples": 100,
            "nfe": math.nan, "units": "bits/dim"} for v, xs in (nelbo or {}).items() for s, x in enumerate(xs)]  # fmt: skip
    variants = sorted(set(fd["variant"]) | set(nelbo or {}))
    return Results(root=Path("."), datasets=list(datasets), variants=variants, seeds=list(range(8)), train=pd.DataFrame(),
                   curves=pd.DataFrame(columns=CURVE_COLUMNS), likelihood=pd.DataFrame(lik, columns=LIKELIHOOD_COLUMNS), fd=fd)  # fmt: skip


def test_envelope_chooses_on_the_seed_mean_within_the_nfe_budget():
    # At N = 2 only the 2-NFE samplers qualify (heun at NFE 3 does not, however good); "b" has the
    # lower mean of logs although seed 0 of "a" is the lowest single value: the choice is per model.
    rows = []
    for s, (a, b, h) in enumerate([(1.0, 2.0, 0.1), (8.0, 2.0, 0.1), (8.0, 2.0, 0.1)]):
        rows += [("toy", "ndm", s, "a", 2, 2, "fd_x", a), ("toy", "ndm", s, "b", 2, 2, "fd_x", b), ("toy", "ndm", s, "heun", 2, 3, "fd_x", h)]
    env = lower_envelope(_fd(rows), "toy", "ndm", "fd_x", [2, 5], log_first=True)
    assert env.choice[2][:2] == ("b", 2) and env.choice[5][:2] == ("heun", 2)
    assert env.per_seed[2] == {0: 2.0, 1: 2.0, 2: 2.0}
    assert lower_envelope(_fd(rows), "toy", "ndm", "fd_x", [1], log_first=True) is None  # no sampler within NFE 1


def test_judge_by_hand():
    d = np.array([-0.30, -0.20, -0.25, -0.35, -0.28, -0.22, -0.31, -0.29])
    r = judge(d, 0.05, math.log(1.1))
    se = d.std(ddof=1) / math.sqrt(8)
    q = stats.t.ppf(0.975, 7)
    assert r["ci_low"] == pytest.approx(d.mean() - q * se) and r["ci_high"] == pytest.approx(d.mean() + q * se)
    assert r["tost_low"] == pytest.approx(d.mean() - stats.t.ppf(0.95, 7) * se) and r["verdict"] == BETTER
    near0 = np.array([0.01, -0.01, 0.005, -0.004, 0.002, 0.0, -0.006, 0.003])
    assert judge(near0, 0.05, 0.0953)["verdict"] == EQUIVALENT
    assert judge(near0 * 40, 0.05, 0.0953)["verdict"] == INCONCLUSIVE
    assert judge(near0 * 40, 0.05, 0.0953)["tost_p"] > 0.05 > judge(near0, 0.05, 0.0953)["tost_p"]


def test_minimum_detectable_effect_has_its_power_under_the_noncentral_t():
    """At a true difference equal to the printed MDE (sd known), the difference test's power,
    computed exactly from the noncentral t, is 80% up to the approximation's few points."""
    n, sd, alpha = 8, 1.0, 0.05
    d = np.random.default_rng(0).normal(0, sd, n)
    d = (d - d.mean()) / d.std(ddof=1) * sd  # sample sd exactly sd
    mde = judge(d, alpha, 1.0)["mde"]
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = mde / (sd / math.sqrt(n))
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert 0.77 < power < 0.83, power


def test_endpoint_rows_holm_levels_and_floor():
    rng = np.random.default_rng(3)
    rows = []
    for s in range(8):
        base = float(np.exp(rng.normal(0, 0.05)))
        for v, factor in (("ndm", 0.7), ("vdm-fixed", 1.0), ("ddpm", 1.0 + 0.01 * rng.normal())):
            for n in (2, 5):
                rows.append(("toy", v, s, "ddim", n, n, "fd_x", 10.0 * factor * base / n))
        for v, e in (("ndm", 0.01), ("vdm-fixed", 0.02), ("ddpm", -0.5)):
            for n in (2, 5):
                rows.append(("pts", v, s, "ddim", n, n, "ed_x", e + 0.001 * rng.normal() if v != "ddpm" else -0.5))
    nelbo = {"ndm": [1.00 + 0.001 * s for s in range(8)], "vdm-fixed": [1.00 + 0.001 * s + 0.002 * (-1) ** s for s in range(8)],
             "ddpm": [1.2 + 0.001 * s + 0.003 * (s % 3) for s in range(8)]}  # fmt: skip
    with using_roles(ROLES):
        frame = endpoint_frame(_results(_fd(rows), nelbo, datasets=("toy", "pts"))).set_index(["dataset", "endpoint", "baseline"])
    few = frame.loc[("toy", "few-step", "vdm-fixed")]
    assert few["ratio"] == pytest.approx(0.7, rel=1e-9) and few["verdict"] == BETTER and few["n_seeds"] == 8
    # Holm over the two baselines: the smaller p is judged at alpha / 2, the other at alpha
    levels = sorted(frame.xs(("toy", "few-step"), level=["dataset", "endpoint"])["ci_level"])
    assert levels == pytest.approx([0.95, 0.975]) or levels == pytest.approx([0.975, 0.975])
    assert frame.loc[("toy", "nelbo", "vdm-fixed")]["verdict"] == EQUIVALENT
    assert frame.loc[("toy", "nelbo", "ddpm")]["verdict"].startswith(BETTER)
    # toy "pts": ddpm's mean energy distance is negative (at the floor): no log, no verdict
    assert frame.loc[("pts", "few-step", "ddpm")]["verdict"] == AT_FLOOR
    assert frame.loc[("pts", "few-step", "vdm-fixed")]["ratio"] == pytest.approx(0.5, rel=0.05)


def test_fewer_than_three_seeds_get_no_verdict():
    rows = [("toy", v, s, "ddim", n, n, "fd_x", x * (1 + s) / n) for s in range(2) for v, x in (("ndm", 1.0), ("vdm-fixed", 2.0)) for n in (2, 5)]
    with using_roles(ROLES):
        frame = endpoint_frame(_results(_fd(rows)))
    assert frame["verdict"].tolist() == ["two seeds: trend, not judged"]
