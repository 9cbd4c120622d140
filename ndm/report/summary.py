"""The answer to the few-step question in three sentences per dataset (the README's top section).

Each sentence is computed from the run's tables, so it changes when the results do:

1. likelihood: NDM's continuous-time test NELBO minus DDPM's, VDM's and the same-size baselines'
   (ddpm@params, vdm@params), paired by training seed, with the 95% interval and the verdict;
2. few steps: NDM minus DDPM and VDM in Frechet distance, each model at its best sampler per
   NFE (few_step_comparison, sampler "best"), at the fewest NFE, near NFE 10 and at the most,
   and at how many NFEs it is significant each way (Holm over the NFEs);
3. compute: the test NELBO of NDM and DDPM at equal training FLOPs, paired by seed: NDM trained
   for DDPM's FLOPs (the variant ndm@compute) where the config has it, else read off each seed's
   test-NELBO curve at the cheaper full run's FLOPs; and NDM's network FLOPs per sample (x_hat
   and F) over DDPM's at the same NFE;
4. gauge (configs with ndm@gauge): F's offset at t = 0.75 with and without the reference gauge,
   the NELBO difference and the few-step FD difference (ODE, DDIM, best sampler) at NFE 10, 20.

Verdicts follow ndm.report.verdicts: with one seed nothing is called better.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.report.collect import Results
from ndm.report.reviewer import _likelihood_by_seed
from ndm.report.study import test_curve, value_at
from ndm.report.table_format import fmt_diff, fmt_num
from ndm.report.verdicts import (
    BEST,
    BETTER,
    NDM,
    NELBO_METRIC,
    ONE_SEED,
    TIE,
    WORSE,
    interval,
    paired_difference,
    verdict,
)

LIKELIHOOD_BASELINES = ("ddpm", "vdm", "ddpm@params", "vdm@params")
FEW_STEP_BASELINES = ("ddpm", "vdm")
COMPUTE_MATCHED = "ndm@compute"  # NDM trained for DDPM's training FLOPs (configs/study.yaml)
GAUGE_FIXED = "ndm@gauge"  # NDM with F in the reference gauge (docs/math.md)


def _label(v: str, base: str) -> str:
    return {BETTER: "NDM better", WORSE: f"{base} better", TIE: "not significant", ONE_SEED: "one seed: not judged"}.get(v, v)


def _diff_text(a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]], base: str) -> str | None:
    """'−0.078 [−0.130, −0.026] vs ddpm (NDM better)' from two seed -> (value, se) maps."""
    n, diff, se, _source, _ma, _mb = paired_difference(a, b)
    if n == 0:
        return None
    lo, hi = interval(diff, se, n)
    ci = f" [{fmt_diff(lo)}, {fmt_diff(hi)}]" if np.isfinite(lo) else ""
    return f"{fmt_diff(diff)}{ci} vs {base} ({_label(verdict(diff, se, n), base)})"


def _nelbo_by_seed(res: Results, dataset: str, variant: str) -> dict[int, tuple[float, float]]:
    """Seed -> (continuous-time test NELBO, within-run se): the reviewer section's reader."""
    return _likelihood_by_seed(res, dataset, variant, "nelbo")


def _n_seeds(maps: list[dict]) -> int:
    shared = set.intersection(*(set(m) for m in maps)) if maps else set()
    return len(shared)


def likelihood_sentence(res: Results, dataset: str) -> str | None:
    """Sentence 1: NDM's test NELBO against each baseline, paired by seed."""
    ndm = _nelbo_by_seed(res, dataset, NDM)
    if not ndm:
        return None
    parts, seeds = [], []
    for base in LIKELIHOOD_BASELINES:
        other = _nelbo_by_seed(res, dataset, base)
        text = _diff_text(ndm, other, base) if base in res.variants else None
        if text:
            parts.append(text)
            seeds.append(_n_seeds([ndm, other]))
    if not parts:
        return None
    lo, hi = min(seeds), max(seeds)
    over = f"{lo}" if lo == hi else f"{lo}–{hi}"
    how = "paired over" if lo >= 2 else "over"
    return (
        f"**Likelihood.** NDM's test NELBO is {fmt_num(float(np.mean([v for v, _ in ndm.values()])))} bits/dim; "
        f"NDM − baseline ({how} {over} seed{'s' if hi != 1 else ''}, 95% interval): " + "; ".join(parts) + "."
    )


def _at(rows: pd.DataFrame, nfe: float) -> str:
    r = rows.iloc[int(np.argmin(np.abs(np.log(rows["nfe"].astype(float)) - math.log(nfe))))]
    ci = f" [{fmt_diff(r['ci_low'])}, {fmt_diff(r['ci_high'])}]" if np.isfinite(r["ci_low"]) else ""
    return f"{fmt_diff(r['diff'])}{ci} at NFE {int(r['nfe'])}"


