"""The thin MLflow layer: every train and evaluate job is an MLflow run, and a journal first.

MLflow is a record, not the source of truth (docs/tracking.md). So every call a job makes
(start, metrics, artifacts, finish) is first appended to the job's own JSONL journal, fsync'd,
and only then sent to MLflow. When MLflow cannot be reached (dead server, SQLite file locked for
too long) the recorder warns once, stops talking to MLflow and keeps journaling; the job finishes
normally. ``sync_journal`` later replays a journal into any store, idempotently.

Defaults: a SQLite store under results/ (``results/mlflow.db``, artifacts in
``results/mlartifacts``); on a cluster an MLflow server URI from the config or
MLFLOW_TRACKING_URI. A fresh SQLite store touched first by several processes at once is left
broken (MLflow runs its schema migrations in each of them), so every path that opens a SQLite
store goes through ``init_store``, which serialises initialisation with a file lock; calling it
once before parallel jobs (``ndm tracking-init`` in Snakemake's ``onstart``) keeps jobs from
even waiting on that lock for long.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# The layer is split by job (the store and its retries, the journal, provenance, the replay);
# this module holds the recorder and re-exports the whole API, so callers import one module.
from ndm.pipeline.provenance import config_hash, provenance, provenance_tags
from ndm.pipeline.tracking_journal import JOURNAL_FORMAT, Journal, _now_ms, journal_summary, process_start_ms, read_journal
from ndm.pipeline.tracking_store import (
    DEFAULT_ARTIFACT_DIR,
    DEFAULT_DB_NAME,
    HTTP_LIMITS,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_CHARS,
    MAX_PARAMS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
    RETRY_LOCKED,
    RETRY_NETWORK,
    EXPERIMENT_KIND,
    TAG_EXPERIMENT_KIND,
    TAG_JOURNAL_ID,
    TAG_SYNCED,
    _chunks,
    _client,
    _retrying,
    default_artifact_root,
    init_store,
    is_sqlite,
    resolve_tracking_uri,
    sqlite_path,
)
from ndm.pipeline.tracking_sync import sync_journal

__all__ = [
    "DEFAULT_ARTIFACT_DIR",
    "DEFAULT_DB_NAME",
    "EXPERIMENT_KIND",
    "HTTP_LIMITS",
    "JOURNAL_FORMAT",
    "Journal",
    "RETRY_LOCKED",
    "RETRY_NETWORK",
    "RunRecorder",
    "TAG_EXPERIMENT_KIND",
    "TAG_JOURNAL_ID",
    "TAG_SYNCED",
    "TrackingUnavailableWarning",
    "config_hash",
    "default_artifact_root",
    "flatten_params",
    "init_store",
    "is_sqlite",
    "journal_summary",
    "process_start_ms",
    "provenance",
    "provenance_tags",
    "read_journal",
    "resolve_tracking_uri",
    "sqlite_path",
    "sync_journal",
]


class TrackingUnavailableWarning(RuntimeWarning):
    """MLflow could not be reached; the run continues in its journal only."""


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.channels": "64", ...}, values as MLflow param strings.

    Lists stay whole (JSON) rather than exploding into one param per element.
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value), default=str)[:MAX_PARAM_CHARS]
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


class RunRecorder:
    """One MLflow run for one job, mirrored from the job's journal.

    Usage::

        with RunRecorder(uri, "smoke", "train-digits-ndm-0", tags, params, journal) as rec:
            rec.log_metrics({"loss": 0.3}, step=10)
            rec.log_artifact(figure_path)
        # finished as FINISHED, or FAILED if the block raised

    Metrics are buffered and sent with log_batch (at most ``flush_every`` entries or
    ``flush_seconds`` apart) to keep SQLite write contention low. ``synced`` tells whether every
    record reached MLflow; if not, ``sync_journal`` can push the journal later. ``offline=True``
    journals only (tracking switched off), without a warning.
    """

    def __init__(self, uri: str, experiment: str, run_name: str, tags: Mapping[str, Any],
                 params: Mapping[str, Any], journal_path: Path, *,
                 artifact_root: str | Path | None = None,
                 provenance_info: Mapping[str, Any] | None = None,
                 flush_every: int = 500, flush_seconds: float = 30.0, fsync: bool = True,
                 offline: bool = False, start_time_ms: int | None = None) -> None:
        self.uri = uri
        # The run's start time (ms since the epoch): the job's real start when the caller
        # knows it (job_recorder: the process start), else when start() is called.
        self.start_time_ms = start_time_ms
        self.experiment = experiment
        self.run_name = run_name
        prov = provenance_info if provenance_info is not None else provenance()
        self.tags = {**provenance_tags(prov), **{k: str(v) for k, v in tags.items()}}
        self.params = flatten_params(params)
        self.journal_path = Path(journal_path)
        self.artifact_root = str(artifact_root) if artifact_root is not None else None
        self.journal_id = uuid.uuid4().hex
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._fsync = fsync
        self._journal: Journal | None = None
        self._client: Any = None
        self._run_id: str | None = None
        self._online = not offline
        self._warned = False
        self._pending: list[Any] = []  # mlflow.entities.Metric not yet sent
        self._last_flush = time.monotonic()
        self._finished = False
        self.error: str | None = None  # first MLflow error, if any

    # -- public ----------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def synced(self) -> bool:
        """True while every record so far has reached MLflow."""
        return self._online and self._run_id is not None

    def start(self) -> RunRecorder:
        """Open the journal, then create the MLflow run (idempotent)."""
        if self._journal is not None:
            return self
        self._journal = Journal(self.journal_path, fsync=self._fsync)
        opened_ms = _now_ms()
        start_ms = min(self.start_time_ms, opened_ms) if self.start_time_ms is not None else opened_ms
        self._journal.append({
            "type": "start", "format": JOURNAL_FORMAT, "journal_id": self.journal_id,
            "experiment": self.experiment, "run_name": self.run_name, "uri": self.uri,
            "artifact_root": self.artifact_root, "time_ms": start_ms, "opened_ms": opened_ms,
            "tags": self.tags, "params": self.params,
        })
        self._mlflow(lambda: self._create_run(start_ms))
        if self._run_id is not None:
            self._journal.append({"type": "mlflow_run", "run_id": self._run_id, "uri": self.uri})
        return self

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metrics (one step); sent to MLflow in batches."""
        self._require_open()
        ts = _now_ms()
        values = {k: float(v) for k, v in metrics.items()}
        assert self._journal is not None
        self._journal.append({"type": "metrics", "step": step, "time_ms": ts, "values": values})
        if self._online:
            from mlflow.entities import Metric  # offline (deferred) jobs never import mlflow

            self._pending.extend(Metric(k, v, ts, step or 0) for k, v in values.items())
            if (len(self._pending) >= self.flush_every
                    or time.monotonic() - self._last_flush >= self.flush_seconds):
                self.flush()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._require_open()
        strs = {k: str(v) for k, v in tags.items()}
        assert self._journal is not None
        self._journal.append({"type": "tags", "tags": strs})
        self._mlflow(lambda: self._send_tags(self._run_id, strs))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Record a file (figure, metrics JSON) as an artifact of the run."""
        self._require_open()
        p = Path(path).resolve()
        assert self._journal is not None
        self._journal.append({"type": "artifact", "path": str(p), "artifact_path": artifact_path,
                              "time_ms": _now_ms()})
        self._mlflow(lambda: _retrying(self._client.log_artifact, self._run_id, str(p),
                                      artifact_path))

    def flush(self) -> None:
        """Send buffered metrics now."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._mlflow(lambda: self._send_metrics(self._run_id, pending))

    def finish(self, status: str = "FINISHED") -> None:
        """Flush, close the journal with its final record and end the MLflow run. Idempotent."""
        if self._finished:
            return
        if self._journal is None:
            self.start()
        assert self._journal is not None
        self.flush()
        end_ms = _now_ms()
        if self._online:  # the complete-tag goes last, so its presence means nothing is missing
            self._mlflow(lambda: _retrying(self._client.set_tag, self._run_id, TAG_SYNCED, "true"))
            self._mlflow(lambda: _retrying(self._client.set_terminated, self._run_id, status,
                                          end_ms))
        self._journal.append({"type": "end", "status": status, "time_ms": end_ms,
                              "synced": self.synced, "error": self.error})
        self._journal.close()
        self._finished = True

    def __enter__(self) -> RunRecorder:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("FAILED" if exc_type is not None else "FINISHED")

    # -- internals ------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._journal is None:
            self.start()
        if self._finished:
            raise RuntimeError("run already finished")

    def _create_run(self, start_ms: int) -> None:
        exp_id = init_store(self.uri, self.experiment, self.artifact_root)
        self._client = _client(self.uri)
        # the journal id goes in with the run itself, so that even a run whose later calls fail
        # is found (and replaced) by sync_journal
        run = _retrying(self._client.create_run, exp_id, start_time=start_ms,
                        tags={TAG_JOURNAL_ID: self.journal_id}, run_name=self.run_name)
        self._run_id = run.info.run_id
        self._send_tags(self._run_id, self.tags)
        self._send_params(self._run_id, self.params)

    def _send_tags(self, run_id: str | None, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_TAGS_PER_BATCH):
            _retrying(self._client.log_batch, run_id, tags=chunk)

    def _send_params(self, run_id: str | None, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            _retrying(self._client.log_batch, run_id, params=chunk)

    def _send_metrics(self, run_id: str | None, metrics: list[Any]) -> None:
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            _retrying(self._client.log_batch, run_id, metrics=chunk)

    def _mlflow(self, call: Callable[[], Any]) -> None:
        """Run one MLflow operation (retried inside); on failure go journal-only for good.

        Staying offline after the first failure is what bounds a dead server's cost to one
        round of retries per job rather than one per call.
        """
        if not self._online:
            return
        try:
            call()
        except Exception as exc:
            self._go_offline(exc)

    def _go_offline(self, exc: BaseException) -> None:
        self._online = False
        self._pending = []
        self.error = f"{type(exc).__name__}: {exc}"[:2000]
        if self._journal is not None:
            self._journal.append({"type": "offline", "time_ms": _now_ms(), "error": self.error})
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"MLflow at {self.uri} is unavailable ({self.error[:300]}); run "
                f"{self.run_name!r} continues in its journal {self.journal_path} only. "
                f"Push it later with `ndm tracking-sync {self.journal_path}`.",
                TrackingUnavailableWarning, stacklevel=3)
