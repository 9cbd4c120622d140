"""The pre-registered primary endpoints (docs/protocol.md, "Pre-registered analysis"):
per dataset, the model (NDM) against each endpoint baseline, paired by seed, judged with a
difference test and an equivalence test (TOST) at the row's Holm level.

Few-step endpoint. A model's lower envelope at an NFE budget N is the sampler configuration
(sampler and grid; the sampler name carries the grid) with recorded NFE <= N whose mean over the
model's seeds is lowest (of log metric; of the metric where the log comes after the mean). Each
seed then contributes its value at that configuration, and E_s = mean over N of log m_s(N), or
log(mean over N of m_s(N)) for `log_after_mean` datasets (the energy distance can be <= 0).
d_s = E_s(model) - E_s(baseline); exp(d) is the ratio of geometric means.

NELBO endpoint. d_s = NELBO_s(model) - NELBO_s(baseline), the continuous-time test NELBO.

Judgement: the baselines of one (dataset, endpoint) are a Holm family. At the row's Holm level
alpha_i: better / worse when the 1 - alpha_i interval excludes 0; equivalent when it does not
and the 1 - 2 alpha_i interval lies inside (-margin, +margin) (TOST); inconclusive otherwise.
Minimum detectable effects at 80% power: (t_{1-alpha_i/2} + t_{0.8}) sd / sqrt(n) for the
difference, (t_{1-alpha_i} + t_{0.9}) sd / sqrt(n) for the smallest margin the TOST can establish
when the true difference is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ndm.report.collect import Results
from ndm.report.roles import roles
from ndm.report.table_format import Table, fmt_diff, fmt_num
from ndm.report.verdicts import ALPHA, ci_label, holm, holm_levels, p_value, unjudged

FEW_STEP, NELBO = "few-step", "nelbo"
BETTER, WORSE = "ndm better", "ndm worse"
EQUIVALENT, INCONCLUSIVE, AT_FLOOR = "equivalent within the margin", "inconclusive", "at floor: not judged"
POWER = 0.8

COLUMNS = [
    "dataset", "endpoint", "metric", "model", "baseline", "n_seeds", "model_value", "baseline_value", "diff", "ratio", "se", "sd",
    "p", "p_holm", "ci_level", "ci_low", "ci_high", "tost_level", "tost_low", "tost_high", "margin", "tost_p",
    "mde", "mde_equivalence", "equivalence_reachable", "verdict", "model_envelope", "baseline_envelope",
]  # fmt: skip


@dataclass(frozen=True)
class Envelope:
    """A model's lower envelope: per NFE budget the chosen configuration and its per-seed values."""

    choice: dict[int, tuple[str, int, float]]  # N -> (sampler, steps, nfe)
    per_seed: dict[int, dict[int, float]]  # N -> seed -> value

    def text(self) -> str:
        return "; ".join(f"{n}: {s} x{steps}" for n, (s, steps, _) in sorted(self.choice.items()))


def lower_envelope(fd: pd.DataFrame, dataset: str, variant: str, metric: str, nfes: list[int], log_first: bool) -> Envelope | None:
    """The envelope of one model (None without every budget covered). Configurations are
    (sampler, steps); a configuration's NFE is the mean of its recorded NFE over seeds."""
    sub = fd[(fd["dataset"] == dataset) & (fd["variant"] == variant) & (fd["metric"] == metric)] if not fd.empty else fd
    sub = sub[np.isfinite(sub["value"].astype(float))] if not sub.empty else sub
    if sub.empty:
        return None
    if log_first:
        sub = sub[sub["value"].astype(float) > 0]
    score = np.log(sub["value"].astype(float)) if log_first else sub["value"].astype(float)
    configs = sub.assign(score=score).groupby(["sampler", "steps"], sort=True).agg(nfe=("nfe", "mean"), score=("score", "mean")).reset_index()
    choice, per_seed = {}, {}
    for n in nfes:
        ok = configs[configs["nfe"] <= n + 1e-9]
        if ok.empty:
            return None
        best = ok.sort_values(["score", "sampler", "steps"], kind="stable").iloc[0]
        choice[n] = (str(best["sampler"]), int(best["steps"]), float(best["nfe"]))
        rows = sub[(sub["sampler"] == best["sampler"]) & (sub["steps"] == best["steps"])]
        per_seed[n] = {int(s): float(v) for s, v in zip(rows["seed"], rows["value"])}
    return Envelope(choice, per_seed)


