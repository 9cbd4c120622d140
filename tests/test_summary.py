"""The README's three-sentence answer (ndm.report.summary) on constructed results whose paired
differences, intervals and verdicts are known by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ndm.report.collect import CURVE_COLUMNS, LIKELIHOOD_COLUMNS, Results
from ndm.report.fewstep import COMPARISON_COLUMNS
from ndm.report.likelihood_pairs import likelihood_pairs_frame
from ndm.report.summary import answer_summary, compute_sentence, few_step_sentence, gauge_sentence, likelihood_sentence
from ndm.report.verdicts import BEST, BETTER, TIE, WORSE

WITHIN_SE = 0.001  # tiny within-run errors: a verdict must come from the seed spread


def _likelihood(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"dataset": "toy", "variant": v, "seed": s, "estimator": "nelbo", "T": math.inf, "bpd": x, "stderr": WITHIN_SE, "n_examples": 100, "nfe": math.nan, "units": "bits/dim"}
        for v, xs in values.items()
        for s, x in enumerate(xs)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=LIKELIHOOD_COLUMNS)


def _results(values: dict[str, list[float]], curves: pd.DataFrame | None = None) -> Results:
    n = max(len(x) for x in values.values())
    empty = pd.DataFrame()
    return Results(
        root=Path("."), datasets=["toy"], variants=list(values), seeds=list(range(n)), train=empty,
        curves=curves if curves is not None else pd.DataFrame(columns=CURVE_COLUMNS), likelihood=_likelihood(values), fd=empty,
    )  # fmt: skip


def test_likelihood_sentence_pairs_by_seed_with_the_across_seed_interval() -> None:
    # ndm − ddpm per seed: −0.14, −0.16, −0.15 (consistent); ndm − vdm: −0.1, +0.1, 0 (it flips)
    res = _results({"ndm": [1.0, 1.1, 1.05], "ddpm": [1.14, 1.26, 1.2], "vdm": [1.1, 1.0, 1.05]})
    text = likelihood_sentence(likelihood_pairs_frame(res), "toy")
    d = np.array([-0.14, -0.16, -0.15])
    # two comparisons: ddpm's p is the smaller, so its interval is at Holm's first level, 1 - 0.05 / 2
    half = stats.t.ppf(0.5 + 0.975 / 2, 2) * d.std(ddof=1) / math.sqrt(3)
    assert f"-0.150 [{-0.15 - half:+.3f}, {-0.15 + half:+.3f}] 97.5% vs ddpm (NDM better)" in text
    assert "vs vdm (not significant)" in text and "paired over 3 seeds" in text
    assert "judged together with the dataset's other test-NELBO comparisons (Holm" in text


def test_likelihood_sentence_does_not_call_a_row_that_holm_does_not_keep() -> None:
    # ndm − ddpm: −0.1, −0.2, −0.15: its own interval excludes 0 (p = 0.036), but it is one of
    # two comparisons (vdm's p = 1), and Holm doubles the smallest p: 0.072, borderline (not a verdict).
    res = _results({"ndm": [1.0, 1.1, 1.05], "ddpm": [1.1, 1.3, 1.2], "vdm": [1.1, 1.0, 1.05]})
    text = likelihood_sentence(likelihood_pairs_frame(res), "toy")
    assert "vs ddpm (borderline)" in text and "NDM better" not in text
    alone = _results({"ndm": [1.0, 1.1, 1.05], "ddpm": [1.1, 1.3, 1.2]})
    assert "vs ddpm (NDM better)" in likelihood_sentence(likelihood_pairs_frame(alone), "toy")


def test_one_seed_is_never_called_better() -> None:
    res = _results({"ndm": [1.0], "ddpm": [2.0]})  # a huge gap, tiny within-run error
    text = likelihood_sentence(likelihood_pairs_frame(res), "toy")
    assert "(one seed: not judged)" in text and "better" not in text


def _comparison(diffs: list[float], verdicts: list[str], n_seeds: int = 3) -> pd.DataFrame:
    rows = []
    for nfe, d, v in zip([2, 10, 100], diffs, verdicts):
        row = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
        row.update({"dataset": "toy", "baseline": "ddpm", "sampler": BEST, "metric": "fd_data", "steps": nfe, "nfe": float(nfe),
                    "diff": d, "ci_low": d - 1.0, "ci_high": d + 1.0, "n_seeds": n_seeds, "verdict": v})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def test_few_step_sentence_names_the_nfes_each_way() -> None:
    text = few_step_sentence(_comparison([5.0, -3.0, 0.2], [WORSE, BETTER, TIE]), "toy")
    assert "vs ddpm +5.000 [+4.000, +6.000] at NFE 2, -3.000 [-4.000, -2.000] at NFE 10, +0.200 [-0.800, +1.200] at NFE 100" in text
    assert "NDM better at 1 of 3 NFEs (10), ddpm better at 1 (2), not significant at 1; the NFEs are judged together (Holm, family-wise 5%)" in text


def test_few_step_sentence_with_one_seed_judges_nothing() -> None:
    text = few_step_sentence(_comparison([5.0, -3.0, 0.2], ["one seed: not judged"] * 3, n_seeds=1), "toy")
    assert "one seed: not judged" in text and "NDM better" not in text


def _curves(per_step: dict[str, tuple[float, list[list[float]]]]) -> pd.DataFrame:
    """variant -> (FLOPs per step, test NELBO at steps 100, 200, 300, 400 per seed)."""
    rows = []
    for v, (flops, seeds) in per_step.items():
        for s, ys in enumerate(seeds):
            for step, y in zip([100, 200, 300, 400], ys):
                rows.append({"dataset": "toy", "variant": v, "seed": s, "step": step, "loss_bpd": 9.0, "test_nelbo_bpd": y,
                             "test_nelbo_se": 0.01, "train_seconds": step * 0.1, "train_flops": step * flops})  # fmt: skip
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def test_compute_sentence_reads_ndm_at_ddpm_s_budget_off_its_curve() -> None:
    # ddpm's full run: 400 steps x 1 GFLOP; ndm costs 2 GFLOP/step, so it is read at step 200.
    curves = _curves({"ddpm": (1e9, [[3, 2, 1.5, 1.4], [3, 2, 1.6, 1.5]]), "ndm": (2e9, [[3, 1.2, 1.0, 0.9], [3, 1.5, 1.1, 1.0]])})
    res = _results({"ndm": [0.9, 1.0], "ddpm": [1.4, 1.5]}, curves)
    text = compute_sentence(likelihood_pairs_frame(res), pd.DataFrame(), "toy")
    # at 400 GFLOPs: ndm 1.2 and 1.5 (step 200), ddpm 1.4 and 1.5 (step 400); d = −0.2, 0.0
    assert "(400.0 GFLOPs, the cheaper full run" in text and "1.350 against DDPM's 1.450" in text
    assert "NDM − DDPM -0.100 [" in text and "over 2 seeds (two seeds: trend, not judged)" in text


def test_compute_sentence_prefers_the_run_trained_for_the_budget() -> None:
    res = _results({"ndm": [0.9, 1.0, 0.95], "ddpm": [1.4, 1.5, 1.45], "ndm@compute": [1.2, 1.3, 1.26]})
    text = compute_sentence(likelihood_pairs_frame(res), pd.DataFrame(), "toy")
    assert text.startswith("**Compute.** Trained for DDPM's training FLOPs (ndm@compute), NDM's test NELBO is 1.253 against DDPM's 1.450")
    assert "(NDM better)" in text


def test_summary_is_empty_without_ndm() -> None:
    res = _results({"ddpm": [1.0, 1.1]})
    assert answer_summary(res, pd.DataFrame(), pd.DataFrame()) == {}


def test_summary_keeps_the_sentence_order() -> None:
    res = _results({"ndm": [1.0, 1.1, 1.05], "ddpm": [1.1, 1.3, 1.2]})
    out = answer_summary(res, _comparison([-3.0, -2.0, -1.0], [BETTER] * 3), pd.DataFrame())
    assert [s.split("**")[1] for s in out["toy"]] == ["Likelihood.", "Few-step sample quality."]


def test_gauge_sentence_pairs_the_gauge_fixed_copy_with_ndm() -> None:
    res = _results({"ndm": [1.0, 1.1, 1.05], "ndm@gauge": [1.0, 1.1, 1.06]})
    gauge = pd.DataFrame([{"dataset": "toy", "variant": v, "t": 0.75, "offset_rms": x} for v, x in (("ndm", 6.44), ("ndm@gauge", 2.9e-4))])
    comp = _comparison([-1000.0, 5.0, 1.0], [BETTER, TIE, TIE]).assign(baseline="ndm", sampler="ode-heun")
    comp.loc[1, "nfe"] = 20.0  # NFE 2, 20, 100
    text = gauge_sentence(likelihood_pairs_frame(res), comp, gauge, "toy")
    assert "rms 6.44 for ndm and 0.00029 for ndm@gauge" in text
    assert "test NELBO ndm@gauge − ndm +0.0033 [" in text and "over 3 seeds (not significant)" in text
    # NFE 10 and 20 both read the nearest NFE, 20; the verdicts list every NFE
    assert "fd_data ndm@gauge − ndm, ode-heun: +5.000 [+4.000, +6.000] at NFE 20 (ndm@gauge better at NFE 2)" in text


def test_no_gauge_sentence_without_the_gauge_fixed_copy() -> None:
    assert gauge_sentence(likelihood_pairs_frame(_results({"ndm": [1.0, 1.1]})), pd.DataFrame(), pd.DataFrame(), "toy") is None
