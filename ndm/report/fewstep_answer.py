"""The few-step answer in words: one sentence per (baseline, sampler, metric) over NFE, from the
rows of `ndm.report.fewstep.comparison_table`."""

from __future__ import annotations

import math

import pandas as pd

from ndm.report.roles import roles
from ndm.report.table_format import fmt_diff, fmt_num
from ndm.report.verdicts import BETTER, BORDERLINE, LEVEL, NELBO_METRIC, ONE_SEED, TIE, TREND, UNKNOWN, WORSE, ci_label


def _ci(lo: float, hi: float) -> str:
    return f"[{fmt_diff(lo)}, {fmt_diff(hi)}]" if not (math.isnan(lo) or math.isnan(hi)) else ""


def _pm(r: pd.Series) -> str:
    """A difference with its interval (at the row's Holm level): '+1.2 [−0.3, +2.7]'."""
    return f"{fmt_diff(r['diff'])} {_ci(r['ci_low'], r['ci_high'])}".rstrip()


def _level(r: pd.Series) -> str:
    level = r.get("ci_level", math.nan)
    return ci_label(LEVEL if level is None or math.isnan(level) else level)


def _by(r: pd.Series) -> str:
    """A magnitude with its 95% interval, '12.3 (95% CI 4.5 to 20.1)': the interval of |NDM − base|,
    read off that of NDM − base when it excludes zero (a judged difference); else the signed one."""
    lo, hi, size = r["ci_low"], r["ci_high"], fmt_num(abs(r["diff"]))
    if math.isnan(lo) or math.isnan(hi):
        return size
    if lo > 0 or hi < 0:
        a, b = sorted((abs(lo), abs(hi)))
        return f"{size} ({_level(r)} CI {fmt_num(a)} to {fmt_num(b)})"
    return f"{size} ({_level(r)} CI of NDM − base {_ci(lo, hi)})"


def _nfes(rows: pd.DataFrame) -> str:
    return ", ".join(str(int(x)) for x in rows["nfe"])


