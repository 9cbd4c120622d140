"""The `ndm` command line: the only interface the Snakemake rules use.

Every command takes explicit paths, so each job can be rerun by hand. Known failures
(bad config, missing dataset, corrupt checkpoint, diverged training) print one clear
message and exit non-zero; preemption exits with 75 (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {}


def command(name: str, help_text: str):
    """Register `ndm <name>`: the decorated function adds arguments; `run` does the work."""

    def wrap(add_arguments):
        def register(run):
            COMMANDS[name] = (add_arguments, run, help_text)
            return run

        return register

    return wrap


# ------------------------------------------------------------------ train


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (configs/default.yaml, ...)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory of this job")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (the rule's threads)")
    _tracking_args(p)


@command("train", "train one (dataset, variant, seed); resumes from OUT/checkpoint.pt")(_train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml, resolve_run_config
    from ndm.pipeline.train import train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = load_yaml(args.config)
    run = resolve_run_config(config, args.dataset, args.variant, args.seed)
    with _recorder(args, config, run, "train") as recorder:
        result = train(run, args.out, recorder=recorder, progress=not args.no_progress)
    print(json.dumps({"model": str(result.model_path), "steps": result.steps, "final_loss_bpd": result.final_loss_bpd, "wall_s": round(result.wall_s, 2)}))
    return 0


# -------------------------------------------------------------- calibrate


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    from ndm.estimators.calibrate import CALIBRATABLE

    p.add_argument("--dim", type=int, required=True, help="dimension D of the Gaussian data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="vdm-fixed", choices=CALIBRATABLE)
    p.add_argument("--n", type=int, default=2000, help="number of data samples")
    p.add_argument("--time-samples", type=int, default=64, help="time (or step) samples per example")
    p.add_argument("--steps", default="10,100,1000", help="comma-separated T for the discrete NELBO")
    p.add_argument("--extra", default="", help="comma-separated extra estimators (e.g. ode)")


@command("calibrate", "all likelihood estimators vs the exact NLL on Gaussian data (oracle model)")(_calibrate_args)
def cmd_calibrate(args: argparse.Namespace) -> int:
    from ndm.estimators.calibrate import calibrate

    steps = tuple(int(s) for s in args.steps.split(",") if s.strip())
    extra = tuple(s for s in args.extra.split(",") if s.strip())
    report = calibrate(args.dim, args.seed, args.variant, args.n, args.time_samples, steps, extra)
    print(json.dumps(report, indent=2))
    return 0


# ------------------------------------------------------------- tracking


def _tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: config, $MLFLOW_TRACKING_URI, sqlite under results/)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the config's `experiment`)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (result files only)")


class _NullRecorder:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _recorder(args, config: dict, run, kind: str, journal_path: Path | None = None):
    """An MLflow run recorder for this job (journal: OUT/mlflow_journal.jsonl), or a no-op."""
    if getattr(args, "no_tracking", False):
        return _NullRecorder()
    from ndm.pipeline.tracking_jobs import JOURNAL_NAME, job_recorder

    return job_recorder(
        kind=kind,
        config=config,
        run=run,
        journal_path=journal_path or Path(args.out) / JOURNAL_NAME,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
    )


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    import ndm.cli.evaluate  # noqa: F401  (registers prepare-data, evaluate-*, sample-grid, ...)
    import ndm.cli.tracking  # noqa: F401  (registers tracking-init, tracking-sync)
    import ndm.cli.sampling  # noqa: F401  (registers sample)

    parser = argparse.ArgumentParser(prog="ndm", description="Neural Diffusion Models benchmark")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ndm.pipeline.checkpoint import CheckpointError
    from ndm.pipeline.config import ConfigError
    from ndm.pipeline.train import PREEMPTED_EXIT_CODE, Preempted, TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"ndm {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"ndm {args.command}: preempted: {exc}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except (TrainingDiverged, CheckpointError) as exc:
        print(f"ndm {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:  # DatasetNotFound and missing inputs
        print(f"ndm {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
