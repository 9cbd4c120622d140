"""ndm.pipeline.tracking against a real MLflow: SQLite stores, a real ``mlflow server``, a dead server.

Nothing is mocked. Servers are started on 127.0.0.1 with a free port by the tests and stopped
by them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from ndm.pipeline import tracking as tr

PROV = {"git_commit": "0" * 40, "git_dirty": False, "versions": {"torch": "x"}, "device": "cpu",
        "hostname": "h", "python": "3", "platform": "p", "slurm_job_id": None}
DEAD_SERVER_BUDGET_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sqlite_uri(d: Path) -> str:
    return tr.resolve_tracking_uri(None, d)


@pytest.fixture(scope="session")
def schema_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with the schema created once (migrations take seconds)."""
    d = tmp_path_factory.mktemp("schema")
    MlflowClient(_sqlite_uri(d))  # creating the store runs the migrations
    return d / "mlflow.db"


@pytest.fixture
def store(schema_db: Path, tmp_path: Path) -> str:
    """URI of a fresh SQLite store under tmp_path/results (a copy of the schema-only DB)."""
    (tmp_path / "results").mkdir()
    shutil.copyfile(schema_db, tmp_path / "results" / "mlflow.db")
    return _sqlite_uri(tmp_path / "results")


def _runs(uri: str, experiment: str) -> list:  # type: ignore[type-arg]
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None
    return list(c.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                              max_results=1000))


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def _our_warnings(rec: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in rec if issubclass(w.category, tr.TrackingUnavailableWarning)]


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def test_config_hash_is_stable_and_sensitive() -> None:
    a = {"model": {"channels": 64, "dropout": 0.1}, "seed": 0, "paths": [Path("x")]}
    b = {"seed": 0, "paths": [Path("x")], "model": {"dropout": 0.1, "channels": 64}}
    assert tr.config_hash(a) == tr.config_hash(b)
    assert len(tr.config_hash(a)) == 12 and int(tr.config_hash(a), 16) >= 0
    assert tr.config_hash(a) != tr.config_hash({**a, "seed": 1})
    assert tr.config_hash({}) == "44136fa355b3"  # sha256("{}"): the hash must not drift


def test_flatten_params() -> None:
    flat = tr.flatten_params({"model": {"ch": 64, "mult": [1, 2]}, "lr": 1e-3, "name": None})
    assert flat == {"model.ch": "64", "model.mult": "[1, 2]", "lr": "0.001", "name": "None"}


def test_resolve_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tr.resolve_tracking_uri(None, tmp_path / "results")
    assert uri == f"sqlite:///{(tmp_path / 'results' / 'mlflow.db').resolve()}"
    assert tr.sqlite_path(uri) == (tmp_path / "results" / "mlflow.db").resolve()
    assert tr.default_artifact_root(uri) == str((tmp_path / "results" / "mlartifacts").resolve())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tr.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:1"
    assert tr.resolve_tracking_uri("http://cfg:5000", tmp_path) == "http://cfg:5000"
    assert tr.default_artifact_root("http://cfg:5000") is None


def test_provenance(tmp_path: Path) -> None:
    p = tr.provenance(device="cpu")
    repo = Path(tr.__file__).resolve().parents[1]
    if (repo / ".git").exists():
        assert len(p["git_commit"]) == 40 and isinstance(p["git_dirty"], bool)
    assert p["versions"]["mlflow"] != "not installed" and p["device"] == "cpu"
    assert p["python"].count(".") == 2 and p["hostname"]
    outside = tr.provenance(device="cpu", repo_dir=tmp_path)
    assert outside["git_commit"] == "unknown" and outside["git_dirty"] is None
    tags = tr.provenance_tags(p)
    assert tags["git_commit"] == p["git_commit"]
    assert tags["ndm.version.torch"] == p["versions"]["torch"]


def test_read_journal_ignores_torn_last_line(tmp_path: Path) -> None:
    j = tmp_path / "j.jsonl"
    rec = tr.RunRecorder("http://127.0.0.1:1", "e", "r", {}, {}, j, provenance_info=PROV,
                         offline=True)
    rec.start()
    rec.log_metrics({"a": 1.0}, step=1)
    rec.finish()
    with open(j, "a") as f:
        f.write('{"type": "metrics", "step": 2, "val')  # a crash mid-write
    s = tr.journal_summary(j)
    assert s["finished"] and s["n_metrics"] == 1 and not s["synced"]


# ---------------------------------------------------------------------------------------------
# SQLite store
# ---------------------------------------------------------------------------------------------


