"""Verdicts of a difference between two models: paired by training seed (docs/protocol.md,
"Comparisons and verdicts" and the study's pre-registered analysis).

diff = model - baseline (lower is better for every metric compared: Frechet distances and
NELBOs). With n seeds both ran, d_s = value_model(s) - value_base(s), diff = mean d_s,
se = std(d_s, ddof=1) / sqrt(n), a t on n - 1 degrees of freedom. A verdict needs n >= 3: with
two seeds the t has one degree of freedom and its standard error is the gap between two numbers
(a measured rerun of the default flipped such verdicts), so two seeds give a trend and one seed
only a within-run error (training variance left out): neither is judged.

A family (one comparison at every NFE; a dataset's test-likelihood comparisons) is judged with
Holm's step-down rule (family-wise error 5%). Each row is printed with the interval of its own
Holm level (alpha / (m - j + 1) at step j; the rows after the first non-rejection take that
step's level), so its interval excludes 0 exactly when it is better or worse. Rows with
p_holm in [0.05, 0.20) are "borderline": a rerun on another machine may move a row between
better and borderline, or borderline and "no significant difference", not across the band.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 1 - LEVEL
# p_holm in [ALPHA, BORDERLINE_P): neither a verdict nor "no difference" (pre-registered).
BORDERLINE_P = 0.20
MIN_SEEDS = 3
BETTER, WORSE, TIE, UNKNOWN = "ndm better", "ndm worse", "no significant difference", "no standard error"
BORDERLINE = "borderline"
ONE_SEED = "one seed: not judged"
TREND = "two seeds: trend, not judged"
SE_PAIRED, SE_UNPAIRED, SE_WITHIN = "seeds (paired)", "seeds (unpaired)", "within-run, one seed"
NELBO_METRIC = "nelbo_T_bpd"
BEST = "best"


def interval(diff: float, diff_se: float, n_seeds: int, level: float = LEVEL) -> tuple[float, float]:
    """The `level` interval of a difference: t on n - 1 degrees of freedom across n >= 2 seeds,
    normal for the within-run error of one seed (a bootstrap or many test examples)."""
    if math.isnan(diff) or math.isnan(diff_se):
        return math.nan, math.nan
    q = float(stats.t.ppf(0.5 + level / 2, n_seeds - 1)) if n_seeds >= 2 else float(stats.norm.ppf(0.5 + level / 2))
    return diff - q * diff_se, diff + q * diff_se


def unjudged(n_seeds: int) -> str | None:
    """The reason a row with n_seeds has no verdict, or None when it can have one."""
    if n_seeds < 2:
        return ONE_SEED
    if n_seeds < MIN_SEEDS:
        return TREND
    return None


def verdict(diff: float, diff_se: float, n_seeds: int, level: float = LEVEL) -> str:
    """Better / worse only when n_seeds >= MIN_SEEDS and the `level` interval excludes 0."""
    if (reason := unjudged(n_seeds)) is not None:
        return reason
    if math.isnan(diff) or math.isnan(diff_se) or diff_se <= 0:
        return UNKNOWN
    lo, hi = interval(diff, diff_se, n_seeds, level)
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


def holm_levels(p: list[float], alpha: float = ALPHA) -> list[float]:
    """Each row's Holm test level: alpha / (m - k) for the k-th smallest p (k from 0) while the
    step-down rejects; every row from the first non-rejection on takes that step's level. A row's
    1 - level interval then excludes 0 exactly when Holm rejects it. NaN p: level alpha."""
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m, out = len(finite), [alpha] * len(p)
    stop_level = None
    for k, (v, i) in enumerate(finite):
        step = alpha / (m - k)
        if stop_level is None and not v < step:
            stop_level = step
        out[i] = step if stop_level is None else stop_level
    return out


def judge_family(diff: list[float], diff_se: list[float], n_seeds: list[int]) -> list[dict]:
    """Per row of one family: p, p_holm, ci_level (1 - the row's Holm level), the interval at
    that level (ci_low, ci_high) and the verdict (better / worse / borderline / no significant
    difference, or why it is not judged). Rows with fewer than MIN_SEEDS seeds stay out of the
    family's m: they are not tested."""
    p = [p_value(d, s, n) if unjudged(n) is None else math.nan for d, s, n in zip(diff, diff_se, n_seeds)]
    adjusted, levels = holm(p), holm_levels(p)
    rows = []
    for d, s, n, pv, q, a in zip(diff, diff_se, n_seeds, p, adjusted, levels):
        level = 1 - a if unjudged(n) is None else LEVEL
        lo, hi = interval(d, s, n, level)
        v = verdict(d, s, n, level)
        if v == TIE and not math.isnan(q) and q < BORDERLINE_P:
            v = BORDERLINE
        rows.append({"p": pv, "p_holm": q, "ci_level": level, "ci_low": lo, "ci_high": hi, "verdict": v})
    return rows


def family_verdicts(diff: list[float], diff_se: list[float], n_seeds: list[int]) -> tuple[list[float], list[float], list[str]]:
    """(p, Holm-adjusted p, verdict) of the rows of one family (`judge_family`)."""
    rows = judge_family(diff, diff_se, n_seeds)
    return [r["p"] for r in rows], [r["p_holm"] for r in rows], [r["verdict"] for r in rows]


def ci_label(level: float) -> str:
    """'95%', '98.3%': an interval's level as printed beside it."""
    text = f"{100 * level:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


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
