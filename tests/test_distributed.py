"""Data-parallel training (issue 15, item 1): 2 processes on the CPU (gloo) follow the
1-process run, stop together on a signal to one of them, and resume exactly.

Every run is the real `ndm train` command; the test starts the N processes itself with
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so it sees
each rank's pid and exit code. The model is the learned-F `ndm` variant on digits with the
smoke config's tiny U-Net: a few seconds per run on one core.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ndm.pipeline.config import ConfigError
from ndm.pipeline.distributed import World, _first_node, world_from_env

ROOT = Path(__file__).resolve().parents[1]
CURVE_STEPS = 20
SIGNAL_STEPS = 120  # long enough that a signal sent after step 8 lands mid-run
# Per step, |loss_bpd(1 process) - loss_bpd(2 processes)| <= 1e-5 bits/dim (issue 15's figure).
# The curve trains on batches of 64: with 16, one batch's loss reached 6.26 bits/dim and float32
# put the two curves 1.8e-5 apart there (2.9e-6 relative); at 64 the largest gap is 3.8e-6.
CURVE_TOLERANCE = 1e-5
# A 2-process checkpoint resumed by 1 process: the same draws, only the reduction order differs.
OTHER_N_TOLERANCE = 1e-4


def write_config(path: Path, steps: int, batch_size: int = 16) -> Path:
    config = {
        "experiment": "ndm-test-distributed",
        "results": str(path / "results"),
        "tracking_uri": None,
        "seeds": [0],
        "variants": ["ndm"],
        "defaults": {
            "train": {"steps": steps, "batch_size": batch_size, "lr": 1.0e-3, "warmup_steps": 5, "grad_clip": 1.0, "log_every": 1, "checkpoint_every": 10_000, "time_sampling": "gamma"},
        },
        "datasets": {
            "toy2d": {"data": {"name": "toy2d", "options": {"n_train": 512, "n_test": 64}}, "model": {"network": {"kind": "mlp", "hidden": 32, "depth": 2}}},
        },
    }
    cfg = path / f"config{steps}_{batch_size}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg: Path, out: Path, n: int) -> list[subprocess.Popen]:
    """Start `ndm train` as n processes (n = 1: a plain single process, no process group)."""
    cmd = [sys.executable, "-m", "ndm", "train", "--config", str(cfg), "--dataset", "toy2d", "--variant", "ndm", "--seed", "0", "--out", str(out), "--threads", "1", "--no-progress", "--no-tracking"]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK") and not k.startswith("SLURM_")}
    port = str(free_port())
    procs = []
    for rank in range(n):
        env = dict(base)
        if n > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        results.append((p.returncode, err))
    return results


def run_ok(cfg: Path, out: Path, n: int) -> None:
    for rc, err in wait(launch(cfg, out, n)):
        assert rc == 0, err[-3000:]


def curve(out: Path) -> list[float]:
    return [json.loads(line)["loss_bpd"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    return {**{f"ema.{k}": v for k, v in ckpt["ema"].items()}, **{f"model.{k}": v for k, v in ckpt["model"].items()}}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def reference(tmp: Path) -> Path:
    """An uninterrupted 2-process run of SIGNAL_STEPS steps."""
    out = tmp / "reference"
    run_ok(write_config(tmp, SIGNAL_STEPS), out, 2)
    return out


def test_world_from_env_and_rows():
    assert world_from_env({}) == World()
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(1, 4, 1)
    # srun with 2 tasks (inside a job step); a 2-task allocation's batch script is one process
    assert world_from_env({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}) == World(1, 2, 1)
    assert world_from_env({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}) == World()
    rows = World(2, 4).rows(16)
    assert (rows.start, rows.stop, rows.total) == (8, 12, 16)
    with pytest.raises(ConfigError, match="multiple of 3"):
        World(0, 3).rows(16)
    assert _first_node("gpu[03-05,7],cpu1") == "gpu03" and _first_node("node7") == "node7"


def test_two_processes_follow_the_one_process_curve(tmp: Path):
    cfg = write_config(tmp, CURVE_STEPS, batch_size=64)
    run_ok(cfg, tmp / "n1", 1)
    run_ok(cfg, tmp / "n2", 2)
    one, two = curve(tmp / "n1"), curve(tmp / "n2")
    assert len(one) == len(two) == CURVE_STEPS
    diff = max(abs(a - b) for a, b in zip(one, two))
    print(f"max |loss_bpd(1 process) - loss_bpd(2 processes)| over {CURVE_STEPS} steps: {diff:.3g}")
    assert diff <= CURVE_TOLERANCE
    assert max(one) - min(one) > 0.1  # the comparison is not between two flat lines
    # rank 0 alone wrote: no second curve, no stray files
    assert sorted(p.name for p in (tmp / "n2").iterdir()) == sorted(p.name for p in (tmp / "n1").iterdir())


def test_signal_to_one_rank_stops_all_and_the_rerun_is_exact(tmp: Path, reference: Path):
    cfg = write_config(tmp, SIGNAL_STEPS)
    out = tmp / "interrupted"
    procs = launch(cfg, out, 2)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 8):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "training did not start"
        time.sleep(0.005)
    os.kill(procs[1].pid, signal.SIGTERM)  # the rank that writes nothing
    results = wait(procs)
    assert [rc for rc, _ in results] == [75, 75], [err[-2000:] for _, err in results]
    stopped = [int(err.split(" at step ")[1].split(":")[0]) for _, err in results]
    ckpt_step = int(torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
    assert stopped[0] == stopped[1] == ckpt_step and 8 <= ckpt_step < SIGNAL_STEPS
    assert "signal 15" in results[1][1] and "to another process" in results[0][1]
    assert not (out / "model.pt").exists()
    shutil.copytree(out, tmp / "interrupted_copy")  # for the other-N resume below

    run_ok(cfg, out, 2)
    ref, got = weights(reference), weights(out)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert curve(out) == curve(reference)


def test_resume_with_another_number_of_processes(tmp: Path, reference: Path):
    out = tmp / "interrupted_copy"
    if not out.exists():
        pytest.skip("needs the checkpoint of test_signal_to_one_rank_stops_all_and_the_rerun_is_exact")
    run_ok(write_config(tmp, SIGNAL_STEPS), out, 1)
    ref, got = curve(reference), curve(out)
    assert len(got) == SIGNAL_STEPS
    diff = max(abs(a - b) for a, b in zip(ref, got))
    print(f"2-process checkpoint resumed by 1 process: max curve difference {diff:.3g}, final {got[-1]:.5f} vs {ref[-1]:.5f}")
    assert abs(got[-1] - ref[-1]) <= OTHER_N_TOLERANCE


def test_dropout_masks_are_the_global_batchs_rows(monkeypatch):
    """With dropout, N processes still draw what one would: each rank's masks are the global
    batch's at its rows (ndm.model.time_sampling.global_batch_rows). Two ranks emulated in one
    process from the same RNG state reproduce the 1-process loss and gradient; with each rank
    drawing masks for its own rows only (nn.Dropout's way), rank 1's masks equal rank 0's and
    the gradient differs."""
    from ndm.model.networks import layers
    from ndm.model.specs import ModelConfig, NetworkConfig
    from ndm.model.time_sampling import BatchRows
    from ndm.model.variants import build_model

    net = NetworkConfig(kind="unet", channels=8, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.5)
    model = build_model(ModelConfig(variant="ndm", network=net, transform_network=net, parameterization="x"), (1, 8, 8), 17)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off the zero init of the layers behind each dropout, so the masks matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.train()
    x = torch.rand(8, 1, 8, 8, generator=gen) * 2 - 1

    def loss_and_grad(rows):
        torch.manual_seed(0)
        model.zero_grad()
        loss, _ = model.training_loss(x if rows is None else rows.take(x), None, "uniform", rows)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def two_ranks():
        ranks = [loss_and_grad(BatchRows(r * 4, (r + 1) * 4, 8)) for r in (0, 1)]
        return sum(r[0] for r in ranks) / 2, (ranks[0][1] + ranks[1][1]) / 2

    one, g_one = loss_and_grad(None)
    two, g_two = two_ranks()
    assert abs(one - two) < 1e-5 * max(1.0, abs(one)), (one, two)
    assert (g_one - g_two).abs().max() <= 1e-5 * g_one.abs().max(), (g_one - g_two).abs().max()
    monkeypatch.setattr(layers, "current_batch_rows", lambda: None)  # per-rank masks
    per_rank, g_per_rank = two_ranks()
    assert (g_one - g_per_rank).abs().max() > 1e-2 * g_one.abs().max(), (one, per_rank)
