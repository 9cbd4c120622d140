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

from ndm.report.fewstep import BEST, best_sampler_rows
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


def _log_axis(ax, axis: str, values: np.ndarray) -> None:
    """A log axis labelled with plain numbers (ticks at the data's values when few, else 1-2-5)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    values = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ticks: list[float] = []
    for v in np.unique(values):  # one tick for values within 25 % (NFE 5 and 6, 25 and 26: steps, steps + 1)
        if not ticks or v > 1.25 * ticks[-1]:
            ticks.append(float(v))
    if axis == "x" and 0 < len(ticks) <= 8:
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


def fid_vs_nfe_figure(few: pd.DataFrame, path: Path) -> list[Path]:
    """Frechet distance versus NFE: a row per (dataset, metric), a column per sampler, a line per variant.

    With more than one sampler a last column "best" draws each variant at its best sampler per
    NFE (ndm.report.fewstep.best_sampler_rows), each point labelled with that sampler.
    """
    if few.empty:
        return message_figure(path, "Frechet distance versus NFE", ["No sample results yet (no fid/<sampler>.json files)."])
    plt = pyplot()
    rows = few[["dataset", "metric"]].drop_duplicates().values.tolist()
    samplers = list(dict.fromkeys(few["sampler"]))
    if len(samplers) > 1:
        few = pd.concat([few.assign(best_sampler=None), best_sampler_rows(few)], ignore_index=True)
        samplers.append(BEST)
    # The last column puts the best sampler on a compute axis: network FLOPs per sample, x_hat
    # and F together, so NDM's per-step cost of F is visible (absent for results without FLOPs).
    flops_panel = BEST in samplers and "flops_per_sample" in few.columns and np.isfinite(few["flops_per_sample"].astype(float)).any()
    fig, axes = facet_axes(plt, len(rows), len(samplers) + int(flops_panel))
    variants = sort_variants(few["variant"].unique().tolist())
    for i, (dataset, metric) in enumerate(rows):
        for j, sampler in enumerate(samplers):
            ax = axes[i][j]
            sub = few[(few["dataset"] == dataset) & (few["metric"] == metric) & (few["sampler"] == sampler)]
            if sub.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="grey")
            for k, v in enumerate(variants):
                s = sub[sub["variant"] == v].sort_values("nfe")
                if s.empty:
                    continue
                dodge = 1.0 + 0.025 * (k - (len(variants) - 1) / 2)  # overlapping error bars side by side
                ax.errorbar(s["nfe"] * dodge, s["value"], yerr=s["se"].fillna(0), color=variant_color(v), marker=variant_marker(v), capsize=3, linewidth=1.8, markersize=5)
                if sampler == BEST:
                    for x, y, name in zip(s["nfe"] * dodge, s["value"], s["best_sampler"]):
                        ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=variant_color(v))
            _log_axis(ax, "x", sub["nfe"].to_numpy())
            if not sub.empty:
                _value_axis(ax, sub["value"].to_numpy())
            ax.set_xlabel("NFE (x̂ network evaluations)")
            ax.set_ylabel(metric_label(metric))
            ax.set_title(f"{dataset} · {sampler}" if sampler != BEST else f"{dataset} · best sampler per NFE")
        if flops_panel:
            _flops_panel(axes[i][len(samplers)], few[(few["dataset"] == dataset) & (few["metric"] == metric) & (few["sampler"] == BEST)], variants, dataset, metric)
    figure_header(fig, "Sample quality versus number of function evaluations (lower is better)", legend_handles(variants, plt), ncol=8, legend_title="variant (error bars: ± 1 standard error)")
    return save_figure(fig, path)


def _flops_panel(ax, sub: pd.DataFrame, variants: list[str], dataset: str, metric: str) -> None:
    """The best sampler per NFE against network GFLOPs per sample (x_hat and F)."""
    sub = sub[np.isfinite(sub["flops_per_sample"].astype(float))]
    for v in variants:
        s = sub[sub["variant"] == v].sort_values("flops_per_sample")
        if not s.empty:
            ax.errorbar(s["flops_per_sample"] / 1e9, s["value"], yerr=s["se"].fillna(0), color=variant_color(v), marker=variant_marker(v), capsize=3, linewidth=1.8, markersize=5)
    if sub.empty:
        ax.text(0.5, 0.5, "no FLOP counts", ha="center", va="center", transform=ax.transAxes, color="grey")
    else:
        _log_axis(ax, "x", sub["flops_per_sample"].to_numpy() / 1e9)
        _value_axis(ax, sub["value"].to_numpy())
    ax.set_xlabel("GFLOPs per sample (x̂ and F, JVPs included)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{dataset} · best sampler vs compute")


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
