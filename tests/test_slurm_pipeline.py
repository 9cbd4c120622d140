"""The smoke DAG through the SLURM profile on a real one-node SLURM cluster (issue 5).

The cluster (Debian's slurmctld, slurmd, munge on 127.0.0.1) is started and stopped by the
`slurm_cluster` fixture (tests/slurm_fixtures.py). The run uses the repository's own
profiles/slurm, overriding only what a one-node test cluster differs in: the partition, the
status command (no slurmdbd: squeue instead of sacct) and faster polling (docs/slurm.md).

The DAG is the smoke config cut to the smallest one that still submits every rule (both
datasets, so the digits-only rules run too; one variant, NDM, whose learned F exercises the most
code; one sampler): 17 SLURM jobs instead of 47. The full smoke DAG runs locally in
tests/test_pipeline.py; what SLURM adds is per-rule (submission, resources, logs, tracking),
not per model. The whole DAG cost 11 minutes of a 2-core CI run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from test_pipeline import assert_mlflow_runs, snakemake, workdir_copy

pytestmark = pytest.mark.slurm


def slurm_smoke_config(work: Path) -> str:
    """configs/smoke.yaml cut to one variant and one sampler, written beside it; its path."""
    config = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    config["variants"] = ["ndm"]
    config["defaults"]["eval"]["samplers"] = ["ancestral"]
    (work / "configs/smoke_slurm.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return "configs/smoke_slurm.yaml"


def planned_rules(log: str) -> set[str]:
    """The rule names of Snakemake's "Job stats" table at the top of a run's log."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [line.split() for line in table.splitlines()[3:]]
    return {row[0] for row in rows if len(row) == 2 and row[1].isdigit()}


def test_smoke_dag_runs_through_slurm_profile(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = workdir_copy(tmp_path / "w")
    configfile = slurm_smoke_config(work)
    t0 = time.monotonic()
    proc = snakemake(
        [
            "all",
            "--profile", "profiles/slurm",
            "--configfile", configfile,
            "--jobs", "4",
            "--latency-wait", "10",
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "1",
            "--seconds-between-status-checks", "1",
            "--default-resources", f"slurm_partition={slurm_cluster.partition}",
        ],
        cwd=work,
        timeout=1800,
    )
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "submitted with SLURM jobid" in out
    config = yaml.safe_load((work / configfile).read_text())
    results = work / config["results"]
    n_models = len(config["datasets"]) * len(config["variants"]) * len(config["seeds"])
    assert len(list(results.glob("*/*/seed*/likelihood.json"))) == n_models
    assert len(list(results.glob("*/*/seed*/fid/*.json"))) == n_models * len(config["defaults"]["eval"]["samplers"])
    assert (work / config["reports"] / "README.md").exists()
    # Every job ran as its own SLURM job: the executor reports one submission per job, with its
    # log path under .snakemake/slurm_logs/rule_<rule>/ (the log files themselves are deleted on
    # success by the plugin, so count the submissions).
    submissions = [line for line in out.splitlines() if "submitted with SLURM jobid" in line]
    train_jobs = {line.split("SLURM jobid")[1].split()[0] for line in submissions if "rule_train" in line}
    assert len(train_jobs) == n_models, submissions[:20]
    # every rule of the DAG (its "Job stats" table, less the target `all`) went through SLURM
    submitted_rules = {line.split("rule_")[1].split("/")[0] for line in submissions}
    assert submitted_rules == planned_rules(out) - {"all"}, submissions
    slurm_logs = submissions
    summary = json.loads(next(results.glob("*/*/seed*/train_summary.json")).read_text())
    assert summary["steps"] == config["defaults"]["train"]["steps"]
    # live tracking (the smoke config's default): every SLURM job logged its own MLflow run
    assert not (results / "tracking_sync.json").exists()
    assert_mlflow_runs(work, config)
    print(f"smoke DAG through SLURM: {elapsed:.0f} s, {len(slurm_logs)} SLURM jobs")
