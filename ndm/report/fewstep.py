"""The few-step question: at which NFE does NDM's advantage over DDPM and VDM disappear or reverse?

From the few-step table, NDM is compared with each baseline at equal sampler and step count:
diff = NDM - baseline (lower is better for every metric here: Frechet distances and the
T-step NELBO), with the standard error of the difference sqrt(se_ndm^2 + se_base^2). A
difference counts when |diff| > 2 se (about 95% for a normal error); otherwise it is "no
significant difference". The answer is then stated per dataset, sampler and metric.

A fair few-step comparison samples every model with the best solver that applies to it, so
besides each sampler the comparison has the pseudo-sampler "best": per (dataset, variant,
metric) and NFE, the sampler with the lowest value (`best_sampler_rows`; its `steps` is the
NFE, since samplers reach an NFE at different step counts, and `best_sampler` names it).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.report.table_format import Table, fmt_diff, fmt_num

NDM = "ndm"
BASELINES = ("ddpm", "vdm", "vdm-fixed")
Z_SIGNIFICANT = 2.0
BETTER, WORSE, TIE, UNKNOWN = "ndm better", "ndm worse", "no significant difference", "no standard error"
NELBO_METRIC = "nelbo_T_bpd"
BEST = "best"

COMPARISON_COLUMNS = [
    "dataset", "baseline", "sampler", "metric", "steps", "nfe", "nfe_F_ndm",
    "ndm", "ndm_se", "baseline_value", "baseline_se", "diff", "diff_se", "z", "verdict",
]  # fmt: skip


def verdict(diff: float, diff_se: float) -> str:
    if math.isnan(diff):
        return UNKNOWN
    if math.isnan(diff_se) or diff_se <= 0:
        return UNKNOWN
    if abs(diff) <= Z_SIGNIFICANT * diff_se:
        return TIE
    return BETTER if diff < 0 else WORSE


def _long_values(few: pd.DataFrame, bpd_T: pd.DataFrame) -> pd.DataFrame:
    """(dataset, variant, sampler, metric, steps, nfe, nfe_F, value, se) for FDs and the T-step NELBO."""
    cols = ["dataset", "variant", "sampler", "metric", "steps", "nfe", "nfe_F", "value", "se"]
    parts = []
    if not few.empty:
        parts.append(few[cols])
    disc = bpd_T[bpd_T["time"] == "discrete"] if not bpd_T.empty else bpd_T
    if not disc.empty:
        parts.append(
            pd.DataFrame(
                {
                    "dataset": disc["dataset"],
                    "variant": disc["variant"],
                    "sampler": "ancestral",
                    "metric": NELBO_METRIC,
                    "steps": disc["T"].astype(int),
                    "nfe": disc["T"].astype(float),
                    "nfe_F": np.nan,
                    "value": disc["bpd"],
                    "se": disc["se"],
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def best_sampler_rows(few: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, variant, metric, nfe): the row of the sampler with the lowest value, as
    sampler "best" with `best_sampler` naming it and `steps` = the NFE (empty without samples).

    Rows without a value are ignored; a tie goes to the first sampler in `few`'s order.
    """
    cols = list(few.columns) + ["best_sampler"]
    if few.empty or "nfe" not in few.columns:
        return pd.DataFrame(columns=cols)
    valid = few[np.isfinite(few["value"].astype(float)) & np.isfinite(few["nfe"].astype(float))]
    if valid.empty:
        return pd.DataFrame(columns=cols)
    idx = valid.groupby(["dataset", "variant", "metric", "nfe"], sort=False)["value"].idxmin()
    best = valid.loc[idx.to_numpy()].copy()
    best["best_sampler"] = best["sampler"]
    best["sampler"] = BEST
    best["steps"] = best["nfe"].round().astype(int)
    return best[cols].reset_index(drop=True)


