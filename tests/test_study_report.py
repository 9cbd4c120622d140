"""The study's report pieces on constructed results with values known by hand: the convergence
and matched-compute tables (ndm.report.study), the tagged-model comparisons (gauge_comparison,
default baselines) and the FLOPs panel of fid_vs_nfe. The features behind them (names, curve,
FLOPs) are tested in test_study_features.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import _assert_real_image, _constructed_few

from ndm.report import compile_report, report_outputs
from ndm.report.collect import CURVE_COLUMNS
from ndm.report.fewstep import (
    COMPARISON_COLUMNS,
    SE_PAIRED,
    comparison_table,
    default_baselines,
    empty_comparison,
    seed_values,
)
from ndm.report.figures import fid_vs_nfe_figure
from ndm.report.study import (
    convergence_figure,
    convergence_table,
    matched_compute_table,
    value_at,
)
from ndm.report.tables import aggregate

# (variant, seed) -> (steps, test NELBO per step); FLOPs and seconds per step per variant.
CURVES = {
    ("ddpm", 0): ([100, 200, 300, 400], [5.0, 2.0, 1.99, 1.98]),  # last quarter: 0.01 of 3.02
    ("ddpm", 1): ([100, 200, 300, 400], [5.2, 2.1, 2.09, 2.06]),  # 0.03 of 3.14
    ("ndm", 0): ([100, 200, 400], [4.0, 3.0, 2.0]),  # at step 300 (75%): 2.5 by interpolation
    ("ndm", 1): ([100, 200, 400], [4.2, 3.1, 2.1]),
    ("vdm", 0): ([100, 200, 300, 400], [3.0, 2.0, 1.12, 1.0]),  # share 0.12 / 2.0 = 6%: no plateau
    ("vdm@params", 0): ([100, 200, 300, 400], [3.0, 2.0, 1.08, 1.0]),  # 4%: plateau
}
FLOPS_PER_STEP = {"ddpm": 1e9, "ndm": 3e9, "vdm": 2e9, "vdm@params": 2.5e9}
SECONDS_PER_STEP = {"ddpm": 0.1, "ndm": 0.2, "vdm": 0.15, "vdm@params": 0.3}


def curve_frame() -> pd.DataFrame:
    rows = []
    for (v, s), (steps, ys) in CURVES.items():
        for step, y in zip(steps, ys):
            # a line between curve points (no test NELBO), as metrics.jsonl has at log_every
            rows.append({"dataset": "toy", "variant": v, "seed": s, "step": step - 50, "loss_bpd": 9.0, "test_nelbo_bpd": math.nan,
                         "test_nelbo_se": math.nan, "train_seconds": (step - 50) * SECONDS_PER_STEP[v], "train_flops": (step - 50) * FLOPS_PER_STEP[v]})  # fmt: skip
            rows.append({"dataset": "toy", "variant": v, "seed": s, "step": step, "loss_bpd": 9.0, "test_nelbo_bpd": y,
                         "test_nelbo_se": 0.01, "train_seconds": step * SECONDS_PER_STEP[v], "train_flops": step * FLOPS_PER_STEP[v]})  # fmt: skip
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def test_value_at_interpolates_and_is_nan_outside() -> None:
    pts = pd.DataFrame({"step": [40, 10, 20, 30], "test_nelbo_bpd": [1.5, 3.0, 2.0, math.nan]})
    assert value_at(pts, "step", 15) == pytest.approx(2.5)
    assert value_at(pts, "step", 30) == pytest.approx(1.75)  # the NaN point is skipped
    assert value_at(pts, "step", 10) == 3.0 and value_at(pts, "step", 40) == 1.5
    assert math.isnan(value_at(pts, "step", 5)) and math.isnan(value_at(pts, "step", 41))
    assert math.isnan(value_at(pts.iloc[:0], "step", 10))


def test_convergence_table_by_hand() -> None:
    t = convergence_table(curve_frame(), ["ddpm", "vdm", "ndm", "vdm@params"])
    data = t.data.set_index("variant")
    assert list(t.data["variant"]) == ["ddpm", "vdm", "vdm@params", "ndm"]
    ddpm = data.loc["ddpm"]
    assert ddpm["seeds"] == 2 and ddpm["steps"] == 400
    assert ddpm["final_nelbo_bpd"] == pytest.approx((1.98 + 2.06) / 2)
    assert ddpm["final_se"] == pytest.approx(np.std([1.98, 2.06], ddof=1) / math.sqrt(2))
    assert ddpm["last_quarter_gain_bpd"] == pytest.approx(0.02)
    assert ddpm["last_quarter_gain_se"] == pytest.approx(np.std([0.01, 0.03], ddof=1) / math.sqrt(2))
    assert ddpm["share_of_gain"] == pytest.approx((0.01 / 3.02 + 0.03 / 3.14) / 2)
    assert ddpm["plateau"] == "yes"
    assert ddpm["train_gflops"] == pytest.approx(400.0) and ddpm["train_seconds"] == pytest.approx(40.0)
    ndm = data.loc["ndm"]
    assert ndm["last_quarter_gain_bpd"] == pytest.approx(((2.5 - 2.0) + (2.6 - 2.1)) / 2)
    assert ndm["share_of_gain"] == pytest.approx((0.5 / 2.0 + 0.5 / 2.1) / 2) and ndm["plateau"] == "no: still improving"
    assert data.loc["vdm", "share_of_gain"] == pytest.approx(0.06) and data.loc["vdm", "plateau"].startswith("no")
    assert data.loc["vdm@params", "share_of_gain"] == pytest.approx(0.04) and data.loc["vdm@params", "plateau"] == "yes"
    assert math.isnan(data.loc["vdm", "final_se"])  # one seed: no across-seed error
    assert "plateau" in t.display.columns and len(t.display) == 4


def test_matched_compute_reads_each_curve_at_the_cheapest_budget() -> None:
    data = matched_compute_table(curve_frame(), ["ddpm", "ndm", "vdm", "vdm@params"]).data.set_index("variant")
    # cheapest full run: ddpm, 400 steps x 1 GFLOP (vs ndm 1200, vdm 800, vdm@params 1000)
    assert np.allclose(data["budget_gflops"], 400.0) and len(data) == 4
    assert np.allclose(data["budget_seconds"], 40.0)  # ddpm: 400 x 0.1 s
    ndm = data.loc["ndm"]
    at = [4.0 - (1 / 3) * 1.0, 4.2 - (1 / 3) * 1.1]  # step 133.3, between 100 and 200
    assert ndm["steps_at_budget"] == pytest.approx(400 / 3)
    assert ndm["nelbo_at_flops_bpd"] == pytest.approx(np.mean(at))
    assert ndm["nelbo_at_flops_se"] == pytest.approx(np.std(at, ddof=1) / math.sqrt(2))
    assert ndm["nelbo_at_seconds_bpd"] == pytest.approx((3.0 + 3.1) / 2)  # 40 s = step 200
    assert ndm["full_run_gflops"] == pytest.approx(1200.0) and ndm["final_nelbo_bpd"] == pytest.approx(2.05)
    assert data.loc["vdm", "nelbo_at_flops_bpd"] == pytest.approx(2.0) and math.isnan(data.loc["vdm", "nelbo_at_flops_se"])
    assert data.loc["vdm@params", "nelbo_at_flops_bpd"] == pytest.approx(3.0 - 0.6 * (3.0 - 2.0))  # 400 / 2.5 = step 160
    assert data.loc["ddpm", "nelbo_at_flops_bpd"] == pytest.approx(data.loc["ddpm", "final_nelbo_bpd"])


def test_tables_without_curves_are_empty() -> None:
    no_test = curve_frame().assign(test_nelbo_bpd=math.nan)
    for frame in (no_test, pd.DataFrame(columns=CURVE_COLUMNS)):
        assert convergence_table(frame, ["ddpm"]).data.empty and matched_compute_table(frame, ["ddpm"]).data.empty


def test_convergence_figure(tmp_path: Path) -> None:
    written = convergence_figure(curve_frame(), tmp_path / "convergence.png")
    assert sorted(p.suffix for p in written) == [".png"]
    _assert_real_image(tmp_path / "convergence.png")
    empty = convergence_figure(pd.DataFrame(columns=CURVE_COLUMNS), tmp_path / "empty.png")
    assert sorted(p.suffix for p in empty) == [".png"] and (tmp_path / "empty.png").stat().st_size > 0


# ------------------------------------------------------------------ comparisons


def test_default_baselines_take_tagged_copies() -> None:
    assert default_baselines(["ndm", "ddpm@params", "vdm", "ddpm"]) == ["ddpm", "ddpm@params", "vdm"]
    assert default_baselines(["ndm", "ndm@gauge", "flow"]) == []
    e = empty_comparison("gauge_comparison")
    assert e.name == "gauge_comparison" and e.data.empty and list(e.data.columns) == COMPARISON_COLUMNS


def _few(values: dict[str, list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        {"dataset": "toy", "variant": v, "seed": s, "sampler": "ddim", "time_grid": "uniform-t", "steps": 10,
         "nfe": 10.0, "nfe_F": 0.0, "metric": "fd_data", "value": x, "stderr": 0.01, "n_samples": 100}
        for v, vals in values.items() for s, x in enumerate(vals)
    ]  # fmt: skip
    fd = pd.DataFrame(rows)
    agg = aggregate(fd, ["dataset", "sampler", "metric", "steps", "variant"], "value", "stderr", {"nfe": "nfe", "nfe_F": "nfe_F"})
    return agg.rename(columns={"mean": "value"}), seed_values(fd, pd.DataFrame())


def test_gauge_comparison_pairs_by_seed() -> None:
    gauge, ndm = [10.0, 13.0, 11.5], [11.0, 12.5, 12.5]
    few, per_seed = _few({"ndm@gauge": gauge, "ndm": ndm, "ddpm": [20.0, 20.0, 20.0]})
    t = comparison_table(few, pd.DataFrame(), per_seed, model="ndm@gauge", baselines=["ndm"], name="gauge_comparison")
    assert t.name == "gauge_comparison" and list(t.data["baseline"]) == ["ndm"]
    row = t.data.iloc[0]
    d = np.subtract(gauge, ndm)
    assert row["n_seeds"] == 3 and row["se_source"] == SE_PAIRED
    assert row["diff"] == pytest.approx(d.mean()) and row["diff_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))


def test_default_comparison_includes_tagged_baselines() -> None:
    few, per_seed = _few({"ndm": [10.0, 11.0], "ddpm": [12.0, 12.5], "ddpm@params": [11.0, 11.8]})
    data = comparison_table(few, pd.DataFrame(), per_seed).data.set_index("baseline")
    assert sorted(data.index) == ["ddpm", "ddpm@params"]
    assert data.loc["ddpm@params", "diff"] == pytest.approx(((10 - 11) + (11 - 11.8)) / 2)


@pytest.mark.parametrize("with_flops", [False, True])
def test_fid_vs_nfe_draws_with_and_without_flops(tmp_path: Path, with_flops: bool) -> None:
    few = _constructed_few()
    if with_flops:
        few["flops_per_sample"] = few["nfe"] * np.where(few["variant"] == "ndm", 3e6, 1e6)
    written = fid_vs_nfe_figure(few, tmp_path / "fid_vs_nfe.png")
    assert sorted(p.suffix for p in written) == [".png"]
    _assert_real_image(tmp_path / "fid_vs_nfe.png")


def test_compile_report_writes_the_study_outputs(tmp_path: Path) -> None:
    """Curves written as metrics.jsonl files reach the convergence tables and figure."""
    config = {
        "experiment": "study-test", "tracking_uri": None, "seeds": [0, 1], "variants": ["ddpm", "ndm", "ndm@gauge"],
        "defaults": {"eval": {"samplers": ["ddim"], "sample_steps": [4]}},
        "datasets": {"toy": {"data": {"name": "toy2d"}, "variant_overrides": {"ndm@gauge": {"model": {"transform_gauge": "reference"}}}}},
    }  # fmt: skip
    frame = curve_frame()
    for (v, s), g in frame[frame["variant"].isin(["ddpm", "ndm"])].groupby(["variant", "seed"]):
        run = tmp_path / "results" / "toy" / v / f"seed{s}"
        run.mkdir(parents=True)
        lines = [{k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in r.items() if k not in ("dataset", "variant", "seed")} for r in g.to_dict("records")]
        (run / "metrics.jsonl").write_text("".join(json.dumps({k: x for k, x in r.items() if x is not None}) + "\n" for r in lines))
    summary = compile_report(config, tmp_path / "results", tmp_path / "out")
    for rel in report_outputs(config):
        assert (tmp_path / "out" / rel).exists(), rel
    for name in ("gauge_comparison", "convergence", "matched_compute"):
        assert (tmp_path / "out" / "tables" / f"{name}.csv").exists(), name
    conv = pd.read_csv(tmp_path / "out" / "tables" / "convergence.csv").set_index("variant")
    assert sorted(conv.index) == ["ddpm", "ndm"] and conv.loc["ddpm", "final_nelbo_bpd"] == pytest.approx(2.02)
    assert summary["rows"]["matched_compute"] == 2 and summary["rows"]["gauge_comparison"] == 0
    assert summary["figure_errors"] == []
    _assert_real_image(tmp_path / "out" / "figures" / "convergence.png")
