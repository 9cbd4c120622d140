"""Read whatever result files exist under a results directory into tidy pandas frames.

Layout (written by the DAG, see ndm/pipeline/evaluate.py and ndm/pipeline/train.py):

    <results>/<dataset>/data.json
    <results>/<dataset>/<variant>/seed<k>/{train_summary.json, metrics.jsonl,
        likelihood.json, fid/<sampler>.json, samples/<sampler>/{manifest.json, steps<N>.npz}}

Nothing here raises on a missing or unreadable file: `Results.missing` lists the files the
config expects that are absent, `Results.unreadable` the ones that exist but do not parse.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ndm.pipeline.config import dataset_seeds
from ndm.pipeline.config import run_seeds
from ndm.report.outputs import samplers_of

RunKey = tuple[str, str, int]  # (dataset, variant, seed)

TRAIN_COLUMNS = ["dataset", "variant", "seed", "steps", "wall_s", "steps_per_s", "n_params", "n_params_x_hat", "n_params_F", "final_loss_bpd"]
# test_nelbo_* / train_*: the convergence curve (train.eval_every; NaN where a line has none).
CURVE_EXTRA = ["test_nelbo_bpd", "test_nelbo_se", "train_seconds", "train_flops"]
CURVE_COLUMNS = ["dataset", "variant", "seed", "step", "loss_bpd", *CURVE_EXTRA]
LIKELIHOOD_COLUMNS = ["dataset", "variant", "seed", "estimator", "T", "bpd", "stderr", "n_examples", "nfe", "units"]
FD_COLUMNS = ["dataset", "variant", "seed", "sampler", "time_grid", "steps", "nfe", "nfe_F", "flops_per_sample", "metric", "value", "stderr", "stderr_method", "n_samples", "feature_extractor"]


@dataclass
class Results:
    """Everything the report reads, as frames, plus what is missing."""

    root: Path
    datasets: list[str]
    variants: list[str]
    seeds: list[int]  # every seed of any dataset, sorted
    train: pd.DataFrame
    curves: pd.DataFrame
    likelihood: pd.DataFrame
    fd: pd.DataFrame
    data_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    ode_skipped: dict[RunKey, str] = field(default_factory=dict)
    # (dataset, feature space) -> why its Frechet distances were not computed (no Inception
    # weights and eval.fid.if_weights_missing: skip; the fid JSONs' `skipped`).
    fd_skipped: dict[tuple[str, str], str] = field(default_factory=dict)
    # (dataset, feature space) -> where its network's weights came from and what vouches for
    # them (the fid JSONs' `feature_weights`: official file, or the published values reproduced).
    fd_weights: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (dataset, metric) -> what exact samples score (floor_mean, floor_std, floor_n) for the
    # metrics against exact samples (ed_data, offsupport_mass; ndm/metrics/distributional.py).
    fd_floors: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # A dataset's own seeds (datasets.<name>.seeds); a dataset not listed runs `seeds`.
    seeds_by_dataset: dict[str, list[int]] = field(default_factory=dict)
    # Every (dataset, variant, seed) the config asks for (`config_runs`); empty: every variant
    # runs every seed of its dataset.
    runs: list[RunKey] = field(default_factory=list)

    def run_dir(self, dataset: str, variant: str, seed: int) -> Path:
        return self.root / dataset / variant / f"seed{seed}"

    def seeds_of(self, dataset: str, variant: str | None = None) -> list[int]:
        """The seeds the config asks for on one dataset (with a variant: of that model, which
        may run the first one only: datasets.<name>.multi_seed_variants)."""
        seeds = self.seeds_by_dataset.get(dataset, self.seeds)
        if variant is None or not self.runs:
            return seeds
        return [s for s in seeds if (dataset, variant, s) in self.runs]

    @property
    def expected_runs(self) -> list[RunKey]:
        return [(d, v, s) for d in self.datasets for v in self.variants for s in self.seeds_of(d, v)]

    def seeds_expected(self, dataset: str | None = None, variant: str | None = None) -> int:
        """Seeds a complete (dataset, variant) row has: the model's own count (a seed only
        another dataset or model runs is not missing here); without a dataset, every seed."""
        return len(self.seeds_of(dataset, variant) if dataset is not None else self.seeds)


def read_json(path: Path, unreadable: list[str] | None = None) -> dict[str, Any] | None:
    """The parsed file, or None when it is absent or does not parse (then noted in unreadable)."""
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        if unreadable is not None:
            unreadable.append(str(path))
        return None
    if not isinstance(payload, dict):
        if unreadable is not None:
            unreadable.append(str(path))
        return None
    return payload


def config_axes(config: dict) -> tuple[list[str], list[str], list[int]]:
    """The (datasets, variants, seeds) a pipeline config asks for; seeds is the union over the
    datasets (each dataset's own list is `config_seeds`)."""
    datasets = list((config.get("datasets") or {}).keys())
    variants = [str(v) for v in config.get("variants") or []]
    seeds = sorted({s for d in datasets for s in dataset_seeds(config, d)}) or [int(s) for s in config.get("seeds") or [0]]
    return datasets, variants, seeds


def config_seeds(config: dict) -> dict[str, list[int]]:
    """Each dataset's seeds: its own datasets.<name>.seeds, else the global list."""
    return {d: dataset_seeds(config, d) for d in (config.get("datasets") or {})}


def config_runs(config: dict) -> list[RunKey]:
    """Every (dataset, variant, seed) run the config asks for, with each dataset's own seeds
    (the first only for a model outside the dataset's multi_seed_variants)."""
    _, variants, _ = config_axes(config)
    return [(d, v, s) for d in config_seeds(config) for v in variants for s in run_seeds(config, d, v)]


def expected_files(config: dict, root: Path) -> list[Path]:
    """Every result file the report reads for this config."""
    files: list[Path] = [root / d / "data.json" for d in config_seeds(config)]
    for d, v, s in config_runs(config):
        run = root / d / v / f"seed{s}"
        files += [run / "train_summary.json", run / "metrics.jsonl", run / "likelihood.json"]
        for sampler in samplers_of(config, d):
            files += [run / "fid" / f"{sampler}.json", run / "samples" / sampler / "manifest.json"]
    return files


def _train_row(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s.get(k) for k in TRAIN_COLUMNS}


def _curve_rows(path: Path, key: RunKey) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed job
        if isinstance(rec, dict) and "step" in rec and "loss_bpd" in rec:
            row = {"dataset": key[0], "variant": key[1], "seed": key[2], "step": int(rec["step"]), "loss_bpd": float(rec["loss_bpd"])}
            row.update({k: float(rec.get(k, math.nan)) for k in CURVE_EXTRA})
            rows.append(row)
    return rows


def _likelihood_rows(r: dict[str, Any], key: RunKey) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of one likelihood.json: continuous NELBO (T = inf), each discrete T, ODE NLL."""
    base = {"dataset": key[0], "variant": key[1], "seed": key[2], "units": r.get("units")}
    rows = []
    c = r.get("nelbo_continuous") or {}
    if "bpd" in c:
        rows.append({**base, "estimator": "nelbo", "T": math.inf, "bpd": c["bpd"], "stderr": c.get("bpd_stderr"), "n_examples": c.get("n_examples"), "nfe": c.get("nfe")})
    for t, e in (r.get("nelbo_discrete") or {}).items():
        if "bpd" in e:
            rows.append({**base, "estimator": "nelbo", "T": float(int(t)), "bpd": e["bpd"], "stderr": e.get("bpd_stderr"), "n_examples": e.get("n_examples"), "nfe": e.get("nfe")})
    ode = r.get("ode_nll") or {}
    if "bpd" in ode:
        rows.append({**base, "estimator": "nll_ode", "T": math.nan, "bpd": ode["bpd"], "stderr": ode.get("bpd_stderr"), "n_examples": ode.get("n_examples"), "nfe": ode.get("nfe")})
    return rows, ode.get("skipped")


def _fd_rows(r: dict[str, Any], key: RunKey, sampler: str) -> list[dict[str, Any]]:
    rows = []
    for entry in r.get("results") or []:
        for metric, m in (entry.get("metrics") or {}).items():
            rows.append(
                {
                    "dataset": key[0],
                    "variant": key[1],
                    "seed": key[2],
                    "sampler": r.get("sampler", sampler),
                    # results written before eval.time_grid existed used the uniform-t grid
                    "time_grid": entry.get("time_grid", r.get("time_grid", "uniform-t")),
                    "steps": int(entry["steps"]),
                    "nfe": float(entry.get("nfe", math.nan)),
                    "nfe_F": float(entry.get("nfe_F", 0.0)),
                    "flops_per_sample": float(entry.get("flops_per_sample", math.nan)),
                    "metric": metric,
                    "value": float(m["value"]),
                    "stderr": m.get("stderr"),
                    "stderr_method": m.get("stderr_method"),
                    "n_samples": m.get("n_samples", entry.get("n_samples")),
                    "feature_extractor": m.get("feature_extractor"),
                }
            )
    return rows


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    for col in ("stderr", "bpd", "value", "nfe", "nfe_F", "flops_per_sample", "T", "loss_bpd", "final_loss_bpd", "wall_s"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def collect(config: dict, results: str | Path) -> Results:
    """Read every result file of the config's (dataset, variant, seed) runs that exists."""
    root = Path(results)
    datasets, variants, seeds = config_axes(config)
    by_dataset = config_seeds(config)
    unreadable: list[str] = []
    train, curves, lik, fd = [], [], [], []
    data_info: dict[str, dict[str, Any]] = {}
    ode_skipped: dict[RunKey, str] = {}
    fd_skipped: dict[tuple[str, str], str] = {}
    fd_weights: dict[tuple[str, str], dict[str, Any]] = {}
    fd_floors: dict[tuple[str, str], dict[str, Any]] = {}
    runs = config_runs(config)
    for d in datasets:
        info = read_json(root / d / "data.json", unreadable)
        if info:
            data_info[d] = info
        for v in variants:
            for s in run_seeds(config, d, v):
                key = (d, v, s)
                run = root / d / v / f"seed{s}"
                summary = read_json(run / "train_summary.json", unreadable)
                if summary:
                    train.append(_train_row({**summary, "dataset": d, "variant": v, "seed": s}))
                if (run / "metrics.jsonl").exists():
                    curves += _curve_rows(run / "metrics.jsonl", key)
                r = read_json(run / "likelihood.json", unreadable)
                if r:
                    rows, skipped = _likelihood_rows(r, key)
                    lik += rows
                    if skipped:
                        ode_skipped[key] = skipped
                for sampler in samplers_of(config, d):
                    f = read_json(run / "fid" / f"{sampler}.json", unreadable)
                    if f:
                        try:
                            fd += _fd_rows(f, key, sampler)
                            fd_skipped.update({(d, str(feature)): str(why) for feature, why in (f.get("skipped") or {}).items()})
                            fd_weights.update({(d, str(feature)): w for feature, w in (f.get("feature_weights") or {}).items()})
                            fd_floors.update({(d, name): {k: m[k] for k in ("floor_mean", "floor_std", "floor_n", "floor_source") if k in m}
                                              for entry in f.get("results") or [] for name, m in (entry.get("metrics") or {}).items()
                                              if "floor_mean" in m})  # fmt: skip
                        except (KeyError, TypeError, ValueError):
                            unreadable.append(str(run / "fid" / f"{sampler}.json"))
    missing = [str(p) for p in expected_files(config, root) if not p.exists()]
    return Results(
        root=root,
        datasets=datasets,
        variants=variants,
        seeds=seeds,
        train=_frame(train, TRAIN_COLUMNS),
        curves=_frame(curves, CURVE_COLUMNS),
        likelihood=_frame(lik, LIKELIHOOD_COLUMNS),
        fd=_frame(fd, FD_COLUMNS),
        data_info=data_info,
        ode_skipped=ode_skipped,
        fd_skipped=fd_skipped,
        fd_weights=fd_weights,
        fd_floors=fd_floors,
        missing=missing,
        unreadable=sorted(set(unreadable)),
        ignored=_ignored_runs(root, runs),
        seeds_by_dataset=by_dataset,
        runs=runs,
    )


def _ignored_runs(root: Path, runs: list[RunKey]) -> list[str]:
    """Run directories under results/ that the config does not ask for (left out of the tables):
    also a seed another dataset, or another model, runs but this one does not."""
    out = []
    for summary in sorted(root.glob("*/*/seed*/train_summary.json")):
        run = summary.parent
        d, v, s = run.parent.parent.name, run.parent.name, run.name.removeprefix("seed")
        if not s.isdigit() or (d, v, int(s)) not in runs:
            out.append(str(run))
    return out
