"""The answer to the few-step question in three sentences per dataset (the README's top section).

Each sentence is computed from the run's tables, so it changes when the results do:

1. likelihood: NDM's continuous-time test NELBO minus DDPM's, VDM's and the same-size baselines'
   (ddpm@params, vdm@params), paired by training seed, with the interval at its Holm level and the verdict;
2. few steps: NDM minus DDPM and VDM in Frechet distance, each model at its best sampler per
   NFE (few_step_comparison, sampler "best"), at the fewest NFE, near NFE 10 and at the most,
   and at how many NFEs it is significant each way (Holm over the NFEs);
3. compute: the test NELBO of NDM and DDPM at equal training FLOPs, paired by seed: NDM trained
   for DDPM's FLOPs (the variant ndm@compute) where the config has it, else read off each seed's
   test-NELBO curve at the cheaper full run's FLOPs; and NDM's network FLOPs per sample (x_hat
   and F) over DDPM's at the same NFE;
4. gauge (configs with ndm@gauge): F's offset at t = 0.75 with and without the reference gauge,
   the NELBO difference and the few-step FD difference (ODE, DDIM, best sampler) at NFE 10, 20.

The likelihood, compute and gauge NELBO verdicts are read from ndm.report.likelihood_pairs (the
dataset's test-NELBO comparisons judged together, Holm); the few-step ones from the comparison
tables (each comparison's NFEs judged together). With one seed nothing is called better.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.report.roles import roles
from ndm.report.collect import Results
from ndm.report.likelihood_pairs import (
    NELBO,
    NELBO_AT_FLOPS,
    ci_text,
    likelihood_pairs_frame,
    pair_row,
    seeds_text,
    verdict_label,
)
from ndm.report.table_format import fmt_diff, fmt_num
from ndm.report.verdicts import BEST, BETTER, NELBO_METRIC, TIE, WORSE, ci_label

HOLM_NOTE = "judged together with the dataset's other test-NELBO comparisons (Holm, family-wise 5%; tables/likelihood_pairs)"


def endpoint_sentence(endpoint: pd.DataFrame | None, dataset: str) -> str | None:
    """Sentence 0: the pre-registered primary endpoints (tables/primary_endpoint), each comparison
    with its estimate, difference interval, verdict and minimum detectable effect."""
    if endpoint is None or endpoint.empty:
        return None
    sub = endpoint[endpoint["dataset"] == dataset]
    if sub.empty:
        return None
    parts = []
    for (kind, metric), g in sub.groupby(["endpoint", "metric"], sort=False):
        cells = []
        for r in g.itertuples(index=False):
            if not np.isfinite(r.diff):
                cells.append(f"vs {r.baseline}: {r.verdict}")
                continue
            ratio = f"x{fmt_num(r.ratio)} " if np.isfinite(r.ratio) else ""
            interval = f" [{fmt_diff(r.ci_low)}, {fmt_diff(r.ci_high)}] {ci_label(r.ci_level)}" if np.isfinite(r.ci_low) else ""
            mde = f"; MDE {fmt_num(r.mde)}" if np.isfinite(r.mde) else ""
            cells.append(f"vs {r.baseline} {ratio}({fmt_diff(r.diff)}{interval}, {int(r.n_seeds)} seeds): {r.verdict} (margin ±{fmt_num(r.margin)}{mde})")
        what = f"few-step {metric} (lower envelope over samplers and grids, NFE {', '.join(map(str, roles().endpoint.nfes))}; log ratio)" if kind == "few-step" else "test NELBO (bits/dim)"
        parts.append(f"{what}: " + "; ".join(cells))
    return "**Primary endpoints** (pre-registered, docs/protocol.md; tables/primary_endpoint). " + ". ".join(parts) + "."


def likelihood_sentence(pairs: pd.DataFrame, dataset: str) -> str | None:
    """Sentence 1: NDM's test NELBO against each baseline, paired by seed (tables/likelihood_pairs)."""
    rows = [r for b in roles().answer_likelihood_baselines if (r := pair_row(pairs, dataset, NELBO, roles().model, b)) is not None]
    if not rows:
        return None
    parts = [f"{fmt_diff(r['diff'])}{ci_text(r)} vs {r['baseline']} ({verdict_label(r, 'NDM', r['baseline'])})" for r in rows]
    seeds = sorted({int(r["n_seeds"]) for r in rows})
    over = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    how = "paired over" if seeds[0] >= 2 else "over"
    judged = f"; {HOLM_NOTE}" if seeds[-1] >= 2 else ""
    return (
        f"**Likelihood.** NDM's test NELBO is {fmt_num(float(rows[0]['model_value']))} bits/dim; "
        f"NDM − baseline ({how} {over} seed{'s' if seeds[-1] != 1 else ''}, interval at each row's Holm level): " + "; ".join(parts) + f"{judged}."
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
    for base in roles().answer_few_step_baselines:
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


def _flops_ratio(few: pd.DataFrame, dataset: str, nfe: float = 10.0) -> tuple[float, int] | None:
    """NDM's network FLOPs per sample over DDPM's with the ancestral sampler near NFE 10."""
    if few.empty or "flops_per_sample" not in few.columns:
        return None
    sel = few[(few["dataset"] == dataset) & (few["sampler"] == roles().nelbo_sampler) & np.isfinite(few["flops_per_sample"].astype(float))]
    a, b = sel[sel["variant"] == roles().model], sel[sel["variant"] == roles().reference_baseline]
    shared = sorted(set(a["nfe"].astype(float)) & set(b["nfe"].astype(float)))
    if not shared:
        return None
    x = shared[int(np.argmin(np.abs(np.log(shared) - math.log(nfe))))]
    fa = float(a[np.isclose(a["nfe"].astype(float), x)]["flops_per_sample"].iloc[0])
    fb = float(b[np.isclose(b["nfe"].astype(float), x)]["flops_per_sample"].iloc[0])
    return (fa / fb, int(x)) if fb > 0 else None


def _versus_ddpm(row: pd.Series) -> str:
    """'1.968 against DDPM's 2.027, NDM − DDPM −0.060 [−0.110, −0.010] over 3 seeds (NDM better)'."""
    return (
        f"{fmt_num(row['model_value'])} against DDPM's {fmt_num(row['baseline_value'])}, NDM − DDPM {fmt_diff(row['diff'])}{ci_text(row)} "
        f"over {seeds_text(int(row['n_seeds']))} ({verdict_label(row, 'NDM', 'DDPM')})"
    )


def compute_sentence(pairs: pd.DataFrame, few: pd.DataFrame, dataset: str) -> str | None:
    """Sentence 3: NDM vs DDPM at equal training FLOPs (paired by seed) and per-sample FLOPs."""
    parts = []
    # NDM trained for DDPM's FLOPs, with its own annealed schedule: no reading off a longer run.
    matched = pair_row(pairs, dataset, NELBO, roles().compute_control, roles().reference_baseline)
    read = pair_row(pairs, dataset, NELBO_AT_FLOPS, roles().model, roles().reference_baseline)
    if matched is not None:
        parts.append(f"trained for DDPM's training FLOPs ({roles().compute_control}), NDM's test NELBO is {_versus_ddpm(matched)}")
    elif read is not None:
        parts.append(
            f"at equal training compute ({fmt_num(float(read['budget_gflops']))} GFLOPs, the cheaper full run, read off the test-NELBO curves) "
            f"NDM's test NELBO is {_versus_ddpm(read)}"
        )
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


def gauge_sentence(pairs: pd.DataFrame, gauge_comparison: pd.DataFrame, gauge: pd.DataFrame, dataset: str) -> str | None:
    """Sentence 4 (configs with a gauge-fixed copy): ndm@gauge − ndm in offset, NELBO and few-step FD."""
    parts = []  # each part needs the gauge-fixed copy's results: none, no sentence
    off, off_fixed = _offset_at(gauge, dataset, roles().model), _offset_at(gauge, dataset, roles().gauge_control)
    if off and off_fixed:
        parts.append(f"F's input-independent offset at t = 0.75 has rms {off} for ndm and {off_fixed} for {roles().gauge_control}")
    row = pair_row(pairs, dataset, NELBO, roles().gauge_control, roles().model)
    if row is not None:
        parts.append(
            f"test NELBO {roles().gauge_control} − ndm {fmt_diff(row['diff'])}{ci_text(row)} bits/dim over {seeds_text(int(row['n_seeds']))} "
            f"({verdict_label(row, roles().gauge_control, 'ndm')})"
        )
    sub = gauge_comparison[(gauge_comparison["dataset"] == dataset) & (gauge_comparison["metric"] != NELBO_METRIC)] if not gauge_comparison.empty else gauge_comparison
    for sampler in (*roles().answer_samplers, BEST):
        rows = sub[sub["sampler"] == sampler].sort_values("nfe") if not sub.empty else sub
        if rows.empty:
            continue
        cells = [_at(rows, x) for x in (10.0, 20.0)]
        judged = rows[rows["verdict"].isin([BETTER, WORSE])]
        verdicts = ", ".join(f"{roles().gauge_control if r.verdict == BETTER else 'ndm'} better at NFE {int(r.nfe)}" for r in judged.itertuples()) or (
            "one seed: not judged" if (rows["n_seeds"] < 2).all() else "no NFE significant"
        )
        parts.append(f"{rows['metric'].iloc[0]} {roles().gauge_control} − ndm, {sampler}: {', '.join(dict.fromkeys(cells))} ({verdicts})")
    if not parts:
        return None
    joined = "; ".join(parts)
    return f"**Gauge.** {joined[0].upper()}{joined[1:]}."


def answer_summary(
    res: Results,
    comparison: pd.DataFrame,
    few: pd.DataFrame,
    gauge_comparison: pd.DataFrame | None = None,
    gauge: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
    endpoint: pd.DataFrame | None = None,
) -> dict[str, list[str]]:
    """Per dataset, the sentences that are there (empty when NDM has no results). pairs: the
    likelihood_pairs frame (computed from res when not given)."""
    out = {}
    if roles().model not in res.variants:
        return out
    pairs = likelihood_pairs_frame(res) if pairs is None else pairs
    gauge_comparison = gauge_comparison if gauge_comparison is not None else pd.DataFrame()
    gauge = gauge if gauge is not None else pd.DataFrame()
    for d in res.datasets:
        sentences = [
            endpoint_sentence(endpoint, d), likelihood_sentence(pairs, d), few_step_sentence(comparison, d), compute_sentence(pairs, few, d),
            gauge_sentence(pairs, gauge_comparison, gauge, d),
        ]  # fmt: skip
        sentences = [s for s in sentences if s]
        if sentences:
            out[d] = sentences
    return out


__all__ = ["answer_summary", "compute_sentence", "endpoint_sentence", "few_step_sentence", "gauge_sentence", "likelihood_sentence"]