def few_step_sentence(comparison: pd.DataFrame, dataset: str) -> str | None:
    """Sentence 2: NDM − DDPM / VDM in Frechet distance at each model's best sampler over NFE."""
    if comparison.empty:
        return None
    sub = comparison[(comparison["dataset"] == dataset) & (comparison["sampler"] == BEST) & (comparison["metric"] != NELBO_METRIC)]
    parts, metric = [], None
    for base in FEW_STEP_BASELINES:
        rows = sub[sub["baseline"] == base].sort_values("nfe")
        if rows.empty:
            continue
        metric = str(rows["metric"].iloc[0])
        points = [_at(rows, x) for x in dict.fromkeys([float(rows["nfe"].min()), 10.0, float(rows["nfe"].max())])]
        points = list(dict.fromkeys(points))
        counts = rows["verdict"].value_counts()
        if (rows["n_seeds"] < 2).all():
            tally = "one seed: not judged"
        else:
            better, worse = rows[rows["verdict"] == BETTER], rows[rows["verdict"] == WORSE]
            tally = (
                f"NDM better at {len(better)} of {len(rows)} NFEs" + (f" ({', '.join(str(int(x)) for x in better['nfe'])})" if len(better) else "")
                + f", {base} better at {len(worse)}" + (f" ({', '.join(str(int(x)) for x in worse['nfe'])})" if len(worse) else "")
                + f", not significant at {int(counts.get(TIE, 0))}; the NFEs are judged together (Holm, family-wise 5%)"
            )  # fmt: skip
        parts.append(f"vs {base} {', '.join(points)} ({tally})")
    if not parts:
        return None
    return f"**Few-step sample quality.** NDM − baseline in {metric}, each model at its best sampler per NFE: " + "; ".join(parts) + "."


def _nelbo_at_flops(curves: pd.DataFrame, dataset: str, variant: str, flops: float) -> dict[int, tuple[float, float]]:
    pts = curves[(curves["dataset"] == dataset) & (curves["variant"] == variant)]
    out = {}
    for seed, g in pts.groupby("seed"):
        y = value_at(g, "train_flops", flops)
        if np.isfinite(y):
            out[int(seed)] = (y, math.nan)
    return out


def _flops_ratio(few: pd.DataFrame, dataset: str, nfe: float = 10.0) -> tuple[float, int] | None:
    """NDM's network FLOPs per sample over DDPM's with the ancestral sampler near NFE 10."""
    if few.empty or "flops_per_sample" not in few.columns:
        return None
    sel = few[(few["dataset"] == dataset) & (few["sampler"] == "ancestral") & np.isfinite(few["flops_per_sample"].astype(float))]
    a, b = sel[sel["variant"] == NDM], sel[sel["variant"] == "ddpm"]
    shared = sorted(set(a["nfe"].astype(float)) & set(b["nfe"].astype(float)))
    if not shared:
        return None
    x = shared[int(np.argmin(np.abs(np.log(shared) - math.log(nfe))))]
    fa = float(a[np.isclose(a["nfe"].astype(float), x)]["flops_per_sample"].iloc[0])
    fb = float(b[np.isclose(b["nfe"].astype(float), x)]["flops_per_sample"].iloc[0])
    return (fa / fb, int(x)) if fb > 0 else None


def _versus_ddpm(ndm: dict[int, tuple[float, float]], ddpm: dict[int, tuple[float, float]]) -> str | None:
    """'1.968 against DDPM's 2.027, NDM − DDPM −0.060 [−0.110, −0.010] over 3 seeds (NDM better)'."""
    n, diff, se, _source, m_ndm, m_ddpm = paired_difference(ndm, ddpm)
    if n == 0:
        return None
    lo, hi = interval(diff, se, n)
    ci = f" [{fmt_diff(lo)}, {fmt_diff(hi)}]" if np.isfinite(lo) else ""
    return (
        f"{fmt_num(m_ndm)} against DDPM's {fmt_num(m_ddpm)}, NDM − DDPM {fmt_diff(diff)}{ci} "
        f"over {n} seed{'s' if n != 1 else ''} ({_label(verdict(diff, se, n), 'DDPM')})"
    )


