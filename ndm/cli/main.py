"""The `ndm` command line: the only interface the Snakemake rules use.

Every command takes explicit paths, so each job can be rerun by hand. Known failures
(bad config, missing dataset, corrupt checkpoint, diverged training) print one clear
message and exit non-zero; preemption exits with 75 (rerun to resume).

The commands live in one module per group (training, calibrate, evaluate, tracking, sampling,
compress, claims), each registering itself in ndm.cli.registry; importing them here is what registers them, in the
order `ndm --help` lists them.
"""

from __future__ import annotations

import argparse
import sys

from ndm.cli import training, calibrate, evaluate, tracking, sampling, compress  # noqa: F401  (pipeline order)
from ndm.cli import claims  # noqa: F401  (after the pipeline's commands)
from ndm.cli import plan  # noqa: F401  (before submitting: GPU-hours of a config)
from ndm.cli import f_learning  # noqa: F401  (what a learned F can win and what it learned)
from ndm.cli import fid_weights  # noqa: F401  (set-up: Inception weights from a package)
from ndm.cli.registry import COMMANDS
from ndm.pipeline.errors import PREEMPTED_EXIT_CODE, Preempted, TrainingDiverged


def build_parser() -> argparse.ArgumentParser:
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
