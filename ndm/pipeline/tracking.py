"""The thin MLflow layer: every train and evaluate job is an MLflow run, and a journal first.

MLflow is a record, not the source of truth (DESIGN.md section 7). So every call a job makes
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

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

JOURNAL_FORMAT = 1
TAG_JOURNAL_ID = "ndm.journal_id"
TAG_SYNCED = "ndm.journal_complete"  # set last: the MLflow run holds the whole journal
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


class TrackingUnavailableWarning(RuntimeWarning):
    """MLflow could not be reached; the run continues in its journal only."""


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


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def config_hash(obj: Any) -> str:
    """Stable 12-hex-digit hash of a config: sha256 of sorted-key, compact JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _default_device() -> str:
    try:
        import torch
    except ImportError:
        return "unknown"
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def provenance(device: str | None = None, repo_dir: Path | None = None) -> dict[str, Any]:
    """Where a result came from: code version, packages, machine. Stored in every result file.

    The git commit is looked up in the repository holding the ``ndm`` package, else the working
    directory's (or only ``repo_dir``'s); outside a git checkout it is "unknown" and
    ``git_dirty`` is None. ``git_dirty`` ignores untracked files.
    ``device`` defaults to the first CUDA device's name, else "cpu" (this imports torch).
    """
    candidates = [repo_dir] if repo_dir is not None else [Path(__file__).resolve().parent,
                                                          Path.cwd()]
    commit: str | None = None
    dirty: bool | None = None
    for where in candidates:
        commit = _git(["rev-parse", "HEAD"], where)
        if commit is not None:
            status = _git(["status", "--porcelain", "--untracked-files=no"], where)
            dirty = bool(status) if status is not None else None
            break
    return {
        "git_commit": commit or "unknown",
        "git_dirty": dirty,
        "versions": {"ndm": _version("ndm-bench"), "torch": _version("torch"),
                     "numpy": _version("numpy"), "mlflow": _version("mlflow")},
        "device": device if device is not None else _default_device(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def provenance_tags(prov: Mapping[str, Any]) -> dict[str, str]:
    """Provenance as flat MLflow tags: ``git_commit``, ``ndm.git_dirty``, ``ndm.version.torch``."""
    tags = {"git_commit": str(prov.get("git_commit", "unknown"))}
    for key, value in prov.items():
        if key == "git_commit" or value is None:
            continue
        if isinstance(value, Mapping):
            for k, v in value.items():
                tags[f"ndm.{key.rstrip('s')}.{k}"] = str(v)
        else:
            tags[f"ndm.{key}"] = str(value)
    return tags


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
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_root))
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


# --------------------------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------------------------


class Journal:
    """Append-only JSONL file; each record is flushed and fsync'd before MLflow sees it."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._f = open(self.path, "w", encoding="utf-8")  # a rerun of the job starts afresh

    def append(self, record: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(record, default=str, allow_nan=True) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """All complete records of a journal (a torn last line from a crash is ignored)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    if not records or records[0].get("type") != "start":
        raise ValueError(f"{path} is not an ndm tracking journal")
    return records


def journal_summary(path: Path) -> dict[str, Any]:
    """journal_id, experiment, run_name, finished, status, synced (live), run_id, n_metrics."""
    recs = read_journal(path)
    start = recs[0]
    end = next((r for r in reversed(recs) if r["type"] == "end"), None)
    run = next((r for r in recs if r["type"] == "mlflow_run"), None)
    return {
        "journal_id": start["journal_id"],
        "experiment": start["experiment"],
        "run_name": start["run_name"],
        "finished": end is not None,
        "status": end["status"] if end else "RUNNING",
        "synced": bool(end and end.get("synced")),
        "run_id": run["run_id"] if run else None,
        "n_metrics": sum(len(r["values"]) for r in recs if r["type"] == "metrics"),
    }


# --------------------------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------------------------


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
                 offline: bool = False) -> None:
        self.uri = uri
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
        start_ms = _now_ms()
        self._journal.append({
            "type": "start", "format": JOURNAL_FORMAT, "journal_id": self.journal_id,
            "experiment": self.experiment, "run_name": self.run_name, "uri": self.uri,
            "artifact_root": self.artifact_root, "time_ms": start_ms,
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


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------


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