def compute_sentence(res: Results, few: pd.DataFrame, dataset: str) -> str | None:
    """Sentence 3: NDM vs DDPM at equal training FLOPs (paired by seed) and per-sample FLOPs."""
    parts = []
    # NDM trained for DDPM's FLOPs, with its own annealed schedule: no reading off a longer run.
    matched = _nelbo_by_seed(res, dataset, COMPUTE_MATCHED) if COMPUTE_MATCHED in res.variants else {}
    text = _versus_ddpm(matched, _nelbo_by_seed(res, dataset, "ddpm"))
    if text:
        parts.append(f"trained for DDPM's training FLOPs ({COMPUTE_MATCHED}), NDM's test NELBO is {text}")
    else:
        curves = test_curve(res.curves)
        curves = curves[curves["dataset"] == dataset] if not curves.empty else curves
        if not curves.empty and {NDM, "ddpm"} <= set(curves["variant"]):
            full = curves.groupby(["variant", "seed"])["train_flops"].max().groupby("variant").mean()
            budget = float(min(full[NDM], full["ddpm"]))
            text = _versus_ddpm(_nelbo_at_flops(curves, dataset, NDM, budget), _nelbo_at_flops(curves, dataset, "ddpm", budget))
            if text:
                parts.append(f"at equal training compute ({fmt_num(budget / 1e9)} GFLOPs, the cheaper full run, read off the test-NELBO curves) NDM's test NELBO is {text}")
    ratio = _flops_ratio(few, dataset)
    if ratio:
        parts.append(f"one NDM sample costs {ratio[0]:.2f}× DDPM's network FLOPs at the same NFE ({ratio[1]} ancestral steps; x̂ and F)")
    if not parts:
        return None
    joined = "; ".join(parts)
    return f"**Compute.** {joined[0].upper()}{joined[1:]}."


def _offset_at(gauge: pd.DataFrame, dataset: str, variant: str, t: float = 0.75) -> str | None:
    if gauge.empty:
        return None
    sel = gauge[(gauge["dataset"] == dataset) & (gauge["variant"] == variant) & np.isclose(gauge["t"].astype(float), t)]
    return None if sel.empty else f"{float(sel['offset_rms'].iloc[0]):.3g}"  # offsets span 1e-4 to 30


def gauge_sentence(res: Results, gauge_comparison: pd.DataFrame, gauge: pd.DataFrame, dataset: str) -> str | None:
    """Sentence 4 (configs with a gauge-fixed copy): ndm@gauge − ndm in offset, NELBO and few-step FD."""
    if GAUGE_FIXED not in res.variants:
        return None
    parts = []
    off, off_fixed = _offset_at(gauge, dataset, NDM), _offset_at(gauge, dataset, GAUGE_FIXED)
    if off and off_fixed:
        parts.append(f"F's input-independent offset at t = 0.75 has rms {off} for ndm and {off_fixed} for {GAUGE_FIXED}")
    n, diff, se, _source, _a, _b = paired_difference(_nelbo_by_seed(res, dataset, GAUGE_FIXED), _nelbo_by_seed(res, dataset, NDM))
    if n:
        lo, hi = interval(diff, se, n)
        ci = f" [{fmt_diff(lo)}, {fmt_diff(hi)}]" if np.isfinite(lo) else ""
        label = {BETTER: f"{GAUGE_FIXED} better", WORSE: "ndm better"}.get(verdict(diff, se, n), _label(verdict(diff, se, n), NDM))
        parts.append(f"test NELBO {GAUGE_FIXED} − ndm {fmt_diff(diff)}{ci} bits/dim over {n} seed{'s' if n != 1 else ''} ({label})")
    sub = gauge_comparison[(gauge_comparison["dataset"] == dataset) & (gauge_comparison["metric"] != NELBO_METRIC)] if not gauge_comparison.empty else gauge_comparison
    for sampler in ("ode-heun", "ddim", BEST):
        rows = sub[sub["sampler"] == sampler].sort_values("nfe") if not sub.empty else sub
        if rows.empty:
            continue
        cells = [_at(rows, x) for x in (10.0, 20.0)]
        judged = rows[rows["verdict"].isin([BETTER, WORSE])]
        verdicts = ", ".join(f"{GAUGE_FIXED if r.verdict == BETTER else 'ndm'} better at NFE {int(r.nfe)}" for r in judged.itertuples()) or (
            "one seed: not judged" if (rows["n_seeds"] < 2).all() else "no NFE significant"
        )
        parts.append(f"{rows['metric'].iloc[0]} {GAUGE_FIXED} − ndm, {sampler}: {', '.join(dict.fromkeys(cells))} ({verdicts})")
    if not parts:
        return None
    joined = "; ".join(parts)
    return f"**Gauge.** {joined[0].upper()}{joined[1:]}."


def answer_summary(
    res: Results, comparison: pd.DataFrame, few: pd.DataFrame, gauge_comparison: pd.DataFrame | None = None, gauge: pd.DataFrame | None = None
) -> dict[str, list[str]]:
    """Per dataset, the sentences that are there (empty when NDM has no results)."""
    out = {}
    if NDM not in res.variants:
        return out
    for d in res.datasets:
        sentences = [
            likelihood_sentence(res, d), few_step_sentence(comparison, d), compute_sentence(res, few, d),
            gauge_sentence(res, gauge_comparison if gauge_comparison is not None else pd.DataFrame(), gauge if gauge is not None else pd.DataFrame(), d),
        ]  # fmt: skip
        sentences = [s for s in sentences if s]
        if sentences:
            out[d] = sentences
    return out


__all__ = ["answer_summary", "compute_sentence", "few_step_sentence", "gauge_sentence", "likelihood_sentence"]
