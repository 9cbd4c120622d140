"""The MLflow side of tracking: where runs go (URIs), the client, retries on transient errors,
and the one-time, lock-serialised store initialisation. MLflow itself is imported only when a
client is made, so journal-only (deferred) jobs never pay for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TAG_JOURNAL_ID = "ndm.journal_id"
TAG_SYNCED = "ndm.journal_complete"  # set last: the MLflow run holds the whole journal
# MLflow 3's UI opens an experiment by its kind: without this tag it guesses, and an experiment
# of training runs may open on the empty GenAI overview. The tag and value are the ones the
# installed UI defines (mlflow 3.17: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT); MLflow 2 ignores it.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DEFAULT_DB_NAME = "mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"

# MLflow's HTTP defaults (7 retries with backoff factor 2, 120 s timeout) make a dead server cost
# minutes per call. These apply to our calls only, unless the user set them in the environment.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
}
# Our own retry schedules (attempts, first delay in s; the delay doubles, with jitter).
RETRY_LOCKED = (7, 0.2)  # SQLite busy: transient, worth ~25 s (plus sqlite's own 5 s waits)
RETRY_NETWORK = (2, 1.0)  # refused or timed out: one more try, then give up on this run
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


def resolve_tracking_uri(config_uri: str | None, results_dir: Path) -> str:
    """The tracking URI a job uses: the config's value, else MLFLOW_TRACKING_URI, else SQLite.

    The SQLite default is an absolute ``sqlite:////.../results/mlflow.db`` so that jobs started
    from any working directory (SLURM jobs included) write to the same store.
    """
    if config_uri:
        return config_uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return "sqlite:///" + str((Path(results_dir) / DEFAULT_DB_NAME).resolve())


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///relative.db`` or ``sqlite:////abs.db`` URI."""
    if not uri.startswith("sqlite:///"):
        raise ValueError(f"not a file-backed SQLite URI: {uri!r}")
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


def default_artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go next to it (results/mlartifacts); a server decides itself.

    MLflow's own default for SQLite is ./mlruns relative to whatever the working directory is,
    which scatters artifacts; hence an explicit location.
    """
    if is_sqlite(uri):
        return str((sqlite_path(uri).parent / DEFAULT_ARTIFACT_DIR).resolve())
    return None


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------------------------
# Error handling
# --------------------------------------------------------------------------------------------


def _error_kind(exc: BaseException) -> str:
    """'locked' (SQLite busy), 'network' (server unreachable/overloaded) or 'fatal'."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if "database is locked" in text or "database table is locked" in text or "sqlite_busy" in text:
        return "locked"
    network = ("connectionerror", "connection refused", "max retries exceeded", "timed out",
               "timeout", "temporarily unavailable", "name or service not known",
               "failed to establish", "remote end closed", "connection reset", "bad gateway",
               "service unavailable", "gateway time", "too many 5", "502", "503", "504")
    if isinstance(exc, (ConnectionError, TimeoutError)) or any(n in text for n in network):
        return "network"
    return "fatal"


@contextlib.contextmanager
def _http_limits() -> Iterator[None]:
    """Short HTTP timeouts and no MLflow-internal retries, for the duration of one call."""
    saved = {k: os.environ.get(k) for k in HTTP_LIMITS}
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)


def _retrying(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` with backoff on transient errors (SQLite busy, network).

    Other errors, and the last transient one, are raised.
    """
    attempt = 0
    while True:
        try:
            with _http_limits():
                return call(*args, **kwargs)
        except Exception as exc:  # MLflow wraps everything in MlflowException
            kind = _error_kind(exc)
            attempts, delay = {"locked": RETRY_LOCKED, "network": RETRY_NETWORK}.get(kind, (1, 0.0))
            attempt += 1
            if attempt >= attempts:
                raise
            time.sleep(delay * 2 ** (attempt - 1) * (0.5 + random.random()))


# --------------------------------------------------------------------------------------------
# Store initialisation
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Exclusive lock next to a SQLite file (no-op for servers, which serialise themselves)."""
    if not is_sqlite(uri):
        yield
        return
    db = sqlite_path(uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _get_or_create_experiment(client: Any, name: str, artifact_root: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if TAG_EXPERIMENT_KIND not in (exp.tags or {}):  # a store made before the tag: set it, never override a user's kind
            client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_root, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}))
    except Exception as exc:  # created by a concurrent job (server stores): use theirs
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def init_store(uri: str, experiment_name: str, artifact_root: str | Path | None = None,
               wal: bool = True) -> str:
    """Create the store's schema and the experiment once; return the experiment id. Idempotent.

    For SQLite it holds a file lock while MLflow creates or checks the schema (so concurrent
    first use cannot corrupt it) and switches the database to WAL journaling (``wal``), which
    lets readers and one writer proceed concurrently; WAL needs a local, not a network, file
    system. ``artifact_root`` defaults to ``default_artifact_root(uri)``.
    """
    root = str(artifact_root) if artifact_root is not None else default_artifact_root(uri)
    with _store_lock(uri):
        client = _retrying(_client, uri)
        if is_sqlite(uri) and wal:
            _retrying(_set_wal, sqlite_path(uri))
        return _retrying(_get_or_create_experiment, client, experiment_name, root)


def _set_wal(db: Path) -> None:
    import sqlite3

    con = sqlite3.connect(db, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()
