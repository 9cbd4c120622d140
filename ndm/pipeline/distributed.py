"""Data-parallel training plumbing: who this process is, the process group, and the reductions.

`ndm train` runs as N processes when launched with WORLD_SIZE > 1 (torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; `srun` with N tasks sets SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID). The training loop (ndm.pipeline.train) keeps the 1-process
run's numbers: every process draws the same global batch (indices, noise, times) from the same
seeded streams and trains on its contiguous rows [r B / N, (r + 1) B / N) (`World.rows`); the
global loss is the mean of the N equal slices' means, so the gradient averaged over processes
(`average_gradients`: all-reduce sum / N) is the 1-process gradient up to the order of float
additions. Every process then takes the same optimizer step, so the weights stay identical
without being broadcast. docs/slurm.md, "Data-parallel training", has the user's side.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from ndm.model.time_sampling import BatchRows
from ndm.pipeline.config import ConfigError

# How long a collective waits for a missing process before the job fails (a crashed rank;
# rank 0 alone evaluates the test curve while the others wait in the next step).
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the N processes of one training job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files, the log and MLflow."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def rows(self, batch_size: int) -> BatchRows:
        """This rank's contiguous rows of a global batch; the batch must split into N equal slices."""
        if batch_size % self.size:
            raise ConfigError(
                f"train.batch_size {batch_size} does not split into {self.size} equal slices, one per process; "
                f"set train.batch_size to a multiple of {self.size} or run {self.size} processes that divide it"
            )
        per = batch_size // self.size
        return BatchRows(self.rank * per, (self.rank + 1) * per, batch_size)


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The World from torchrun's variables, else from SLURM's task variables, else one process.

    SLURM's are read only when SLURM_NTASKS > 1 inside a job step (SLURM_STEP_ID), so a
    1-task job or a batch script of an N-task allocation stays a single process.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        return World(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_STEP_ID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return World(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return World()


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process (its local rank) on CUDA; the CPU is shared."""
    if device.type == "cuda" and world.parallel:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the job's process group (NCCL on CUDA, gloo on CPU) for the duration; a no-op for 1 process.

    The rendezvous is env:// (MASTER_ADDR, MASTER_PORT); under srun without them the first
    node of the job and a port derived from the job id are used.
    """
    if not world.parallel or dist.is_initialized():
        yield
        return
    if "MASTER_ADDR" not in os.environ and "SLURM_JOB_NODELIST" in os.environ:
        os.environ["MASTER_ADDR"] = _first_node(os.environ["SLURM_JOB_NODELIST"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def average_gradients(params: list[Tensor], world: World) -> None:
    """Replace each gradient by its mean over the processes (one flat all-reduce).

    Which parameters have a gradient is the same on every process (same code path, same config).
    """
    if not world.parallel:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_metrics_and_stop(metrics: dict[str, Tensor], stop: bool, world: World) -> tuple[dict[str, Tensor], bool]:
    """The step's metrics averaged over the processes (each slice's mean -> the global batch's),
    and whether any process was asked to stop (SIGTERM/SIGUSR1 may reach only one): one
    all-reduce per step, so all processes stop after the same step."""
    if not world.parallel:
        return metrics, stop
    names = list(metrics)
    flat = torch.stack([metrics[k].float().reshape(()) for k in names] + [torch.ones(()) * float(stop)]).to(metrics[names[0]].device)
    dist.all_reduce(flat)
    values = flat[:-1] / world.size
    return {k: values[i] for i, k in enumerate(names)}, bool(flat[-1].item() > 0)


def barrier(world: World) -> None:
    """Wait for every process (rank 0's checkpoint is on disk before any process exits)."""
    if world.parallel and dist.is_initialized():
        dist.barrier()


def _first_node(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[03-05,7],cpu1" -> "gpu03"."""
    head = nodelist.split(",")[0]
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    return prefix + rest.split("-")[0].split(",")[0].rstrip("]")
