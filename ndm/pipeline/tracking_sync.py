"""Replaying a journal into an MLflow store (``ndm tracking-sync``), idempotently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ndm.pipeline.tracking_journal import read_journal
from ndm.pipeline.tracking_store import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
    TAG_JOURNAL_ID,
    TAG_SYNCED,
    _chunks,
    _client,
    _retrying,
    init_store,
)


def _find_runs(client: Any, exp_id: str, journal_id: str) -> list[Any]:
    from mlflow.entities import ViewType

    return list(client.search_runs(
        [exp_id], filter_string=f"tags.`{TAG_JOURNAL_ID}` = '{journal_id}'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=100))


def sync_journal(journal_path: Path, uri: str, artifact_root: str | Path | None = None,
                 allow_unfinished: bool = False) -> str:
    """Replay a journal into the store at ``uri``; return the MLflow run id. Idempotent.

    If the store already holds a complete run for this journal (tag ndm.journal_complete), its
    id is returned and nothing is written. A partial run (the job lost MLflow half-way) is
    deleted and rebuilt from the journal, so the result is the same whether the job was online,
    offline, or in between. A journal without an end record belongs to a job that is still
    running (whose live run must not be replaced) or was killed; it is refused unless
    ``allow_unfinished``, and then replayed as a RUNNING run.
    """
    recs = read_journal(Path(journal_path))
    start = recs[0]
    if not allow_unfinished and not any(r["type"] == "end" for r in recs):
        raise ValueError(f"{journal_path} has no end record (job running or killed); "
                         "pass allow_unfinished=True to replay it anyway")
    exp_id = init_store(uri, start["experiment"], artifact_root)
    client = _client(uri)
    for run in _retrying(_find_runs, client, exp_id, start["journal_id"]):
        if run.data.tags.get(TAG_SYNCED) == "true":
            return str(run.info.run_id)
        _retrying(client.delete_run, run.info.run_id)
    return _replay(client, exp_id, recs)


def _replay(client: Any, exp_id: str, recs: list[dict[str, Any]]) -> str:
    from mlflow.entities import Metric, Param, RunTag

    start = recs[0]
    run = _retrying(client.create_run, exp_id, start_time=start["time_ms"],
                    tags={TAG_JOURNAL_ID: start["journal_id"]}, run_name=start["run_name"])
    run_id = run.info.run_id
    tags = dict(start["tags"])
    metrics: list[Any] = []
    end: dict[str, Any] | None = None
    missing: list[str] = []
    for r in recs[1:]:
        if r["type"] == "metrics":
            metrics.extend(Metric(k, float(v), r["time_ms"], r["step"] or 0)
                           for k, v in r["values"].items())
        elif r["type"] == "tags":
            tags.update(r["tags"])
        elif r["type"] == "artifact":
            if Path(r["path"]).exists():
                _retrying(client.log_artifact, run_id, r["path"], r["artifact_path"])
            else:
                missing.append(r["path"])
        elif r["type"] == "end":
            end = r
    if missing:
        tags["ndm.missing_artifacts"] = json.dumps(missing)[:5000]
    for tag_chunk in _chunks([RunTag(k, str(v)) for k, v in tags.items()], MAX_TAGS_PER_BATCH):
        _retrying(client.log_batch, run_id, tags=tag_chunk)
    params = [Param(k, v) for k, v in start["params"].items()]
    for param_chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
        _retrying(client.log_batch, run_id, params=param_chunk)
    for metric_chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
        _retrying(client.log_batch, run_id, metrics=metric_chunk)
    _retrying(client.set_tag, run_id, TAG_SYNCED, "true")
    if end is not None:
        _retrying(client.set_terminated, run_id, end["status"], end["time_ms"])
    return str(run_id)
