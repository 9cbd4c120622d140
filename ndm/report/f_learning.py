"""The f_learning table: what a learned F learns, cell by cell, against F = identity.

    f_learning_frame(configs, gains)   one row per (experiment, dataset, learned-F model): F's
                                       input-dependent rms and its ratio to sigma_t / alpha_t at
                                       t = 0.25, 0.5, 0.75 (and 1), the offset rms, the slope of F(x, 1)
                                       on x, the test NELBO, and model - control paired by seed
                                       with its 95% interval, p and Holm's p (family: one
                                       experiment), a verdict
    f_learning_table(frame)            the Table (CSV, Markdown, LaTeX)

Reads result files only: likelihood.json of every run (its "transform" record, written by the
evaluate_likelihood job) and expected_f_gain.json per dataset (`ndm f-gain`). The control of
a learned-F model "ndm@tag" is "vdm-fixed@tag" when the config has that model (the same x_hat),
else "vdm-fixed" (the same schedule and x_hat, F = identity).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ndm.model.specs import TAG_SEPARATOR, base_variant, get_variant
from ndm.pipeline.config import run_seeds
from ndm.report.collect import read_json
from ndm.report.table_format import Table, fmt_num, fmt_pm
from ndm.report.verdicts import BETTER, TIE, WORSE, ci_label, interval, judge_family, paired_difference  # noqa: F401 - TIE re-exported

CONTROL_VARIANT = "vdm-fixed"
TIMES = (0.25, 0.5, 0.75)
GAIN_FILE = "expected_f_gain.json"
IMPROVES, HURTS = "F lowers the NELBO", "F raises the NELBO"  # the verdicts' "ndm better" / "ndm worse", said of F


def control_of(model: str, models: list[str]) -> str:
    """The F = identity control of a learned-F model name (module docstring)."""
    _, sep, tag = model.partition(TAG_SEPARATOR)
    tagged = f"{CONTROL_VARIANT}{TAG_SEPARATOR}{tag}"
    return tagged if sep and tagged in models else CONTROL_VARIANT


def _likelihood(root: Path, dataset: str, model: str, seed: int) -> dict | None:
    return read_json(root / dataset / model / f"seed{seed}" / "likelihood.json")


def _split_at(record: dict | None, t: float) -> dict:
    for s in (record or {}).get("splits", []):
        if abs(s["t"] - t) < 1e-9:
            return s
    return {}


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def _model_rows(config: dict, experiment: str, dataset: str, gains: dict) -> list[dict]:
    root = Path(config["results"])
    models = list(config["variants"])
    learned = [m for m in models if get_variant(base_variant(m)).transform == "neural"]
    rows = []
    for model in learned:
        control = control_of(model, models)
        seeds = sorted(set(run_seeds(config, dataset, model)) & set(run_seeds(config, dataset, control)))
        ours = {s: _likelihood(root, dataset, model, s) for s in seeds}
        base = {s: _likelihood(root, dataset, control, s) for s in seeds}
        seeds = [s for s in seeds if ours[s] and base[s]]
        if not seeds:
            continue
        def nelbo(rec: dict) -> tuple[float, float]:
            return rec["nelbo_continuous"]["bpd"], rec["nelbo_continuous"].get("bpd_stderr", math.nan)

        n, diff, se, _, mean_ours, mean_base = paired_difference({s: nelbo(ours[s]) for s in seeds}, {s: nelbo(base[s]) for s in seeds})
        a = np.array([nelbo(ours[s])[0] for s in seeds])
        lo, hi = interval(diff, se, n)
        row = {
            "experiment": experiment,
            "dataset": dataset,
            "model": model,
            "control": control,
            "seeds": n,
            "nelbo_bpd": mean_ours,
            "nelbo_se": float(a.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan,
            "control_nelbo_bpd": mean_base,
            "diff_bpd": diff,
            "diff_se": se,
            "ci_low": lo,
            "ci_high": hi,
            "prior_diff_bpd": _mean([ours[s]["nelbo_continuous"]["terms_bpd"]["prior"] - base[s]["nelbo_continuous"]["terms_bpd"]["prior"] for s in seeds]),
            "diffusion_diff_bpd": _mean([ours[s]["nelbo_continuous"]["terms_bpd"]["diffusion"] - base[s]["nelbo_continuous"]["terms_bpd"]["diffusion"] for s in seeds]),
        }
        for t in (*TIMES, 1.0):
            splits = [_split_at(ours[s].get("transform"), t) for s in seeds]
            key = f"t{t:g}"
            row[f"input_rms_{key}"] = _mean([x.get("input_rms", math.nan) for x in splits])
            row[f"offset_rms_{key}"] = _mean([x.get("offset_rms", math.nan) for x in splits])
            row[f"ratio_{key}"] = _mean([x.get("input_rms", math.nan) / x["sigma_over_alpha"] if x.get("sigma_over_alpha") else math.nan for x in splits])
            row[f"slope_{key}"] = _mean([x.get("slope", math.nan) for x in splits])
        gain = gains.get(dataset) or {}
        row["expected_gain_bpd"] = gain.get("expected_gain_bpd", math.nan)
        row["marginal_bound_bpd"] = gain.get("marginal_bound_bpd", math.nan)
        row["predicted_slope_t1"] = gain.get("predicted_slope_t1", math.nan)
        rows.append(row)
    return rows


COLUMNS = [
    "experiment", "dataset", "model", "control", "seeds",
    *[f"{k}_t{t:g}" for t in TIMES for k in ("input_rms", "ratio")],
    "offset_rms_t0.75", "input_rms_t1", "offset_rms_t1", "slope_t1", "predicted_slope_t1",
    "nelbo_bpd", "nelbo_se", "control_nelbo_bpd", "diff_bpd", "diff_se", "ci_level", "ci_low", "ci_high", "p", "p_holm", "verdict",
    "prior_diff_bpd", "diffusion_diff_bpd", "expected_gain_bpd", "marginal_bound_bpd",
]  # fmt: skip


def f_learning_frame(configs: dict[str, dict]) -> pd.DataFrame:
    """Every learned-F model of every config (experiment name -> config), Holm within an experiment."""
    rows: list[dict] = []
    for experiment, config in configs.items():
        root = Path(config["results"])
        family: list[dict] = []
        for dataset in config["datasets"]:
            gains = {dataset: read_json(root / dataset / GAIN_FILE) or {}}
            family += _model_rows(config, experiment, dataset, gains)
        # Judged as every other comparison of the report (ndm.report.verdicts): paired by seed, Holm
        # within the family, one seed never judged; "ndm better / worse" said of F.
        judged = judge_family([r["diff_bpd"] for r in family], [r["diff_se"] for r in family], [r["seeds"] for r in family])
        for r, j in zip(family, judged):
            r.update(p=j["p"], p_holm=j["p_holm"], ci_level=j["ci_level"], ci_low=j["ci_low"], ci_high=j["ci_high"],
                     verdict={BETTER: IMPROVES, WORSE: HURTS}.get(j["verdict"], j["verdict"]))
        rows += family
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt_p(p: float) -> str:
    return "" if p is None or math.isnan(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def f_learning_table(frame: pd.DataFrame) -> Table:
    caption = "What a learned F learns: input-dependent part, offset and NELBO against F = identity, per cell"
    notes = [
        "F(x, t) - x = c(t) + r(x, t) on the first 128 test examples (c the mean over them): input rms = rms of r, "
        "ratio = input rms / (sigma_t / alpha_t), the noise scale at t; offset rms = rms of c. Mean over seeds.",
        "slope t=1: least-squares slope of F(x, 1) on x (1 for F = identity); predicted: tr(C_1 S) / tr(S) of the optimal "
        "linear F on a Gaussian with the data's covariance S (ndm.estimators.f_gain).",
        "diff = model - control test NELBO (bits/dim), paired by seed; t on seeds - 1 df; p_holm: Holm within one experiment "
        "(the positive control, the sweep); a verdict needs p_holm < 0.05 and 3 seeds; the interval is at the row's Holm level "
        "(printed), so it excludes 0 exactly when F improves or hurts; borderline: p_holm in [0.05, 0.20).",
        "expected gain: what the optimal linear F wins over F = identity on a Gaussian with the data's covariance and the "
        "control's schedule (docs/math.md, What a learned F can win); bound: z_1's marginal mismatch KL(N(0, a1^2 S + s1^2 I) || N(0, I)).",
    ]
    display = pd.DataFrame(
        {
            "experiment": frame["experiment"],
            "dataset": frame["dataset"],
            "model": frame["model"],
            "control": frame["control"],
            "seeds": frame["seeds"].map(str),
            **{f"input rms t={t:g} (ratio)": [f"{fmt_num(a)} ({fmt_num(b)})" for a, b in zip(frame[f"input_rms_t{t:g}"], frame[f"ratio_t{t:g}"])] for t in TIMES},
            "offset rms t=0.75": frame["offset_rms_t0.75"].map(fmt_num),
            "input rms t=1": frame["input_rms_t1"].map(fmt_num),
            "slope t=1 (predicted)": [f"{fmt_num(a)} ({fmt_num(b)})" for a, b in zip(frame["slope_t1"], frame["predicted_slope_t1"])],
            "NELBO": [fmt_pm(a, b) for a, b in zip(frame["nelbo_bpd"], frame["nelbo_se"])],
            "model - control [interval, its level]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {ci_label(c)}" if not math.isnan(lo) else f"{d:+.3f}" for d, lo, hi, c in zip(frame["diff_bpd"], frame["ci_low"], frame["ci_high"], frame["ci_level"])],
            "p_holm": frame["p_holm"].map(_fmt_p),
            "verdict": frame["verdict"],
            "expected gain (bound)": [f"{a:.3f} ({b:.3f})" if not math.isnan(a) else "" for a, b in zip(frame["expected_gain_bpd"], frame["marginal_bound_bpd"])],
        }
    )
    return Table("f_learning", frame, display, caption, notes)
