"""The few-step question: at which NFE does NDM's advantage over DDPM and VDM disappear or reverse?

NDM is compared with each baseline at equal sampler and step count: diff = NDM - baseline
(lower is better for every metric here: Frechet distances and the T-step NELBO). The claim is
about models, not one training run, so the difference is paired by training seed: for each
seed s both variants ran, d_s = value_ndm(s) - value_base(s), diff = mean d_s and, with
n >= 2 paired seeds, se = std(d_s, ddof=1) / sqrt(n) with a 95% t interval on n - 1 degrees
of freedom. NDM is "better" or "worse" only when the row's p-value, Holm-adjusted over the
NFEs of its comparison (dataset, baseline, sampler, metric), is below 0.05. With one seed the
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

from ndm.model.specs import base_variant
from ndm.report.roles import roles
from ndm.report.fewstep_answer import _ci, answer, describe  # noqa: F401 - answer, describe re-exported
from ndm.report.table_format import Table, fmt_diff, fmt_num
from ndm.report.verdicts import (  # noqa: F401 - re-exported: the verdict vocabulary of the few-step tables
    BEST,
    BETTER,
    BORDERLINE,
    LEVEL,
    NELBO_METRIC,
    ONE_SEED,
    SE_PAIRED,
    SE_UNPAIRED,
    SE_WITHIN,
    TIE,
    TREND,
    UNKNOWN,
    WORSE,
    ci_label,
    family_verdicts,
    judge_family,
    holm,
    interval,
    paired_difference,
    verdict,
)


COMPARISON_COLUMNS = [
    "dataset", "baseline", "sampler", "metric", "steps", "nfe", "nfe_F_ndm",
    "ndm", "ndm_se", "baseline_value", "baseline_se", "diff", "diff_se", "n_seeds", "se_source",
    "ci_level", "ci_low", "ci_high", "z", "p", "p_holm", "verdict",
]  # fmt: skip
FAMILY = ["dataset", "baseline", "sampler", "metric"]  # one comparison across the NFE grid (Holm)
SEED_COLUMNS = ["dataset", "variant", "seed", "sampler", "metric", "nfe", "value", "se"]



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
                        "sampler": roles().nelbo_sampler,
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
                    "sampler": roles().nelbo_sampler,
                    "metric": NELBO_METRIC,
                    "steps": disc["T"].astype(int),
                    "nfe": disc["T"].astype(float),
                    "nfe_F": np.nan,
                    "value": disc["bpd"],
                    "se": disc["se"],
                    "seeds": disc["seeds"] if "seeds" in disc.columns else 1,
                    "src": roles().nelbo_sampler,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def best_sampler_rows(few: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, variant, metric) and NFE budget N (each NFE in the data): the lower envelope,
    the row with the lowest value among every sampler and grid with NFE <= N, as sampler "best"
    with `best_sampler` naming it, `steps` = N and `nfe` the chosen row's own NFE (empty without
    samples). Rows without a value are ignored; a tie goes to the first sampler in `few`'s order.
    """
    cols = list(few.columns) + ["best_sampler"]
    if few.empty or "nfe" not in few.columns:
        return pd.DataFrame(columns=cols)
    valid = few[np.isfinite(few["value"].astype(float)) & np.isfinite(few["nfe"].astype(float))]
    if valid.empty:
        return pd.DataFrame(columns=cols)
    picks = []
    for _, g in valid.groupby(["dataset", "variant", "metric"], sort=False):
        for n in sorted(g["nfe"].unique()):
            row = g[g["nfe"] <= n + 1e-9].sort_values("value", kind="stable").iloc[0].copy()
            row["best_sampler"], row["budget"] = row["sampler"], n
            picks.append(row)
    best = pd.DataFrame(picks)
    best["sampler"] = BEST
    best["steps"] = best["budget"].round().astype(int)
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
        "Each cell: the lower envelope at an NFE budget, the lowest mean over every sampler and grid with NFE <= the budget (mean ± standard error), with the sampler that reached it; the pick is by the point value, not a claim that this sampler is significantly better.",
        "NFE counts x_hat evaluations; NDM variants also evaluate F (nfe_F in the CSV).",
    ]
    return Table("few_step_best", data, display, "Few-step study: each variant at its best sampler per NFE", notes)


def default_baselines(variants: list[str]) -> list[str]:
    """NDM's baselines among `variants`: ddpm, vdm, vdm-fixed and their tagged copies
    (ddpm@params, vdm@params: NDM's parameter count), in the order of the report's baselines (ReportConfig.baselines)."""
    return [v for b in roles().baselines for v in sorted(variants, key=lambda v: (v != base_variant(v), v)) if base_variant(v) == b]


def empty_comparison(name: str) -> Table:
    """A comparison table without rows (its pair of models is not in the config)."""
    data = pd.DataFrame(columns=COMPARISON_COLUMNS)
    return Table(name, data, pd.DataFrame(columns=["dataset"]), f"{name}: not in this config", ["The config has no pair of models to compare here."])


