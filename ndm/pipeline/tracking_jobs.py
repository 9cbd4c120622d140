"""Wiring between jobs and the tracking layer: one MLflow run per job, provenance in every result.

``job_recorder`` turns a job (kind, pipeline config, RunConfig) into a ``tracking.RunRecorder``
with the project's naming, tags and parameters (DESIGN.md section 7, docs/tracking.md). The
recorder journals every call before sending it, so a dead or locked MLflow never fails a job; the
journal is pushed later with ``ndm tracking-sync``.

``write_result_json`` is the one way result files (train_summary.json, evaluation JSON) are
written: it adds provenance (git commit, config hash, package versions, device) and replaces the
file atomically, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ndm.pipeline import tracking

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
    jobs write their journal only (no MLflow import or store connection: ~3.4 s less per job,
    which on the embedded default's ~100 CPU jobs is ~3 minutes of a 2-core run) and the DAG's
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
        return {"dataset": run.dataset, "variant": run.model.variant, "seed": str(run.seed)}
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


def _device_label(run: RunConfig | None) -> str | None:
    """The device a job will use, for provenance; None lets provenance() detect it."""
    if run is not None and run.train.device == "cpu":
        return "cpu"
    return None


@functools.lru_cache(maxsize=8)
def _provenance_cached(device: str | None) -> str:
    # git is a subprocess: look it up once per process (JSON keeps the cached value immutable)
    return json.dumps(tracking.provenance(device=device))


def job_provenance(device: str | None = None) -> dict[str, Any]:
    """tracking.provenance() (git commit, versions, device, host, SLURM job id), cached."""
    return json.loads(_provenance_cached(device))


# --------------------------------------------------------------------------------------------
# The recorder of one job
# --------------------------------------------------------------------------------------------


def _exit_status(exc: BaseException) -> str:
    """MLflow status of a job that raised: KILLED when preempted or interrupted, else FAILED."""
    from ndm.pipeline.train import Preempted  # local: importing train imports torch

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
        provenance_info=job_provenance(_device_label(run)),
        offline=deferred,
    )
    recorder.start()
    try:
        yield recorder
    except BaseException as exc:
        recorder.set_tags({"ndm.error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TAG_CHARS]})
        recorder.finish(_exit_status(exc))
        raise
    recorder.finish("FINISHED")


# --------------------------------------------------------------------------------------------
# Result files
# --------------------------------------------------------------------------------------------


def with_provenance(payload: Mapping[str, Any], run: RunConfig | None = None,
                    device: str | None = None) -> dict[str, Any]:
    """``payload`` plus ``provenance`` (and ``config_hash`` when a RunConfig is given)."""
    doc = dict(payload)
    if run is not None:
        doc.setdefault("config_hash", run.hash())
    doc["provenance"] = job_provenance(device if device is not None else _device_label(run))
    return doc


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync and rename (crash-safe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_result_json(path: str | Path, payload: Mapping[str, Any], run: RunConfig | None = None,
                      device: str | None = None) -> dict[str, Any]:
    """Write a result file with provenance, atomically; return what was written.

    Every result writer (train summary, evaluation metrics, reports' inputs) should go through
    this, so that every number under results/ says which code, config and machine produced it.
    """
    doc = with_provenance(payload, run, device)
    atomic_write_text(Path(path), json.dumps(doc, indent=2, default=str) + "\n")
    return doc