def endpoint_per_seed(env: Envelope, log_first: bool) -> dict[int, float]:
    """E_s over the seeds present at every budget: mean of logs, or log of the mean (NaN where the
    mean is not positive: at the floor)."""
    seeds = set.intersection(*(set(v) for v in env.per_seed.values()))
    out = {}
    for s in sorted(seeds):
        values = np.array([env.per_seed[n][s] for n in sorted(env.per_seed)])
        if log_first:
            out[s] = float(np.mean(np.log(values)))
        else:
            mean = float(values.mean())
            out[s] = math.log(mean) if mean > 0 else math.nan
    return out


def nelbo_per_seed(likelihood: pd.DataFrame, dataset: str, variant: str) -> dict[int, float]:
    if likelihood.empty:
        return {}
    sel = likelihood[(likelihood["dataset"] == dataset) & (likelihood["variant"] == variant) & (likelihood["estimator"] == "nelbo")
                     & ~np.isfinite(likelihood["T"].astype(float))]  # fmt: skip
    return {int(s): float(v) for s, v in zip(sel["seed"], sel["bpd"]) if np.isfinite(v)}


def judge(d: np.ndarray, alpha: float, margin: float) -> dict:
    """The row's statistics at Holm level alpha (n >= 3 seeds, finite differences)."""
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    q_diff = float(stats.t.ppf(1 - alpha / 2, n - 1))
    q_tost = float(stats.t.ppf(1 - alpha, n - 1))
    lo, hi = mean - q_diff * se, mean + q_diff * se
    t_lo, t_hi = mean - q_tost * se, mean + q_tost * se
    if se > 0:
        tost_p = max(float(stats.t.sf((mean + margin) / se, n - 1)), float(stats.t.cdf((mean - margin) / se, n - 1)))
    else:
        tost_p = 0.0 if abs(mean) < margin else 1.0
    mde = (q_diff + float(stats.t.ppf(POWER, n - 1))) * se
    mde_eq = (q_tost + float(stats.t.ppf(1 - (1 - POWER) / 2, n - 1))) * se
    inside = -margin < t_lo and t_hi < margin
    if lo > 0 or hi < 0:
        verdict = (BETTER if mean < 0 else WORSE) + (" (within the margin)" if inside else "")
    else:
        verdict = EQUIVALENT if inside else INCONCLUSIVE
    return {"diff": mean, "se": se, "sd": sd, "ci_level": 1 - alpha, "ci_low": lo, "ci_high": hi, "tost_level": 1 - 2 * alpha,
            "tost_low": t_lo, "tost_high": t_hi, "tost_p": tost_p, "mde": mde, "mde_equivalence": mde_eq,
            "equivalence_reachable": bool(mde_eq < margin), "verdict": verdict}  # fmt: skip


def _rows(res: Results) -> list[dict]:
    cfg, model = roles().endpoint, roles().model
    rows = []
    for d in res.datasets:
        metric = cfg.metrics.get(d)
        log_first = d not in cfg.log_after_mean
        endpoints = []
        if metric is not None:
            envs = {v: lower_envelope(res.fd, d, v, metric, list(cfg.nfes), log_first) for v in [model, *cfg.baselines] if v in res.variants}
            values = {v: endpoint_per_seed(e, log_first) for v, e in envs.items() if e is not None}
            endpoints.append((FEW_STEP, metric, math.log(1 + cfg.relative_margin), values, {v: e.text() for v, e in envs.items() if e is not None}))
        if d in cfg.nelbo_margins:
            values = {v: nelbo_per_seed(res.likelihood, d, v) for v in [model, *cfg.baselines] if v in res.variants}
            endpoints.append((NELBO, "nelbo_bpd", float(cfg.nelbo_margins[d]), values, {}))
        for endpoint, metric_name, margin, values, envelope in endpoints:
            if not values.get(model):
                continue
            family = []
            for base in cfg.baselines:
                if base not in values:
                    continue
                seeds = sorted(set(values[model]) & set(values[base]))
                if not seeds:
                    continue
                a = np.array([values[model][s] for s in seeds])
                b = np.array([values[base][s] for s in seeds])
                family.append({"dataset": d, "endpoint": endpoint, "metric": metric_name, "model": model, "baseline": base,
                               "n_seeds": len(seeds), "model_value": float(a.mean()) if len(a) else math.nan,
                               "baseline_value": float(b.mean()) if len(b) else math.nan, "margin": margin,
                               "model_envelope": envelope.get(model, ""), "baseline_envelope": envelope.get(base, ""), "_d": a - b})  # fmt: skip
            _judge_family(family)
            rows += family
    return rows


