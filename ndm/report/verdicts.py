"""Verdicts of a difference between two models: paired by training seed, with a 95% interval.

diff = model - baseline (lower is better for every metric compared: Frechet distances and
NELBOs). With n >= 2 seeds both ran, d_s = value_model(s) - value_base(s), diff = mean d_s,
se = std(d_s, ddof=1) / sqrt(n) and a t interval on n - 1 degrees of freedom; "better" or
"worse" only when the interval excludes 0. With one seed the only error is the within-run one,
which leaves out training variance: the verdict is "one seed: not judged".

A few-step table tests one comparison (dataset, baseline, sampler, metric) at every NFE of the
grid: at 95% per row, a six-NFE comparison would show a chance "verdict" about one time in four (1 - 0.95^6),
and such a row, near its threshold, flips on a rerun. `family_verdicts` therefore judges the
rows of one family together with Holm's step-down adjustment (family-wise error 5%): a row is
better or worse when its Holm-adjusted p-value is below 0.05. Its 95% interval stays the
row's own.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
BETTER, WORSE, TIE, UNKNOWN = "ndm better", "ndm worse", "no significant difference", "no standard error"
ONE_SEED = "one seed: not judged"
SE_PAIRED, SE_UNPAIRED, SE_WITHIN = "seeds (paired)", "seeds (unpaired)", "within-run, one seed"
NELBO_METRIC = "nelbo_T_bpd"
BEST = "best"


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


def p_value(diff: float, diff_se: float, n_seeds: int) -> float:
    """Two-sided p-value of diff = 0: t on n - 1 degrees of freedom (n >= 2 seeds); NaN for one
    seed (never judged) or a missing error."""
    if n_seeds < 2 or math.isnan(diff) or math.isnan(diff_se) or diff_se <= 0:
        return math.nan
    return float(2 * stats.t.sf(abs(diff) / diff_se, n_seeds - 1))


def holm(p: list[float]) -> list[float]:
    """Holm-adjusted p-values: the k-th smallest of the m finite p's is multiplied by m - k + 1,
    made monotone, capped at 1 (NaN stays NaN and does not count in m)."""
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m, out, running = len(finite), [math.nan] * len(p), 0.0
    for k, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (m - k) * v))
        out[i] = running
    return out


def family_verdicts(diff: list[float], diff_se: list[float], n_seeds: list[int]) -> tuple[list[float], list[float], list[str]]:
    """(p, Holm-adjusted p, verdict) of the rows of one family: better / worse when the adjusted
    p < 1 - LEVEL, one seed never judged (`verdict`'s rules otherwise)."""
    p = [p_value(d, s, n) for d, s, n in zip(diff, diff_se, n_seeds)]
    adjusted = holm(p)
    verdicts = []
    for d, s, n, q in zip(diff, diff_se, n_seeds, adjusted):
        v = verdict(d, s, n)
        if v in (BETTER, WORSE) and not q < 1 - LEVEL:
            v = TIE
        verdicts.append(v)
    return p, adjusted, verdicts


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