def best_sampler_table(few: pd.DataFrame, variants: list[str] | None = None) -> Table:
    """The few-step table at the best sampler: per (dataset, metric, NFE) a cell per variant,
    "value ± se (sampler)"."""
    data = best_sampler_rows(few)
    if data.empty:
        display = pd.DataFrame(columns=["dataset", "metric", "NFE"])
    else:
        data = data.sort_values(["dataset", "metric", "nfe"], kind="stable").reset_index(drop=True)
        cells = data.assign(cell=[f"{fmt_num(v)} ± {fmt_num(e)} ({b})" if not math.isnan(e) else f"{fmt_num(v)} ({b})" for v, e, b in zip(data["value"], data["se"].astype(float), data["best_sampler"])])
        wide = cells.pivot_table(index=["dataset", "metric", "nfe"], columns="variant", values="cell", aggfunc="first", sort=False)
        order = [v for v in (variants or []) if v in wide.columns] + sorted(v for v in wide.columns if v not in (variants or []))
        display = wide[order].reset_index().rename(columns={"nfe": "NFE"})
        display["NFE"] = display["NFE"].map(lambda x: str(int(x)))
        display = display.fillna("")
    notes = [
        "Each cell: the lowest value over the samplers run at that NFE (mean ± standard error), with the sampler that reached it.",
        "NFE counts x_hat evaluations; NDM variants also evaluate F (nfe_F in the CSV).",
    ]
    return Table("few_step_best", data, display, "Few-step study: each variant at its best sampler per NFE", notes)


def comparison_table(few: pd.DataFrame, bpd_T: pd.DataFrame) -> Table:
    """NDM minus each baseline per (dataset, sampler, metric, steps), with verdicts; sampler
    "best" compares each model at its own best sampler per NFE (`best_sampler_rows`)."""
    if not few.empty and few["sampler"].nunique() > 1:
        few = pd.concat([few, best_sampler_rows(few).drop(columns="best_sampler")], ignore_index=True)
    long = _long_values(few, bpd_T)
    keys = ["dataset", "sampler", "metric", "steps"]
    rows = []
    ndm = long[long["variant"] == NDM].set_index(keys) if not long.empty else None
    for base in BASELINES:
        if ndm is None:
            break
        other = long[long["variant"] == base].set_index(keys)
        for idx in ndm.index.intersection(other.index):
            a, b = ndm.loc[idx], other.loc[idx]
            a = a.iloc[0] if isinstance(a, pd.DataFrame) else a
            b = b.iloc[0] if isinstance(b, pd.DataFrame) else b
            diff = float(a["value"] - b["value"])
            diff_se = float(math.hypot(a["se"], b["se"])) if not (math.isnan(a["se"]) or math.isnan(b["se"])) else math.nan
            rows.append(
                {
                    **dict(zip(keys, idx)),
                    "baseline": base,
                    "nfe": float(a["nfe"]),
                    "nfe_F_ndm": float(a["nfe_F"]),
                    "ndm": float(a["value"]),
                    "ndm_se": float(a["se"]),
                    "baseline_value": float(b["value"]),
                    "baseline_se": float(b["se"]),
                    "diff": diff,
                    "diff_se": diff_se,
                    "z": diff / diff_se if diff_se and not math.isnan(diff_se) else math.nan,
                    "verdict": verdict(diff, diff_se),
                }
            )
    data = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if not data.empty:
        data = data.sort_values(["dataset", "baseline", "metric", "sampler", "nfe"], kind="stable").reset_index(drop=True)
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "NDM vs": data["baseline"],
            "sampler": data["sampler"],
            "metric": data["metric"],
            "NFE": [str(int(x)) for x in data["nfe"]],
            "NDM − baseline": [f"{fmt_diff(d)} ± {fmt_num(s)}" if not math.isnan(s) else fmt_diff(d) for d, s in zip(data["diff"], data["diff_se"])],
            "verdict": data["verdict"],
        }
    )
    notes = [
        "diff = NDM − baseline at the same sampler and step count; lower is better for every metric, so a negative diff favours NDM.",
        f"A difference counts when |diff| > {Z_SIGNIFICANT:g} × its standard error; otherwise: no significant difference.",
        "NFE counts x_hat evaluations: at equal NFE, NDM also pays for F (nfe_F_ndm), about twice the compute per step.",
        "nelbo_T_bpd compares the T-step discrete-time NELBO (the bound of the T-step ancestral model).",
    ]
    return Table("few_step_comparison", data, display, "Few-step study: NDM minus DDPM / VDM per NFE", notes)


def _pm(d: float, s: float) -> str:
    return f"{fmt_diff(d)} ± {fmt_num(s)}" if not math.isnan(s) else fmt_diff(d)


def _by(d: float, s: float) -> str:
    """A magnitude with its standard error: 'by 12.3 ± 4.1'."""
    return f"{fmt_num(abs(d))} ± {fmt_num(s)}" if not math.isnan(s) else fmt_num(abs(d))


def _nfes(rows: pd.DataFrame) -> str:
    return ", ".join(str(int(x)) for x in rows["nfe"])


