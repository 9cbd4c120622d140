"""The local SLURM cluster (tools/slurm_local.py) and the Snakemake SLURM executor against it.

These tests use real daemons (slurmctld, slurmd, munged) and the real
snakemake-executor-plugin-slurm; nothing is mocked. The ``slurm_cluster`` fixture (tests/
slurm_fixtures.py) starts the cluster once per session and skips only where SLURM cannot be
installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:  # tests/ is on sys.path in pytest's default (prepend) import mode
    from slurm_fixtures import load_slurm_local
except ImportError:  # tests/ turned into a package
    from tests.slurm_fixtures import load_slurm_local

sl = load_slurm_local()

pytestmark = pytest.mark.slurm

JOB_TIMEOUT_S = 120


def _env() -> dict[str, str]:
    """The test's environment with this interpreter's bin/ first on PATH.

    sbatch exports the submitting environment to the job (--export=ALL), so jobs find the same
    python and snakemake as the test, even when pytest was started without activating the venv.
    """
    bindir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))


def _sbatch(args: list[str], cwd: Path) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=_env(),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.strip().split(";")[0]


def _wait_job(job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> str:
    """Poll squeue (jobs stay listed for MinJobAge after they end) until a final state."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
             "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        r = subprocess.run(["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"],
                           capture_output=True, text=True, timeout=30)
        state = r.stdout.strip()
        if state in final:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s (state {state!r})")


# ---------------------------------------------------------------------------------------------
# Pure parts of tools/slurm_local.py (no daemons)
# ---------------------------------------------------------------------------------------------


def test_rendered_config_has_the_settings_the_executor_needs(tmp_path: Path) -> None:
    cfg = sl.ClusterConfig(state_dir=tmp_path, node_name="n1", cpus=4, real_memory_mb=8000,
                           fake_gpus=2)
    conf = sl.render_slurm_conf(cfg)
    lines = set(conf.splitlines())
    for needed in ("ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                   "SelectType=select/cons_tres", "AccountingStorageType=accounting_storage/none",
                   "SlurmctldHost=n1(127.0.0.1)", "GresTypes=gpu"):
        assert needed in lines, needed
    min_job_age = int(next(x for x in lines if x.startswith("MinJobAge=")).split("=")[1])
    assert min_job_age >= 120  # squeue must still list finished jobs at the executor's next poll
    assert "NodeName=n1 NodeAddr=127.0.0.1 CPUs=4 RealMemory=8000 Gres=gpu:2 State=UNKNOWN" in lines
    assert any(x.startswith("PartitionName=debug ") and "Default=YES" in x for x in lines)
    gres = sl.render_gres_conf(cfg)
    assert f"NodeName=n1 Name=gpu File={tmp_path / 'dev' / 'fakegpu[0-1]'}" in gres
    no_gpu = sl.ClusterConfig(state_dir=tmp_path, node_name="n1", cpus=1, real_memory_mb=100,
                              fake_gpus=0)
    assert "Gres=" not in sl.render_slurm_conf(no_gpu)
    assert "Name=gpu" not in sl.render_gres_conf(no_gpu)


def test_parsers() -> None:
    c = sl.parse_slurmd_c("NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 "
                          "ThreadsPerCore=1 RealMemory=24105\nUpTime=0-00:08:06\n")
    assert c["CPUs"] == 2 and c["RealMemory"] == 24105
    assert sl.parse_node_state("idle*\n") == "idle"
    assert sl.parse_node_state("drained\n") == "drained"
    assert sl.parse_node_state("\n") == ""


