"""The reviewers' points, each answered with the numbers of this run (README section).

The NDM paper's reviews asked: do the gains survive few-step sampling (FD and NELBO versus
NFE); DDIM with fewer steps than training steps; ODE sampling and the ODE NLL; whether the
NLL/NELBO gains over DDPM and VDM exceed the noise between training runs; whether FID gains are
consistent across samplers; how phi (F) and theta (x_hat) are trained; F's architecture and
size; NDM's extra parameters and training compute. Every sentence here is computed from the
tables (few_step, few_step_comparison, likelihood_pairs, gauge_comparison, gauge, convergence,
train summaries), so it changes when the results do. Differences are paired by seed with a 95% interval
(ndm.report.verdicts); with one seed nothing is called better.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.report.roles import roles
from ndm.report.collect import Results
from ndm.report.fewstep_answer import describe
from ndm.report.table_format import fmt_diff, fmt_num
from ndm.report.likelihood_pairs import NELBO, NLL_ODE, ci_text, pair_row, seeds_text, verdict_label
from ndm.report.verdicts import BEST, BETTER, NELBO_METRIC, TIE, WORSE

# phi (F) and theta (x_hat, and a learned schedule) are one nn.Module, trained by one optimiser
# on one loss; the sentence names the code so a reader can check it.
JOINT_TRAINING = (
    "phi (F) and theta (x_hat, plus a learned schedule's parameters) are trained **jointly, with one optimiser**: "
    "`ndm/pipeline/train_state.py` `build_state` creates a single AdamW over `model.parameters()` of the `DiffusionModel` "
    "(x_hat network, F network, schedule), and `ndm/pipeline/train.py` `train_step` takes one gradient step of the NELBO "
    "(`DiffusionModel.training_loss`, `ndm/model/diffusion.py`) on all of them at once; there is no alternation and no "
    "separate learning rate."
)


def pair_sentence(row: pd.Series, unit: str = "bits/dim") -> str:
    """'ndm − ddpm = −0.012 [−0.03, +0.006] bits/dim (1.959 vs 1.971; 3 seeds paired): not significant'
    from a likelihood_pairs row (its verdict judged with the dataset's other comparisons, Holm)."""
    n = int(row["n_seeds"])
    seeds = seeds_text(n) + (" paired" if n >= 2 else ", within-run interval")
    return (
        f"{row['model']} − {row['baseline']} = {fmt_diff(row['diff'])}{ci_text(row)} {unit} "
        f"({fmt_num(row['model_value'])} vs {fmt_num(row['baseline_value'])}; {seeds}): {verdict_label(row, row['model'], row['baseline'])}"
    )


def _fd_metric(few: pd.DataFrame, dataset: str) -> str | None:
    sub = few[(few["dataset"] == dataset) & (few["metric"] != NELBO_METRIC)] if not few.empty else few
    return None if sub.empty else str(sub["metric"].iloc[0])


def _cell(few: pd.DataFrame, dataset: str, variant: str, sampler: str, metric: str, nfe: float) -> str:
    sel = few[(few["dataset"] == dataset) & (few["variant"] == variant) & (few["sampler"] == sampler) & (few["metric"] == metric)]
    sel = sel[np.isclose(sel["nfe"].astype(float), nfe)]
    if sel.empty:
        return "—"
    r = sel.iloc[0]
    return f"{fmt_num(r['value'])} ± {fmt_num(r['se'])}" if np.isfinite(r["se"]) else fmt_num(r["value"])


def _nearest_nfe(few: pd.DataFrame, dataset: str, sampler: str, target: float) -> float | None:
    sel = few[(few["dataset"] == dataset) & (few["sampler"] == sampler)]
    if sel.empty:
        return None
    nfes = np.unique(sel["nfe"].astype(float))
    return float(nfes[np.argmin(np.abs(np.log(nfes) - math.log(target)))])


def _describe(comp: pd.DataFrame, dataset: str, base: str, sampler: str, metric: str, model: str | None = None) -> str | None:
    rows = comp[(comp["dataset"] == dataset) & (comp["baseline"] == base) & (comp["sampler"] == sampler) & (comp["metric"] == metric)]
    if rows.empty:
        return None
    text = describe(rows, base)
    return text if model in (None, roles().model) else text.replace("NDM", model)


def _consistency(comp: pd.DataFrame, dataset: str, base: str, metric: str) -> str | None:
    """Per NFE: on how many samplers NDM is better / worse / not different from `base`."""
    rows = comp[(comp["dataset"] == dataset) & (comp["baseline"] == base) & (comp["metric"] == metric) & (comp["sampler"] != BEST)]
    if rows.empty:
        return None
    if (rows["n_seeds"] < 2).all():
        return f"vs {base}: one seed, not judged on any sampler"
    parts = []
    for nfe, g in rows.groupby(rows["steps"].astype(int), sort=True):
        counts = g["verdict"].value_counts()
        parts.append(f"{int(nfe)} steps: {counts.get(BETTER, 0)} better / {counts.get(WORSE, 0)} worse / {counts.get(TIE, 0)} n.s. of {len(g)}")
    return f"vs {base} ({metric}, samplers at equal step count): " + "; ".join(parts)


def reviewer_lines(
    res: Results,
    config: dict,
    few: pd.DataFrame,
    comp: pd.DataFrame,
    pairs: pd.DataFrame,
    gauge_comp: pd.DataFrame,
    gauge: pd.DataFrame,
    convergence: pd.DataFrame,
) -> list[str]:
    """The README section: one sub-list per reviewer point, per dataset, with numbers."""
    lines = ["## The reviewers' points, answered with this run's numbers", ""]
    if roles().model not in res.variants:
        return lines + ["Not answered: the config has no `ndm` variant.", ""]
    baselines = [b for b in roles().likelihood_baselines if b in res.variants]
    for d in res.datasets:
        metric = _fd_metric(few, d)
        lines += [f"### {d}", ""]
        conv = convergence[convergence["dataset"] == d] if not convergence.empty else convergence
        if not conv.empty:
            flat = conv[conv["plateau"] == "yes"]["variant"].tolist()
            still = conv[conv["plateau"] != "yes"]
            lines.append(
                f"- **Converged?** test NELBO curves (tables/convergence.md): plateau (last quarter < 5% of the curve's gain) for {', '.join(flat) or 'none'}"
                + (f"; still improving: {', '.join(f'{r.variant} ({100 * r.share_of_gain:.0f}%)' for r in still.itertuples())}" if not still.empty else "")
                + "."
            )
        # 1. few-step FD and NELBO versus NFE, each model at its best sampler
        for base in roles().answer_few_step_baselines:
            if metric and base in res.variants:
                text = _describe(comp, d, base, BEST, metric)
                if text:
                    lines.append(f"- **Few-step sample quality** ({metric}, each model at its best sampler per NFE) vs {base}: {text}")
            text = _describe(comp, d, base, roles().nelbo_sampler, NELBO_METRIC) if base in res.variants else None
            if text:  # the NELBO rows' "NFE" is the number of steps T of the bound
                lines.append(f"- **T-step NELBO** vs {base}: {text.replace('NFE', 'T')}")
        # 2. DDIM with fewer steps than training steps
        if metric and not few[(few["dataset"] == d) & (few["sampler"] == roles().deterministic_sampler)].empty:
            nfe10 = _nearest_nfe(few, d, roles().deterministic_sampler, 10)
            cells = ", ".join(f"{v} {_cell(few, d, v, roles().deterministic_sampler, metric, nfe10)}" for v in [roles().model, *baselines[:2]])
            text = _describe(comp, d, roles().reference_baseline, roles().deterministic_sampler, metric)
            lines.append(
                f"- **DDIM with fewer steps than training**: every model is trained in continuous time (T = ∞), so each DDIM step count is "
                f"below the training steps. At NFE {int(nfe10)}: {cells}." + (f" NDM vs DDPM over NFE: {text}" if text else "")
            )
        # 3. ODE sampling and the ODE NLL
        ode_rows = [pair_row(pairs, d, NLL_ODE, roles().model, other) for other in roles().ode_baselines]
        ode_parts = [pair_sentence(r) for r in ode_rows if r is not None]
        if ode_parts:
            lines.append("- **ODE NLL** (probability-flow ODE, Heun, dequantized): " + "; ".join(ode_parts) + ".")
        if metric:
            for sampler in (roles().ode_sampler, roles().adaptive_sampler):
                text = _describe(comp, d, roles().reference_baseline, sampler, metric)
                if text:
                    lines.append(f"- **ODE sampling** ({sampler}) vs ddpm: {text}")
        # 4. NELBO gains against the seed noise
        nelbo_rows = [pair_row(pairs, d, NELBO, roles().model, b) for b in baselines] + [pair_row(pairs, d, NELBO, roles().compute_control, roles().reference_baseline)]
        nelbo_parts = [pair_sentence(r) for r in nelbo_rows if r is not None]
        if nelbo_parts:
            lines.append(
                "- **NELBO gains vs seed noise** (continuous-time NELBO on the test split, paired by seed; the dataset's "
                "test-NELBO comparisons judged together, Holm, tables/likelihood_pairs):"
            )
            lines += [f"  - {p}" for p in nelbo_parts]
        # 5. consistency across samplers
        if metric:
            parts = [p for p in (_consistency(comp, d, b, metric) for b in roles().answer_few_step_baselines if b in res.variants) if p]
            if parts:
                lines.append("- **Are the sample-quality gains consistent across samplers?** " + " — ".join(parts) + ".")
        # 6. matched parameters and compute
        for b in roles().size_controls:
            text = _describe(comp, d, b, BEST, metric) if metric and b in res.variants else None
            if text:
                lines.append(f"- **Matched parameters** ({b}: x_hat with NDM's total parameter count), best sampler: {text}")
        # 7. the gauge, and a sampler that fails at few steps
        lines += _gauge_lines(d, few, gauge_comp, gauge, metric)
        # 8. F's architecture and size
        lines.append("- **F's architecture and size**: " + _f_size(res, config, d))
        lines.append("")
    lines += [f"- **How phi and theta are trained**: {JOINT_TRAINING}", ""]
    return lines


def _gauge_lines(d: str, few: pd.DataFrame, gauge_comp: pd.DataFrame, gauge: pd.DataFrame, metric: str | None) -> list[str]:
    out = []
    g = gauge[(gauge["dataset"] == d) & np.isclose(gauge["t"].astype(float), 0.75)] if not gauge.empty else gauge
    if not g.empty:
        # .3g: offsets run from 1e-4 (toy2d) to 30 (digits ndm-vdm)
        rms = ", ".join(f"{r.variant} ({r.gauge}) {r.offset_rms:.3g} vs input-dependent {r.input_rms:.3g}" for r in g.itertuples())
        out.append(f"- **F's offset at t = 0.75** (rms of the input-independent part of F(x,t) − x, tables/gauge.md): {rms}.")
    if metric and not gauge_comp.empty:
        sub = gauge_comp[gauge_comp["dataset"] == d]
        for sampler in roles().gauge_samplers:
            text = _describe(sub, d, roles().model, sampler, metric, model=roles().gauge_control)
            if text:
                out.append(f"- **Gauge fixed vs not** (ndm@gauge − ndm, {sampler}): {text}")
        text = _describe(sub, d, roles().model, roles().nelbo_sampler, NELBO_METRIC, model=roles().gauge_control)
        if text:
            out.append(f"- **Gauge fixed vs not, T-step NELBO**: {text.replace('NFE', 'T')}")
    if metric and not few.empty:
        nfe = _nearest_nfe(few, d, roles().ode_sampler, 10)
        if nfe is not None:
            cells = {v: _cell(few, d, v, roles().ode_sampler, metric, nfe) for v in (roles().reference_baseline, roles().model, roles().gauge_control)}
            gauge_run = cells[roles().gauge_control] != "—"
            out.append(
                f"- **The ODE sampler at few steps** (ode-heun, NFE {int(nfe)}): "
                + ", ".join(f"{v} {c}" for v, c in cells.items() if c != "—")
                + ". What to read them against: the paper's F is free to drift along an input-independent offset c(t) the NELBO cannot see, "
                "alpha_t c'(t) then enters the probability-flow drift, and a large, fast-varying offset makes the ODE stiff for fixed-step "
                "solvers (docs/math.md, Gauge freedom of F); the offset's size is the line above"
                + (
                    "; ndm@gauge pins F at one reference point x_ref, which removes the offset there but not over the data "
                    "(its offset over the test data is in the line above)."
                    if gauge_run
                    else "; a config with ndm@gauge (configs/study.yaml) pins F at a reference point and measures the effect."
                )
            )
    return out


def _f_size(res: Results, config: dict, d: str) -> str:
    from ndm.pipeline.config import ConfigError, resolve_run_config

    try:
        run = resolve_run_config(config, d, roles().model, 0)
    except (ConfigError, KeyError, TypeError, ValueError):
        return "config not readable."
    net = run.model.transform_network or run.model.network
    arch = f"a residual MLP, width {net.hidden}, {net.depth} blocks" if net.kind == "mlp" else f"a U-Net, base width {net.channels}, multipliers {net.channel_mult}"
    tr = res.train[(res.train["dataset"] == d) & (res.train["variant"] == roles().model)] if not res.train.empty else res.train
    if tr.empty:
        return f"F(x, t) = x + t NN(x, t) with NN {arch}."
    n_f, n_x = int(tr["n_params_F"].iloc[0]), int(tr["n_params_x_hat"].iloc[0])
    return (
        f"F(x, t) = x + t NN(x, t) with NN {arch} ({n_f:,} parameters), beside an x_hat network of {n_x:,}: "
        f"NDM has {(n_f + n_x) / n_x:.2f}× the parameters of DDPM here ({'the paper: about 2×, F the same U-Net as x_hat' if net.kind == 'mlp' else 'F the same family as x_hat'})."
    )


__all__ = ["JOINT_TRAINING", "pair_sentence", "reviewer_lines"]
