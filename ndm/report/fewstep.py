"""The few-step question: at which NFE does NDM's advantage over DDPM and VDM disappear or reverse?

NDM is compared with each baseline at equal sampler and step count: diff = NDM - baseline
(lower is better for every metric here: Frechet distances and the T-step NELBO). The claim is
about models, not one training run, so the difference is paired by training seed: for each
seed s both variants ran, d_s = value_ndm(s) - value_base(s), diff = mean d_s and, with
n >= 2 paired seeds, se = std(d_s, ddof=1) / sqrt(n) with a 95% t interval on n - 1 degrees
of freedom. NDM is "better" or "worse" only when that interval excludes 0. With one seed the
only error is the within-run one (test-set and sample noise of one training run,
sqrt(se_ndm^2 + se_base^2)), which leaves out training variance: the difference is reported
with its within-run interval and the verdict is "one seed: not judged", never better or
worse. Without per-seed values (tables built by hand) the means' across-seed errors are
combined unpaired. The answer is then stated per dataset, sampler and metric.

A fair few-step comparison samples every model with the best solver that applies to it, so
besides each sampler the comparison has the pseudo-sampler "best": per (dataset, variant,
metric) and NFE, the sampler with the lowest value (`best_sampler_rows`; its `steps` is the
NFE, since samplers reach an NFE at different step counts, and `best_sampler` names it).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ndm.report.table_format import Table, fmt_diff, fmt_num

NDM = "ndm"
BASELINES = ("ddpm", "vdm", "vdm-fixed")
LEVEL = 0.95
BETTER, WORSE, TIE, UNKNOWN = "ndm better", "ndm worse", "no significant difference", "no standard error"
ONE_SEED = "one seed: not judged"
SE_PAIRED, SE_UNPAIRED, SE_WITHIN = "seeds (paired)", "seeds (unpaired)", "within-run, one seed"
NELBO_METRIC = "nelbo_T_bpd"
BEST = "best"

COMPARISON_COLUMNS = [
    "dataset", "baseline", "sampler", "metric", "steps", "nfe", "nfe_F_ndm",
    "ndm", "ndm_se", "baseline_value", "baseline_se", "diff", "diff_se", "n_seeds", "se_source",
    "ci_low", "ci_high", "z", "verdict",
]  # fmt: skip
SEED_COLUMNS = ["dataset", "variant", "seed", "sampler", "metric", "nfe", "value", "se"]


def interval(diff: float, diff_se: float, n_seeds: int) -> tuple[float, float]:
    """The 95% interval of a difference: t on n - 1 degrees of freedom across n >= 2 seeds,
    normal for the within-run error of one seed (a bootstrap or many test examples)."""
    if math.isnan(diff) or math.isnan(diff_se):
        return math.nan, math.nan
    q = float(stats.t.ppf(0.5 + LEVEL / 2, n_seeds - 1)) if n_seeds >= 2 else float(stats.norm.ppf(0.5 + LEVEL / 2))
    return diff - q * diff_se, diff + q * diff_se


def verdict(diff: float, diff_se: float, n_seeds: int) -> str:
    """Better / worse only when n_seeds >= 2 and the across-seed interval excludes 0; one seed
    is never judged (its error ignores training variance)."""
    if n_seeds < 2:
        return ONE_SEED
    if math.isnan(diff) or math.isnan(diff_se) or diff_se <= 0:
        return UNKNOWN
    lo, hi = interval(diff, diff_se, n_seeds)
    if lo <= 0 <= hi:
        return TIE
    return BETTER if diff < 0 else WORSE


def paired_difference(ndm: dict[int, tuple[float, float]], base: dict[int, tuple[float, float]]) -> tuple[int, float, float, str, float, float]:
    """(n, diff, se, se_source, mean_ndm, mean_base) over the seeds both ran; each dict maps
    seed -> (value, within-run se). n = 0 when no seed is shared."""
    seeds = sorted(set(ndm) & set(base))
    n = len(seeds)
    if n == 0:
        return 0, math.nan, math.nan, "", math.nan, math.nan
    a = np.array([ndm[s][0] for s in seeds], dtype=float)
    b = np.array([base[s][0] for s in seeds], dtype=float)
    d = a - b
    if n >= 2:
        se = float(d.std(ddof=1) / math.sqrt(n))
        return n, float(d.mean()), se, SE_PAIRED, float(a.mean()), float(b.mean())
    se = float(math.hypot(ndm[seeds[0]][1], base[seeds[0]][1]))
    return 1, float(d[0]), se, SE_WITHIN, float(a[0]), float(b[0])


def seed_values(fd: pd.DataFrame, likelihood: pd.DataFrame) -> pd.DataFrame:
    """Per-seed values for the comparison (SEED_COLUMNS): Frechet distances per sampler and the
    T-step NELBO as sampler "ancestral", metric nelbo_T_bpd, nfe = T."""
    parts = []
    if not fd.empty:
        parts.append(fd.rename(columns={"stderr": "se"})[SEED_COLUMNS])
    if not likelihood.empty:
        nel = likelihood[(likelihood["estimator"] == "nelbo") & np.isfinite(likelihood["T"].astype(float))]
        if not nel.empty:
            parts.append(
                pd.DataFrame(
                    {
                        "dataset": nel["dataset"],
                        "variant": nel["variant"],
                        "seed": nel["seed"],
                        "sampler": "ancestral",
                        "metric": NELBO_METRIC,
                        "nfe": nel["T"].astype(float),
                        "value": nel["bpd"],
                        "se": nel["stderr"],
                    }
                )
            )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SEED_COLUMNS)


def _by_seed(per_seed: pd.DataFrame | None) -> dict[tuple, dict[int, tuple[float, float]]]:
    """(dataset, variant, sampler, metric, nfe) -> {seed: (value, se)} for finite values."""
    if per_seed is None or per_seed.empty:
        return {}
    ok = per_seed[np.isfinite(per_seed["value"].astype(float))]
    out: dict[tuple, dict[int, tuple[float, float]]] = {}
    for r in ok.itertuples(index=False):
        key = (r.dataset, r.variant, r.sampler, r.metric, float(r.nfe))
        out.setdefault(key, {})[int(r.seed)] = (float(r.value), float(r.se) if r.se is not None else math.nan)
    return out


def _long_values(few: pd.DataFrame, bpd_T: pd.DataFrame) -> pd.DataFrame:
    """(dataset, variant, sampler, metric, steps, nfe, nfe_F, value, se, seeds, src) for FDs and
    the T-step NELBO; src is the sampler that produced the row (the best one for sampler "best")."""
    cols = ["dataset", "variant", "sampler", "metric", "steps", "nfe", "nfe_F", "value", "se", "seeds", "src"]
    parts = []
    if not few.empty:
        few = few.assign(
            seeds=few["seeds"] if "seeds" in few.columns else 1,
            src=few["best_sampler"].fillna(few["sampler"]) if "best_sampler" in few.columns else few["sampler"],
        )
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
                    "seeds": disc["seeds"] if "seeds" in disc.columns else 1,
                    "src": "ancestral",
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
        "Each cell: the lowest value over the samplers run at that NFE (mean ± standard error), with the sampler that reached it; the pick is by the point value, not a claim that this sampler is significantly better (with one seed the errors are within-run only).",
        "NFE counts x_hat evaluations; NDM variants also evaluate F (nfe_F in the CSV).",
    ]
    return Table("few_step_best", data, display, "Few-step study: each variant at its best sampler per NFE", notes)


def comparison_table(few: pd.DataFrame, bpd_T: pd.DataFrame, per_seed: pd.DataFrame | None = None) -> Table:
    """NDM minus each baseline per (dataset, sampler, metric, steps), with verdicts; sampler
    "best" compares each model at its own best sampler per NFE (`best_sampler_rows`, chosen on
    the seed means). per_seed (`seed_values`) pairs the difference by seed; without it the
    rows' means and standard errors are combined unpaired."""
    if not few.empty and few["sampler"].nunique() > 1:
        few = pd.concat([few, best_sampler_rows(few)], ignore_index=True)
    long = _long_values(few, bpd_T)
    seeds_of = _by_seed(per_seed)
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
            ka = (idx[0], NDM, a["src"], idx[2], float(a["nfe"]))
            kb = (idx[0], base, b["src"], idx[2], float(b["nfe"]))
            n, diff, diff_se, source, mean_a, mean_b = paired_difference(seeds_of.get(ka, {}), seeds_of.get(kb, {}))
            if n == 0:  # no per-seed values: the means, their errors combined unpaired
                n = int(min(a["seeds"], b["seeds"]))
                mean_a, mean_b = float(a["value"]), float(b["value"])
                diff, diff_se = mean_a - mean_b, float(math.hypot(a["se"], b["se"]))
                source = SE_UNPAIRED if n >= 2 else SE_WITHIN
            lo, hi = interval(diff, diff_se, n)
            rows.append(
                {
                    **dict(zip(keys, idx)),
                    "baseline": base,
                    "nfe": float(a["nfe"]),
                    "nfe_F_ndm": float(a["nfe_F"]),
                    "ndm": mean_a,
                    "ndm_se": float(a["se"]),
                    "baseline_value": mean_b,
                    "baseline_se": float(b["se"]),
                    "diff": diff,
                    "diff_se": diff_se,
                    "n_seeds": n,
                    "se_source": source,
                    "ci_low": lo,
                    "ci_high": hi,
                    "z": diff / diff_se if diff_se and not math.isnan(diff_se) else math.nan,
                    "verdict": verdict(diff, diff_se, n),
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
            "NDM − baseline ± se [95% CI]": [
                f"{fmt_diff(d)}{f' ± {fmt_num(s)}' if not math.isnan(s) else ''} {_ci(lo, hi)}".rstrip()
                for d, s, lo, hi in zip(data["diff"], data["diff_se"], data["ci_low"], data["ci_high"])
            ],
            "seeds": [f"{int(n)} ({src})" for n, src in zip(data["n_seeds"], data["se_source"])],
            "verdict": data["verdict"],
        }
    )
    notes = [
        "diff = NDM − baseline at the same sampler and step count; lower is better for every metric, so a negative diff favours NDM.",
        (
            "With two or more seeds the difference is paired by seed (its standard error across seeds, a 95% t interval); "
            "a verdict of better or worse means that interval excludes 0."
        ),
        (
            "With one seed the interval is the within-run one (test-set and sample noise of a single training run): it ignores "
            "training variance, so no variant is called better (verdict: one seed: not judged)."
        ),
        "ndm and baseline_value are the means over the paired seeds; ndm_se and baseline_se are those of the few-step table.",
        "NFE counts x_hat evaluations: at equal NFE, NDM also pays for F (nfe_F_ndm), about twice the compute per step.",
        "nelbo_T_bpd compares the T-step discrete-time NELBO (the bound of the T-step ancestral model).",
    ]
    return Table("few_step_comparison", data, display, "Few-step study: NDM minus DDPM / VDM per NFE", notes)


