"""The numbers README.md states about what F learned come from committed tables.

Each check finds the sentence in README.md and the value in the table it cites, formatted as the
README prints it, so an edited table or a stale sentence fails here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _paragraph(start: str) -> str:
    i = README.index(start)
    return README[i : README.index("\n\n", i)]


F_LEARNING = REPO / "reports/f_learning/tables/f_learning.csv"
PROTOCOL = " ".join((REPO / "docs/protocol.md").read_text().split())


def _interval(row) -> str:
    """'-0.106 [-0.177, -0.035] (99.4%)': the interval at the row's Holm level, with its level."""
    from ndm.report.verdicts import ci_label

    return f"{row['diff_bpd']:.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] ({ci_label(row['ci_level'])})"


def test_what_f_learns_numbers_come_from_f_learning_csv():
    """docs/protocol.md, What F learns, and the README's pointer quote reports/f_learning."""
    t = pd.read_csv(F_LEARNING).set_index(["experiment", "dataset", "model"]).sort_index()
    toy = t.loc[("f_control", "toy2d", "ndm")]
    assert f"NDM - vdm-fixed = {_interval(toy)} bits/dim, p_holm {toy['p_holm']:.4f}" in PROTOCOL
    assert f"against the derived gain {toy['expected_gain_bpd']:.3f} (bound {toy['marginal_bound_bpd']:.3f})" in PROTOCOL
    assert f"slope {toy['slope_t1']:.3f} against the optimal {toy['predicted_slope_t1']:.3f}" in PROTOCOL
    dig = t.loc[("f_control", "digits", "ndm")]
    assert f"{_interval(dig)}, p_holm {dig['p_holm']:.4f}" in PROTOCOL
    assert toy["p_holm"] < 0.05 and dig["p_holm"] < 0.05 and toy["seeds"] >= 3 and dig["seeds"] >= 3
    sweep = t.loc["f_sweep", "digits"]
    w8, w4 = sweep.loc["ndm@w8"], sweep.loc["ndm@w4"]
    assert f"{_interval(w8)} and {_interval(w4)}" in PROTOCOL
    ndm = sweep.loc["ndm"]
    assert f"({ndm['nelbo_bpd']:.3f} against vdm-fixed {ndm['control_nelbo_bpd']:.3f}; {_interval(ndm)})" in PROTOCOL
    unet = sweep.loc["ndm@unet"]
    assert unet["seeds"] == 3 and f"NDM - vdm-fixed = {_interval(unet)}, p_holm {unet['p_holm']:.3f}" in PROTOCOL
    assert f"(NELBO {unet['nelbo_bpd']:.3f} against {unet['control_nelbo_bpd']:.3f})" in PROTOCOL


def test_default_run_time_numbers_come_from_the_committed_report():
    """README's job seconds of the default run are the committed report's Run time line (which the
    report compiles from the run's Snakemake benchmark files)."""
    readme = (REPO / "README.md").read_text()
    report = (REPO / "reports" / "README.md").read_text()
    line = report[report.index("## Run time") :].splitlines()[2]
    total = re.search(r"Snakemake benchmarks, (\d+) s in all", line).group(1)
    per_rule = {rule: int(s) for rule, s in re.findall(r"(\w+) (\d+) s \(\d+ jobs?\)", line)}
    claimed = re.search(r"(\d+) jobs, (\d+) job seconds: train\s+(\d+), sampling and Frechet distances (\d+), likelihood (\d+), "
                        r"reference statistics (\d+) \((\d+) of them the\s+Inception references\), compression (\d+)", readme)
    assert claimed, "README's default-run sentence changed shape"
    _jobs, secs, train, sampling, lik, refs, inception, comp = map(int, claimed.groups())
    assert secs == int(total) and train == per_rule["train"] and sampling == per_rule["sample_grid"]
    assert lik == per_rule["evaluate_likelihood"] and refs == per_rule["reference_stats"] and comp == per_rule["evaluate_compression"]
    assert inception < refs


STUDY = REPO / "reports/study"


def test_study_answer_numbers_come_from_the_primary_endpoint_table():
    """Every primary-endpoint phrase of README's study answer is the committed table's row, in the
    format of tests/study_readme_format.py; the answer names the control and the MDE."""
    from study_readme_format import endpoint_phrase, nelbo_mean

    text = " ".join(README[README.index("What it says:") : README.index("**What changed from the first edition**")].split())
    t = pd.read_csv(STUDY / "tables/primary_endpoint.csv")
    # toy2d's rows come from its confirmation run (docs/protocol.md, Amendment 1: they replace the
    # 1000-sample rows of reports/study in the answer)
    confirm = pd.read_csv(STUDY / "toy2d/tables/primary_endpoint.csv")
    assert set(confirm["dataset"]) == {"toy2d"} and set(t["dataset"]) == {"digits", "toy2d"}
    quoted = [r for r in t.to_dict("records") if r["dataset"] == "digits"]
    quoted += [r for r in confirm.to_dict("records") if r["baseline"] in ("vdm-fixed", "ddpm")]
    for r in quoted:
        phrase = endpoint_phrase(r)
        assert phrase in text, (r["dataset"], r["endpoint"], r["baseline"], phrase)
    assert "vdm-fixed" in text and "MDE" in text
    lik = pd.read_csv(STUDY / "tables/likelihood.csv").set_index(["dataset", "variant"])
    assert f"({nelbo_mean(lik.loc[('digits', 'ndm')])} against {nelbo_mean(lik.loc[('digits', 'vdm-fixed')])})" in text
    toy = confirm[(confirm["endpoint"] == "few-step") & (confirm["baseline"] == "vdm-fixed")].iloc[0]
    assert f"x{math.exp(toy['mde_equivalence']):.2f}, and reaching ±10% would take about {round((toy['mde_equivalence'] / toy['margin']) ** 2)} times" in text


def test_study_wall_time_in_readme_is_the_measured_one():
    report = (STUDY / "README.md").read_text()
    minutes = re.search(r"Measured wall time of the whole DAG: ([\d.]+) min", report).group(1)
    assert float(minutes) <= 150
    assert f"configs/study.yaml: {minutes} min measured on 2 cores" in README and f"The measured wall time, {minutes} minutes" in " ".join(README.split())
