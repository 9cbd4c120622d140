"""Fault injection (issue 7): preemption, crashes, corrupt files, bad input, dead MLflow.

Nothing is mocked: training runs in real `ndm train` processes killed with real signals,
checkpoints are really truncated, MLflow is a real SQLite store, and a dead server is a free
port on 127.0.0.1 that nobody listens on. Bitwise comparisons hold on CPU because every run
uses one thread (config train.num_threads and the env below) and the same training code.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ndm.pipeline import tracking
from ndm.pipeline.checkpoint import CheckpointError
from ndm.cli.main import main
from ndm.pipeline.config import RunConfig, load_yaml, resolve_run_config
from ndm.pipeline.results import write_result_json
from ndm.pipeline.tracking_jobs import JOURNAL_NAME, job_recorder
from ndm.pipeline.errors import PREEMPTED_EXIT_CODE, Preempted, TrainingDiverged
from ndm.pipeline.train import CHECKPOINT, METRICS, MODEL, SUMMARY, load_trained_model, load_training_data, train

NDM_SCRIPT = Path(sys.executable).with_name("ndm")  # the console script SLURM jobs run
STEPS = 100
LOG_EVERY = 2
CHECKPOINT_EVERY = 10
PROC_TIMEOUT_S = 240.0


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def write_config(path: Path, results: Path, **train_overrides: Any) -> Path:
    """A tiny pipeline config: toy2d with an MLP (about 30 ms a step for ndm on one core)."""
    train_cfg = {"steps": STEPS, "batch_size": 32, "lr": 1e-3, "warmup_steps": 5,
                 "checkpoint_every": CHECKPOINT_EVERY, "log_every": LOG_EVERY, "device": "cpu",
                 "num_threads": 1, **train_overrides}
    config = {
        "experiment": "reliability",
        "results": str(results),
        "defaults": {"train": train_cfg},
        "datasets": {
            "toy2d": {"data": {"name": "toy2d", "options": {"n_train": 512, "n_test": 64}},
                      "model": {"network": {"kind": "mlp", "hidden": 32, "depth": 1}}},
            "mnist": {"data": {"name": "mnist", "root": str(path.parent / "no-such-data-root")},
                      "model": {"network": {"kind": "unet", "channels": 8, "channel_mult": [1],
                                            "num_res_blocks": 1, "attn_resolutions": []}}},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_config(config_path: Path, variant: str, dataset: str = "toy2d") -> RunConfig:
    return resolve_run_config(load_yaml(config_path), dataset, variant, 0)


def train_argv(config: Path, out: Path, variant: str, *extra: str) -> list[str]:
    return ["train", "--config", str(config), "--dataset", "toy2d", "--variant", variant,
            "--seed", "0", "--out", str(out), *extra]


def child_env() -> dict[str, str]:
    """One BLAS/OpenMP thread (bitwise reproducibility, and 2 shared cores); no inherited URIs."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def ndm_command(argv: list[str]) -> list[str]:
    if NDM_SCRIPT.exists():
        return [str(NDM_SCRIPT), *argv]
    return [sys.executable, "-c", "import sys; from ndm.cli.main import main; sys.exit(main())", *argv]


def spawn_ndm(argv: list[str], log: Path) -> subprocess.Popen:
    f = open(log, "w")  # noqa: SIM115 - closed by the child's exit; the test reads the file
    return subprocess.Popen(ndm_command(argv), stdout=f, stderr=subprocess.STDOUT, env=child_env(),
                            stdin=subprocess.DEVNULL)


def run_ndm(argv: list[str], log: Path) -> int:
    proc = spawn_ndm(argv, log)
    return proc.wait(timeout=PROC_TIMEOUT_S)