def _ci(lo: float, hi: float) -> str:
    return f"[{fmt_diff(lo)}, {fmt_diff(hi)}]" if not (math.isnan(lo) or math.isnan(hi)) else ""


def _pm(r: pd.Series) -> str:
    """A difference with its 95% interval: '+1.2 [−0.3, +2.7]'."""
    return f"{fmt_diff(r['diff'])} {_ci(r['ci_low'], r['ci_high'])}".rstrip()


def _by(r: pd.Series) -> str:
    """A magnitude with the 95% interval of NDM − baseline: '12.3 (95% CI of NDM − base [−20.1, −4.5])'."""
    ci = _ci(r["ci_low"], r["ci_high"])
    return f"{fmt_num(abs(r['diff']))} (95% CI {ci})" if ci else fmt_num(abs(r["diff"]))


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
        return f"NDM better than {base} at every NFE tested ({_nfes(rows)}): by {_by(first)} at NFE {int(first['nfe'])}, by {_by(last)} at NFE {int(last['nfe'])}."
    if all(x == ONE_SEED for x in v):
        return (
            f"not judged (one seed: the 95% intervals are within-run noise, without training variance); NDM − {base} "
            f"{_pm(first)} at NFE {int(first['nfe'])}, {_pm(last)} at NFE {int(last['nfe'])}."
        )
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
        elif after.iloc[0]["verdict"] == ONE_SEED:
            parts.append(f"not judged (one seed) at NFE = {_nfes(after[after['verdict'] == ONE_SEED])}")
        else:
            z = after.iloc[0]
            parts.append(f"the advantage disappears at NFE = {int(z['nfe'])} ({_pm(z)}, not significant)")
        return "; ".join(parts) + "."
    # no contiguous advantage: each verdict with its NFEs, in the order of the smallest NFE
    groups = []
    labels = ((BETTER, "NDM better"), (TIE, "no significant difference"), (UNKNOWN, "no standard error"), (ONE_SEED, "one seed, not judged"), (WORSE, f"{base} better"))
    for label, sel in labels:
        sub = rows[rows["verdict"] == label]
        if not sub.empty:
            groups.append((float(sub["nfe"].min()), f"{sel} at NFE = {_nfes(sub)} (NDM − {base}: {'; '.join(_pm(r) for _, r in sub.iterrows())})"))
    return "; ".join(text for _, text in sorted(groups)) + "."