def describe(rows: pd.DataFrame, baseline: str) -> str:
    """One sentence on how NDM compares with `baseline` over NFE (rows of one dataset/sampler/metric)."""
    rows = rows.sort_values("nfe")
    v = rows["verdict"].tolist()
    base = baseline.upper() if baseline in ("ddpm", "vdm") else baseline
    first = rows.iloc[0]
    last = rows.iloc[-1]
    if all(x == BETTER for x in v):
        return f"NDM better than {base} at every NFE tested ({_nfes(rows)}): by {_by(first['diff'], first['diff_se'])} at NFE {int(first['nfe'])}, by {_by(last['diff'], last['diff_se'])} at NFE {int(last['nfe'])}."
    if all(x in (TIE, UNKNOWN) for x in v):
        what = "no significant difference" if TIE in v else "no standard error to judge"
        return f"no advantage at any NFE ({what}; NFE {_nfes(rows)}; NDM − {base} from {_pm(first['diff'], first['diff_se'])} to {_pm(last['diff'], last['diff_se'])})."
    parts = []
    # better on a suffix of NFEs: "better at NFE >= x"
    k = len(v)
    while k > 0 and v[k - 1] == BETTER:
        k -= 1
    if 0 < k < len(v):
        x = rows.iloc[k]
        parts.append(f"NDM better than {base} at NFE >= {int(x['nfe'])} (by {_by(x['diff'], x['diff_se'])} at NFE {int(x['nfe'])})")
        below = rows.iloc[:k]
        parts += _below(below, base)
        return "; ".join(parts) + "."
    # better on a prefix: the advantage disappears or reverses at larger NFE
    j = 0
    while j < len(v) and v[j] == BETTER:
        j += 1
    if j > 0:
        y = rows.iloc[j - 1]
        parts.append(f"NDM better than {base} at NFE <= {int(y['nfe'])} (by {_by(y['diff'], y['diff_se'])} at NFE {int(y['nfe'])})")
        after = rows.iloc[j:]
        worse = after[after["verdict"] == WORSE]
        if not worse.empty:
            w = worse.iloc[0]
            parts.append(f"reverses at NFE = {int(w['nfe'])} ({base} better by {_by(w['diff'], w['diff_se'])})")
        else:
            z = after.iloc[0]
            parts.append(f"the advantage disappears at NFE = {int(z['nfe'])} ({_pm(z['diff'], z['diff_se'])}, not significant)")
        return "; ".join(parts) + "."
    # no contiguous advantage: each verdict with its NFEs, in the order of the smallest NFE
    groups = []
    for label, sel in ((BETTER, "NDM better"), (TIE, "no significant difference"), (UNKNOWN, "no standard error"), (WORSE, f"{base} better")):
        sub = rows[rows["verdict"] == label]
        if not sub.empty:
            groups.append((float(sub["nfe"].min()), f"{sel} at NFE = {_nfes(sub)} (NDM − {base}: {'; '.join(_pm(d, s) for d, s in zip(sub['diff'], sub['diff_se']))})"))
    return "; ".join(text for _, text in sorted(groups)) + "."


def _below(below: pd.DataFrame, base: str) -> list[str]:
    out = []
    worse = below[below["verdict"] == WORSE]
    tie = below[below["verdict"].isin([TIE, UNKNOWN])]
    if not tie.empty:
        out.append(f"no significant difference at NFE = {_nfes(tie)}")
    if not worse.empty:
        out.append(f"reverses ({base} better) at NFE = {_nfes(worse)} (by {'; '.join(_by(d, s) for d, s in zip(worse['diff'], worse['diff_se']))})")
    return out


def answer(comparison: pd.DataFrame, datasets: list[str], baselines: tuple[str, ...] = ("ddpm", "vdm")) -> dict[str, list[str]]:
    """Per dataset, one line per (baseline, sampler, metric): the few-step answer in numbers."""
    out: dict[str, list[str]] = {}
    if comparison.empty:
        return out
    for d in datasets:
        lines = []
        sub = comparison[comparison["dataset"] == d]
        metrics = sorted(sub["metric"].unique(), key=lambda m: (m == NELBO_METRIC, m))
        for base in baselines:
            for metric in metrics:
                for sampler in sorted(sub["sampler"].unique()):
                    rows = sub[(sub["baseline"] == base) & (sub["metric"] == metric) & (sub["sampler"] == sampler)]
                    if not rows.empty:
                        lines.append(f"vs {base}, {sampler}, {metric}: {describe(rows, base)}")
        if lines:
            out[d] = lines
    return out
