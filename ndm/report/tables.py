"""The papers' tables from the results: likelihood, bits/dim versus T, FID, few-step (table_format writes them).

Every number is the mean over seeds with a standard error: across seeds when there are
two or more (se_source = "seeds"), otherwise the within-run standard error the result file
carries (se_source = "within-run": NELBO's bpd_stderr over test examples, the Frechet
distance's bootstrap stderr). Rows the config expects but the results lack are kept and
marked (status "missing" or "partial (k of n seeds)").
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.names import FILE_DATASETS
from ndm.pipeline.config import ConfigError, resolve_eval_config
from ndm.report.collect import Results
from ndm.report.published import FID_COMPARABLE, cite, lookup
from ndm.report.roles import roles
from ndm.report.table_format import Table, fmt_diff, fmt_num, fmt_pm

FEATURE_METRIC = {"classifier": "fd_classifier", "inception": "fid_inception_tf", "clean": "fid_clean", "data": "fd_data", "energy": "ed_data"}

LIKELIHOOD_TABLE_COLUMNS = [
    "dataset", "variant", "status", "seeds", "units", "nelbo_bpd", "nelbo_se", "se_source",
    "nll_ode_bpd", "nll_ode_se", "nll_ode_note", "histogram_baseline_bpd",
    "published_bpd", "published_T", "diff_vs_published", "published_source", "n_params", "train_steps",
]  # fmt: skip
BPD_VS_T_COLUMNS = [
    "dataset", "variant", "time", "T", "bpd", "se", "se_source", "seeds", "excess_over_continuous",
    "published_bpd", "diff_vs_published", "published_source",
]  # fmt: skip
FID_TABLE_COLUMNS = [
    "dataset", "variant", "status", "metric", "sampler", "steps", "nfe", "nfe_F", "value", "se", "se_source",
    "seeds", "n_samples", "published_fid", "comparable", "diff_vs_published", "published_source",
]  # fmt: skip
FEW_STEP_COLUMNS = [
    "dataset", "sampler", "time_grid", "metric", "steps", "nfe", "variant", "status", "nfe_F", "value", "se", "se_source",
    "seeds", "n_samples", "nelbo_T_bpd", "nelbo_T_se", "flops_per_sample",
]  # fmt: skip


# ------------------------------------------------------------------- helpers


def aggregate(df: pd.DataFrame, keys: list[str], value: str, stderr: str, extra: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean over seeds per keys, with se across seeds (n >= 2) or the within-run stderr (n = 1)."""
    extra = extra or {}
    cols = keys + ["mean", "se", "se_source", "seeds"] + list(extra)
    if df.empty:
        return pd.DataFrame(columns=cols)
    named = {"mean": (value, "mean"), "std": (value, "std"), "seeds": (value, "count"), "within": (stderr, "mean")}
    named.update({k: (col, "mean") for k, col in extra.items()})
    out = df.groupby(keys, dropna=False, sort=False).agg(**named).reset_index()
    multi = out["seeds"] >= 2
    out["se"] = np.where(multi, out["std"] / np.sqrt(out["seeds"].clip(lower=1)), out["within"])
    out["se_source"] = np.where(multi, "seeds", np.where(out["within"].notna(), "within-run", "none"))
    return out[cols]


def run_status(seeds: float | int | None, expected: int) -> str:
    n = 0 if seeds is None or (isinstance(seeds, float) and math.isnan(seeds)) else int(seeds)
    if n == 0:
        return "missing"
    return "complete" if n >= expected else f"partial ({n} of {expected} seeds)"


def _T_label(T: float) -> str:
    return "∞ (continuous)" if math.isinf(T) else str(int(T))


def eval_of(config: dict, dataset: str):
    try:
        return resolve_eval_config(config, dataset)
    except (ConfigError, TypeError, ValueError):
        return None


