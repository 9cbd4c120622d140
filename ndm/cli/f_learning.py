"""`ndm f-gain` and `ndm f-learning`: what a learned F can win, and what it learned.

    ndm f-gain --config configs/f_control.yaml        expected_f_gain.json per dataset (the optimal
                                                       linear F on a Gaussian with the data's covariance)
    ndm f-learning --config configs/f_control.yaml configs/f_sweep.yaml --out reports/f_learning
                                                       tables/f_learning.{csv,md,tex} from result files
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ndm.cli.registry import command


def _gain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (its results directory and datasets)")
    p.add_argument("--datasets", nargs="+", default=None, help="only these datasets (default: all of the config)")


@command("f-gain", "what the optimal linear F wins over F = identity on a Gaussian with each dataset's covariance")(_gain_args)
def cmd_f_gain(args: argparse.Namespace) -> int:
    import torch

    from ndm.estimators.f_gain import expected_gain
    from ndm.model.schedules import build_schedule
    from ndm.pipeline.config import load_yaml, resolve_run_config
    from ndm.pipeline.data import load_split
    from ndm.pipeline.results import write_result_json
    from ndm.report.f_learning import CONTROL_VARIANT, GAIN_FILE

    config = load_yaml(args.config)
    for dataset in args.datasets or list(config["datasets"]):
        run = resolve_run_config(config, dataset, CONTROL_VARIANT, 0)
        x, ds = load_split(run, "train")
        x = x.double().flatten(1)
        cov = torch.cov(x.T) if x.shape[1] > 1 else x.var().view(1, 1)
        schedule = build_schedule("linear", gamma_min=run.model.gamma_min, gamma_max=run.model.gamma_max)
        gain = expected_gain(cov, schedule)
        out = Path(config["results"]) / dataset / GAIN_FILE
        record = {"dataset": dataset, "schedule": {"kind": "linear", "gamma_min": run.model.gamma_min, "gamma_max": run.model.gamma_max},
                  "n_train": int(x.shape[0]), "data_mean_rms": float(x.mean(0).pow(2).mean().sqrt()), **gain.as_dict()}
        write_result_json(out, record)
        print(f"{dataset}: expected gain {gain.optimal_bpd:.4f} bits/dim (bound {gain.bound_bpd:.4f}), predicted slope at t=1 {gain.slopes[1.0]:.3f} -> {out}")
    return 0


def _table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", nargs="+", required=True, help="pipeline configs (experiment = the file's stem)")
    p.add_argument("--out", required=True, help="reports directory (tables/ inside)")


@command("f-learning", "the f_learning table (what F learns, per cell, against F = identity) from result files")(_table_args)
def cmd_f_learning(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.report.f_learning import f_learning_frame, f_learning_table
    from ndm.report.table_format import write_table

    configs = {Path(c).stem: load_yaml(c) for c in args.config}
    table = f_learning_table(f_learning_frame(configs))
    for path in write_table(table, Path(args.out) / "tables"):
        print(path)
    return 0
