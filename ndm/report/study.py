"""Convergence and matched compute: the tables and figure that say whether the models compared
have finished learning, and how they compare at equal training compute.

Both read the test-NELBO curve that training logs every `train.eval_every` steps
(ndm.pipeline.train_curve): the EMA model's continuous NELBO on a fixed test batch, with the
cumulative training seconds and FLOPs at that step.

- `convergence_table`: per (dataset, variant), the final test NELBO (mean and standard error
  over seeds) and how much the last quarter of training still gained, as bits/dim and as a
  share of the whole curve's gain. "plateau" means that share is below PLATEAU_SHARE.
- `matched_compute_table`: every variant's test NELBO read off its curve at the same training
  FLOPs and at the same training seconds: the budget of the cheapest variant's full run. A
  point read off a longer run was trained at a higher learning rate than a run of that budget
  would end with (under a cosine schedule it is not annealed), which favours the cheaper
  model; a variant trained for the budget (the study's ndm@compute) has no such bias.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ndm.report.figures import facet_axes, figure_header, legend_handles
from ndm.report.style import message_figure, pyplot, save_figure, sort_variants, variant_color
from ndm.report.table_format import Table, fmt_num

PLATEAU_SHARE = 0.05  # the last quarter gained less than 5% of the whole curve's gain

CONVERGENCE_COLUMNS = [
    "dataset", "variant", "seeds", "steps", "train_gflops", "train_seconds", "final_nelbo_bpd", "final_se",
    "last_quarter_gain_bpd", "last_quarter_gain_se", "share_of_gain", "plateau",
]  # fmt: skip
MATCHED_COLUMNS = [
    "dataset", "variant", "seeds", "budget_gflops", "steps_at_budget", "nelbo_at_flops_bpd", "nelbo_at_flops_se",
    "budget_seconds", "nelbo_at_seconds_bpd", "nelbo_at_seconds_se", "final_nelbo_bpd", "full_run_gflops",
]  # fmt: skip


def test_curve(curves: pd.DataFrame) -> pd.DataFrame:
    """The lines of the training curves that carry a test NELBO, sorted by step."""
    if curves.empty or "test_nelbo_bpd" not in curves.columns:
        return pd.DataFrame(columns=list(curves.columns))
    ok = curves[np.isfinite(curves["test_nelbo_bpd"].astype(float))]
    return ok.sort_values(["dataset", "variant", "seed", "step"], kind="stable").reset_index(drop=True)


def value_at(points: pd.DataFrame, x_col: str, x: float, y_col: str = "test_nelbo_bpd") -> float:
    """y at x by linear interpolation between curve points (NaN outside the curve)."""
    xs = points[x_col].to_numpy(dtype=float)
    ys = points[y_col].to_numpy(dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size == 0 or x < xs.min() - 1e-9 * abs(x) or x > xs.max() + 1e-9 * abs(x):
        return math.nan
    order = np.argsort(xs)
    return float(np.interp(x, xs[order], ys[order]))


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size >= 2 else math.nan


def convergence_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, variant, seed): steps, compute, final NELBO and the last quarter's gain."""
    rows = []
    for (d, v, s), g in test_curve(curves).groupby(["dataset", "variant", "seed"], sort=False):
        last = g.iloc[-1]
        final, first = float(last["test_nelbo_bpd"]), float(g.iloc[0]["test_nelbo_bpd"])
        at_75 = value_at(g, "step", 0.75 * float(last["step"]))
        gain = at_75 - final
        total = first - final
        rows.append(
            {
                "dataset": d, "variant": v, "seed": s, "steps": int(last["step"]),
                "train_gflops": float(last["train_flops"]) / 1e9, "train_seconds": float(last["train_seconds"]),
                "final": final, "gain": gain, "share": gain / total if total > 0 else math.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def convergence_table(curves: pd.DataFrame, variants: list[str]) -> Table:
    per_seed = convergence_rows(curves)
    rows = []
    if not per_seed.empty:
        for (d, v), g in per_seed.groupby(["dataset", "variant"], sort=False):
            final, final_se = _mean_se(g["final"].tolist())
            gain, gain_se = _mean_se(g["gain"].tolist())
            share = float(np.nanmean(g["share"])) if g["share"].notna().any() else math.nan
            rows.append(
                {
                    "dataset": d, "variant": v, "seeds": len(g), "steps": int(g["steps"].max()),
                    "train_gflops": float(g["train_gflops"].mean()), "train_seconds": float(g["train_seconds"].mean()),
                    "final_nelbo_bpd": final, "final_se": final_se, "last_quarter_gain_bpd": gain, "last_quarter_gain_se": gain_se,
                    "share_of_gain": share,
                    "plateau": "yes" if share < PLATEAU_SHARE else ("no: still improving" if np.isfinite(share) else "unknown"),
                }
            )  # fmt: skip
    data = _ordered(pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS), variants)
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "variant": data["variant"],
            "steps": data["steps"].astype(str),
            "train GFLOPs": [fmt_num(x) for x in data["train_gflops"]],
            "train s": [fmt_num(x) for x in data["train_seconds"]],
            "final test NELBO": [_pm(m, s) for m, s in zip(data["final_nelbo_bpd"], data["final_se"])],
            "last-quarter gain": [_pm(m, s) for m, s in zip(data["last_quarter_gain_bpd"], data["last_quarter_gain_se"])],
            "share of gain": [f"{100 * x:.1f}%" if np.isfinite(x) else "" for x in data["share_of_gain"]],
            "plateau": data["plateau"],
        }
    )
    notes = [
        "Test NELBO: the EMA model's continuous-time NELBO (bits/dim) on a fixed test batch, logged every train.eval_every steps; mean ± standard error over seeds.",
        "last-quarter gain: NELBO at 75% of the steps minus the final NELBO (positive = still improving); share of gain: that gain over the whole curve's (first point to last).",
        f"plateau: the last quarter gained less than {100 * PLATEAU_SHARE:.0f}% of the curve's total gain. train s: training wall-clock seconds (the job's own, evaluation excluded).",
    ]
    return Table("convergence", data, display, "Convergence: test NELBO at the end of training and what the last quarter gained", notes)