def metric_steps(path: Path) -> list[int]:
    """Steps in metrics.jsonl (a torn last line of a live writer is skipped)."""
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass
    return steps


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, log: Path, need_checkpoint: bool) -> None:
    """Block until the job has logged `step` (and written a checkpoint, if asked)."""
    deadline = time.monotonic() + PROC_TIMEOUT_S
    while time.monotonic() < deadline:
        steps = metric_steps(out / METRICS)
        if steps and steps[-1] >= step and (not need_checkpoint or (out / CHECKPOINT).exists()):
            return
        if proc.poll() is not None:
            pytest.fail(f"job exited ({proc.returncode}) before step {step}:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"job did not reach step {step} in {PROC_TIMEOUT_S} s")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality of nested state (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ (max |diff| {(a.double() - b.double()).abs().max()})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(map(str, a)) == sorted(map(str, b)), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training(out: Path, ref: Path) -> None:
    """Final EMA and raw weights, optimizer state and training curve equal the reference's."""
    got, want = load(out / MODEL), load(ref / MODEL)
    for key in ("ema", "model"):
        assert_identical(got[key], want[key], f"model.pt[{key}]")
    assert_identical(load(out / CHECKPOINT)["optimizer"], load(ref / CHECKPOINT)["optimizer"], "optimizer")
    curve = [json.loads(x) for x in (out / METRICS).read_text().splitlines()]
    ref_curve = [json.loads(x) for x in (ref / METRICS).read_text().splitlines()]
    assert [r["step"] for r in curve] == [r["step"] for r in ref_curve], "training curve has gaps or repeats"
    for got_r, want_r in zip(curve, ref_curve):
        assert got_r["loss_bpd"] == want_r["loss_bpd"], (got_r, want_r)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_runs(uri: str, experiment: str = "reliability") -> list:  # type: ignore[type-arg]
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000))


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite file with the schema created once (migrations take seconds)."""
    d = tmp_path_factory.mktemp("schema")
    tracking.init_store(tracking.resolve_tracking_uri(None, d), "reliability")
    return d / tracking.DEFAULT_DB_NAME


def results_with_store(schema_db: Path, tmp_path: Path) -> tuple[Path, str]:
    """tmp_path/results holding a ready SQLite store (what `ndm tracking-init` leaves)."""
    results = tmp_path / "results"
    results.mkdir(parents=True)
    shutil.copyfile(schema_db, results / tracking.DEFAULT_DB_NAME)
    return results, tracking.resolve_tracking_uri(None, results)


class References:
    """Uninterrupted in-process runs, one per (variant, train overrides), made on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: dict[str, Path] = {}

    def get(self, variant: str, **train_overrides: Any) -> Path:
        key = json.dumps([variant, train_overrides], sort_keys=True)
        if key not in self._done:
            d = self.root / f"ref{len(self._done)}"
            d.mkdir()
            cfg = write_config(d / "config.yaml", d / "results", **train_overrides)
            train(run_config(cfg, variant), d / "out", progress=False)
            self._done[key] = d / "out"
        return self._done[key]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> References:
    return References(tmp_path_factory.mktemp("references"))


@pytest.fixture
def no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


# ---------------------------------------------------------------------------------------------
# Kills and preemption (real processes, real signals)
# ---------------------------------------------------------------------------------------------


