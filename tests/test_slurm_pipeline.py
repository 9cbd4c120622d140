"""The smoke DAG through the SLURM profile on a real one-node SLURM cluster (issue 5).

The cluster (Debian's slurmctld, slurmd, munge on 127.0.0.1) is started and stopped by the
`slurm_cluster` fixture (tests/slurm_fixtures.py). The run uses the repository's own
profiles/slurm, overriding only what a one-node test cluster differs in: the partition, the
status command (no slurmdbd: squeue instead of sacct) and faster polling (docs/slurm.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_pipeline import snakemake, workdir_copy

pytestmark = pytest.mark.slurm


def test_smoke_dag_runs_through_slurm_profile(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = workdir_copy(tmp_path / "w")
    t0 = time.monotonic()
    proc = snakemake(
        [
            "all",
            "--profile", "profiles/slurm",
            "--configfile", "configs/smoke.yaml",
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
    config = yaml.safe_load((work / "configs/smoke.yaml").read_text())
    results = work / config["results"]
    n_models = len(config["datasets"]) * len(config["variants"]) * len(config["seeds"])
    assert len(list(results.glob("*/*/seed*/likelihood.json"))) == n_models
    assert len(list(results.glob("*/*/seed*/fid/*.json"))) == n_models * len(config["defaults"]["eval"]["samplers"])
    assert (work / config["reports"] / "README.md").exists()
    # Every job ran as its own SLURM job: one log per job under .snakemake/slurm_logs.
    slurm_logs = list((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    train_logs = [p for p in slurm_logs if "rule_train" in str(p)]
    assert len(train_logs) == n_models, [str(p) for p in slurm_logs][:20]
    summary = json.loads(next(results.glob("*/*/seed*/train_summary.json")).read_text())
    assert summary["steps"] == config["defaults"]["train"]["steps"]
    print(f"smoke DAG through SLURM: {elapsed:.0f} s, {len(slurm_logs)} SLURM jobs")
