"""tables/per_seed: every per-seed number the report's means, intervals and verdicts come from,
one row per (dataset, variant, seed, metric, sampler, time grid, steps), in per_seed.csv.gz: the sample metrics of
every sampler and step count, the continuous-time and T-step test NELBO and the ODE NLL.

results/ is not committed; this table is, so a reader can recompute any mean or paired
difference in the report from it (tests/test_per_seed.py does, for likelihood and few_step).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ndm.atomic import atomic_write_text
from ndm.report.collect import Results
from ndm.report.outputs import csv_extension
from ndm.report.table_format import Table

COLUMNS = ["dataset", "variant", "seed", "metric", "sampler", "time_grid", "steps", "nfe", "nfe_F", "flops_per_sample", "value", "se", "n",
           "se_method", "feature_extractor", "units"]  # fmt: skip
# Beside per_seed.csv.gz, what the tables-only report (`ndm report --from-tables`) needs besides the
# per-seed numbers: the training summaries, the test-NELBO curves and the run metadata.
SEEDS_FILE = f"per_seed.{csv_extension('per_seed')}"
TRAIN_FILE, CURVES_FILE, META_FILE = "per_seed_train.csv", "per_seed_curves.csv", "per_seed_meta.json"
LIKELIHOOD_METRICS = {"nelbo": "nelbo_bpd", "nll_ode": "nll_ode_bpd"}


def per_seed_frame(res: Results) -> pd.DataFrame:
    parts = []
    if not res.fd.empty:
        fd = res.fd
        parts.append(pd.DataFrame({
            "dataset": fd["dataset"], "variant": fd["variant"], "seed": fd["seed"], "metric": fd["metric"], "sampler": fd["sampler"],
            "time_grid": fd["time_grid"], "steps": fd["steps"], "nfe": fd["nfe"], "nfe_F": fd["nfe_F"],
            "flops_per_sample": fd["flops_per_sample"], "value": fd["value"], "se": fd["stderr"], "n": fd["n_samples"],
            "se_method": fd["stderr_method"], "feature_extractor": fd["feature_extractor"], "units": "",
        }))  # fmt: skip
    if not res.likelihood.empty:
        lik = res.likelihood
        finite_T = np.isfinite(lik["T"].astype(float))
        metric = [("nelbo_T_bpd" if t else "nelbo_bpd") if e == "nelbo" else LIKELIHOOD_METRICS.get(e, e) for e, t in zip(lik["estimator"], finite_T)]
        parts.append(pd.DataFrame({
            "dataset": lik["dataset"], "variant": lik["variant"], "seed": lik["seed"], "metric": metric, "sampler": "",
            "time_grid": "", "steps": [int(t) if f else math.nan for t, f in zip(lik["T"], finite_T)], "nfe": lik["nfe"], "nfe_F": math.nan,
            "flops_per_sample": math.nan, "value": lik["bpd"], "se": lik["stderr"], "n": lik["n_examples"],
            "se_method": "", "feature_extractor": "", "units": lik["units"],
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
        "One row per (dataset, variant, seed, metric, sampler, time grid, steps) in per_seed.csv.gz (gzipped CSV): the sample metrics (value with its "
        "within-run standard error se and the sample count n) and the test likelihoods (nelbo_bpd: continuous time; nelbo_T_bpd at "
        "steps = T; nll_ode_bpd), from which every mean, interval and verdict of this report can be recomputed.",
        "This view lists what the CSV holds per model.",
    ]
    return Table("per_seed", data, display, "Per-seed results (the numbers behind every mean)", notes)


def write_seed_sidecars(res: Results, tables: Path) -> list[Path]:
    """per_seed_train.csv, per_seed_curves.csv and per_seed_meta.json beside per_seed.csv."""
    tables.mkdir(parents=True, exist_ok=True)
    meta = {
        "datasets": res.datasets, "variants": res.variants, "seeds": res.seeds,
        "runs": [list(r) for r in res.runs], "seeds_by_dataset": res.seeds_by_dataset, "data_info": res.data_info,
        "ode_skipped": [[*k, v] for k, v in sorted(res.ode_skipped.items())],
        "fd_skipped": [[*k, v] for k, v in sorted(res.fd_skipped.items())],
        "fd_weights": [[*k, v] for k, v in sorted(res.fd_weights.items())],
        "fd_floors": [[*k, v] for k, v in sorted(res.fd_floors.items())],
    }  # fmt: skip
    paths = [tables / TRAIN_FILE, tables / CURVES_FILE, tables / META_FILE]
    atomic_write_text(paths[0], res.train.to_csv(index=False))
    atomic_write_text(paths[1], res.curves.to_csv(index=False))
    atomic_write_text(paths[2], json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    return paths


def results_from_tables(tables: Path) -> Results:
    """The Results a report was compiled from, rebuilt from its committed per-seed tables: every
    frame the mean, interval and verdict tables read (results/ is not needed)."""
    from ndm.report.collect import FD_COLUMNS, LIKELIHOOD_COLUMNS, _frame

    tables = Path(tables)
    missing = [f for f in (SEEDS_FILE, TRAIN_FILE, CURVES_FILE, META_FILE) if not (tables / f).exists()]
    if missing:
        raise FileNotFoundError(f"{tables} lacks {', '.join(missing)}: compile the report from results/ once (ndm report --results ...) to write them")
    rows = pd.read_csv(tables / SEEDS_FILE, keep_default_na=False, na_values=[""])
    meta = json.loads((tables / META_FILE).read_text())
    is_fd = rows["sampler"].fillna("").astype(str) != ""
    fd = rows[is_fd].rename(columns={"se": "stderr", "se_method": "stderr_method", "n": "n_samples"})
    fd = fd.assign(steps=fd["steps"].astype(int), n_samples=fd["n_samples"].astype(int), seed=fd["seed"].astype(int))[FD_COLUMNS]
    lik = rows[~is_fd]
    estimator = ["nll_ode" if m == "nll_ode_bpd" else "nelbo" for m in lik["metric"]]
    T = [float(t) if m == "nelbo_T_bpd" else (math.inf if m == "nelbo_bpd" else math.nan) for m, t in zip(lik["metric"], lik["steps"])]
    lik = pd.DataFrame({"dataset": lik["dataset"], "variant": lik["variant"], "seed": lik["seed"].astype(int), "estimator": estimator, "T": T,
                        "bpd": lik["value"], "stderr": lik["se"], "n_examples": lik["n"], "nfe": lik["nfe"], "units": lik["units"]})  # fmt: skip

    def keyed(items: list) -> dict:
        return {tuple(item[:-1]): item[-1] for item in items}

    train, curves = pd.read_csv(tables / TRAIN_FILE), pd.read_csv(tables / CURVES_FILE)
    ode_skipped = {(d, v, int(s)): why for (d, v, s), why in keyed(meta["ode_skipped"]).items()}
    return Results(
        root=tables, datasets=meta["datasets"], variants=meta["variants"], seeds=[int(s) for s in meta["seeds"]],
        train=_frame(train.to_dict("records"), list(train.columns)), curves=_frame(curves.to_dict("records"), list(curves.columns)),
        likelihood=_frame(lik.to_dict("records"), LIKELIHOOD_COLUMNS), fd=_frame(fd.to_dict("records"), FD_COLUMNS),
        data_info=meta["data_info"], ode_skipped=ode_skipped, fd_skipped=keyed(meta["fd_skipped"]), fd_weights=keyed(meta["fd_weights"]),
        fd_floors=keyed(meta["fd_floors"]), seeds_by_dataset={d: [int(s) for s in v] for d, v in meta["seeds_by_dataset"].items()},
        runs=[(d, v, int(s)) for d, v, s in meta["runs"]],
    )  # fmt: skip


__all__ = ["per_seed_frame", "per_seed_table", "results_from_tables", "write_seed_sidecars"]
