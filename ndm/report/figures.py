"""Figures drawn from the result tables: FD versus NFE, bits/dim versus T, training curves;
and the layout helpers every report figure shares. Figures of the models themselves
(schedules, F, sample grids) are in ndm.report.figures_models.

Each function takes what it plots and a path, writes one PNG there (ndm.report.style.save_figure),
and draws a figure that says what is missing instead of failing when its inputs are absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ndm.report.fewstep import best_sampler_rows
from ndm.report.roles import roles
from ndm.report.style import (
    metric_label,
    message_figure,
    pyplot,
    save_figure,
    sort_variants,
    variant_color,
    variant_marker,
)


def legend_handles(variants: list[str], plt) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=variant_color(v), marker=variant_marker(v), label=v, linewidth=2) for v in variants]


def facet_axes(plt, n_rows: int, n_cols: int, w: float = 4.2, h: float = 3.4):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows), squeeze=False)
    return fig, axes


def dataset_panels(frame: pd.DataFrame, h: float):
    """A row of panels, one per dataset in order of first appearance, and the sorted variants.

    Returns (plt, fig, panels, variants) with panels a list of (ax, dataset, the dataset's rows).
    """
    plt = pyplot()
    datasets = list(dict.fromkeys(frame["dataset"]))
    fig, axes = facet_axes(plt, 1, len(datasets), w=4.8, h=h)
    variants = sort_variants(frame["variant"].unique().tolist())
    panels = [(ax, d, frame[frame["dataset"] == d]) for ax, d in zip(axes[0], datasets)]
    return plt, fig, panels, variants


def figure_header(fig, title: str, handles: list, labels: list[str] | None = None, ncol: int = 6, legend_title: str | None = None) -> None:
    """Title and a legend above the panels, with room reserved for both (height-independent)."""
    height = fig.get_size_inches()[1]
    title_h = 0.1 + 0.25 * (title.count("\n") + 1)
    legend_h = (0.3 if handles else 0.0) + (0.2 if legend_title else 0.0)
    fig.suptitle(title, y=1.0 - 0.05 / height, va="top", fontweight="bold")
    if handles:
        kwargs = {"labels": labels} if labels is not None else {}
        fig.legend(handles=handles, loc="upper center", ncol=max(1, min(ncol, len(handles))), bbox_to_anchor=(0.5, 1.0 - title_h / height), frameon=False, title=legend_title, **kwargs)
    fig.tight_layout(rect=(0, 0, 1, 1.0 - (title_h + legend_h + 0.05) / height))


def _log_axis(ax, axis: str, values: np.ndarray, data_ticks: bool = True) -> None:
    """A log axis labelled with plain numbers (ticks at the data's values when few and
    data_ticks, else 1-2-5: a continuous quantity such as FLOPs has no round values to mark)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    values = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
    ticks: list[float] = []
    for v in np.unique(values):  # one tick for values within 25 % (NFE 5 and 6, 25 and 26: steps, steps + 1)
        if not ticks or v > 1.25 * ticks[-1]:
            ticks.append(float(v))
    if data_ticks and axis == "x" and 0 < len(ticks) <= 8:
        a.set_major_locator(FixedLocator(ticks))
    else:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_major_formatter(fmt)
    a.set_minor_formatter(NullFormatter())


def _value_axis(ax, values: np.ndarray) -> None:
    """Log y when every value is positive, symlog when values reach 0 or below but span decades."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    if (v > 0).all():
        _log_axis(ax, "y", v)
    elif np.abs(v).max() > 100 * max(np.median(np.abs(v)), 1e-9):
        ax.set_yscale("symlog", linthresh=1.0)


def _units_label(units: str | None) -> str:
    return "bits/dim, continuous density" if units and "continuous" in units else "bits/dim"


# ------------------------------------------------------------------ FD vs NFE


def fid_vs_nfe_figure(few: pd.DataFrame, path: Path, dataset: str | None = None, floors: dict | None = None) -> list[Path]:
    """Sample quality versus NFE for one dataset: a row per metric (at most three), the lower
    envelope over samplers and grids against NFE (left) and against network GFLOPs per sample
    (right), the data floor as a band, the report's highlighted models (NDM and its two closest
    baselines) in colour and every other model muted."""
    few = few[few["dataset"] == dataset] if dataset is not None and not few.empty else few
    title = f"{dataset}: sample quality versus NFE" if dataset else "Sample quality versus NFE"
    if few.empty:
        return message_figure(path, title, ["No sample results yet (no fid/<sampler>.json files)."])
    plt = pyplot()
    metrics = sorted(few["metric"].unique(), key=lambda m: (not m.startswith("f"), m))[:3]
    env = best_sampler_rows(few)  # the lower envelope: steps = the NFE budget N
    flops = "flops_per_sample" in env.columns and np.isfinite(env["flops_per_sample"].astype(float)).any()
    fig, axes = facet_axes(plt, len(metrics), 2 if flops else 1, w=5.2, h=3.6)
    variants = sort_variants(few["variant"].unique().tolist())
    highlight = [v for v in roles().highlight if v in variants]
    order = [v for v in variants if v not in highlight] + highlight  # highlighted drawn last, on top
    for i, metric in enumerate(metrics):
        sub = env[env["metric"] == metric]
        for j, (x_col, x_label) in enumerate([("steps", "NFE budget N (x̂ evaluations; best over samplers and grids with NFE <= N)"),
                                              ("flops_per_sample", "GFLOPs per sample (x̂ and F, JVPs included)")][: 2 if flops else 1]):  # fmt: skip
            ax = axes[i][j]
            floor = (floors or {}).get((dataset, metric))
            if floor:
                lo = floor["floor_mean"] - (floor.get("floor_std") or 0.0)
                hi = floor["floor_mean"] + (floor.get("floor_std") or 0.0)
                ax.axhspan(lo, hi, color="0.85", zorder=0) if hi > lo else ax.axhline(floor["floor_mean"], color="0.6", linestyle="--", zorder=0)
            for v in order:
                s = sub[sub["variant"] == v].sort_values(x_col)
                if s.empty:
                    continue
                x = s[x_col] / (1e9 if x_col == "flops_per_sample" else 1.0)
                strong = v in highlight
                ax.errorbar(x, s["value"], yerr=s["se"].fillna(0), color=variant_color(v) if strong else "0.7", marker=variant_marker(v),
                            capsize=2, linewidth=2.0 if strong else 0.9, markersize=4 if strong else 3, zorder=3 if strong else 2)  # fmt: skip
            _log_axis(ax, "x", (sub[x_col] / (1e9 if x_col == "flops_per_sample" else 1.0)).to_numpy(), data_ticks=x_col != "flops_per_sample")
            _value_axis(ax, np.concatenate([sub["value"].to_numpy(), [floor["floor_mean"]] if floor else []]))
            ax.set_xlabel(x_label, fontsize=8)
            ax.set_ylabel(metric_label(metric), fontsize=8)
            ax.set_title(f"{metric}: lower envelope" + (" vs compute" if j else ""), fontsize=9)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = legend_handles(highlight, plt) + [Line2D([], [], color="0.7", linewidth=0.9, label="other variants")] * bool(set(variants) - set(highlight))
    handles += [Patch(color="0.85", label="data floor (± sd)")]
    figure_header(fig, f"{title} (lower is better; error bars ± 1 se across seeds)", handles, ncol=6)
    return save_figure(fig, path)


# ------------------------------------------------------------------ bpd vs T


def bpd_vs_T_figure(bpd_T: pd.DataFrame, units: dict[str, str], path: Path) -> list[Path]:
    """NELBO versus T per dataset: a line per variant through each discrete T and T = ∞ (continuous time)."""
    if bpd_T.empty:
        return message_figure(path, "NELBO versus T", ["No likelihood results yet (no likelihood.json files)."])
    plt, fig, panels, variants = dataset_panels(bpd_T, h=3.8)
    for ax, d, sub in panels:
        finite = sub["T"][np.isfinite(sub["T"])]
        t_max = float(finite.max()) if not finite.empty else 1000.0
        x_inf = t_max * 3.0  # where T = ∞ is drawn
        for k, v in enumerate(variants):
            s = sub[sub["variant"] == v].sort_values("T")
            if s.empty:
                continue
            x = np.where(np.isfinite(s["T"]), s["T"], x_inf) * (1.0 + 0.03 * (k - (len(variants) - 1) / 2))
            ax.errorbar(x, s["bpd"], yerr=s["se"].fillna(0), color=variant_color(v), marker=variant_marker(v), capsize=3, linewidth=1.8)
            for r in s.dropna(subset=["published_bpd"]).itertuples():
                ax.plot([r.T if math.isfinite(r.T) else x_inf], [r.published_bpd], marker="*", markersize=14, color=variant_color(v), markeredgecolor="black", linestyle="none")
        ticks = sorted(set(finite.tolist())) + [x_inf]
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["∞"])
        from matplotlib.ticker import NullLocator

        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvspan(t_max * 1.7, x_inf * 1.5, color="0.93", zorder=0)
        ax.set_xlim(min(ticks) / 1.5, x_inf * 1.5)
        _value_axis(ax, sub["bpd"].to_numpy())
        ax.set_xlabel("number of steps T (∞: continuous time)")
        ax.set_ylabel(f"NELBO ({_units_label(units.get(d))})")
        ax.set_title(d)
    from matplotlib.lines import Line2D

    has_pub = bpd_T["published_bpd"].notna().any()
    extra = [Line2D([], [], color="black", marker="*", linestyle="none", markersize=11, label="published")] if has_pub else []
    figure_header(fig, "NELBO versus the number of discrete steps T (lower is better)", legend_handles(variants, plt) + extra, ncol=8)
    return save_figure(fig, path)


# ------------------------------------------------------------ training curves


def training_curves_figure(curves: pd.DataFrame, units: dict[str, str], path: Path) -> list[Path]:
    """Training loss (NELBO estimate, bits/dim) versus step per dataset; a line per variant."""
    import seaborn as sns

    if curves.empty:
        return message_figure(path, "Training curves", ["No metrics.jsonl files yet."])
    plt, fig, panels, variants = dataset_panels(curves, h=3.6)
    palette = {v: variant_color(v) for v in variants}
    for ax, d, sub in panels:
        sns.lineplot(data=sub, x="step", y="loss_bpd", hue="variant", hue_order=[v for v in variants if v in set(sub["variant"])], palette=palette, errorbar=("se", 1), ax=ax, legend=False, linewidth=1.8)
        if (sub["loss_bpd"] > 0).all() and sub["loss_bpd"].max() / max(sub["loss_bpd"].min(), 1e-9) > 10:
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"training loss ({_units_label(units.get(d))})")
        ax.set_title(d)
    figure_header(fig, "Training curves (NELBO estimate on training batches; band: ± 1 s.e. over seeds)", legend_handles(variants, plt), ncol=8)
    return save_figure(fig, path)