def comparison_table(
    few: pd.DataFrame,
    bpd_T: pd.DataFrame,
    per_seed: pd.DataFrame | None = None,
    model: str | None = None,
    baselines: list[str] | None = None,
    name: str = "few_step_comparison",
) -> Table:
    """`model` (NDM) minus each baseline per (dataset, sampler, metric, steps), with verdicts;
    sampler "best" compares each model at its own best sampler per NFE (`best_sampler_rows`,
    chosen on the seed means). per_seed (`seed_values`) pairs the difference by seed; without it
    the rows' means and standard errors are combined unpaired. baselines: default
    `default_baselines` of the variants present. The columns keep the name `ndm` for the
    compared model's value (ndm@gauge vs ndm in the gauge comparison)."""
    model = model or roles().model
    if not few.empty and few["sampler"].nunique() > 1:
        few = pd.concat([few, best_sampler_rows(few)], ignore_index=True)
    long = _long_values(few, bpd_T)
    seeds_of = _by_seed(per_seed)
    keys = ["dataset", "sampler", "metric", "steps"]
    rows = []
    ndm = long[long["variant"] == model].set_index(keys) if not long.empty else None
    if baselines is None:
        baselines = default_baselines(sorted(long["variant"].unique())) if not long.empty else []
    for base in baselines:
        if ndm is None:
            break
        other = long[long["variant"] == base].set_index(keys)
        for idx in ndm.index.intersection(other.index):
            a, b = ndm.loc[idx], other.loc[idx]
            a = a.iloc[0] if isinstance(a, pd.DataFrame) else a
            b = b.iloc[0] if isinstance(b, pd.DataFrame) else b
            ka = (idx[0], model, a["src"], idx[2], float(a["nfe"]))
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
                    "nfe": float(idx[3]) if idx[1] == BEST else float(a["nfe"]),  # best: the NFE budget N
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
                }
            )
    data = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if not data.empty:
        data = data.sort_values(["dataset", "baseline", "metric", "sampler", "nfe"], kind="stable").reset_index(drop=True)
        data["verdict"] = data["verdict"].astype(object)
        for _, idx in data.groupby(FAMILY, sort=False).groups.items():
            judged = pd.DataFrame(judge_family(data.loc[idx, "diff"].tolist(), data.loc[idx, "diff_se"].tolist(), data.loc[idx, "n_seeds"].tolist()), index=idx)
            for column in ("p", "p_holm", "ci_level", "ci_low", "ci_high", "verdict"):
                data.loc[idx, column] = judged[column]
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "NDM vs": data["baseline"],
            "sampler": data["sampler"],
            "metric": data["metric"],
            "NFE": [str(int(x)) for x in data["nfe"]],
            "NDM − baseline ± se [interval, its level]": [
                f"{fmt_diff(d)}{f' ± {fmt_num(s)}' if not math.isnan(s) else ''} {_ci(lo, hi)}{f' {ci_label(c)}' if _ci(lo, hi) else ''}".rstrip()
                for d, s, lo, hi, c in zip(data["diff"], data["diff_se"], data["ci_low"], data["ci_high"], data["ci_level"])
            ],
            "seeds": [f"{int(n)} ({src})" for n, src in zip(data["n_seeds"], data["se_source"])],
            "p (Holm)": ["" if math.isnan(q) else f"{q:.2g}" for q in data["p_holm"].astype(float)],
            "verdict": data["verdict"],
        }
    )
    notes = [
        "diff = NDM − baseline at the same sampler and step count; lower is better for every metric, so a negative diff favours NDM.",
        (
            "The difference is paired by seed (its standard error across seeds, a t on seeds − 1 degrees of freedom). The NFEs of one "
            "comparison (dataset, baseline, sampler, metric) are judged together with Holm's step-down rule (family-wise error 5%): "
            "each row's interval is at its own Holm level (printed beside it), so it excludes 0 exactly when the row is better or worse. "
            "borderline: p (Holm) in [0.05, 0.20), between a verdict and no significant difference (docs/protocol.md)."
        ),
        (
            "A verdict needs 3 seeds: with two the t has one degree of freedom (two seeds: trend, not judged); with one the interval "
            "is the within-run one (test-set and sample noise of one training run), which ignores training variance (one seed: not judged)."
        ),
        "ndm and baseline_value are the means over the paired seeds; ndm_se and baseline_se are those of the few-step table.",
        "NFE counts x_hat evaluations: at equal NFE, NDM also pays for F (nfe_F_ndm), about twice the compute per step.",
        "nelbo_T_bpd compares the T-step discrete-time NELBO (the bound of the T-step ancestral model).",
    ]
    title = "Few-step study: NDM minus DDPM / VDM per NFE" if model == roles().model else f"Few-step study: {model} minus {', '.join(baselines or [])} per NFE"
    return Table(name, data, display, title, notes)
