"""Wiring between jobs and the tracking layer: one MLflow run per job.

``job_recorder`` turns a job (kind, pipeline config, RunConfig) into a ``tracking.RunRecorder``
with the project's naming, tags and parameters (docs/tracking.md). The
recorder journals every call before sending it, so a dead or locked MLflow never fails a job; the
journal is pushed later with ``ndm tracking-sync``.

Result files (with the same provenance as the run's tags) are written by ndm.pipeline.results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ndm.pipeline import tracking
from ndm.pipeline.errors import Preempted
from ndm.pipeline.results import device_label, job_provenance

if TYPE_CHECKING:  # the config module imports torch; keep `ndm tracking-sync` light
    from ndm.pipeline.config import RunConfig

DEFAULT_EXPERIMENT = "ndm-bench"
JOURNAL_NAME = "mlflow_journal.jsonl"
MAX_ERROR_TAG_CHARS = 5000


# --------------------------------------------------------------------------------------------
# Names, URIs, tags
# --------------------------------------------------------------------------------------------


def experiment_name(config: Mapping[str, Any], experiment: str | None = None) -> str:
    """The given experiment, else the config's ``experiment``, else "ndm-bench"."""
    return experiment or config.get("experiment") or DEFAULT_EXPERIMENT


TRACKING_MODES = ("live", "deferred")


def tracking_mode(config: Mapping[str, Any]) -> str:
    """``live``: each job creates its MLflow run as it starts and logs as it goes. ``deferred``:
    jobs write their journal only (no MLflow import or store connection, which adds up over many
    small CPU jobs: docs/tracking.md) and the DAG's
    ``sync_tracking`` rule pushes every journal in one process at the end."""
    mode = config.get("tracking_mode") or "live"
    if mode not in TRACKING_MODES:
        raise ValueError(f"tracking_mode must be one of {TRACKING_MODES}, got {mode!r}")
    return mode


def results_dir(config: Mapping[str, Any]) -> Path:
    return Path(config.get("results", "results"))


def job_tracking_uri(config: Mapping[str, Any], tracking_uri: str | None = None) -> str:
    """--tracking-uri, else the config's ``tracking_uri``, else $MLFLOW_TRACKING_URI, else SQLite."""
    return tracking.resolve_tracking_uri(tracking_uri or config.get("tracking_uri"), results_dir(config))


def _identity(run: RunConfig | None, extra_tags: Mapping[str, Any]) -> dict[str, str]:
    """dataset, variant and seed of a job: from its RunConfig, else from the caller's tags."""
    if run is not None:
        return {"dataset": run.dataset, "variant": run.model_name, "seed": str(run.seed)}
    return {k: str(extra_tags.get(k, "-")) for k in ("dataset", "variant", "seed")}


def job_run_name(kind: str, run: RunConfig | None, extra_tags: Mapping[str, Any] | None = None) -> str:
    """e.g. "train/digits/ndm/seed0": unique per job within an experiment."""
    ident = _identity(run, extra_tags or {})
    return f"{kind}/{ident['dataset']}/{ident['variant']}/seed{ident['seed']}"


def job_tags(kind: str, run: RunConfig | None, journal_path: Path,
             extra_tags: Mapping[str, Any] | None = None) -> dict[str, str]:
    """kind, dataset, variant, seed, config_hash, output dir; the recorder adds provenance."""
    tags = {"kind": kind, **_identity(run, extra_tags or {}),
            "ndm.output_dir": str(Path(journal_path).resolve().parent)}
    if run is not None:
        tags["config_hash"] = run.hash()
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    return tags


# --------------------------------------------------------------------------------------------
# The recorder of one job
# --------------------------------------------------------------------------------------------


def _exit_status(exc: BaseException) -> str:
    """MLflow status of a job that raised: KILLED when preempted or interrupted, else FAILED."""
    return "KILLED" if isinstance(exc, (Preempted, KeyboardInterrupt, SystemExit)) else "FAILED"


def close_abandoned_run(journal_path: Path, uri: str) -> str | None:
    """Mark the MLflow run of a killed earlier attempt of this job KILLED; return its run id.

    A job killed with SIGKILL (node failure, OOM killer, time limit) leaves its MLflow run
    RUNNING forever and its journal without an end record. The rerun is about to overwrite that
    journal, so this is the last chance to close the run. Best effort: any failure is ignored.
    """
    try:
        old = tracking.journal_summary(Path(journal_path))
        recs = tracking.read_journal(Path(journal_path))
    except (OSError, ValueError, KeyError):
        return None
    run_uri = next((r.get("uri") for r in recs if r.get("type") == "mlflow_run"), None)
    if old["finished"] or old["run_id"] is None or run_uri != uri:
        return None
    try:
        client = tracking._client(uri)
        tracking._retrying(client.set_tag, old["run_id"], "ndm.exit_reason", "killed (no end record; rerun started)")
        tracking._retrying(client.set_terminated, old["run_id"], "KILLED")
    except Exception:  # noqa: BLE001 - a dead store must not fail the rerun
        return None
    return str(old["run_id"])


@contextlib.contextmanager
def job_recorder(
    *,
    kind: str,
    config: Mapping[str, Any],
    run: RunConfig | None,
    journal_path: Path,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> Iterator[tracking.RunRecorder | None]:
    """One MLflow run (and its journal at ``journal_path``) for the job inside the block.

    Yields None when ``enabled`` is False (``--no-tracking``: no MLflow, no journal). With the
    config's ``tracking_mode: deferred`` only the journal is written (``ndm tracking-sync``
    pushes it later: the DAG's ``sync_tracking`` rule). The run is
    FINISHED when the block returns, KILLED when it raises ``Preempted`` (or is interrupted) and
    FAILED otherwise, with the error in the tag ``ndm.error``; the exception propagates
    unchanged. MLflow being unreachable never raises here (the recorder warns once and journals).
    """
    if not enabled:
        yield None
        return
    uri = job_tracking_uri(config, tracking_uri)
    journal_path = Path(journal_path)
    deferred = tracking_mode(config) == "deferred"
    if journal_path.exists() and not deferred:
        close_abandoned_run(journal_path, uri)
    recorder = tracking.RunRecorder(
        uri,
        experiment_name(config, experiment),
        job_run_name(kind, run, extra_tags),
        tags=job_tags(kind, run, journal_path, extra_tags),
        params=run.to_dict() if run is not None else {},
        journal_path=journal_path,
        provenance_info=job_provenance(device_label(run)),
        offline=deferred,
        start_time_ms=tracking.process_start_ms(),  # the job's real start (the MLflow run's start_time)
    )
    recorder.start()
    try:
        yield recorder
    except BaseException as exc:
        recorder.set_tags({"ndm.error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TAG_CHARS]})
        recorder.finish(_exit_status(exc))
        raise
    recorder.finish("FINISHED")