def test_init_store_is_idempotent(tmp_path: Path) -> None:
    uri = _sqlite_uri(tmp_path)
    e1 = tr.init_store(uri, "exp")
    e2 = tr.init_store(uri, "exp")
    assert e1 == e2
    exp = MlflowClient(uri).get_experiment(e1)
    assert exp.artifact_location == str((tmp_path / "mlartifacts").resolve())
    assert tr.init_store(uri, "other") != e1


def test_recorder_round_trip_sqlite(store: str, tmp_path: Path) -> None:
    uri = store
    fig = tmp_path / "loss.png"
    fig.write_bytes(b"\x89PNG fake")
    tags = {"dataset": "digits", "variant": "ndm", "seed": 3, "config_hash": "abc123abc123"}
    params = {"model": {"channels": 8}, "lr": 0.002}
    with warnings.catch_warnings(record=True) as rec_w:
        warnings.simplefilter("always")
        with tr.RunRecorder(uri, "smoke", "train-digits-ndm-3", tags, params,
                            tmp_path / "train.jsonl", provenance_info=PROV, flush_every=4) as rec:
            for step in range(10):
                rec.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.002}, step=step)
            rec.log_metrics({"bpd": 1.25})
            rec.log_artifact(fig, "figures")
    assert not _our_warnings(rec_w)
    assert rec.synced and rec.run_id
    run = MlflowClient(uri).get_run(rec.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-digits-ndm-3"
    assert run.data.params == {"model.channels": "8", "lr": "0.002"}
    for k, v in {"dataset": "digits", "variant": "ndm", "seed": "3", "config_hash": "abc123abc123",
                 "git_commit": "0" * 40, tr.TAG_SYNCED: "true"}.items():
        assert run.data.tags[k] == v
    assert _history(uri, rec.run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(10)]
    assert run.data.metrics["bpd"] == 1.25
    arts = MlflowClient(uri).list_artifacts(rec.run_id, "figures")
    assert [a.path for a in arts] == ["figures/loss.png"]
    summary = tr.journal_summary(tmp_path / "train.jsonl")
    assert summary["synced"] and summary["run_id"] == rec.run_id and summary["n_metrics"] == 21
    # a complete live run is not duplicated by a later sync
    assert tr.sync_journal(tmp_path / "train.jsonl", uri) == rec.run_id
    assert len(_runs(uri, "smoke")) == 1


def test_recorder_marks_failed_run(store: str, tmp_path: Path) -> None:
    uri = store
    with pytest.raises(ZeroDivisionError):
        with tr.RunRecorder(uri, "e", "r", {}, {}, tmp_path / "j.jsonl",
                            provenance_info=PROV) as rec:
            rec.log_metrics({"loss": 1.0}, step=0)
            1 / 0  # noqa: B018
    assert MlflowClient(uri).get_run(rec.run_id).info.status == "FAILED"
    assert tr.journal_summary(tmp_path / "j.jsonl")["status"] == "FAILED"


def _parallel_worker(uri: str, i: int, steps: int, out: Path, barrier: Any) -> None:
    """One evaluate-like job: its own process, its own run, many small batches."""
    prov = {"git_commit": "w", "device": "cpu"}
    barrier.wait(timeout=120)  # all workers hit the store at the same moment
    with warnings.catch_warnings(record=True) as rec_w:
        warnings.simplefilter("always")
        with tr.RunRecorder(uri, "parallel", f"eval-{i}", {"seed": i}, {"i": i},
                            out / f"j{i}.jsonl", provenance_info=prov, flush_every=6) as rec:
            for s in range(steps):
                rec.log_metrics({"a": s, "b": i, "c": s * i}, step=s)
            rec.log_metrics({"final": float(i)})
    result = {"synced": rec.synced, "error": rec.error, "warnings": len(_our_warnings(rec_w))}
    (out / f"result{i}.json").write_text(json.dumps(result))


@pytest.mark.parametrize("pre_init", [True, False], ids=["initialised", "fresh"])
def test_parallel_processes_lose_no_run(pre_init: bool, store: str, tmp_path: Path) -> None:
    """>= 8 processes logging to one SQLite store at once: all runs, all points.

    "initialised" is the pipeline's way (``ndm tracking-init`` in Snakemake's onstart).
    "fresh" has no initialisation at all: plain MLflow clients racing on a new file fail with
    "table experiments already exists"; init_store's file lock must prevent that.
    forkserver (not fork: no SQLite connection may cross a fork) with mlflow preloaded, so the
    eight processes do not each spend seconds importing it.
    """
    n, steps = 8, 30
    if pre_init:
        uri = store
        tr.init_store(uri, "parallel")
    else:
        uri = _sqlite_uri(tmp_path / "fresh")
        assert not tr.sqlite_path(uri).exists()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ndm.pipeline.tracking", "mlflow.entities", "mlflow.tracking",
                                "mlflow.store.tracking.sqlalchemy_store"])
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_parallel_worker, args=(uri, i, steps, tmp_path, barrier))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * n
    for i in range(n):
        result = json.loads((tmp_path / f"result{i}.json").read_text())
        assert result == {"synced": True, "error": None, "warnings": 0}, result
    runs = _runs(uri, "parallel")
    assert sorted(r.info.run_name for r in runs) == sorted(f"eval-{i}" for i in range(n))
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        i = int(r.data.params["i"])
        assert _history(uri, r.info.run_id, "a") == [(s, float(s)) for s in range(steps)]
        assert _history(uri, r.info.run_id, "c") == [(s, float(s * i)) for s in range(steps)]
        assert r.data.metrics["final"] == float(i)
        assert tr.journal_summary(tmp_path / f"j{i}.jsonl")["n_metrics"] == 3 * steps + 1