def test_sigkill_mid_training_then_rerun_is_bitwise_identical(tmp_path: Path, references: References) -> None:
    """SIGKILL at a random step after the first checkpoint; the rerun resumes and ends equal."""
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results")
    out, log = tmp_path / "job", tmp_path / "job.log"
    kill_after = random.randint(CHECKPOINT_EVERY + 1, STEPS // 2)
    argv = train_argv(cfg, out, "ndm", "--no-tracking")  # progress bar on, as in a SLURM job
    proc = spawn_ndm(argv, log)
    wait_for_step(out, kill_after, proc, log, need_checkpoint=True)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    ckpt_step = int(load(out / CHECKPOINT)["step"])
    assert 0 < ckpt_step < STEPS and not (out / MODEL).exists(), (kill_after, ckpt_step)

    assert run_ndm(argv, log) == 0, log.read_text()[-3000:]
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["resumed_from"] == ckpt_step, (kill_after, summary)
    assert_same_training(out, references.get("ndm"))
    prov = summary["provenance"]
    assert len(prov["git_commit"]) == 40 and prov["versions"]["torch"] == torch.__version__.split("+")[0]
    assert prov["device"] == "cpu" and summary["config_hash"] == run_config(cfg, "ndm").hash()


def test_resumed_job_closes_the_killed_run_and_logs_the_whole_curve(tmp_path: Path, schema_db: Path) -> None:
    """What a SIGKILL leaves (a RUNNING MLflow run, a journal without an end record) is repaired.

    The killed attempt is reproduced in-process: a recorder that is never finished, exactly the
    state on disk and in the store that a killed process leaves.
    """
    results, uri = results_with_store(schema_db, tmp_path)
    config = load_yaml(write_config(tmp_path / "config.yaml", results))
    run = resolve_run_config(config, "toy2d", "vdm-fixed", 0)
    out = tmp_path / "job"
    killed = job_recorder(kind="train", config=config, run=run, journal_path=out / JOURNAL_NAME)
    rec = killed.__enter__()  # never exited: the process "died" with the run open
    train(run, out, recorder=rec, progress=False, stop_after=31)
    rec.flush()
    assert [r.info.status for r in mlflow_runs(uri)] == ["RUNNING"]

    with job_recorder(kind="train", config=config, run=run, journal_path=out / JOURNAL_NAME) as rec2:
        train(run, out, recorder=rec2, progress=False)
    runs = {r.info.status: r for r in mlflow_runs(uri)}
    assert sorted(runs) == ["FINISHED", "KILLED"], f"killed attempt not closed: {sorted(runs)}"
    curve = [json.loads(x) for x in (out / METRICS).read_text().splitlines()]
    assert [c["step"] for c in curve] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    final = runs["FINISHED"]
    assert metric_history(uri, final.info.run_id, "loss_bpd") == [(c["step"], c["loss_bpd"]) for c in curve]
    assert final.data.tags["config_hash"] == run.hash() and len(final.data.tags["git_commit"]) == 40


def test_sigterm_checkpoints_exits_75_and_rerun_resumes(tmp_path: Path, references: References) -> None:
    """SIGTERM (SLURM's preemption warning) -> checkpoint at that step, exit 75; rerun resumes.

    checkpoint_every exceeds the run, so the only checkpoint that can exist mid-run is the one
    written on the signal.
    """
    overrides = {"checkpoint_every": 10 * STEPS, "log_every": 5}  # the signal mostly lands between log steps
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", **overrides)
    out, log = tmp_path / "job", tmp_path / "job.log"
    signal_after = random.randint(2, STEPS // 2)
    proc = spawn_ndm(train_argv(cfg, out, "vdm", "--no-tracking"), log)
    wait_for_step(out, signal_after, proc, log, need_checkpoint=False)
    assert not (out / CHECKPOINT).exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == PREEMPTED_EXIT_CODE == 75, log.read_text()[-3000:]
    ckpt_step = int(load(out / CHECKPOINT)["step"])
    assert signal_after <= ckpt_step < STEPS, (signal_after, ckpt_step)
    text = log.read_text()
    assert "ndm train: preempted" in text and str(out / CHECKPOINT) in text and "rerun to resume" in text
    assert not (out / MODEL).exists() and not (out / SUMMARY).exists()

    assert run_ndm(train_argv(cfg, out, "vdm", "--no-tracking"), log) == 0, log.read_text()[-3000:]
    assert json.loads((out / SUMMARY).read_text())["resumed_from"] == ckpt_step > 0
    assert_same_training(out, references.get("vdm", **overrides))


# ---------------------------------------------------------------------------------------------
# Bad checkpoints, divergence (the real CLI in-process: exit codes and messages)
# ---------------------------------------------------------------------------------------------


def _partial_run(tmp_path: Path, variant: str = "vdm-fixed", steps: int = 20, **overrides: Any) -> tuple[Path, Path]:
    """A config and an output directory holding a checkpoint after `steps` steps."""
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", **overrides)
    out = tmp_path / "job"
    train(run_config(cfg, variant), out, progress=False, stop_after=steps)
    assert int(load(out / CHECKPOINT)["step"]) == steps
    return cfg, out


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_fails_clearly_and_is_left_alone(
    damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tracking_env: None
) -> None:
    cfg, out = _partial_run(tmp_path)
    ckpt = out / CHECKPOINT
    good = ckpt.read_bytes()
    bad = {"truncated": good[: len(good) // 2], "garbage": os.urandom(4096), "empty": b""}[damage]
    ckpt.write_bytes(bad)
    assert main(train_argv(cfg, out, "vdm-fixed", "--no-tracking", "--no-progress")) == 1
    err = capsys.readouterr().err
    assert f"CheckpointError: checkpoint {ckpt} is truncated or corrupt" in err, err
    assert "Delete it to retrain from the start" in err
    assert ckpt.read_bytes() == bad and not (out / MODEL).exists()


@pytest.mark.parametrize("mismatch", ["variant", "config"])
def test_checkpoint_of_another_job_is_refused(
    mismatch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tracking_env: None
) -> None:
    cfg, out = _partial_run(tmp_path, variant="vdm-fixed")
    before = (out / CHECKPOINT).read_bytes()
    if mismatch == "variant":
        argv = train_argv(cfg, out, "ddpm", "--no-tracking", "--no-progress")
        expected = [f"checkpoint {out / CHECKPOINT} belongs to variant 'vdm-fixed', not 'ddpm'",
                    "check the paths or delete the checkpoint"]
    else:
        write_config(cfg, tmp_path / "results", lr=5e-4)  # the config changed since the checkpoint
        argv = train_argv(cfg, out, "vdm-fixed", "--no-tracking", "--no-progress")
        expected = [f"checkpoint {out / CHECKPOINT} was written with config hash",
                    "Delete the checkpoint to retrain with the new config, or restore the old config"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert (out / CHECKPOINT).read_bytes() == before and not (out / MODEL).exists()


def test_corrupt_model_file_names_the_file(tmp_path: Path) -> None:
    """What evaluation jobs read: a truncated model.pt is a CheckpointError naming it."""
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", steps=4)
    out = tmp_path / "job"
    train(run_config(cfg, "ddpm"), out, progress=False)
    load_trained_model(out / MODEL)  # intact: loads
    data = (out / MODEL).read_bytes()
    (out / MODEL).write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=f"checkpoint {out / MODEL} is truncated or corrupt"):
        load_trained_model(out / MODEL)


def test_nan_loss_fails_and_keeps_the_last_good_checkpoint(tmp_path: Path, no_tracking_env: None) -> None:
    """Data that turns NaN after the step-20 checkpoint: step 21's loss is NaN, and the check
    before the step-30 checkpoint stops the run without writing that checkpoint.

    log_every is larger than the run, so only the check before each checkpoint can catch it;
    steps 22-30 are NaN too, and the error names the first one.
    """
    cfg, out = _partial_run(tmp_path, steps=20, log_every=1000)
    ckpt_bytes = (out / CHECKPOINT).read_bytes()
    run = run_config(cfg, "vdm-fixed")
    x, event_shape, levels, info = load_training_data(run)
    with pytest.raises(TrainingDiverged) as diverged:
        train(run, out, progress=False, data=(torch.full_like(x, torch.nan), event_shape, levels, info))
    err = str(diverged.value)
    assert "non-finite loss at step 21 (toy2d/vdm-fixed, seed 0" in err, err
    assert f"the last good checkpoint {out / CHECKPOINT} (step 20) is kept" in err
    assert "lower train.lr or set train.grad_clip" in err and f"delete {out / CHECKPOINT}" in err
    assert (out / CHECKPOINT).read_bytes() == ckpt_bytes, "a checkpoint was written after the NaN"
    assert not (out / MODEL).exists() and not (out / SUMMARY).exists()


def test_diverging_lr_before_any_checkpoint_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tracking_env: None
) -> None:
    """train.lr = 1e30: step 1's update throws the weights to ~1e29 and step 2's loss overflows.

    The first log line (step 2) catches it: `ndm train` exits 1, and neither a checkpoint nor a
    curve line with the NaN is written.
    """
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", lr=1e30)
    out = tmp_path / "job"
    assert main(train_argv(cfg, out, "vdm-fixed", "--no-tracking", "--no-progress")) == 1
    err = capsys.readouterr().err
    assert "TrainingDiverged: non-finite loss at step 2 " in err and "no checkpoint was written yet" in err, err
    assert not (out / CHECKPOINT).exists() and not (out / METRICS).exists()


def test_torn_metrics_line_does_not_block_resume(tmp_path: Path, references: References, no_tracking_env: None) -> None:
    """A kill mid-write can leave half a JSON line in metrics.jsonl; resume drops it."""
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results")
    out = tmp_path / "job"
    run = run_config(cfg, "vdm-fixed")
    train(run, out, progress=False, stop_after=31)  # between log steps: the interval sums carry over
    with open(out / METRICS, "a") as f:
        f.write('{"loss_bpd": 1.2, "ste')
    (out / ".checkpoint.pt.tmp.999999999").write_bytes(b"half a checkpoint of a dead writer")
    train(run, out, progress=False)
    assert_same_training(out, references.get("vdm-fixed"))
    assert not list(out.glob(".*.tmp.*")), "stale temporary files were left behind"


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors before any training
# ---------------------------------------------------------------------------------------------


def test_unknown_config_key_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tracking_env: None
) -> None:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", stepz=3)
    out = tmp_path / "job"
    assert main(train_argv(cfg, out, "ddpm")) == 2  # tracking on: no MLflow run either
    err = capsys.readouterr().err
    assert "config error: unknown key datasets.toy2d.train.stepz" in err and "'steps'" in err, err
    assert not out.exists() and not (tmp_path / "results").exists()


def test_unknown_data_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tracking_env: None) -> None:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results")
    config = load_yaml(cfg)
    config["datasets"]["toy2d"]["data"]["options"]["n_trian"] = 10
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "job"
    assert main(train_argv(cfg, out, "ddpm", "--no-tracking", "--no-progress")) == 2
    err = capsys.readouterr().err
    assert "config error: datasets.toy2d.data: unknown option(s) 'n_trian' for dataset 'toy2d'" in err, err
    assert not any(out.iterdir())


def test_missing_dataset_exits_1_and_the_run_is_recorded_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema_db: Path, no_tracking_env: None
) -> None:
    results, uri = results_with_store(schema_db, tmp_path)
    cfg = write_config(tmp_path / "config.yaml", results)
    out = tmp_path / "job"
    argv = ["train", "--config", str(cfg), "--dataset", "mnist", "--variant", "ddpm", "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    root = tmp_path / "no-such-data-root"
    assert "ndm train: dataset 'mnist' not found; searched:" in err and str(root) in err, err
    assert "To obtain it:" in err
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL_NAME]  # no checkpoint, no curve
    (run,) = mlflow_runs(uri)
    assert run.info.status == "FAILED" and run.info.run_name == "train/mnist/ddpm/seed0"
    assert "not found" in run.data.tags["ndm.error"]