def _below(below: pd.DataFrame, base: str) -> list[str]:
    out = []
    worse = below[below["verdict"] == WORSE]
    tie = below[below["verdict"].isin([TIE, UNKNOWN])]
    one = below[below["verdict"] == ONE_SEED]
    if not tie.empty:
        out.append(f"no significant difference at NFE = {_nfes(tie)}")
    if not one.empty:
        out.append(f"not judged (one seed) at NFE = {_nfes(one)}")
    if not worse.empty:
        out.append(f"reverses ({base} better) at NFE = {_nfes(worse)} (by {'; '.join(_by(r) for _, r in worse.iterrows())})")
    return out


def answer(comparison: pd.DataFrame, datasets: list[str], baselines: tuple[str, ...] = ("ddpm", "vdm")) -> dict[str, list[str]]:
    """Per dataset, one line per (baseline, sampler, metric): the few-step answer in numbers;
    first a line saying what cannot be concluded where some comparison rests on one seed."""
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
        judged = sub[sub["baseline"].isin(baselines)]
        if lines and (judged["n_seeds"] < 2).any():
            which = "every comparison rests" if (judged["n_seeds"] < 2).all() else "some comparisons rest"
            lines.insert(
                0,
                f"One training seed: {which} on a single run per variant, whose error is sampling noise within that run and leaves out "
                "training variance, so these differences cannot say which variant is better; two or more `seeds` in the config pair "
                "the comparison by seed.",
            )
        if lines:
            out[d] = lines
    return out
