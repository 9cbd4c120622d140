"""The ranking over training (ndm/report/ranking.py): paired curve differences at chosen steps
against hand values, judged with the report's rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ndm.report.ranking import ranking_over_training


def _curves(offsets: dict[str, list[float]], steps=(100, 200)) -> pd.DataFrame:
    """Test-NELBO curves: variant v, seed s, step t -> 2 - t / 1000 + offsets[v][s]."""
    rows = []
    for v, per_seed in offsets.items():
        for s, off in enumerate(per_seed):
            for t in steps:
                rows.append({"dataset": "digits", "variant": v, "seed": s, "step": t, "loss_bpd": 3.0, "test_nelbo_bpd": 2 - t / 1000 + off})
            rows.append({"dataset": "digits", "variant": v, "seed": s, "step": 150, "loss_bpd": 3.0, "test_nelbo_bpd": math.nan})
    return pd.DataFrame(rows)


def test_paired_differences_are_the_hand_values_and_judged():
    curves = _curves({"ndm": [0.00, 0.01, 0.02], "vdm-fixed": [0.10, 0.12, 0.11], "ddpm": [0.00, 0.03, 0.01]})
    t = ranking_over_training(curves, "ndm", ["vdm-fixed", "ddpm"], [100, 200]).set_index(["step", "baseline"])
    d = np.array([0.00 - 0.10, 0.01 - 0.12, 0.02 - 0.11])
    row = t.loc[(200, "vdm-fixed")]
    assert row["diff_bpd"] == pytest.approx(d.mean()) and row["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3)) and row["n_seeds"] == 3
    assert row["verdict"] == "ndm better" and row["ci_high"] < 0 and row["ci_level"] == pytest.approx(1 - 0.05 / 2)
    tie = t.loc[(200, "ddpm")]
    assert tie["diff_bpd"] == pytest.approx(-0.01 / 3) and tie["ci_low"] < 0 < tie["ci_high"] and "better" not in tie["verdict"]
    assert row["order"] == "ndm < ddpm < vdm-fixed" or row["order"] == "ddpm < ndm < vdm-fixed"


def test_a_step_without_a_test_nelbo_is_named():
    with pytest.raises(ValueError, match="no test NELBO at step 150 .* log at steps \\[100, 200\\]"):
        ranking_over_training(_curves({"ndm": [0, 0, 0], "ddpm": [0, 0, 0]}), "ndm", ["ddpm"], [150])