def describe(rows: pd.DataFrame, baseline: str) -> str:
    """One sentence on how NDM compares with `baseline` over NFE (rows of one dataset/sampler/metric)."""
    rows = rows.sort_values("nfe")
    v = rows["verdict"].tolist()
    base = baseline.upper() if baseline.isalpha() else baseline  # DDPM, VDM; vdm-fixed, ddpm@params as named
    first = rows.iloc[0]
    last = rows.iloc[-1]
    if all(x == BETTER for x in v):
        return f"NDM better than {base} at every NFE tested ({_nfes(rows)}): by {_by(first)} at NFE {int(first['nfe'])}, by {_by(last)} at NFE {int(last['nfe'])}."
    if all(x == ONE_SEED for x in v):
        span = f"{_pm(first)} at NFE {int(first['nfe'])}" + (f", {_pm(last)} at NFE {int(last['nfe'])}" if len(rows) > 1 else "")
        return f"not judged (one seed: the 95% intervals are within-run noise, without training variance); NDM − {base} {span}."
    if all(x == TREND for x in v):
        span = f"{_pm(first)} at NFE {int(first['nfe'])}" + (f", {_pm(last)} at NFE {int(last['nfe'])}" if len(rows) > 1 else "")
        return f"a trend, not judged (two seeds: a t on one degree of freedom); NDM − {base} {span}."
    if all(x in (TIE, UNKNOWN) for x in v):
        what = "no significant difference" if TIE in v else "no standard error to judge"
        return f"no advantage at any NFE ({what}; NFE {_nfes(rows)}; NDM − {base} from {_pm(first)} to {_pm(last)})."
    parts = []
    # better on a suffix of NFEs: "better at NFE >= x"
    k = len(v)
    while k > 0 and v[k - 1] == BETTER:
        k -= 1
    if 0 < k < len(v):
        x = rows.iloc[k]
        parts.append(f"NDM better than {base} at NFE >= {int(x['nfe'])} (by {_by(x)} at NFE {int(x['nfe'])})")
        below = rows.iloc[:k]
        parts += _below(below, base)
        return "; ".join(parts) + "."
    # better on a prefix: the advantage disappears or reverses at larger NFE
    j = 0
    while j < len(v) and v[j] == BETTER:
        j += 1
    if j > 0:
        y = rows.iloc[j - 1]
        parts.append(f"NDM better than {base} at NFE <= {int(y['nfe'])} (by {_by(y)} at NFE {int(y['nfe'])})")
        after = rows.iloc[j:]
        worse = after[after["verdict"] == WORSE]
        if not worse.empty:
            w = worse.iloc[0]
            parts.append(f"reverses at NFE = {int(w['nfe'])} ({base} better by {_by(w)})")
        elif after.iloc[0]["verdict"] in (ONE_SEED, TREND):
            parts.append(f"not judged (fewer than 3 seeds) at NFE = {_nfes(after[after['verdict'].isin([ONE_SEED, TREND])])}")
        else:
            z = after.iloc[0]
            state = "borderline" if z["verdict"] == BORDERLINE else "not significant"
            parts.append(f"the advantage disappears at NFE = {int(z['nfe'])} ({_pm(z)}, {state} over the NFEs, Holm)")
        return "; ".join(parts) + "."
    # no contiguous advantage: each verdict with its NFEs, in the order of the smallest NFE
    groups = []
    labels = ((BETTER, "NDM better"), (BORDERLINE, "borderline"), (TIE, "no significant difference"), (UNKNOWN, "no standard error"),
              (ONE_SEED, "one seed, not judged"), (TREND, "two seeds, not judged"), (WORSE, f"{base} better"))
    for label, sel in labels:
        sub = rows[rows["verdict"] == label]
        if not sub.empty:
            groups.append((float(sub["nfe"].min()), f"{sel} at NFE = {_nfes(sub)} (NDM − {base}: {'; '.join(_pm(r) for _, r in sub.iterrows())})"))
    return "; ".join(text for _, text in sorted(groups)) + "."


def _below(below: pd.DataFrame, base: str) -> list[str]:
    out = []
    worse = below[below["verdict"] == WORSE]
    tie = below[below["verdict"].isin([TIE, UNKNOWN])]
    one = below[below["verdict"].isin([ONE_SEED, TREND])]
    border = below[below["verdict"] == BORDERLINE]
    if not tie.empty:
        out.append(f"no significant difference at NFE = {_nfes(tie)}")
    if not border.empty:
        out.append(f"borderline at NFE = {_nfes(border)}")
    if not one.empty:
        out.append(f"not judged (one seed) at NFE = {_nfes(one)}")
    if not worse.empty:
        out.append(f"reverses ({base} better) at NFE = {_nfes(worse)} (by {'; '.join(_by(r) for _, r in worse.iterrows())})")
    return out


def answer(comparison: pd.DataFrame, datasets: list[str], baselines: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Per dataset, one line per (baseline, sampler, metric): the few-step answer in numbers;
    first a line saying what cannot be concluded where some comparison rests on one seed."""
    out: dict[str, list[str]] = {}
    if comparison.empty:
        return out
    baselines = tuple(roles().answer_few_step_baselines) if baselines is None else baselines
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
        judged = sub[sub["baseline"].isin(baselines)]
        if lines and (judged["n_seeds"] < 3).any():
            which = "every comparison rests" if (judged["n_seeds"] < 3).all() else "some comparisons rest"
            lines.insert(
                0,
                f"Fewer than 3 training seeds: {which} on one or two runs per variant (one: an error that is sampling noise within "
                "the run and leaves out training variance; two: a t on one degree of freedom), so these differences are trends and "
                "cannot say which variant is better; three or more `seeds` in the config give verdicts.",
            )
        if lines:
            out[d] = lines
    return out
