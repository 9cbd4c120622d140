"""How README.md prints the study's primary-endpoint rows (shared by tests/test_readme_numbers.py,
which checks every such phrase in README.md against reports/study/tables)."""

from __future__ import annotations

import math


def endpoint_phrase(r: dict) -> str:
    """few-step: 'x0.84 [0.67, 1.06] (95%), inconclusive, MDE x1.36'; nelbo: '-0.008 [-0.013, -0.003]
    bits/dim (97.5%), ndm better (within the margin), MDE 0.006'."""
    level = f"{100 * r['ci_level']:.1f}".rstrip("0").rstrip(".") + "%"
    if not math.isfinite(r["diff"]) or not math.isfinite(r.get("ci_low", math.nan)):
        return f"{r['verdict']}"
    if r["endpoint"] == "few-step":
        return (f"x{math.exp(r['diff']):.2f} [{math.exp(r['ci_low']):.2f}, {math.exp(r['ci_high']):.2f}] ({level}), {r['verdict']}, "
                f"MDE x{math.exp(r['mde']):.2f}")
    return f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] bits/dim ({level}), {r['verdict']}, MDE {r['mde']:.3f}"


def nelbo_mean(r: dict) -> str:
    return f"{r['nelbo_bpd']:.3f} ± {r['nelbo_se']:.3f}"
