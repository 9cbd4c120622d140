"""The registry of `ndm` subcommands and the arguments and helpers they share.

Each subcommand module registers its commands with :func:`command`; ndm.cli.main imports
those modules and builds the parser from :data:`COMMANDS`. Subcommand modules import this
module, never main, so the command line has no import cycle.
"""

from __future__ import annotations

import argparse
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


def required_args(p: argparse.ArgumentParser, **helps: str) -> None:
    """Required string options in the given order: ``out="reports directory"`` adds ``--out``."""
    for name, text in helps.items():
        p.add_argument(f"--{name.replace('_', '-')}", required=True, help=text)


def tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: config, $MLFLOW_TRACKING_URI, sqlite under results/)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the config's `experiment`)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (result files only)")


class _NullRecorder:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def recorder(args, config: dict, run, kind: str, journal_path: Path | None = None):
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
