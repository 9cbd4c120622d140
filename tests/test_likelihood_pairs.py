"""The paired test-likelihood comparisons (ndm.report.likelihood_pairs): p-values, Holm families
and verdicts against hand computations on constructed per-seed results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ndm.report.collect import CURVE_COLUMNS, LIKELIHOOD_COLUMNS, Results
from ndm.report.likelihood_pairs import NELBO, NELBO_AT_FLOPS, NLL_ODE, likelihood_pairs_frame, likelihood_pairs_table, pair_row
from ndm.report.reviewer import pair_sentence
from ndm.report.summary import gauge_sentence
from ndm.report.verdicts import BORDERLINE, BETTER, ONE_SEED, TIE, WORSE


def _results(values: dict[tuple[str, str], list[float]], datasets: tuple[str, ...] = ("toy",), curves: pd.DataFrame | None = None) -> Results:
    """(variant, estimator) -> test bits/dim per seed, the same on every dataset."""
    rows = [
        {"dataset": d, "variant": v, "seed": s, "estimator": e, "T": math.inf, "bpd": x, "stderr": 0.001, "n_examples": 100, "nfe": math.nan, "units": "bits/dim"}
        for d in datasets
        for (v, e), xs in values.items()
        for s, x in enumerate(xs)
    ]  # fmt: skip
    variants = list(dict.fromkeys(v for v, _ in values))
    return Results(
        root=Path("."), datasets=list(datasets), variants=variants, seeds=[0, 1, 2], train=pd.DataFrame(),
        curves=curves if curves is not None else pd.DataFrame(columns=CURVE_COLUMNS),
        likelihood=pd.DataFrame(rows, columns=LIKELIHOOD_COLUMNS), fd=pd.DataFrame(),
    )  # fmt: skip


def _p(d: list[float]) -> float:
    d = np.asarray(d)
    return float(2 * stats.t.sf(abs(d.mean()) / (d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1))


NDM = [1.0, 1.1, 1.05]


def test_p_values_and_holm_by_hand() -> None:
    # ndm − ddpm: −0.1, −0.2, −0.15; ndm − vdm: −0.021, −0.019, −0.020; ndm − vdm-fixed: +0.1, −0.1, 0
    res = _results({("ndm", NELBO): NDM, ("ddpm", NELBO): [1.1, 1.3, 1.2], ("vdm", NELBO): [1.021, 1.119, 1.07], ("vdm-fixed", NELBO): [0.9, 1.2, 1.05]})
    frame = likelihood_pairs_frame(res).set_index("baseline")
    p = {"ddpm": _p([-0.1, -0.2, -0.15]), "vdm": _p([-0.021, -0.019, -0.02]), "vdm-fixed": 1.0}
    assert frame.loc["ddpm", "p"] == pytest.approx(p["ddpm"], rel=1e-9)
    assert frame.loc["vdm", "p"] == pytest.approx(p["vdm"], rel=1e-9)
    # Holm over three: the smallest (vdm) x 3, then ddpm x 2 (kept monotone), then vdm-fixed x 1
    assert p["vdm"] < p["ddpm"] and 3 * p["vdm"] < 0.05 < 2 * p["ddpm"]
    assert frame.loc["vdm", "p_holm"] == pytest.approx(3 * p["vdm"], rel=1e-9)
    assert frame.loc["ddpm", "p_holm"] == pytest.approx(2 * p["ddpm"], rel=1e-9)
    assert frame.loc["vdm-fixed", "p_holm"] == pytest.approx(1.0)
    # ddpm's own 95% interval excludes 0, yet the family does not keep it: its printed interval is
    # at its Holm level (97.5%, step 2 of 3) and includes 0; p_holm 0.07 is in the borderline band
    assert 2 * stats.t.sf(abs(-0.15) / (0.05 / math.sqrt(3)), 2) < 0.05
    assert frame.loc["ddpm", "ci_level"] == pytest.approx(1 - 0.05 / 2)
    assert frame.loc["ddpm", "ci_low"] < 0 < frame.loc["ddpm", "ci_high"] and frame.loc["ddpm", "verdict"] == BORDERLINE
    assert frame.loc["vdm", "ci_level"] == pytest.approx(1 - 0.05 / 3) and frame.loc["vdm", "ci_high"] < 0
    assert frame.loc["vdm", "verdict"] == BETTER and frame.loc["vdm-fixed", "verdict"] == TIE


def test_families_are_per_dataset_and_estimator() -> None:
    # The ODE NLL rows and another dataset's rows do not enlarge the NELBO family of "toy".
    base = {("ndm", NELBO): NDM, ("ddpm", NELBO): [1.1, 1.3, 1.2]}
    alone = likelihood_pairs_frame(_results(base))
    wide = likelihood_pairs_frame(_results({**base, ("ndm", NLL_ODE): [1.0, 1.2, 1.1], ("ddpm", NLL_ODE): [1.0, 1.1, 1.2]}, datasets=("toy", "other")))
    row = pair_row(wide, "toy", NELBO, "ndm", "ddpm")
    assert row["p_holm"] == pytest.approx(pair_row(alone, "toy", NELBO, "ndm", "ddpm")["p_holm"]) and row["verdict"] == BETTER
    assert set(wide["estimator"]) == {NELBO, NLL_ODE} and set(wide["dataset"]) == {"toy", "other"}


def test_one_seed_is_not_judged_and_does_not_count_in_the_family() -> None:
    res = _results({("ndm", NELBO): NDM, ("ddpm", NELBO): [1.1, 1.3, 1.2], ("ddpm@params", NELBO): [5.0]})
    frame = likelihood_pairs_frame(res).set_index("baseline")
    assert frame.loc["ddpm@params", "verdict"] == ONE_SEED and math.isnan(frame.loc["ddpm@params", "p"])
    assert frame.loc["ddpm", "p_holm"] == pytest.approx(frame.loc["ddpm", "p"])  # a family of one judged row


def test_compute_and_gauge_copies_are_compared_with_their_baselines() -> None:
    res = _results({("ndm", NELBO): NDM, ("ddpm", NELBO): [1.3, 1.4, 1.35], ("ndm@compute", NELBO): [1.2, 1.31, 1.26], ("ndm@gauge", NELBO): [1.3, 1.41, 1.36]})
    frame = likelihood_pairs_frame(res)
    compute = pair_row(frame, "toy", NELBO, "ndm@compute", "ddpm")
    gauge = pair_row(frame, "toy", NELBO, "ndm@gauge", "ndm")
    assert compute["diff"] == pytest.approx(-0.0933333, rel=1e-5) and compute["verdict"] == BETTER
    assert gauge["diff"] == pytest.approx(0.3066667, rel=1e-5) and gauge["verdict"] == WORSE
    assert len(frame) == 3  # ndm − ddpm, ndm@compute − ddpm, ndm@gauge − ndm: one family
    assert "(ndm better)" in gauge_sentence(frame, pd.DataFrame(), pd.DataFrame(), "toy")
    assert pair_sentence(compute).startswith("ndm@compute − ddpm = -0.093 [") and pair_sentence(compute).endswith("3 seeds paired): ndm@compute better")


def test_without_a_compute_copy_the_curves_are_read_at_equal_flops() -> None:
    # ddpm: 400 steps x 1 GFLOP; ndm: 2 GFLOP/step, read at step 200 (400 GFLOPs)
    rows = []
    for v, flops, seeds in (("ddpm", 1e9, [[3, 2, 1.5, 1.4], [3, 2, 1.6, 1.5]]), ("ndm", 2e9, [[3, 1.2, 1.0, 0.9], [3, 1.5, 1.1, 1.0]])):
        for s, ys in enumerate(seeds):
            rows += [{"dataset": "toy", "variant": v, "seed": s, "step": k, "loss_bpd": 9.0, "test_nelbo_bpd": y, "test_nelbo_se": 0.01,
                      "train_seconds": k * 0.1, "train_flops": k * flops} for k, y in zip([100, 200, 300, 400], ys)]  # fmt: skip
    res = _results({("ndm", NELBO): [0.9, 1.0], ("ddpm", NELBO): [1.4, 1.5]}, curves=pd.DataFrame(rows, columns=CURVE_COLUMNS))
    row = pair_row(likelihood_pairs_frame(res), "toy", NELBO_AT_FLOPS, "ndm", "ddpm")
    assert row["budget_gflops"] == pytest.approx(400.0) and row["model_value"] == pytest.approx(1.35) and row["baseline_value"] == pytest.approx(1.45)


def test_the_table_shows_p_and_holm_p_and_names_the_winner() -> None:
    res = _results({("ndm", NELBO): NDM, ("ddpm", NELBO): [1.14, 1.26, 1.2], ("vdm", NELBO): [1.1, 1.0, 1.05]})
    table = likelihood_pairs_table(res)
    shown = table.display.set_index("model − baseline")
    assert shown.loc["ndm − ddpm", "verdict"] == "ndm better" and shown.loc["ndm − vdm", "verdict"] == "not significant"
    p = _p([-0.14, -0.16, -0.15])
    assert shown.loc["ndm − ddpm", "p (Holm)"] == f"{p:.2g} ({2 * p:.2g})"
    assert any("Holm" in n for n in table.notes)