# ---------------------------------------------------------------------------------------------
# MLflow server over HTTP
# ---------------------------------------------------------------------------------------------


class MlflowServer:
    """``mlflow server`` on 127.0.0.1:port in its own process group, stopped by ``stop``."""

    def __init__(self, root: Path, schema_db: Path, port: int | None = None) -> None:
        self.root = root
        self.schema_db = schema_db
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "server.db").exists():  # skip the server's own slow migrations
            shutil.copyfile(self.schema_db, self.root / "server.db")
        # no background job runner (it forks a pool of workers this test does not need)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout_s} s: "
                           f"{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory,
                  schema_db: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), schema_db).start()
    try:
        yield server
    finally:
        server.stop()
    with pytest.raises(OSError):  # really gone
        urllib.request.urlopen(f"{server.uri}/health", timeout=2)


def test_recorder_over_http(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    art = tmp_path / "samples.json"
    art.write_text(json.dumps({"fid": 12.5}))
    with tr.RunRecorder(mlflow_server.uri, "cluster", "eval-cifar-vdm-0",
                        {"dataset": "cifar10", "variant": "vdm", "seed": 0},
                        {"sampler": "ddim", "steps": 50}, tmp_path / "eval.jsonl",
                        provenance_info=PROV) as rec:
        for s in range(5):
            rec.log_metrics({"nll": 3.0 - 0.1 * s}, step=s)
        rec.log_artifact(art)
    assert rec.synced
    c = MlflowClient(mlflow_server.uri)
    run = c.get_run(rec.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"sampler": "ddim", "steps": "50"}
    assert run.data.tags["dataset"] == "cifar10" and run.data.tags["seed"] == "0"
    assert _history(mlflow_server.uri, rec.run_id, "nll") == [(s, 3.0 - 0.1 * s) for s in range(5)]
    assert [a.path for a in c.list_artifacts(rec.run_id)] == ["samples.json"]
    assert json.loads(Path(c.download_artifacts(rec.run_id, "samples.json", str(tmp_path / "dl")))
                      .read_text()) == {"fid": 12.5}


def test_dead_server_costs_seconds_and_journal_syncs_later(store: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    fig = tmp_path / "fig.png"
    fig.write_bytes(b"png")
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as rec_w:
        warnings.simplefilter("always")
        with tr.RunRecorder(dead, "smoke", "train-toy2d-ddpm-0", {"dataset": "toy2d"},
                            {"lr": 0.01}, tmp_path / "train.jsonl", provenance_info=PROV,
                            flush_every=3) as rec:
            for s in range(20):
                rec.log_metrics({"loss": float(s)}, step=s)
            rec.log_artifact(fig)
    elapsed = time.monotonic() - t0
    assert elapsed < DEAD_SERVER_BUDGET_S, elapsed
    assert len(_our_warnings(rec_w)) == 1
    assert not rec.synced and rec.error and "127.0.0.1" in rec.error
    s = tr.journal_summary(tmp_path / "train.jsonl")
    assert s == {**s, "finished": True, "status": "FINISHED", "synced": False, "run_id": None,
                 "n_metrics": 20}
    # later, `ndm tracking-sync` pushes the journal into a live store, once
    uri = store
    run_id = tr.sync_journal(tmp_path / "train.jsonl", uri)
    assert tr.sync_journal(tmp_path / "train.jsonl", uri) == run_id
    runs = _runs(uri, "smoke")
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.01"}
    assert run.data.tags["dataset"] == "toy2d"
    assert _history(uri, run_id, "loss") == [(s, float(s)) for s in range(20)]
    assert [a.path for a in MlflowClient(uri).list_artifacts(run_id)] == ["fig.png"]


def test_server_dying_mid_run_then_partial_run_is_rebuilt(mlflow_server: MlflowServer,
                                                           tmp_path: Path) -> None:
    server = mlflow_server
    with warnings.catch_warnings(record=True) as rec_w:
        warnings.simplefilter("always")
        with tr.RunRecorder(server.uri, "dying", "r", {}, {"p": 1}, tmp_path / "j.jsonl",
                            provenance_info=PROV, flush_every=5) as rec:
            for s in range(5):
                rec.log_metrics({"loss": float(s)}, step=s)  # 5th point flushes: online
            assert rec.synced
            server.stop()
            try:
                for s in range(5, 12):
                    rec.log_metrics({"loss": float(s)}, step=s)
            finally:
                server.start()  # same port, same store: back again (for the sync below)
    assert len(_our_warnings(rec_w)) == 1 and not rec.synced
    partial_id = rec.run_id
    assert tr.journal_summary(tmp_path / "j.jsonl")["n_metrics"] == 12
    assert len(_history(server.uri, partial_id, "loss")) == 5  # what got through
    run_id = tr.sync_journal(tmp_path / "j.jsonl", server.uri)
    assert run_id != partial_id
    assert [r.info.run_id for r in _runs(server.uri, "dying")] == [run_id]  # partial deleted
    assert _history(server.uri, run_id, "loss") == [(s, float(s)) for s in range(12)]
    assert tr.sync_journal(tmp_path / "j.jsonl", server.uri) == run_id


def test_sync_refuses_unfinished_journal(store: str, tmp_path: Path) -> None:
    rec = tr.RunRecorder("http://127.0.0.1:1", "e", "r", {}, {}, tmp_path / "j.jsonl",
                         provenance_info=PROV, offline=True)
    rec.start()
    rec.log_metrics({"a": 1.0}, step=0)  # no finish: the job is still running (or was killed)
    uri = store
    with pytest.raises(ValueError, match="no end record"):
        tr.sync_journal(tmp_path / "j.jsonl", uri)
    run_id = tr.sync_journal(tmp_path / "j.jsonl", uri, allow_unfinished=True)
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    rec.finish()


DEFERRED_JOB = r"""
import json, sys
from pathlib import Path
from ndm.pipeline.tracking_jobs import job_recorder
results = Path(sys.argv[1])
config = {"experiment": "deferred", "results": str(results), "tracking_mode": "deferred"}
for name in ("train", "likelihood"):
    with job_recorder(kind=name, config=config, run=None, journal_path=results / f"{name}.mlflow_journal.jsonl",
                      extra_tags={"dataset": "toy2d", "variant": "ddpm", "seed": 0}) as rec:
        for s in range(5):
            rec.log_metrics({"loss": float(s)}, step=s)
print(json.dumps({"mlflow_imported": any(m == "mlflow" or m.startswith("mlflow.") for m in sys.modules)}))
"""


def test_deferred_jobs_journal_only_and_one_sync_pushes_them(store: str, tmp_path: Path) -> None:
    """tracking_mode deferred: a job never imports MLflow nor touches the store; `ndm
    tracking-sync --under` (the DAG's sync_tracking rule) then pushes every journal, once."""
    results = tmp_path / "results"
    before = (results / "mlflow.db").read_bytes()
    job = subprocess.run([sys.executable, "-c", DEFERRED_JOB, str(results)], capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    assert json.loads(job.stdout.strip().splitlines()[-1]) == {"mlflow_imported": False}
    assert (results / "mlflow.db").read_bytes() == before  # the store untouched
    for name in ("train", "likelihood"):
        s = tr.journal_summary(results / f"{name}.mlflow_journal.jsonl")
        assert s["finished"] and s["status"] == "FINISHED" and not s["synced"] and s["n_metrics"] == 5

    summary = tmp_path / "sync.json"
    cmd = [sys.executable, "-m", "ndm", "tracking-sync", "--under", str(results), "--summary", str(summary)]
    for _ in range(2):  # idempotent: the second push finds the complete runs
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    pushed = json.loads(summary.read_text())["runs"]
    assert len(pushed) == 2
    runs = _runs(store, "deferred")
    assert sorted(r.info.run_id for r in runs) == sorted(pushed.values())
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["variant"] == "ddpm"
        assert _history(store, r.info.run_id, "loss") == [(s, float(s)) for s in range(5)]
    missing = subprocess.run([sys.executable, "-m", "ndm", "tracking-sync", "--under", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "not a directory" in missing.stderr


def test_unknown_tracking_mode_is_refused() -> None:
    from ndm.pipeline.tracking_jobs import tracking_mode

    assert tracking_mode({}) == "live"
    with pytest.raises(ValueError, match="tracking_mode must be one of"):
        tracking_mode({"tracking_mode": "later"})