def test_conf_files_are_backed_up_and_restored(tmp_path: Path) -> None:
    """A pre-existing (foreign) config comes back byte for byte; one we created disappears."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    foreign = etc / "slurm.conf"
    foreign.write_text("ClusterName=real\n")
    ours = etc / "gres.conf"
    backups: dict[str, str | None] = {}
    sl._write_conf(foreign, sl.MARKER + "\nA=1\n", backups, state)
    sl._write_conf(ours, sl.MARKER + "\nB=1\n", backups, state)
    sl._write_conf(foreign, sl.MARKER + "\nA=2\n", backups, state)  # rewrite keeps first backup
    assert foreign.read_text().endswith("A=2\n")
    sl._restore_confs(backups)
    assert foreign.read_text() == "ClusterName=real\n"
    assert not ours.exists()


# ---------------------------------------------------------------------------------------------
# Real daemons
# ---------------------------------------------------------------------------------------------


def test_cluster_is_up(slurm_cluster) -> None:  # type: ignore[no-untyped-def]
    info = sl.status(slurm_cluster.state_dir)
    assert info["running"] is True
    assert info["node_state"] in sl.READY_STATES
    assert str(info["version"]).startswith("slurm")
    assert Path("/etc/slurm/slurm.conf").read_text().startswith(sl.MARKER)
    # start is idempotent and fast when the cluster is already up
    t0 = time.monotonic()
    assert sl.start(slurm_cluster) == slurm_cluster
    assert time.monotonic() - t0 < 5


def test_sbatch_job_runs_srun_and_completes(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "hello.txt"
    job = _sbatch(["-t", "2", "--mem", "100", "-o", str(tmp_path / "job.log"),
                   "--wrap", f"srun -n1 hostname > {out}; echo job=$SLURM_JOB_ID >> {out}"],
                  tmp_path)
    assert _wait_job(job) == "COMPLETED", (tmp_path / "job.log").read_text()
    lines = out.read_text().split()
    assert lines == [slurm_cluster.node_name, f"job={job}"]


def test_failing_job_is_reported_failed(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job = _sbatch(["-t", "1", "--mem", "50", "-o", str(tmp_path / "job.log"), "--wrap", "exit 3"],
                  tmp_path)
    assert _wait_job(job) == "FAILED"


def test_fake_gpus_satisfy_gpu_requests(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if slurm_cluster.fake_gpus < 1:
        pytest.skip("cluster started without fake GPUs (NDM_SLURM_FAKE_GPUS=0)")
    out = tmp_path / "gpu.txt"
    job = _sbatch(["-t", "1", "--mem", "50", "--gpus=1", "-o", str(tmp_path / "job.log"),
                   "--wrap", f"echo $CUDA_VISIBLE_DEVICES > {out}"], tmp_path)
    assert _wait_job(job) == "COMPLETED"
    assert out.read_text().strip() in {str(i) for i in range(slurm_cluster.fake_gpus)}
    too_many = subprocess.run(["sbatch", "--parsable", f"--gpus={slurm_cluster.fake_gpus + 1}",
                               "--wrap", "true"], capture_output=True, text=True, timeout=30)
    assert too_many.returncode != 0  # the GPUs are counted, not ignored


# ---------------------------------------------------------------------------------------------
# Snakemake 9 + snakemake-executor-plugin-slurm through a profile directory
# ---------------------------------------------------------------------------------------------

SNAKEFILE = '''
IDS = [1, 2]

rule all:
    input: expand("out/c_{{i}}.txt", i=IDS)

rule a:
    output: "out/a_{{i}}.txt"
    resources: runtime=5, mem_mb=200
    shell: "echo id={{wildcards.i}} job=$SLURM_JOB_ID > {{output}}"

rule b:
    input: "out/a_{{i}}.txt"
    output: "out/c_{{i}}.txt"
    threads: 1
    resources: runtime=5, mem_mb=300{gpu}
    shell:
        "python -c \\"import os; open('{{output}}', 'w').write(open('{{input}}').read() + "
        "'bjob=' + os.environ['SLURM_JOB_ID'] + ' gpus=' + "
        "os.environ.get('CUDA_VISIBLE_DEVICES', 'none') + chr(10))\\""
'''

# The profile keys that work with Snakemake 9.27 + snakemake-executor-plugin-slurm 2.8 on this
# cluster (documented in docs/slurm.md).
PROFILE = '''
executor: slurm
jobs: 4
latency-wait: 10
seconds-between-status-checks: 1
slurm-status-command: squeue
slurm-init-seconds-before-status-checks: 1
slurm-keep-successful-logs: true
printshellcmds: true
default-resources:
  slurm_partition: {partition}
  runtime: 10
  mem_mb: 500
'''


def test_snakemake_workflow_runs_through_slurm_profile(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gpu = ", gpu=1" if slurm_cluster.fake_gpus >= 1 else ""
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(gpu=gpu))
    profile = tmp_path / "profiles" / "slurm"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text(PROFILE.format(partition=slurm_cluster.partition))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm"],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    log = r.stdout + r.stderr
    assert "Using profile profiles/slurm" in log
    assert "submitted with SLURM jobid" in log
    job_ids: set[str] = set()
    for i in (1, 2):
        words = dict(w.split("=", 1) for w in (tmp_path / f"out/c_{i}.txt").read_text().split())
        assert words["id"] == str(i)
        job_ids |= {words["job"], words["bjob"]}  # rule a's and rule b's SLURM job
        if gpu:
            assert words["gpus"] in {str(g) for g in range(slurm_cluster.fake_gpus)}
    assert len(job_ids) == 4 and all(j.isdigit() for j in job_ids)  # four separate SLURM jobs
    logs = list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(logs) == 4
    print(f"snakemake through SLURM: {elapsed:.1f} s")
