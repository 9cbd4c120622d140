"""`ndm tracking-init` and `ndm tracking-sync`: set up the MLflow store, push journals into it.

    ndm tracking-init --config configs/default.yaml      # Snakemake's onstart, before parallel jobs
    ndm tracking-sync results/train/*/*/*/mlflow_journal.jsonl [--tracking-uri URI]
    ndm tracking-sync --under results/default --summary results/default/tracking_sync.json

Neither fails a pipeline because MLflow is down: tracking-init warns and exits 0 (jobs then
journal only), tracking-sync exits 1 naming the journals it could not push (rerun it later; it
is idempotent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ndm.cli.registry import command

SYNC_FAILED_EXIT_CODE = 1


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (its tracking_uri, experiment, results)")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: config, $MLFLOW_TRACKING_URI, sqlite under results/)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the config's `experiment`)")
    p.add_argument("--strict", action="store_true", help="exit 1 when the store cannot be reached (default: warn, exit 0)")


@command("tracking-init", "create the MLflow store and experiment once, before parallel jobs (idempotent)")(_init_args)
def cmd_tracking_init(args: argparse.Namespace) -> int:
    from ndm.pipeline import tracking
    from ndm.pipeline.config import load_yaml
    from ndm.pipeline.tracking_jobs import experiment_name, job_tracking_uri

    config = load_yaml(args.config)
    uri = job_tracking_uri(config, args.tracking_uri)
    experiment = experiment_name(config, args.experiment)
    try:
        exp_id = tracking.init_store(uri, experiment)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; none may stop the pipeline
        print(
            f"ndm tracking-init: MLflow at {uri} is unavailable ({type(exc).__name__}: {str(exc)[:300]}); "
            "jobs will journal only; push the journals later with `ndm tracking-sync`",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    print(json.dumps({"tracking_uri": uri, "experiment": experiment, "experiment_id": exp_id}))
    return 0


def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("journals", nargs="*", type=Path, metavar="JOURNAL", help="mlflow_journal.jsonl files")
    p.add_argument("--under", type=Path, default=None, help="also every *mlflow_journal.jsonl below this directory (the DAG's sync_tracking rule)")
    p.add_argument("--summary", type=Path, default=None, help="write {journal: run id} as JSON here when every journal was pushed")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="store to push into (default: $MLFLOW_TRACKING_URI, else the URI each journal recorded)",
    )
    p.add_argument("--allow-unfinished", action="store_true", help="also push journals without an end record (killed jobs), as RUNNING runs")


def _target_uri(journal: Path, explicit: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the store the job itself tried."""
    from ndm.pipeline import tracking

    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or str(tracking.read_journal(journal)[0]["uri"])


@command("tracking-sync", "push job journals into MLflow (idempotent; for jobs that ran while MLflow was down)")(_sync_args)
def cmd_tracking_sync(args: argparse.Namespace) -> int:
    from ndm.pipeline import tracking

    journals = list(args.journals)
    if args.under is not None:
        if not args.under.is_dir():
            print(f"ndm tracking-sync: --under {args.under} is not a directory", file=sys.stderr)
            return SYNC_FAILED_EXIT_CODE
        journals += sorted(args.under.rglob("*mlflow_journal.jsonl"))
    if not journals:
        print("ndm tracking-sync: no journals given (name them, or --under DIR)", file=sys.stderr)
        return SYNC_FAILED_EXIT_CODE
    failed, pushed = [], {}
    for journal in journals:
        uri = args.tracking_uri or "(the journal's store)"
        try:
            uri = _target_uri(journal, args.tracking_uri)
            run_id = tracking.sync_journal(journal, uri, allow_unfinished=args.allow_unfinished)
        except FileNotFoundError:
            failed.append(journal)
            print(f"ndm tracking-sync: {journal} does not exist", file=sys.stderr)
            continue
        except ValueError as exc:  # not a journal, or one without an end record
            failed.append(journal)
            print(f"ndm tracking-sync: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - store unreachable: report, go on with the others
            failed.append(journal)
            print(f"ndm tracking-sync: {journal}: could not push to {uri}: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
            continue
        pushed[str(journal)] = run_id
        print(json.dumps({"journal": str(journal), "tracking_uri": uri, "run_id": run_id}))
    if failed:
        print(f"ndm tracking-sync: {len(failed)} of {len(journals)} journal(s) not pushed; rerun when fixed (idempotent)", file=sys.stderr)
        return SYNC_FAILED_EXIT_CODE
    if args.summary is not None:
        from ndm.pipeline.results import atomic_write_text

        atomic_write_text(args.summary, json.dumps({"runs": pushed}, indent=2) + "\n")
    return 0