def expected_metrics(config: dict, dataset: str, fd: pd.DataFrame) -> list[str]:
    """Metric names of a dataset: what its config's feature spaces give and what the results have
    (a space without results keeps its rows, marked missing or skipped)."""
    have = fd[fd["dataset"] == dataset]["metric"].dropna().unique().tolist() if not fd.empty else []
    ev = eval_of(config, dataset)
    return sorted(set(have) | {FEATURE_METRIC.get(f, f) for f in (ev.fid.features if ev else [])})


def _mean_by(df: pd.DataFrame, keys: list[str], col: str) -> dict[tuple, float]:
    if df.empty:
        return {}
    return {k if isinstance(k, tuple) else (k,): v for k, v in df.groupby(keys)[col].mean().items()}


# -------------------------------------------------------------- likelihood


def likelihood_table(res: Results, config: dict, published: pd.DataFrame | None, names: dict[str, str]) -> Table:
    """NELBO (continuous time) and ODE NLL in bits/dim per dataset and variant (NDM paper's main table)."""
    lik = res.likelihood
    nelbo = aggregate(lik[(lik["estimator"] == "nelbo") & np.isinf(lik["T"])], ["dataset", "variant"], "bpd", "stderr")
    ode = aggregate(lik[lik["estimator"] == "nll_ode"], ["dataset", "variant"], "bpd", "stderr")
    nelbo_by = {(r.dataset, r.variant): r for r in nelbo.itertuples()}
    discrete = aggregate(lik[(lik["estimator"] == "nelbo") & np.isfinite(lik["T"])], ["dataset", "variant", "T"], "bpd", "stderr")
    discrete_by = {(r.dataset, r.variant, float(r.T)): r.mean for r in discrete.itertuples()}
    ode_by = {(r.dataset, r.variant): r for r in ode.itertuples()}
    units = lik.groupby(["dataset", "variant"])["units"].first().to_dict() if not lik.empty else {}
    params = _mean_by(res.train, ["dataset", "variant"], "n_params")
    steps = _mean_by(res.train, ["dataset", "variant"], "steps")
    rows = []
    for d in res.datasets:
        for v in res.variants:
            n, o = nelbo_by.get((d, v)), ode_by.get((d, v))
            pub = lookup(published, names.get(d, d), v, "nelbo_bpd")
            skipped = [msg for (dd, vv, _), msg in res.ode_skipped.items() if (dd, vv) == (d, v)]
            rows.append(
                {
                    "dataset": d,
                    "variant": v,
                    "status": run_status(n.seeds if n is not None else 0, res.seeds_expected(d, v)),
                    "seeds": int(n.seeds) if n is not None else 0,
                    "units": units.get((d, v)) or "",
                    "nelbo_bpd": n.mean if n is not None else math.nan,
                    "nelbo_se": n.se if n is not None else math.nan,
                    "se_source": n.se_source if n is not None else "",
                    "nll_ode_bpd": o.mean if o is not None else math.nan,
                    "nll_ode_se": o.se if o is not None else math.nan,
                    "nll_ode_note": "" if o is not None else (f"skipped: {skipped[0]}" if skipped else "not computed"),
                    "histogram_baseline_bpd": (res.data_info.get(d) or {}).get("histogram_baseline_bpd", math.nan),
                    "published_bpd": pub["value"] if pub else math.nan,
                    "published_T": pub["steps_T"] if pub else math.nan,
                    "diff_vs_published": _diff_to_published(pub, n, discrete_by, d, v),
                    "published_source": cite(pub),
                    "n_params": params.get((d, v), math.nan),
                    "train_steps": steps.get((d, v), math.nan),
                }
            )
    data = pd.DataFrame(rows, columns=LIKELIHOOD_TABLE_COLUMNS)
    display = _compared_display(
        data,
        {
            "NELBO (bits/dim)": [fmt_pm(a, b) for a, b in zip(data["nelbo_bpd"], data["nelbo_se"])],
            "NLL, ODE (bits/dim)": [fmt_pm(a, b) or note for a, b, note in zip(data["nll_ode_bpd"], data["nll_ode_se"], data["nll_ode_note"])],
            "per-pixel histogram (bits/dim)": [fmt_num(x) for x in data["histogram_baseline_bpd"]],
            "published": [_published_cell(p, t) for p, t in zip(data["published_bpd"], data["published_T"])],
        },
    )
    notes = [
        "NELBO: continuous-time estimator on the test split (an upper bound on the NLL of discrete data).",
        "NLL, ODE: probability-flow ODE with dequantization where the config enables it.",
        "± is the standard error: across seeds where there are two or more, else within the run (over test examples).",
        "Published values are bounds (<=) from the papers; T = 1000 marks DDPM's discrete-time bound (compared with our NELBO at T = 1000 where"
        " eval.nelbo_steps has it, else with the continuous-time NELBO), the others are continuous time.",
        "Continuous data (toy2d) is in bits/dim of a density (can be negative) and has no published counterpart.",
    ]
    return Table("likelihood", data, display, "Likelihood in bits/dim per dataset and variant (NDM paper's main table)", notes)