# ---------------------------------------------------------------------------------------------
# MLflow unavailable, and many writers
# ---------------------------------------------------------------------------------------------


def test_dead_mlflow_server_job_completes_and_syncs_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema_db: Path, no_tracking_env: None
) -> None:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", steps=30, log_every=5)
    out = tmp_path / "job"
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(train_argv(cfg, out, "vdm-fixed", "--tracking-uri", dead, "--no-progress")) == 0
    assert time.monotonic() - t0 < 60
    ours = [w for w in caught if issubclass(w.category, tracking.TrackingUnavailableWarning)]
    assert len(ours) == 1 and "ndm tracking-sync" in str(ours[0].message)
    assert metric_steps(out / METRICS) == list(range(5, 31, 5))
    journal = out / JOURNAL_NAME
    summary = tracking.journal_summary(journal)
    assert summary["finished"] and summary["status"] == "FINISHED" and not summary["synced"]
    journal_steps = [r["step"] for r in tracking.read_journal(journal) if r["type"] == "metrics"]
    assert journal_steps == list(range(5, 31, 5))
    capsys.readouterr()

    results, uri = results_with_store(schema_db, tmp_path / "live")
    assert main(["tracking-sync", str(journal), "--tracking-uri", uri]) == 0
    (pushed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["tracking-sync", str(journal), "--tracking-uri", uri]) == 0  # idempotent
    assert json.loads(capsys.readouterr().out)["run_id"] == pushed["run_id"]
    (run,) = mlflow_runs(uri)
    assert run.info.run_id == pushed["run_id"] and run.info.status == "FINISHED"
    curve = [json.loads(x) for x in (out / METRICS).read_text().splitlines()]
    assert metric_history(uri, run.info.run_id, "loss_bpd") == [(r["step"], r["loss_bpd"]) for r in curve]
    tags = run.data.tags
    assert {k: tags[k] for k in ("kind", "dataset", "variant", "seed")} == {
        "kind": "train", "dataset": "toy2d", "variant": "vdm-fixed", "seed": "0"}
    assert tags["config_hash"] == run_config(cfg, "vdm-fixed").hash() and len(tags["git_commit"]) == 40
    assert run.data.params["train.steps"] == "30"


