"""Recompute a compiled report's means from its per-seed table (tables/per_seed.csv.gz): shared by
tests/test_report.py (a report compiled in the test) and tests/test_per_seed.py (the committed
reports)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def check_means_from_per_seed(tables: Path) -> int:
    """Assert that every NELBO mean in likelihood.csv and every value in few_step.csv is the mean
    over seeds of per_seed.csv.gz (and its se the across-seed one where 2+ seeds); returns the rows checked."""
    from ndm.report.per_seed import SEEDS_FILE

    seeds = pd.read_csv(tables / SEEDS_FILE)
    checked = 0
    lik = pd.read_csv(tables / "likelihood.csv")
    for r in lik.itertuples(index=False):
        sel = seeds[(seeds["dataset"] == r.dataset) & (seeds["variant"] == r.variant) & (seeds["metric"] == "nelbo_bpd")]["value"]
        if sel.empty or not np.isfinite(r.nelbo_bpd):
            continue
        assert math.isclose(sel.mean(), r.nelbo_bpd, rel_tol=1e-9, abs_tol=1e-12), (r.dataset, r.variant)
        if len(sel) >= 2:
            assert math.isclose(sel.std(ddof=1) / math.sqrt(len(sel)), r.nelbo_se, rel_tol=1e-6), (r.dataset, r.variant)
        checked += 1
    few = pd.read_csv(tables / "few_step.csv")
    keyed = seeds.groupby(["dataset", "variant", "sampler", "metric", "steps"])["value"]
    means = keyed.mean()
    for r in few.itertuples(index=False):
        if not np.isfinite(r.value):
            continue
        key = (r.dataset, r.variant, r.sampler, r.metric, float(r.steps))
        assert key in means.index, key
        assert math.isclose(means[key], r.value, rel_tol=1e-9, abs_tol=1e-12), key
        checked += 1
    return checked
