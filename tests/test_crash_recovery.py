"""What a user sees after a crash and in MLflow (issue 15 item 6).

- A Snakemake killed with SIGKILL leaves a stale lock; tools/unlock_stale.sh removes it (and
  only a stale one: the lock of a Snakemake still running is left alone), after which the same
  command runs again. Real Snakemake, real kill -9.
- MLflow 3 opens an experiment by its kind: init_store tags it custom_model_development.
- A deferred job's MLflow run, synced later, keeps the job's real start (its process start) and
  end times, not the few ms between opening and closing the recorder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ndm.pipeline import tracking as tr

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

SLOW_SNAKEFILE = """
rule all:
    input: "done.txt"

rule slow:
    output: "done.txt"
    shell: "sleep 120 && touch {output}"
"""


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "w"
    (work / "tools").mkdir(parents=True)
    shutil.copy(REPO / "tools/unlock_stale.sh", work / "tools/unlock_stale.sh")
    (work / "Snakefile").write_text(SLOW_SNAKEFILE)
    return work


def _start_snakemake(work: Path) -> subprocess.Popen:
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "1", "all"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):  # until it holds its lock
        if any((work / ".snakemake" / "locks").glob("*")) or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None and any((work / ".snakemake" / "locks").glob("*")), "snakemake did not take its lock"
    return proc


def _unlock(work: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SNAKEMAKE": SNAKEMAKE}
    return subprocess.run(["bash", "tools/unlock_stale.sh", "--cores", "1", "all"], cwd=work, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="the stale-lock check reads /proc (Linux)")
def test_stale_lock_after_kill_9_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    work = _work(tmp_path)
    assert _unlock(work).returncode == 0  # no lock: nothing to do
    proc = _start_snakemake(work)
    try:
        live = _unlock(work)  # Snakemake is running: its lock is not stale
        assert live.returncode == 1 and "is running" in live.stderr and str(proc.pid) in live.stderr
        assert any((work / ".snakemake" / "locks").glob("*"))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: Snakemake and its job die without cleanup
        proc.wait()
    assert any((work / ".snakemake" / "locks").glob("*")), "kill -9 should leave the lock behind"

    # What the user saw before: the same command fails on the lock.
    (work / "Snakefile").write_text(SLOW_SNAKEFILE.replace("sleep 120 && ", ""))
    locked = subprocess.run([SNAKEMAKE, "--cores", "1", "all"], cwd=work, capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr

    handled = _unlock(work)
    assert handled.returncode == 0, handled.stderr
    assert "stale Snakemake lock" in handled.stderr and "--unlock" in handled.stderr
    assert not any((work / ".snakemake" / "locks").glob("*"))
    rerun = subprocess.run([SNAKEMAKE, "--cores", "1", "all"], cwd=work, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (work / "done.txt").exists()


def test_run_default_handles_the_lock_before_snakemake() -> None:
    text = (REPO / "tools/run_default.sh").read_text()
    assert text.index("tools/unlock_stale.sh") < text.index("exec .venv/bin/snakemake")


# ------------------------------------------------------------------------------ MLflow


def _store(tmp_path: Path) -> str:
    return tr.resolve_tracking_uri(None, tmp_path / "results")


def test_experiment_kind_is_set_on_new_and_existing_experiments(tmp_path: Path) -> None:
    uri = _store(tmp_path)
    client = MlflowClient(uri)
    exp_id = tr.init_store(uri, "fresh")
    assert client.get_experiment(exp_id).tags[tr.TAG_EXPERIMENT_KIND] == "custom_model_development"
    old = client.create_experiment("made-before-the-tag")  # an existing store without the kind
    assert tr.TAG_EXPERIMENT_KIND not in client.get_experiment(old).tags
    assert tr.init_store(uri, "made-before-the-tag") == old
    assert client.get_experiment(old).tags[tr.TAG_EXPERIMENT_KIND] == tr.EXPERIMENT_KIND
    mine = client.create_experiment("user-kind", tags={tr.TAG_EXPERIMENT_KIND: "genai_development"})
    tr.init_store(uri, "user-kind")
    assert client.get_experiment(mine).tags[tr.TAG_EXPERIMENT_KIND] == "genai_development"  # never overridden


LATE_RECORDER_JOB = r"""
import sys, time
from pathlib import Path
from ndm.pipeline.tracking_jobs import job_recorder
results = Path(sys.argv[1])
time.sleep(2.5)  # the job's work, before it opens its recorder (as the evaluation jobs do)
config = {"experiment": "times", "results": str(results), "tracking_mode": "deferred"}
with job_recorder(kind="evaluate-likelihood", config=config, run=None, journal_path=results / "j.mlflow_journal.jsonl",
                  extra_tags={"dataset": "toy2d", "variant": "ddpm", "seed": 0}) as rec:
    rec.log_metrics({"nelbo_bpd": 1.0})
    time.sleep(0.5)
"""


@pytest.mark.skipif(tr.process_start_ms() is None, reason="process start times come from /proc (Linux)")
def test_deferred_sync_keeps_the_jobs_real_start_and_end(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    launched = int(time.time() * 1000)
    job = subprocess.run([sys.executable, "-c", LATE_RECORDER_JOB, str(results)], capture_output=True, text=True, timeout=120)
    done = int(time.time() * 1000)
    assert job.returncode == 0, job.stderr
    recs = tr.read_journal(results / "j.mlflow_journal.jsonl")
    start, end = recs[0], recs[-1]
    assert end["type"] == "end"
    # The start is the process start (btime has 1 s resolution), not the recorder's opening.
    assert launched - 1500 <= start["time_ms"] <= start["opened_ms"] - 1500
    run_id = tr.sync_journal(results / "j.mlflow_journal.jsonl", _store(tmp_path))
    info = MlflowClient(_store(tmp_path)).get_run(run_id).info
    assert info.start_time == start["time_ms"] and info.end_time == end["time_ms"] <= done
    assert info.end_time - info.start_time >= 2500  # the job's duration, not the recorder's 0.5 s
    assert info.status == "FINISHED"
    exp = MlflowClient(_store(tmp_path)).get_experiment_by_name("times")
    assert exp.tags[tr.TAG_EXPERIMENT_KIND] == tr.EXPERIMENT_KIND
    print(json.dumps({"duration_ms": info.end_time - info.start_time}))