def matched_compute_table(curves: pd.DataFrame, variants: list[str]) -> Table:
    """Every variant's test NELBO at the cheapest full run's training FLOPs and seconds."""
    per_seed = convergence_rows(curves)
    test = test_curve(curves)
    rows = []
    for d in per_seed["dataset"].unique() if not per_seed.empty else []:
        sub = per_seed[per_seed["dataset"] == d]
        means = sub.groupby("variant")[["train_gflops", "train_seconds"]].mean()
        budget_gflops, budget_seconds = float(means["train_gflops"].min()), float(means["train_seconds"].min())
        for v, g in sub.groupby("variant", sort=False):
            at_flops, at_secs, steps_at = [], [], []
            for s in g["seed"]:
                pts = test[(test["dataset"] == d) & (test["variant"] == v) & (test["seed"] == s)]
                at_flops.append(value_at(pts, "train_flops", budget_gflops * 1e9))
                at_secs.append(value_at(pts, "train_seconds", budget_seconds))
                steps_at.append(value_at(pts, "train_flops", budget_gflops * 1e9, "step"))
            f_mean, f_se = _mean_se(at_flops)
            s_mean, s_se = _mean_se(at_secs)
            rows.append(
                {
                    "dataset": d, "variant": v, "seeds": len(g), "budget_gflops": budget_gflops,
                    "steps_at_budget": float(np.nanmean(steps_at)) if np.isfinite(steps_at).any() else math.nan,
                    "nelbo_at_flops_bpd": f_mean, "nelbo_at_flops_se": f_se, "budget_seconds": budget_seconds,
                    "nelbo_at_seconds_bpd": s_mean, "nelbo_at_seconds_se": s_se,
                    "final_nelbo_bpd": float(g["final"].mean()), "full_run_gflops": float(g["train_gflops"].mean()),
                }
            )  # fmt: skip
    data = _ordered(pd.DataFrame(rows, columns=MATCHED_COLUMNS), variants)
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "variant": data["variant"],
            "full run GFLOPs": [fmt_num(x) for x in data["full_run_gflops"]],
            "steps at budget": [str(int(round(x))) if np.isfinite(x) else "" for x in data["steps_at_budget"]],
            "NELBO at equal FLOPs": [_pm(m, s) for m, s in zip(data["nelbo_at_flops_bpd"], data["nelbo_at_flops_se"])],
            "NELBO at equal seconds": [_pm(m, s) for m, s in zip(data["nelbo_at_seconds_bpd"], data["nelbo_at_seconds_se"])],
            "NELBO, full run": [fmt_num(x) for x in data["final_nelbo_bpd"]],
        }
    )
    budgets = "; ".join(
        f"{d}: {fmt_num(g['budget_gflops'].iloc[0])} GFLOPs, {fmt_num(g['budget_seconds'].iloc[0])} s" for d, g in data.groupby("dataset", sort=False)
    )
    notes = [
        f"Budget = the cheapest variant's full run (mean over seeds) — {budgets or 'no curves'}. Each variant's test NELBO is read off its own curve at that budget (linear between curve points).",
        "Training FLOPs = 3 × the counted forward FLOPs of the loss per step (backward ≈ 2 × forward); seconds are the training job's own.",
        "A point read off a longer run was trained at a higher learning rate than a run of that budget ends with (a cosine schedule is not yet annealed there), "
        "which favours the cheaper variants; a variant trained for the budget itself (ndm@compute in configs/study.yaml) has no such bias.",
    ]
    return Table("matched_compute", data, display, "Matched compute: test NELBO at equal training FLOPs and seconds", notes)


