"""tables/per_seed: every per-seed number the report's means, intervals and verdicts come from,
one row per (dataset, variant, seed, metric, sampler, time grid, steps): the sample metrics of
every sampler and step count, the continuous-time and T-step test NELBO and the ODE NLL.

results/ is not committed; this table is, so a reader can recompute any mean or paired
difference in the report from it (tests/test_per_seed.py does, for likelihood and few_step).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.report.collect import Results
from ndm.report.table_format import Table

COLUMNS = ["dataset", "variant", "seed", "metric", "sampler", "time_grid", "steps", "nfe", "nfe_F", "flops_per_sample", "value", "se", "n"]
LIKELIHOOD_METRICS = {"nelbo": "nelbo_bpd", "nll_ode": "nll_ode_bpd"}


def per_seed_frame(res: Results) -> pd.DataFrame:
    parts = []
    if not res.fd.empty:
        fd = res.fd
        parts.append(pd.DataFrame({
            "dataset": fd["dataset"], "variant": fd["variant"], "seed": fd["seed"], "metric": fd["metric"], "sampler": fd["sampler"],
            "time_grid": fd["time_grid"], "steps": fd["steps"], "nfe": fd["nfe"], "nfe_F": fd["nfe_F"],
            "flops_per_sample": fd["flops_per_sample"], "value": fd["value"], "se": fd["stderr"], "n": fd["n_samples"],
        }))  # fmt: skip
    if not res.likelihood.empty:
        lik = res.likelihood
        finite_T = np.isfinite(lik["T"].astype(float))
        metric = [("nelbo_T_bpd" if t else "nelbo_bpd") if e == "nelbo" else LIKELIHOOD_METRICS.get(e, e) for e, t in zip(lik["estimator"], finite_T)]
        parts.append(pd.DataFrame({
            "dataset": lik["dataset"], "variant": lik["variant"], "seed": lik["seed"], "metric": metric, "sampler": "",
            "time_grid": "", "steps": [int(t) if f else math.nan for t, f in zip(lik["T"], finite_T)], "nfe": lik["nfe"], "nfe_F": math.nan,
            "flops_per_sample": math.nan, "value": lik["bpd"], "se": lik["stderr"], "n": lik["n_examples"],
        }))  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat(parts, ignore_index=True)[COLUMNS]
    return frame.sort_values(["dataset", "variant", "seed", "metric", "sampler", "steps"], kind="stable").reset_index(drop=True)


def per_seed_table(res: Results) -> Table:
    """The rows in the CSV; the Markdown and LaTeX show what it holds per (dataset, variant)."""
    data = per_seed_frame(res)
    if data.empty:
        display = pd.DataFrame(columns=["dataset", "variant", "seeds", "rows"])
    else:
        g = data.groupby(["dataset", "variant"], sort=False)
        display = pd.DataFrame({
            "seeds": g["seed"].apply(lambda s: ", ".join(str(int(x)) for x in sorted(set(s)))),
            "rows": g.size(),
            "metrics": g["metric"].apply(lambda m: ", ".join(sorted(set(m)))),
            "samplers": g["sampler"].apply(lambda m: str(len({x for x in m if x}))),
        }).reset_index()  # fmt: skip
    notes = [
        "One row per (dataset, variant, seed, metric, sampler, time grid, steps) in per_seed.csv: the sample metrics (value with its "
        "within-run standard error se and the sample count n) and the test likelihoods (nelbo_bpd: continuous time; nelbo_T_bpd at "
        "steps = T; nll_ode_bpd), from which every mean, interval and verdict of this report can be recomputed.",
        "This view lists what the CSV holds per model.",
    ]
    return Table("per_seed", data, display, "Per-seed results (the numbers behind every mean)", notes)


__all__ = ["per_seed_frame", "per_seed_table"]
