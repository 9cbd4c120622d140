"""The few-step verdicts rest on training-seed variation, not the noise within one run.

Constructed results where the two errors differ: each run's within-run standard error is tiny
(a large test set, many samples) while the seeds disagree, so a verdict judged against the
within-run error would call a winner that another seed overturns. The comparison must pair by
seed, use the across-seed standard error, and with one seed call no variant better.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ndm.report.fewstep import (
    BETTER,
    BORDERLINE,
    TREND,
    ONE_SEED,
    SE_PAIRED,
    SE_UNPAIRED,
    SE_WITHIN,
    TIE,
    WORSE,
    answer,
    comparison_table,
    holm,
    judge_family,
    seed_values,
    verdict,
)
from ndm.report.tables import aggregate

WITHIN_SE = 0.01  # the within-run error of every run: tiny next to the seed-to-seed spread


def _fd(values: dict[str, list[float]], nfe: float = 10.0, sampler: str = "ddim") -> pd.DataFrame:
    """Per-seed Frechet distances as `collect` reads them: variant -> value per seed 0, 1, ..."""
    rows = []
    for variant, vals in values.items():
        for seed, v in enumerate(vals):
            run = {"dataset": "toy", "variant": variant, "seed": seed, "sampler": sampler, "time_grid": "uniform", "steps": int(nfe)}
            rows.append({**run, "nfe": nfe, "nfe_F": 0.0, "metric": "fd_data", "value": v, "stderr": WITHIN_SE, "n_samples": 1000})
    return pd.DataFrame(rows)


def _compare(fd: pd.DataFrame) -> pd.DataFrame:
    """The comparison exactly as the report builds it: seed means (tables.aggregate), then the
    seed-paired difference from the per-seed values."""
    agg = aggregate(fd, ["dataset", "sampler", "metric", "steps", "variant"], "value", "stderr", {"nfe": "nfe", "nfe_F": "nfe_F"})
    few = agg.rename(columns={"mean": "value"})
    per_seed = seed_values(fd, pd.DataFrame())
    return comparison_table(few, pd.DataFrame(), per_seed).data


def test_seeds_that_disagree_give_no_verdict_despite_tiny_within_run_errors() -> None:
    # ndm wins by 2 on seed 0 and loses by 2 on seed 1; each run's error is 0.01.
    c = _compare(_fd({"ndm": [10.0, 14.0, 11.0], "ddpm": [12.0, 12.0, 11.5]}))
    row = c.iloc[0]
    d = np.array([10.0 - 12.0, 14.0 - 12.0, 11.0 - 11.5])
    assert row["n_seeds"] == 3 and row["se_source"] == SE_PAIRED
    assert row["diff"] == pytest.approx(d.mean())
    assert row["diff_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert row["diff_se"] > 50 * math.hypot(WITHIN_SE, WITHIN_SE)  # the errors really differ
    q = stats.t.ppf(0.975, 2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - q * row["diff_se"], d.mean() + q * row["diff_se"]))
    assert row["verdict"] == TIE
    # The within-run error would have called this: |diff| / within-run se is far beyond any threshold.
    assert abs(row["diff"]) / math.hypot(WITHIN_SE, WITHIN_SE) > 10


def test_consistent_seeds_give_a_verdict_with_the_paired_across_seed_error() -> None:
    # Seed effects shared by both variants (seed 1 is harder for both) cancel in the pairing:
    # the unpaired across-seed errors are large, the paired one small.
    ndm, ddpm = [10.0, 20.0, 15.0, 30.0], [11.0, 21.2, 15.9, 31.1]
    c = _compare(_fd({"ndm": ndm, "ddpm": ddpm}))
    row = c.iloc[0]
    d = np.subtract(ndm, ddpm)
    assert row["n_seeds"] == 4 and row["se_source"] == SE_PAIRED
    assert row["diff_se"] == pytest.approx(d.std(ddof=1) / 2)
    unpaired = math.hypot(np.std(ndm, ddof=1) / 2, np.std(ddpm, ddof=1) / 2)
    assert row["diff_se"] < unpaired / 10
    assert row["verdict"] == BETTER
    worse = _compare(_fd({"ndm": ddpm, "ddpm": ndm})).iloc[0]
    assert worse["verdict"] == WORSE and worse["diff"] == pytest.approx(-row["diff"])


def test_pairing_uses_only_the_seeds_both_variants_ran() -> None:
    fd = _fd({"ndm": [10.0, 20.0, 15.0], "ddpm": [11.0, 21.5]})
    row = _compare(fd).iloc[0]
    d = np.array([-1.0, -1.5])
    assert row["n_seeds"] == 2 and row["diff"] == pytest.approx(d.mean()) and row["diff_se"] == pytest.approx(0.25)
    assert row["ndm"] == pytest.approx(15.0) and row["baseline_value"] == pytest.approx(16.25)


def test_one_seed_is_never_better_and_reports_the_within_run_interval() -> None:
    # A huge gap against a tiny within-run error: still no verdict.
    c = _compare(_fd({"ndm": [5.0], "ddpm": [50.0], "vdm": [5.5]}))
    assert set(c["verdict"]) == {ONE_SEED} and (c["n_seeds"] == 1).all() and (c["se_source"] == SE_WITHIN).all()
    row = c[c["baseline"] == "ddpm"].iloc[0]
    se = math.hypot(WITHIN_SE, WITHIN_SE)
    assert row["diff"] == pytest.approx(-45.0) and row["diff_se"] == pytest.approx(se)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-45.0 - 1.959964 * se, -45.0 + 1.959964 * se))
    for d, s in ((-1e6, 1e-9), (1e6, 1e-9), (0.0, 1.0)):
        assert verdict(d, s, 1) == ONE_SEED
    lines = answer(c, ["toy"])["toy"]
    assert "cannot say which variant is better" in lines[0] and "training variance" in lines[0]
    assert not any("NDM better" in line or "DDPM better" in line for line in lines)
    assert "not judged (one seed" in lines[1] and "[" in lines[1]


def test_without_per_seed_values_the_means_combine_unpaired() -> None:
    fd = _fd({"ndm": [10.0, 11.0, 12.0], "ddpm": [20.0, 21.0, 22.0]})
    agg = aggregate(fd, ["dataset", "sampler", "metric", "steps", "variant"], "value", "stderr", {"nfe": "nfe", "nfe_F": "nfe_F"})
    row = comparison_table(agg.rename(columns={"mean": "value"}), pd.DataFrame()).data.iloc[0]
    assert row["se_source"] == SE_UNPAIRED and row["n_seeds"] == 3
    assert row["diff_se"] == pytest.approx(math.hypot(1 / math.sqrt(3), 1 / math.sqrt(3)))
    assert row["verdict"] == BETTER


def test_the_t_nelbo_is_paired_by_seed_too() -> None:
    lik = pd.DataFrame(
        [
            {"dataset": "toy", "variant": v, "seed": s, "estimator": "nelbo", "T": 10.0, "bpd": b, "stderr": WITHIN_SE, "n_examples": 10**5, "nfe": 10.0, "units": "bpd"}
            for v, vals in {"ndm": [3.0, 5.0], "ddpm": [4.0, 4.0]}.items()
            for s, b in enumerate(vals)
        ]
    )
    per_seed = seed_values(pd.DataFrame(), lik)
    agg = aggregate(lik, ["dataset", "variant", "T"], "bpd", "stderr")
    bpd_T = agg.rename(columns={"mean": "bpd"}).assign(time="discrete")
    row = comparison_table(pd.DataFrame(), bpd_T, per_seed).data.iloc[0]
    assert row["metric"] == "nelbo_T_bpd" and row["n_seeds"] == 2 and row["se_source"] == SE_PAIRED
    # Two seeds: a t on one degree of freedom, so a trend and no verdict
    assert row["diff"] == pytest.approx(0.0) and row["diff_se"] == pytest.approx(1.0) and row["verdict"] == TREND


def test_holm_adjusts_the_nfes_of_one_comparison_together() -> None:
    # Hand-computed Holm: p sorted 0.01 < 0.02 < 0.04, times 3, 2, 1, kept monotone; NaN ignored.
    assert holm([0.04, 0.01, math.nan, 0.02]) == pytest.approx([0.04, 0.03, math.nan, 0.04], nan_ok=True)
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    # One comparison over six NFEs, three seeds each: at NFE 2 NDM wins by 2 on every seed (a
    # clear effect); at NFE 5 the seeds agree just well enough that the row's own 95% interval
    # excludes 0; the other NFEs are noise.
    rows = []
    per_nfe = {2: ([10.0, 10.1, 9.9], [12.0, 12.0, 12.0]), 5: ([10.0, 10.6, 9.4], [10.8, 11.6, 10.6])}
    for nfe in (2, 5, 10, 20, 50, 100):
        ndm, ddpm = per_nfe.get(nfe, ([10.0, 11.0, 9.0], [10.0, 10.0, 10.0]))
        rows.append(_fd({"ndm": ndm, "ddpm": ddpm}, nfe=float(nfe)))
    c = _compare(pd.concat(rows, ignore_index=True)).set_index("nfe")
    d5 = np.subtract(*per_nfe[5])
    p5 = 2 * stats.t.sf(abs(d5.mean()) / (d5.std(ddof=1) / math.sqrt(3)), 2)
    assert c.loc[5.0, "p"] == pytest.approx(p5) and p5 < 0.05  # the row alone would say better...
    assert c.loc[5.0, "p_holm"] >= 0.05 and c.loc[5.0, "verdict"] in (TIE, BORDERLINE)  # ...but not among six NFEs...
    assert c.loc[5.0, "ci_low"] < 0 < c.loc[5.0, "ci_high"] and c.loc[5.0, "ci_level"] > 0.95  # ...and its printed interval says so
    assert c.loc[2.0, "p_holm"] < 0.05 and c.loc[2.0, "verdict"] == BETTER
    ranked = c["p"].rank(method="first").astype(int)
    assert c.loc[2.0, "p_holm"] == pytest.approx(min(1.0, (6 - ranked[2.0] + 1) * c.loc[2.0, "p"]))
    # Another comparison (vdm) is its own family: its rows do not change NDM vs DDPM's.
    with_vdm = _compare(pd.concat(rows + [_fd({"vdm": [12.0, 12.0, 12.0]}, nfe=2.0)], ignore_index=True))
    same = with_vdm[with_vdm["baseline"] == "ddpm"].set_index("nfe")
    assert same["p_holm"].tolist() == pytest.approx(c["p_holm"].tolist())


def test_a_printed_interval_excludes_0_exactly_when_the_row_has_a_verdict() -> None:
    """judge_family on random families: every row's interval is at its Holm level, so it
    excludes 0 iff the row is better or worse; borderline rows are those with p_holm in
    [0.05, 0.20); rows below 3 seeds are never judged and stay out of the family."""
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        m = int(rng.integers(1, 8))
        n = [int(rng.choice([2, 3, 5, 8])) for _ in range(m)]
        diff = list(rng.normal(0, 1, m))
        se = list(np.abs(rng.normal(0.5, 0.3, m)) + 0.05)
        rows = judge_family(diff, se, n)
        judged = [i for i in range(m) if n[i] >= 3]
        for i, r in enumerate(rows):
            seen.add(r["verdict"])
            excludes = not (r["ci_low"] <= 0 <= r["ci_high"])
            if n[i] < 3:
                assert r["verdict"] == TREND and math.isnan(r["p_holm"])
                continue
            assert excludes == (r["verdict"] in (BETTER, WORSE)), (r, n[i])
            assert (r["verdict"] == BORDERLINE) == (0.05 <= r["p_holm"] < 0.20)
            # Holm's p over the judged rows only
            assert r["p_holm"] == pytest.approx(holm([rows[j]["p"] for j in judged])[judged.index(i)])
    assert {BETTER, WORSE, BORDERLINE, TIE, TREND} <= seen