def convergence_figure(curves: pd.DataFrame, path: Path) -> list[Path]:
    """Test NELBO over training steps (top) and training FLOPs (bottom), per dataset; mean over
    seeds with a ± 1 standard error band."""
    test = test_curve(curves)
    if test.empty:
        return message_figure(path, "Convergence", ["No test-NELBO curve: set train.eval_every (e.g. 100) to log one."])
    plt = pyplot()
    datasets = list(dict.fromkeys(test["dataset"]))
    fig, axes = facet_axes(plt, 2, len(datasets), w=5.2, h=3.6)
    variants = sort_variants(test["variant"].unique().tolist())
    for j, d in enumerate(datasets):
        sub = test[test["dataset"] == d].assign(train_gflops=lambda f: f["train_flops"] / 1e9)
        for i, x in enumerate(("step", "train_gflops")):
            ax = axes[i][j]
            for v in variants:
                g = sub[sub["variant"] == v]
                if g.empty:
                    continue
                # Seeds share their step grid; the FLOPs axis is the seeds' mean at each step.
                agg = g.groupby("step").agg(x=(x, "mean"), y=("test_nelbo_bpd", "mean"), sd=("test_nelbo_bpd", "std"), n=("test_nelbo_bpd", "count")).reset_index()
                se = (agg["sd"] / np.sqrt(agg["n"])).fillna(0.0)
                ax.plot(agg["x"], agg["y"], color=variant_color(v), linewidth=1.6)
                ax.fill_between(agg["x"], agg["y"] - se, agg["y"] + se, color=variant_color(v), alpha=0.2, linewidth=0)
            tail = sub[sub["step"] >= 0.25 * sub["step"].max()]["test_nelbo_bpd"]
            if not tail.empty:
                pad = 0.05 * (tail.max() - tail.min() + 1e-9)
                ax.set_ylim(tail.min() - pad, tail.max() + pad)
            ax.set_xlabel("training step" if x == "step" else "training GFLOPs (3 × forward)")
            ax.set_ylabel("test NELBO (bits/dim)")
            ax.set_title(f"{d} · test NELBO vs {'steps' if x == 'step' else 'training compute'}")
    figure_header(fig, "Convergence: EMA model's test NELBO during training (y-axis: the last three quarters)", legend_handles(variants, plt), ncol=6, legend_title="variant (band: ± 1 standard error over seeds)")
    return save_figure(fig, path)


def _pm(m: float, s: float) -> str:
    if not np.isfinite(m):
        return ""
    return f"{fmt_num(m)} ± {fmt_num(s)}" if np.isfinite(s) else fmt_num(m)


def _ordered(data: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    if data.empty:
        return data
    order = {v: i for i, v in enumerate(sort_variants(list(dict.fromkeys(list(variants) + data["variant"].tolist()))))}
    return data.sort_values(["dataset", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c, kind="stable").reset_index(drop=True)


__all__ = ["PLATEAU_SHARE", "convergence_figure", "convergence_table", "matched_compute_table", "test_curve", "value_at"]