def test_tracking_sync_reports_bad_journals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_journal = tmp_path / "x.jsonl"
    not_journal.write_text('{"type": "metrics"}\n')
    assert main(["tracking-sync", str(not_journal), str(tmp_path / "missing.jsonl"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 1
    err = capsys.readouterr().err
    assert "is not an ndm tracking journal" in err and "missing.jsonl does not exist" in err
    assert "2 of 2 journal(s) not pushed" in err


def test_tracking_init_never_fails_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results")
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["tracking-init", "--config", str(cfg), "--tracking-uri", dead]) == 0
    assert "unavailable" in capsys.readouterr().err
    assert main(["tracking-init", "--config", str(cfg), "--tracking-uri", dead, "--strict"]) == 1


def _cli_child(argv: list[str], log: str, barrier: Any) -> None:
    """One `ndm` process (forkserver child): stderr to its own log, exit with main's code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    barrier.wait(timeout=120)  # all jobs hit the store at the same moment
    sys.exit(main(argv))


@pytest.mark.slow
def test_eight_parallel_jobs_lose_no_run(tmp_path: Path, no_tracking_env: None) -> None:
    """8 `ndm train` processes on one SQLite store, set up the pipeline's way (tracking-init).

    forkserver with the heavy modules preloaded, so eight processes do not each spend seconds
    of the two shared cores importing torch and MLflow; each child runs the real CLI.
    """
    n = 8
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", steps=20, log_every=5)
    assert main(["tracking-init", "--config", str(cfg)]) == 0  # a fresh store: migrations once
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ndm.cli.main", "ndm.pipeline.train", "ndm.pipeline.data", "ndm.pipeline.tracking_jobs", "mlflow.entities",
                                "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    barrier = ctx.Barrier(n)
    procs = []
    for seed in range(n):
        argv = ["train", "--config", str(cfg), "--dataset", "toy2d", "--variant", "vdm-fixed",
                "--seed", str(seed), "--out", str(tmp_path / f"job{seed}"), "--no-progress"]
        procs.append(ctx.Process(target=_cli_child, args=(argv, str(tmp_path / f"job{seed}.log"), barrier)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=PROC_TIMEOUT_S)
    logs = "\n".join((tmp_path / f"job{s}.log").read_text()[-1500:] for s in range(n))
    assert [p.exitcode for p in procs] == [0] * n, logs
    assert "unavailable" not in logs  # no job fell back to journal-only
    uri = tracking.resolve_tracking_uri(None, tmp_path / "results")
    runs = mlflow_runs(uri)
    assert sorted(r.info.run_name for r in runs) == sorted(f"train/toy2d/vdm-fixed/seed{s}" for s in range(n))
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags[tracking.TAG_SYNCED] == "true"
        seed = int(r.data.tags["seed"])
        curve = [json.loads(x) for x in (tmp_path / f"job{seed}" / METRICS).read_text().splitlines()]
        assert metric_history(uri, r.info.run_id, "loss_bpd") == [(c["step"], c["loss_bpd"]) for c in curve]


# ---------------------------------------------------------------------------------------------
# Result files and the recorder's API
# ---------------------------------------------------------------------------------------------


def test_write_result_json_adds_provenance_atomically(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results")
    run = run_config(cfg, "ndm")
    path = tmp_path / "eval" / "metrics.json"
    path.parent.mkdir()
    path.write_text("old")
    doc = write_result_json(path, {"fid": 12.5}, run)
    assert json.loads(path.read_text()) == doc
    assert doc["fid"] == 12.5 and doc["config_hash"] == run.hash()
    assert doc["provenance"]["device"] == "cpu" and len(doc["provenance"]["git_commit"]) == 40
    assert set(doc["provenance"]["versions"]) >= {"torch", "mlflow", "ndm"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary left


def test_job_recorder_disabled_and_preempted(tmp_path: Path, schema_db: Path) -> None:
    cfg = load_yaml(write_config(tmp_path / "config.yaml", tmp_path / "results"))
    run = resolve_run_config(cfg, "toy2d", "ndm", 3)
    with job_recorder(kind="train", config=cfg, run=run, journal_path=tmp_path / "j.jsonl", enabled=False) as rec:
        assert rec is None
    assert not (tmp_path / "j.jsonl").exists()
    _, uri = results_with_store(schema_db, tmp_path / "s")
    with pytest.raises(Preempted):
        with job_recorder(kind="train", config=cfg, run=run, journal_path=tmp_path / "j.jsonl",
                          tracking_uri=uri, experiment="exp2", extra_tags={"stage": "x"}) as rec:
            assert rec is not None
            rec.log_metrics({"loss": 1.0}, step=1)
            raise Preempted("signal 15 at step 1")
    (r,) = mlflow_runs(uri, "exp2")
    assert r.info.status == "KILLED" and r.info.run_name == "train/toy2d/ndm/seed3"
    assert r.data.tags["stage"] == "x" and r.data.tags["ndm.error"].startswith("Preempted: signal 15")
    assert r.data.params["model.variant"] == "ndm"


# ---------------------------------------------------------------------------------------------
# Snakemake retries and SLURM requeue (docs/reliability.md: the keys for rules and profile)
# ---------------------------------------------------------------------------------------------

# The train rule as docs/reliability.md recommends it: only final files are declared outputs
# (Snakemake deletes the declared outputs of a failed job, and a directory() output would take
# the checkpoint with it), `retries:` reruns a job that exited 75, and `exec` makes ndm the
# job step's process, so SLURM's signals reach it and no shell dies of them first.
TRAIN_RULE = '''
rule train:
    output:
        model="job/model.pt",
        summary="job/train_summary.json",
    retries: 2
    resources:
        preempt=lambda wildcards, attempt: int(attempt == 1),
    shell:
        """
        if [ {resources.preempt} -eq 1 ] && [ "{config[preempt_locally]}" = 1 ]; then
            # attempt 1 stands in for a job that SLURM signals once a checkpoint exists
            ndm train --config {config[ndm_config]} --dataset toy2d --variant ndm --out job --no-tracking &
            pid=$!
            until [ -f job/checkpoint.pt ]; do sleep 0.05; done
            kill -TERM $pid
            wait $pid
        fi
        exec ndm train --config {config[ndm_config]} --dataset toy2d --variant ndm --out job --no-tracking
        """
'''

SLURM_PROFILE = """\
executor: slurm
jobs: 1
latency-wait: 10
seconds-between-status-checks: 1
slurm-status-command: squeue
slurm-init-seconds-before-status-checks: 1
slurm-keep-successful-logs: true
slurm-requeue: true
printshellcmds: true
default-resources:
  slurm_partition: {partition}
  runtime: 10
  mem_mb: 1000
set-resources:
  train:
    slurm_extra: "'--signal=USR1@300 --open-mode=append'"
"""


def snakemake_env() -> dict[str, str]:
    """child_env() with this interpreter's bin/ first on PATH (sbatch exports it to the job)."""
    env = child_env()
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def write_workflow(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results")
    (tmp_path / "Snakefile").write_text(TRAIN_RULE)
    return cfg


@pytest.mark.slow
def test_snakemake_retries_resume_a_preempted_job(tmp_path: Path, references: References) -> None:
    """Attempt 1 exits 75 after a checkpoint; Snakemake's `retries:` reruns it and it resumes."""
    cfg = write_workflow(tmp_path)
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--config", f"ndm_config={cfg}",
                        "preempt_locally=1"], cwd=tmp_path, env=snakemake_env(), capture_output=True,
                       text=True, timeout=PROC_TIMEOUT_S)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "returned non-zero exit status 75" in log and "Trying to restart job" in log
    summary = json.loads((tmp_path / "job" / SUMMARY).read_text())
    assert summary["resumed_from"] > 0, "the retry started from scratch: the checkpoint was lost"
    assert_same_training(tmp_path / "job", references.get("ndm"))


def _our_slurm_job(workdir: Path) -> str | None:
    """The id of the SLURM job running in `workdir` (the cluster may be shared with others)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True, timeout=30).stdout
    ids = [line.split()[0] for line in out.splitlines() if line.split()[1:] == [str(workdir)]]
    return ids[0] if ids else None


def _slurm_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.parametrize("event", ["time-limit-warning", "requeue"])
def test_slurm_preempted_job_resumes(event: str, slurm_cluster: Any, tmp_path: Path, references: References) -> None:
    """Snakemake's SLURM executor with the profile keys of docs/reliability.md, real signals.

    time-limit-warning: USR1 to the job's steps, as `--signal=USR1@300` sends it before the
    time limit: ndm checkpoints and exits 75, the rule's `retries:` reruns it and it resumes.
    requeue: `scontrol requeue` (what preemption with PreemptMode=REQUEUE does): SIGTERM, the
    job goes back to the queue under the same id (`slurm-requeue: true` = sbatch --requeue), and
    the requeued job resumes. SLURM delays a requeued job's start by about 2 minutes; the test
    moves its start time to now.
    """
    cfg = write_workflow(tmp_path)
    profile = tmp_path / "profiles" / "slurm"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text(SLURM_PROFILE.format(partition=slurm_cluster.partition))
    with open(tmp_path / "snakemake.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--config",
                                 f"ndm_config={cfg}", "preempt_locally=0"], cwd=tmp_path, env=snakemake_env(),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + PROC_TIMEOUT_S
        while not (tmp_path / "job" / CHECKPOINT).exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "snakemake.log").read_text()[-3000:]
            time.sleep(0.05)
        job_id = _our_slurm_job(tmp_path)
        assert job_id is not None
        if event == "requeue":
            subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
            while _slurm_state(job_id) != "PENDING":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30)
        else:
            subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)
        assert proc.wait(timeout=PROC_TIMEOUT_S) == 0, (tmp_path / "snakemake.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    job_log = "\n".join(p.read_text() for p in (tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    signum = {"requeue": signal.SIGTERM, "time-limit-warning": signal.SIGUSR1}[event]
    assert f"ndm train: preempted: signal {int(signum)} at step" in job_log, job_log[-3000:]
    if event == "requeue":
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "Restarts=1" in show, show
    summary = json.loads((tmp_path / "job" / SUMMARY).read_text())
    assert summary["resumed_from"] > 0 and summary["provenance"]["slurm_job_id"] == job_id
    assert_same_training(tmp_path / "job", references.get("ndm"))


def test_rerun_of_a_finished_job_rewrites_the_same_results(tmp_path: Path, no_tracking_env: None) -> None:
    """Killed after the last checkpoint but before model.pt: the rerun trains no step, same files."""
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "results", steps=10)
    out = tmp_path / "job"
    run = run_config(cfg, "ddpm")
    train(run, out, progress=False)
    summary = json.loads((out / SUMMARY).read_text())
    model = load(out / MODEL)
    (out / MODEL).unlink()
    (out / SUMMARY).unlink()
    result = train(run, out, progress=False)
    again = json.loads((out / SUMMARY).read_text())
    assert result.resumed_from == result.steps == 10
    assert again["final_loss_bpd"] == summary["final_loss_bpd"]  # not NaN: taken from the curve
    assert_identical(load(out / MODEL)["ema"], model["ema"], "ema")