def _judge_family(family: list[dict]) -> None:
    """Holm over the family's judged rows, then each row at its level (in place)."""
    p = []
    for r in family:
        d = r["_d"]
        ok = unjudged(len(d)) is None and np.isfinite(d).all() and len(d) > 0
        p.append(p_value(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d)) if ok else math.nan)
    adjusted, levels = holm(p), holm_levels(p, ALPHA)
    for r, pv, q, alpha in zip(family, p, adjusted, levels):
        d = r.pop("_d")
        r.update(p=pv, p_holm=q)
        if len(d) and not np.isfinite(d).all():
            r.update(verdict=AT_FLOOR, diff=math.nan)
        elif (reason := unjudged(len(d))) is not None:
            r.update(verdict=reason, diff=float(d.mean()) if len(d) else math.nan)
        elif math.isnan(pv):  # no spread: identical differences
            r.update(verdict=INCONCLUSIVE, diff=float(d.mean()))
        else:
            r.update(judge(d, alpha, r["margin"]))
        r["ratio"] = math.exp(r["diff"]) if r["endpoint"] == FEW_STEP and np.isfinite(r.get("diff", math.nan)) else math.nan


def endpoint_frame(res: Results) -> pd.DataFrame:
    return pd.DataFrame(_rows(res), columns=COLUMNS)


def _interval(lo: float, hi: float, level: float) -> str:
    return f"[{fmt_diff(lo)}, {fmt_diff(hi)}] {ci_label(level)}" if np.isfinite(lo) else ""


def endpoint_table(res: Results) -> Table:
    data = endpoint_frame(res)
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "endpoint": [f"{e} ({m})" for e, m in zip(data["endpoint"], data["metric"])],
            "ndm vs": data["baseline"],
            "seeds": data["n_seeds"].astype(str),
            "diff (ratio)": [f"{fmt_diff(d)}" + (f" (x{fmt_num(r)})" if np.isfinite(r) else "") if np.isfinite(d) else "" for d, r in zip(data["diff"], data["ratio"])],
            "difference interval": [_interval(a, b, c) for a, b, c in zip(data["ci_low"], data["ci_high"], data["ci_level"])],
            "TOST interval": [_interval(a, b, c) for a, b, c in zip(data["tost_low"], data["tost_high"], data["tost_level"])],
            "margin": [f"±{fmt_num(m)}" for m in data["margin"]],
            "p (Holm)": ["" if not np.isfinite(p) else f"{p:.2g} ({q:.2g})" for p, q in zip(data["p"].astype(float), data["p_holm"].astype(float))],
            "MDE (80%)": ["" if not np.isfinite(m) else fmt_num(m) for m in data["mde"].astype(float)],
            "smallest provable margin": ["" if not np.isfinite(m) else fmt_num(m) for m in data["mde_equivalence"].astype(float)],
            "verdict": data["verdict"],
        }
    )
    cfg = roles().endpoint
    notes = [
        "Pre-registered in docs/protocol.md before the study's samples existed. diff = ndm − baseline, paired by training seed; lower is better.",
        f"few-step: each model's lower envelope over samplers and grids with NFE <= N, N in {list(cfg.nfes)} (chosen on the mean over seeds, "
        "then each seed's value at that choice); per seed the mean over N of log metric (datasets in log_after_mean: the log of the mean), "
        "so diff is a log ratio and (xr) the ratio of geometric means. Envelope choices are in the CSV (model_envelope, baseline_envelope).",
        "nelbo: the continuous-time test NELBO in bits/dim.",
        "The baselines of one dataset and endpoint are a Holm family: each row is judged at its Holm level alpha_i. difference interval: "
        "1 − alpha_i (better/worse when it excludes 0); TOST interval: 1 − 2 alpha_i (equivalent when it lies inside ±margin and the row is "
        "not better or worse); otherwise inconclusive. 3 seeds at least for a verdict.",
        "MDE (80%): the true difference the difference test detects with 80% power; smallest provable margin: the margin the TOST "
        "establishes with 80% power when the true difference is 0 (equivalence is reachable where it is below the margin).",
    ]
    return Table("primary_endpoint", data, display, "Primary endpoints: ndm against each baseline (pre-registered)", notes)


__all__ = ["Envelope", "endpoint_frame", "endpoint_table", "endpoint_per_seed", "judge", "lower_envelope", "nelbo_per_seed"]
