"""The gauge diagnostic of every learned F: F(x, t) - x split into the input-independent offset
c(t) (the mean over test examples) and the input-dependent rest, over t (docs/math.md "Gauge
freedom of F"; ndm.estimators.gauge.offset_decomposition).

    gauge_frame(res, config)            one row per (dataset, variant, seed, t), from likelihood.json
    gauge_table(frame, res)             tables/gauge.*: the split at T_TABLE, mean over seeds
    gauge_figure(frame, dataset, path)  figures/gauge_<dataset>.*: the split over t, a line per variant

The numbers come from result files: the evaluate_likelihood job records the split of the EMA
model on the first N_EXAMPLES test examples (likelihood.json "transform",
ndm.estimators.gauge.transform_record); the report loads no model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ndm.model.specs import get_variant, model_name_problem
from ndm.report.collect import Results, read_json
from ndm.report.style import message_figure, pyplot, save_figure, variant_color
from ndm.report.table_format import Table, fmt_num


N_EXAMPLES = 128  # as ndm.estimators.gauge.SPLIT_EXAMPLES, which the evaluation job uses
T_TABLE = (0.25, 0.5, 0.75, 1.0)
FRAME_COLUMNS = [
    "dataset", "variant", "seed", "gauge", "transform_time", "t",
    "offset_rms", "input_rms", "offset_rate_rms", "input_rate_rms", "n_examples", "sigma_over_alpha", "data_rms",
]  # fmt: skip
TABLE_COLUMNS = [
    "dataset", "variant", "gauge", "t", "offset_rms", "input_rms", "offset_to_input",
    "offset_rate_rms", "input_rate_rms", "seeds", "n_examples",
]  # fmt: skip



def gauge_label(model_config) -> str:
    """The gauge of a model config as the tables name it: "none", "reference, x_ref = 0" or
    "reference, x_ref = data mean" (ModelConfig.transform_reference)."""
    if model_config.transform_gauge != "reference":
        return model_config.transform_gauge
    return "reference, x_ref = data mean" if model_config.transform_reference == "data_mean" else "reference, x_ref = 0"

def learned_f_variants(variants: list[str]) -> list[str]:
    """Variants whose F is learned (ndm, ndm-vdm, ndm-latent): the ones with a gauge to speak of."""
    return [v for v in variants if model_name_problem(v) is None and get_variant(v).transform in ("neural", "latent")]


def _file_rows(record: dict, dataset: str, variant: str, seed: int, model_config) -> list[dict]:
    meta = {"dataset": dataset, "variant": variant, "seed": seed, "gauge": gauge_label(model_config), "transform_time": model_config.transform_time}
    columns = ("t", "offset_rms", "input_rms", "offset_rate_rms", "input_rate_rms", "n_examples")
    extra = {"data_rms": record.get("data_rms", math.nan)}
    return [{**meta, **{k: s.get(k, math.nan) for k in columns}, "sigma_over_alpha": s.get("sigma_over_alpha", math.nan), **extra} for s in record["splits"]]


def gauge_frame(res: Results, config: dict, errors: list[str] | None = None) -> pd.DataFrame:
    """The split for every learned-F model in results/, read from its likelihood.json; a run whose
    file lacks the split (written before the split was recorded) is named in errors."""
    from ndm.pipeline.config import resolve_run_config

    rows: list[dict] = []
    for d in res.datasets:
        for v in learned_f_variants(res.variants):
            for s in res.seeds_of(d, v):
                path = res.run_dir(d, v, s) / "likelihood.json"
                record = read_json(path)
                if record is None:
                    continue
                if "transform" not in record:
                    if errors is not None:
                        errors.append(f"gauge {d}/{v}/seed{s}: {path} has no 'transform' record (rerun its evaluate_likelihood job)")
                    continue
                rows += _file_rows(record["transform"], d, v, s, resolve_run_config(config, d, v, s).model)
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def gauge_table(frame: pd.DataFrame, res: Results) -> Table:
    """The split at T_TABLE per (dataset, variant, gauge), mean over seeds."""
    caption = "Gauge diagnostic: input-independent offset versus input-dependent part of F(x, t) − x"
    notes = [
        "F(x, t) − x = c(t) + r(x, t), c(t) the mean over the first "
        f"{N_EXAMPLES} test examples; offset_rms = rms of c, input_rms = rms of r (over examples and dimensions).",
        "offset_rate_rms and input_rate_rms: the same split of dF/dt; alpha_t c'(t) enters the probability-flow ODE drift, "
        "and a large, fast-varying c' makes fixed-step ODE samplers fail at few steps (docs/math.md, Gauge freedom of F).",
        "The NELBO does not see offsets with c(0) = c(1) = 0: gauge 'none' is the paper's F, 'reference' the gauge-fixed F "
        "(model.transform_gauge). Mean over seeds.",
    ]
    sel = frame[frame["t"].round(6).isin([round(t, 6) for t in T_TABLE])] if not frame.empty else frame
    if sel.empty:
        data = pd.DataFrame(columns=TABLE_COLUMNS)
    else:
        keys = ["dataset", "variant", "gauge", "t"]
        values = ["offset_rms", "input_rms", "offset_rate_rms", "input_rate_rms", "n_examples"]
        data = sel.groupby(keys, sort=False)[values].mean().reset_index()
        data["seeds"] = sel.groupby(keys, sort=False)["seed"].nunique().values
        data["offset_to_input"] = data["offset_rms"] / data["input_rms"].where(data["input_rms"] > 0)
        data = data[TABLE_COLUMNS]
        rank_d = {d: i for i, d in enumerate(res.datasets)}
        rank_v = {v: i for i, v in enumerate(res.variants)}
        data = data.sort_values(
            ["dataset", "variant", "gauge", "t"], key=lambda c: c.map(rank_d) if c.name == "dataset" else (c.map(rank_v) if c.name == "variant" else c), kind="stable"
        ).reset_index(drop=True)
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "variant": data["variant"],
            "gauge": data["gauge"],
            "t": data["t"].map(lambda t: f"{t:g}"),
            "offset rms": data["offset_rms"].map(fmt_num),
            "input-dependent rms": data["input_rms"].map(fmt_num),
            "ratio": data["offset_to_input"].map(lambda r: "" if r is None or not math.isfinite(r) else f"{r:.3g}"),
            "dc/dt rms": data["offset_rate_rms"].map(fmt_num),
            "input-dependent dF/dt rms": data["input_rate_rms"].map(fmt_num),
            "seeds": data["seeds"].map(lambda n: str(int(n))),
        }
    )
    return Table("gauge", data, display, caption, notes)


def gauge_figure(frame: pd.DataFrame, dataset: str, path: Path) -> list[Path]:
    """Two panels (F − x and dF/dt): per variant (and gauge) the offset's rms (solid) and the
    input-dependent rms (dashed) over t, mean over seeds, log scale; on the F − x panel two
    reference lines: the data's rms about its mean, and the noise scale sigma_t / alpha_t (an
    input-dependent part far below it changes z_t by little against the noise)."""
    title = f"{dataset}: offset vs input-dependent part of the learned F"
    sub = frame[frame["dataset"] == dataset] if not frame.empty else frame
    if sub.empty:
        return message_figure(path, title, ["No trained model with a learned F (ndm, ndm-vdm, ndm-latent) for this dataset yet."])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), squeeze=False)
    panels = (("offset_rms", "input_rms", "F(x, t) − x"), ("offset_rate_rms", "input_rate_rms", "dF/dt (x fixed)"))
    for ax, (off, inp, label) in zip(axes[0], panels):
        for (v, gauge), g in sub.groupby(["variant", "gauge"], sort=False):
            m = g.groupby("t")[[off, inp]].mean()
            t = m.index.to_numpy()
            tag = v if gauge == "none" else f"{v} (gauge: {gauge})"
            marker = "o" if gauge == "none" else "s"
            ax.plot(t, m[off].to_numpy(), color=variant_color(v), marker=marker, markersize=3, linewidth=2, linestyle="-" if gauge == "none" else ":", label=f"{tag}: offset c(t)")
            ax.plot(t, m[inp].to_numpy(), color=variant_color(v), marker=marker, markersize=3, linewidth=1.2, linestyle="--", alpha=0.8, label=f"{tag}: input-dependent")
        if off == "offset_rms":
            _reference_lines(ax, sub)
        values = sub[[off, inp]].to_numpy().ravel()
        if np.isfinite(values).any() and (values[np.isfinite(values)] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("rms over examples and dimensions")
        ax.set_title(label)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.045 * math.ceil(len(labels) / 2)))
    fig.suptitle(f"{title}\n(thick: the mean c(t) over {int(sub['n_examples'].max())} test examples; thin dashed: the rest; the NELBO cannot see c with c(0) = c(1) = 0)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _reference_lines(ax, sub: pd.DataFrame) -> None:
    """The data's rms about its mean (grey, dotted) and sigma_t / alpha_t of the first model's
    schedule (black, dash-dot; schedules differ between variants only when learned)."""
    data_rms = sub["data_rms"].dropna()
    if not data_rms.empty:
        ax.axhline(float(data_rms.iloc[0]), color="0.45", linestyle=":", linewidth=1.2, label="data rms (x − mean x)")
    first = sub[sub["variant"] == sub["variant"].iloc[0]].groupby("t")["sigma_over_alpha"].mean().dropna()
    first = first[first.index > 0]
    if not first.empty:
        ax.plot(first.index.to_numpy(), first.to_numpy(), color="black", linestyle="-.", linewidth=1.0, label=f"σ_t / α_t ({sub['variant'].iloc[0]})")


__all__ = ["N_EXAMPLES", "T_TABLE", "gauge_figure", "gauge_frame", "gauge_table", "learned_f_variants"]