def _compared_display(data: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """The display frame of a table compared with the papers: dataset, variant, the table's own
    columns, then the difference to the published value and where each row's numbers come from."""
    return pd.DataFrame(
        {
            "dataset": data["dataset"],
            "variant": data["variant"],
            **columns,
            "ours − published": [fmt_diff(x) for x in data["diff_vs_published"]],
            "source": data["published_source"],
            "se": data["se_source"],
            "status": data["status"],
        }
    )


def _diff_to_published(pub: dict | None, nelbo, discrete_by: dict, d: str, v: str) -> float:
    """Ours minus published, at the paper's T where we have that T (DDPM: 1000), else continuous time."""
    if not pub:
        return math.nan
    at_T = discrete_by.get((d, v, pub["steps_T"])) if math.isfinite(pub["steps_T"]) else None
    if at_T is not None:
        return at_T - pub["value"]
    return nelbo.mean - pub["value"] if nelbo is not None else math.nan


def _published_cell(value: float, T: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    suffix = "" if (T is None or (isinstance(T, float) and (math.isnan(T) or math.isinf(T)))) else f" (T={int(T)})"
    return f"≤ {fmt_num(value)}{suffix}"


# ---------------------------------------------------------------- bpd vs T


def bpd_vs_T_table(res: Results, published: pd.DataFrame | None, names: dict[str, str]) -> Table:
    """NELBO in bits/dim versus the number of discrete steps T, continuous time as T = inf (VDM)."""
    lik = res.likelihood
    agg = aggregate(lik[lik["estimator"] == "nelbo"], ["dataset", "variant", "T"], "bpd", "stderr")
    cont = {(r.dataset, r.variant): r.mean for r in agg.itertuples() if math.isinf(r.T)}
    rows = []
    for r in agg.itertuples():
        pub = lookup(published, names.get(r.dataset, r.dataset), r.variant, "nelbo_bpd")
        pub = pub if (pub and pub["steps_T"] == r.T) else None
        rows.append(
            {
                "dataset": r.dataset,
                "variant": r.variant,
                "time": "continuous" if math.isinf(r.T) else "discrete",
                "T": r.T,
                "bpd": r.mean,
                "se": r.se,
                "se_source": r.se_source,
                "seeds": int(r.seeds),
                "excess_over_continuous": r.mean - cont[(r.dataset, r.variant)] if (r.dataset, r.variant) in cont else math.nan,
                "published_bpd": pub["value"] if pub else math.nan,
                "diff_vs_published": r.mean - pub["value"] if pub else math.nan,
                "published_source": cite(pub),
            }
        )
    data = pd.DataFrame(rows, columns=BPD_VS_T_COLUMNS)
    data = _order(data, res, ["dataset", "variant"]).sort_values(["dataset", "variant", "T"], key=_sort_key(res), kind="stable")
    display = _bpd_vs_T_display(data, res)
    notes = [
        "Discrete-time NELBO with T steps (VDM's L_T): more steps give a tighter bound, approaching the continuous-time value (T = ∞).",
        "Each cell: mean ± standard error (across seeds, or within the run with one seed).",
    ]
    return Table("bpd_vs_T", data.reset_index(drop=True), display, "NELBO in bits/dim versus the number of steps T (as in VDM)", notes)


def _bpd_vs_T_display(data: pd.DataFrame, res: Results) -> pd.DataFrame:
    if data.empty:
        return pd.DataFrame(columns=["dataset", "variant"])
    cells = data.assign(cell=[fmt_pm(a, b) for a, b in zip(data["bpd"], data["se"])])
    wide = cells.pivot_table(index=["dataset", "variant"], columns="T", values="cell", aggfunc="first", sort=True)
    wide.columns = [f"T = {_T_label(t)}" for t in wide.columns]
    wide = wide.reset_index()
    return _order(wide, res, ["dataset", "variant"]).fillna("")


def _order(df: pd.DataFrame, res: Results, keys: list[str]) -> pd.DataFrame:
    """Rows in the config's dataset and variant order."""
    if df.empty:
        return df
    return df.sort_values(keys, key=_sort_key(res), kind="stable").reset_index(drop=True)


def _sort_key(res: Results):
    rank = {
        "dataset": {d: i for i, d in enumerate(res.datasets)},
        "variant": {v: i for i, v in enumerate(res.variants)},
    }

    def key(col: pd.Series) -> pd.Series:
        if col.name in rank:
            return col.map(lambda x: rank[col.name].get(x, 10_000))
        return col

    return key


# ------------------------------------------------------- FID (paper setting)


def floor_notes(res: Results) -> list[str]:
    """What exact samples of the data score on each metric that has a floor (a model cannot beat it)."""
    notes = []
    for (d, metric), f in sorted(res.fd_floors.items()):
        spread = f" ± {fmt_num(f['floor_std'])} (sd)" if f.get("floor_std") is not None else ""
        source = f"{f.get('floor_source', 'data')} of {int(f['floor_n'])} samples" if "floor_n" in f else f.get("floor_source", "data")
        notes.append(f"{d}, {metric}: floor {fmt_num(f['floor_mean'])}{spread}, what data score ({source}): no model can be expected below it.")
    return notes


def weights_label(provenance: dict) -> str:
    """What vouches for the Inception weights behind a FID (docs/fid.md)."""
    if provenance.get("official_weights"):
        return "Inception FID (the official weights file, by its sha256 prefix)"
    if provenance.get("verified_against_published"):
        checks = provenance["verification"]["checks"]
        shown = "; ".join(f"{c['name']} {', '.join(f'{m:.4f}' for m in c['measured'])} vs {', '.join(f'{p:.4f}' for p in c['printed'])}" for c in checks)
        return f"Inception FID (weights verified against published values: {shown}; {provenance['verification']['source']})"
    return "Inception features from unverified weights: not comparable with published FIDs"


def inception_rows(data: pd.DataFrame) -> list[tuple[str, float]]:
    """(dataset, samples) of each dataset with an Inception FID in the table."""
    sub = data[data["metric"].isin(FID_COMPARABLE) & data["n_samples"].notna()]
    return sorted({(d, float(n)) for d, n in zip(sub["dataset"], sub["n_samples"])})


def image_size(res: Results, dataset: str) -> str:
    shape = (res.data_info.get(dataset) or {}).get("event_shape")
    return f"images of {'x'.join(str(x) for x in shape[-2:])} pixels" if shape else "small images"


def fid_table(res: Results, config: dict, published: pd.DataFrame | None, names: dict[str, str]) -> Table:
    """Frechet distances per dataset and variant at the paper's sampling setting (eval.paper_setting)."""
    rows = []
    for d in res.datasets:
        ev = eval_of(config, d)
        if ev is None:
            continue
        sampler, steps = ev.paper_setting.sampler, ev.paper_setting.steps
        fd = res.fd[(res.fd["dataset"] == d) & (res.fd["sampler"] == sampler) & (res.fd["steps"] == steps)] if not res.fd.empty else res.fd
        agg = aggregate(fd, ["variant", "metric"], "value", "stderr", {"nfe": "nfe", "nfe_F": "nfe_F", "n_samples": "n_samples"})
        by = {(r.variant, r.metric): r for r in agg.itertuples()}
        for v in res.variants:
            pub = lookup(published, names.get(d, d), v, "fid")
            for metric in expected_metrics(config, d, res.fd):
                r = by.get((v, metric))
                comparable = metric in FID_COMPARABLE
                skipped = r is None and any((d, f) in res.fd_skipped for f, m in FEATURE_METRIC.items() if m == metric)
                rows.append(
                    {
                        "dataset": d,
                        "variant": v,
                        "status": "skipped" if skipped else run_status(r.seeds if r is not None else 0, res.seeds_expected(d, v)),
                        "metric": metric,
                        "sampler": sampler,
                        "steps": steps,
                        "nfe": r.nfe if r is not None else math.nan,
                        "nfe_F": r.nfe_F if r is not None else math.nan,
                        "value": r.mean if r is not None else math.nan,
                        "se": r.se if r is not None else math.nan,
                        "se_source": r.se_source if r is not None else "",
                        "seeds": int(r.seeds) if r is not None else 0,
                        "n_samples": r.n_samples if r is not None else math.nan,
                        "published_fid": pub["value"] if pub else math.nan,
                        "comparable": bool(pub) and comparable,
                        "diff_vs_published": (r.mean - pub["value"]) if (pub and comparable and r is not None) else math.nan,
                        "published_source": cite(pub),
                    }
                )
    data = pd.DataFrame(rows, columns=FID_TABLE_COLUMNS)
    display = _compared_display(
        data,
        {
            "metric": data["metric"],
            "setting": [f"{s}, {int(n)} steps" for s, n in zip(data["sampler"], data["steps"])],
            "value": [fmt_pm(a, b) for a, b in zip(data["value"], data["se"])],
            "samples": [fmt_num(x).split(".")[0] for x in data["n_samples"]],
            "published FID": [
                (fmt_num(p) + ("" if c else " (not comparable)")) if not math.isnan(p) else "" for p, c in zip(data["published_fid"], data["comparable"])
            ],
        },
    )
    notes = [
        "The metric name says the feature space: fid_inception_tf / fid_clean are Inception FID (comparable with the papers);",
        "fd_classifier is a Frechet distance in the features of a small classifier trained on the dataset, and fd_data one in data space: neither is FID.",
        "Published FIDs use 50,000 samples; ours use n_samples (FID is biased upwards for small samples).",
        "± is the standard error: across seeds, or the bootstrap standard error within the run with one seed.",
        *[f"{d}, {FEATURE_METRIC.get(f, f)} skipped: {why}" for (d, f), why in sorted(res.fd_skipped.items())],
        *[f"{d}, {FEATURE_METRIC.get(f, f)}: {weights_label(w)}" for (d, f), w in sorted(res.fd_weights.items())],
        *[f"{d}: its Inception FID is not comparable with the papers' ({image_size(res, d)} upsampled to 299, "
          f"{int(n)} samples)" for d, n in inception_rows(data) if names.get(d, d) not in FILE_DATASETS],
    ]
    return Table("fid", data, display, "Frechet distance per dataset and variant at the paper's sampling setting", notes)


# ------------------------------------------------------------------ few-step


def few_step_table(res: Results) -> Table:
    """Frechet distances and the T-step NELBO versus NFE per variant and sampler.

    An Inception FID scored at one setting only (eval.fid.inception_subset.paper_setting_only)
    has no curve over NFE: it is in the fid table, not here."""
    fd = res.fd
    if not fd.empty:
        settings = fd.groupby(["dataset", "metric"])[["sampler", "steps"]].apply(lambda g: len(g.drop_duplicates()))
        single = {key for key, n in settings.items() if n == 1 and key[1] in FID_COMPARABLE}
        fd = fd[[(d, m) not in single for d, m in zip(fd["dataset"], fd["metric"])]]
    agg = aggregate(
        fd,
        ["dataset", "sampler", "time_grid", "metric", "steps", "variant"],
        "value",
        "stderr",
        {"nfe": "nfe", "nfe_F": "nfe_F", "n_samples": "n_samples", "flops_per_sample": "flops_per_sample"},
    )
    lik = res.likelihood
    nel = aggregate(lik[(lik["estimator"] == "nelbo") & np.isfinite(lik["T"])], ["dataset", "variant", "T"], "bpd", "stderr")
    nel_by = {(r.dataset, r.variant, int(r.T)): r for r in nel.itertuples()}
    rows = []
    for r in agg.itertuples():
        n = nel_by.get((r.dataset, r.variant, int(r.steps))) if r.sampler == roles().nelbo_sampler else None
        rows.append(
            {
                "dataset": r.dataset,
                "sampler": r.sampler,
                "time_grid": r.time_grid,
                "metric": r.metric,
                "steps": int(r.steps),
                "nfe": r.nfe,
                "variant": r.variant,
                "status": run_status(r.seeds, res.seeds_expected(r.dataset, r.variant)),
                "nfe_F": r.nfe_F,
                "value": r.mean,
                "se": r.se,
                "se_source": r.se_source,
                "seeds": int(r.seeds),
                "n_samples": r.n_samples,
                "nelbo_T_bpd": n.mean if n is not None else math.nan,
                "nelbo_T_se": n.se if n is not None else math.nan,
                "flops_per_sample": r.flops_per_sample,
            }
        )
    data = pd.DataFrame(rows, columns=FEW_STEP_COLUMNS)
    data = _order(data, res, ["dataset", "sampler", "metric", "steps", "variant"])
    display = _few_step_display(data, res)
    notes = [
        "NFE counts evaluations of the x_hat network; NDM variants also evaluate F (nfe_F in the CSV). flops_per_sample (CSV) is "
        "the network FLOPs of one sample, x_hat and F with its JVPs, counted by torch's FlopCounterMode (ndm.estimators.flops).",
        "NELBO at T = steps is the bound of the T-step ancestral sampler's model (ancestral rows only).",
        "Metric names say the feature space (fd_classifier and fd_data are not FID). Each cell: mean ± standard error.",
        "An Inception FID scored at one setting only (the default's, eval.fid.inception_subset) is in the fid table.",
        *floor_notes(res),
    ]
    return Table("few_step", data, display, "Few-step study: Frechet distance (and the T-step NELBO) versus NFE", notes)


def _few_step_display(data: pd.DataFrame, res: Results) -> pd.DataFrame:
    if data.empty:
        return pd.DataFrame(columns=["dataset", "sampler", "metric", "NFE"])
    cells = data.assign(
        cell=[
            fmt_pm(a, b) + (f" [NELBO {fmt_pm(c, e)}]" if not math.isnan(c) else "")
            for a, b, c, e in zip(data["value"], data["se"], data["nelbo_T_bpd"], data["nelbo_T_se"])
        ]
    )
    wide = cells.pivot_table(index=["dataset", "sampler", "metric", "nfe"], columns="variant", values="cell", aggfunc="first", sort=False)
    variants = [v for v in res.variants if v in wide.columns] + [v for v in wide.columns if v not in res.variants]
    wide = wide[variants].reset_index().rename(columns={"nfe": "NFE"})
    wide["NFE"] = wide["NFE"].map(lambda x: str(int(x)) if not math.isnan(x) else "")
    return wide.fillna("")


# ---------------------------------------------------------------- writing


