"""Does a ranking hold as training goes on? The paired test-NELBO differences of the training
curves at chosen steps (the study's convergence control, configs/study_convergence.yaml).

From the per-seed curves a report commits (tables/per_seed_curves.csv: the EMA model's test
NELBO every train.eval_every steps, on the same test batch, times and noise for every model and
seed), at each step s and for each baseline b: d_seed = NELBO_seed(model, s) - NELBO_seed(b, s),
paired by seed, judged with the report's verdict rules (ndm/report/verdicts.py: Holm over the
baselines at one step, the interval at the row's Holm level, 3 seeds for a verdict).

    python tools/ranking_over_training.py --tables reports/study/convergence/tables --steps 1200 2400
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ndm.report.verdicts import judge_family

RANKING_COLUMNS = [
    "dataset", "step", "model", "baseline", "n_seeds", "model_nelbo_bpd", "baseline_nelbo_bpd", "diff_bpd", "se",
    "p", "p_holm", "ci_level", "ci_low", "ci_high", "verdict", "order",
]  # fmt: skip


def curve_at(curves: pd.DataFrame, dataset: str, variant: str, step: int) -> dict[int, float]:
    """seed -> the test NELBO logged at `step` (rows without a test NELBO are training-loss only)."""
    sel = curves[(curves["dataset"] == dataset) & (curves["variant"] == variant) & (curves["step"] == step)].dropna(subset=["test_nelbo_bpd"])
    return {int(s): float(v) for s, v in zip(sel["seed"], sel["test_nelbo_bpd"])}


def order_at(curves: pd.DataFrame, dataset: str, variants: list[str], step: int) -> str:
    """'ndm < vdm-fixed < ddpm': the variants by mean test NELBO over their seeds at `step`."""
    means = {v: np.mean(list(c.values())) for v in variants if (c := curve_at(curves, dataset, v, step))}
    return " < ".join(sorted(means, key=means.get))


def ranking_over_training(curves: pd.DataFrame, model: str, baselines: list[str], steps: list[int], datasets: list[str] | None = None) -> pd.DataFrame:
    """One row per (dataset, step, baseline); a step missing from a curve is an error naming it."""
    rows = []
    for dataset in datasets or sorted(curves["dataset"].unique()):
        for step in steps:
            family = []
            for b in baselines:
                m, base = curve_at(curves, dataset, model, step), curve_at(curves, dataset, b, step)
                if not m or not base:
                    logged = curves[(curves["dataset"] == dataset) & curves["test_nelbo_bpd"].notna()]["step"]
                    raise ValueError(f"{dataset}: no test NELBO at step {step} for {model if not m else b}; the curves log at steps {sorted(logged.unique().tolist())}")
                seeds = sorted(set(m) & set(base))
                d = np.array([m[s] - base[s] for s in seeds])
                se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
                family.append({"dataset": dataset, "step": step, "model": model, "baseline": b, "n_seeds": len(seeds),
                               "model_nelbo_bpd": float(np.mean([m[s] for s in seeds])), "baseline_nelbo_bpd": float(np.mean([base[s] for s in seeds])),
                               "diff_bpd": float(d.mean()), "se": se})  # fmt: skip
            judged = judge_family([r["diff_bpd"] for r in family], [r["se"] for r in family], [r["n_seeds"] for r in family])
            order = order_at(curves, dataset, [model, *baselines], step)
            rows += [{**r, **j, "order": order} for r, j in zip(family, judged)]
    return pd.DataFrame(rows, columns=RANKING_COLUMNS)


__all__ = ["RANKING_COLUMNS", "curve_at", "order_at", "ranking_over_training"]
