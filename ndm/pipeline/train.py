"""The training loop: EMA, atomic checkpoints and exact resume, NaN guard, progress bar.

Files in the job's output directory:
    checkpoint.pt       latest training state (model, EMA, optimizer, RNG states, step); resume point
    model.pt            final EMA and raw weights plus the config (what evaluation reads)
    metrics.jsonl       the training curve, one JSON line per logged step
    train_summary.json  final numbers and provenance (written last: its presence means "done")

Resume is exact on CPU: all randomness comes from the global torch RNG (noise, times,
dropout) and a dedicated generator for batch indices, and both states are saved with
every checkpoint, so a killed and resumed run takes bit-for-bit the same steps.

`train` reads top-down: build the state and resume it (ndm.pipeline.train_state), then repeat
one step (`train_step`), a log line every train.log_every steps (`MetricsLog`, whose numbers
`step_metrics` and `log_record` gather), a checkpoint every train.checkpoint_every steps
(`save_checkpoint`), and finish (`finish`: model.pt, then train_summary.json).

Launched as N processes (torchrun, srun), each trains on its slice of the same global batch
and rank 0 alone writes these files (ndm.pipeline.distributed).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ndm.estimators.flops import training_flops_per_step
from ndm.estimators.gauge import offset_metrics
from ndm.model.diffusion import DiffusionModel, bits_per_dim
from ndm.model.transforms import set_reference
from ndm.model.variants import build_model
from ndm.pipeline.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint
from ndm.pipeline.config import ConfigError, RunConfig, run_config_from_dict
from ndm.pipeline.distributed import World, average_gradients, average_metrics_and_stop, barrier, device_for, process_group, world_from_env
from ndm.pipeline.errors import Preempted, TrainingDiverged
from ndm.pipeline.results import atomic_torch_save, remove_stale_temporaries
from ndm.pipeline.train_curve import TestCurve
from ndm.pipeline.train_state import Recorder, TrainState, build_state, resume, save_checkpoint

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
SUMMARY = "train_summary.json"
# Training examples (the first ones, a fixed set) on which each log line measures F's offset.
OFFSET_PROBE = 256


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    final_loss_bpd: float
    wall_s: float
    steps_per_s: float
    model_path: Path


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; set train.device: auto or cpu")
    return torch.device(name)


def load_training_data(run: RunConfig) -> tuple[Tensor, tuple[int, ...], int | None, dict]:
    """The training split as a model-space float tensor, its event shape, levels, and info."""
    from ndm.pipeline.data import load_dataset, to_model_space

    try:
        ds = load_dataset(run.data.name, root=run.data.root, download=run.data.download, seed=run.seed, **run.data.options)
    except ValueError as exc:  # unknown dataset name or option, option out of range: a config error
        raise ConfigError(f"datasets.{run.dataset}.data: {exc}") from None
    x = to_model_space(ds.train, ds.levels) if ds.levels is not None else ds.train.float()
    return x, ds.event_shape, ds.levels, dict(ds.info)


def lr_at(step: int, run: RunConfig) -> float:
    """Linear warm-up to train.lr, then constant (DDPM's and VDM's recipe) or, with
    train.lr_schedule: cosine, a half cosine from train.lr down to 0 at train.steps (a short run
    then ends annealed, at the plateau of its step budget instead of the noise of a high lr)."""
    tc = run.train
    warm = tc.warmup_steps
    lr = tc.lr * min(1.0, (step + 1) / warm) if warm > 0 else tc.lr
    if tc.lr_schedule == "cosine" and step >= warm:
        progress = (step - warm) / max(1, tc.steps - warm)
        lr = tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return lr


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)): short runs still average."""
    return min(decay, (1.0 + step) / (10.0 + step))


@contextmanager
def preemption_signals() -> Iterator[dict]:
    """Turn SIGTERM/SIGUSR1 (SLURM's warnings before preemption or the time limit) into a flag."""
    flag = {"signal": None}
    handlers = {}

    def handler(signum, frame):  # noqa: ARG001
        flag["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            handlers[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield flag
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


def model_metadata(run: RunConfig, event_shape: tuple[int, ...], levels: int | None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "variant": run.model_name,
        "config": run.to_dict(),
        "config_hash": run.hash(),
        "event_shape": list(event_shape),
        "levels": levels,
    }


def load_trained_model(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> tuple[DiffusionModel, RunConfig]:
    """The trained model (EMA weights by default) and its RunConfig from a model.pt file."""
    ckpt = load_checkpoint(path, expected_kind="model")
    run = run_config_from_dict(ckpt["config"])
    model = build_model(run.model, tuple(ckpt["event_shape"]), ckpt["levels"])
    try:
        model.load_state_dict(ckpt["ema" if ema else "model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({str(exc)[:300]})") from None
    return model.to(device).eval(), run


# --------------------------------------------------------------------------------------------
# The steps of `train`
# --------------------------------------------------------------------------------------------


def train_step(state: TrainState, x_train: Tensor, run: RunConfig, world: World = World()) -> dict[str, Tensor]:
    """One optimizer step on a random batch and the EMA update; returns `step_metrics`.

    With N processes: this process's rows of the global batch, gradients averaged over all.
    """
    tc = run.train
    idx = torch.randint(0, x_train.shape[0], (tc.batch_size,), generator=state.data_gen)
    rows = world.rows(tc.batch_size) if world.parallel else None
    idx = idx if rows is None else rows.take(idx)
    flip = None
    if tc.random_flip and x_train.dim() == 4:
        flip = torch.rand(tc.batch_size, generator=state.data_gen) < 0.5
        flip = flip if rows is None else rows.take(flip)
    # pinned + non_blocking: the host-to-device copy does not wait for the GPU's queue
    idx = idx.pin_memory().to(state.device, non_blocking=True) if state.device.type == "cuda" else idx.to(state.device)
    for group in state.opt.param_groups:
        group["lr"] = lr_at(state.step, run) * group.get("lr_scale", 1.0)
    n_steps = None if tc.loss == "continuous" else tc.loss_steps
    x = x_train[idx]
    if flip is not None:
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    loss, terms = state.model.training_loss(x, n_steps, tc.time_sampling, rows)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(state.params, world)
    grad_norm = nn.utils.clip_grad_norm_(state.params, tc.grad_clip if tc.grad_clip else float("inf"))
    state.opt.step()
    with torch.no_grad():
        torch._foreach_lerp_(state.ema_params, state.params, 1.0 - ema_decay_at(state.step, tc.ema_decay))
        metrics = step_metrics(state.model, loss, terms, grad_norm)
    state.step += 1
    return metrics


def step_metrics(model: DiffusionModel, loss: Tensor, terms: Any, grad_norm: Tensor) -> dict[str, Tensor]:
    """The numbers of one step that a log line averages: device tensors, so no host sync."""
    return {
        "loss_bpd": loss.detach(),
        "reconstruction_bpd": bits_per_dim(terms.reconstruction.mean().detach(), model.dims),
        "diffusion_bpd": bits_per_dim(terms.diffusion.mean().detach(), model.dims),
        "prior_bpd": bits_per_dim(terms.prior.mean().detach(), model.dims),
        "grad_norm": grad_norm.detach(),
    }


def log_record(state: TrainState, run: RunConfig, steps_per_s: float, probe: Tensor) -> dict[str, float]:
    """One line of metrics.jsonl: the interval's mean step metrics, lr, speed, learned gamma ends,
    and for a learned F the rms of its input-independent offset on a fixed probe batch (the
    NELBO cannot see that offset, so it can drift: docs/math.md, "Gauge freedom of F")."""
    record = {k: (v / state.interval_count).item() for k, v in state.interval.items()}
    record.update(step=state.step, lr=lr_at(state.step - 1, run), steps_per_s=steps_per_s)
    if state.model.schedule.learned:
        ends = state.model.schedule.values(torch.tensor([0.0, 1.0], device=state.device)).gamma
        record.update(gamma_0=ends[0].item(), gamma_1=ends[1].item())
    record.update(offset_metrics(state.model, probe))
    return record


class MetricsLog:
    """Where each log line goes: metrics.jsonl, the recorder (MLflow) and the progress bar."""

    def __init__(self, path: Path, recorder: Recorder | None, bar: Any, step: int, probe: Tensor, curve: TestCurve | None = None, flops_per_step: float = math.nan) -> None:
        self.path, self.recorder, self.bar, self.probe = path, recorder, bar, probe
        self.curve, self.flops_per_step = curve, flops_per_step
        self.last_time, self.last_step = time.time(), step
        # Training seconds before this process (a resumed run continues the count).
        self.seconds_before = _last_value(path, "train_seconds")

    def append(self, state: TrainState, run: RunConfig, done: bool = False) -> float:
        """Log the interval ending at this step, start the next one; return the mean loss."""
        now = time.time()
        record = log_record(state, run, (state.step - self.last_step) / max(now - self.last_time, 1e-9), self.probe)
        self.seconds_before += now - self.last_time
        record.update(train_seconds=self.seconds_before, train_flops=self.flops_per_step * state.step)
        if self.curve is not None and self.curve.due(state.step, run.train.eval_every, done):
            record.update(self.curve.evaluate(state.ema))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.recorder is not None:
            self.recorder.log_metrics({k: v for k, v in record.items() if k != "step"}, step=state.step)
        self.bar.set_postfix(bpd=f"{record['loss_bpd']:.3f}")
        state.interval, state.interval_count = {}, 0
        self.last_time, self.last_step = time.time(), state.step  # the curve's evaluation is not training time
        return record["loss_bpd"]


class NonFiniteGuard:
    """The first step whose loss was NaN or infinite, kept on the device (no host sync per step).

    Checked at log and checkpoint boundaries, so a checkpoint is never written after such a step.
    """

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, loss: Tensor, step: int) -> None:
        # step is a Python scalar: no host-to-device copy
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)

    def check(self, run: RunConfig, out: Path) -> None:
        bad = int(self.first_bad.item())
        if bad < 0:
            return
        ckpt_path = out / CHECKPOINT
        kept = f"the last good checkpoint {ckpt_path} (step {_ckpt_step(ckpt_path)}) is kept" if ckpt_path.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"non-finite loss at step {bad} ({run.dataset}/{run.model_name}, seed {run.seed}, "
            f"output {out}); {kept}. Fix: lower train.lr or set train.grad_clip, or check the data; a changed "
            f"config cannot resume, so also delete {ckpt_path} to retrain from step 0. Rerunning unchanged resumes "
            "from the checkpoint and, training being deterministic, diverges again unless the NaN was a hardware fault."
        )


def finish(state: TrainState, run: RunConfig, out: Path, meta: dict[str, Any], data_info: dict, result: TrainResult, recorder: Recorder | None, processes: int = 1) -> None:
    """Write model.pt, then train_summary.json (its presence means done); hand over the curve.

    processes: the data-parallel processes that trained it (the process group's size)."""
    atomic_torch_save({**meta, "kind": "model", "step": state.step, "ema": state.ema.state_dict(), "model": state.model.state_dict(), "data_info": _plain(data_info)}, result.model_path)
    model = state.model
    summary = {
        "dataset": run.dataset,
        "variant": run.model_name,
        "seed": run.seed,
        "steps": state.step,
        "resumed_from": result.resumed_from,
        "final_loss_bpd": result.final_loss_bpd,
        "wall_s": result.wall_s,
        "steps_per_s": result.steps_per_s,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_params_x_hat": sum(p.numel() for p in model.net.parameters()),
        "n_params_F": sum(p.numel() for p in model.transform.parameters()),
        "config_hash": run.hash(),
        "device": str(state.device),
        "processes": processes,
    }
    from ndm.pipeline.results import write_result_json

    write_result_json(out / SUMMARY, summary, run)  # adds provenance (GPU model name included)
    if recorder is not None:
        recorder.log_artifact(out / METRICS)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(
    run: RunConfig,
    out_dir: str | Path,
    *,
    recorder: Recorder | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    data: tuple[Tensor, tuple[int, ...], int | None, dict] | None = None,
) -> TrainResult:
    """Train run's model into out_dir, resuming from out_dir/checkpoint.pt when present.

    stop_after: checkpoint and return after this many steps in this call (as a preemption would);
    data: the training data as load_training_data returns it (default: loaded from run.data).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc, world = run.train, world_from_env()
    world.rows(tc.batch_size)  # a batch that does not split over the processes: fail before any work
    device = device_for(world, pick_device(tc.device))
    with process_group(world, device):
        return _train(run, out, world, device, recorder if world.main else None, progress and world.main, stop_after, data)


def _train(run: RunConfig, out: Path, world: World, device: torch.device, recorder: Recorder | None, progress: bool, stop_after: int | None, data: Any) -> TrainResult:
    """`train` in one process of `world` (rank 0 writes every file)."""
    tc = run.train
    if world.main:
        remove_stale_temporaries(out)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    torch.manual_seed(run.seed)
    data_gen = torch.Generator().manual_seed(run.seed + 1_000_003)
    x_train, event_shape, levels, data_info = data if data is not None else load_training_data(run)
    x_train = x_train.to(device)
    state = build_state(run, event_shape, levels, device, data_gen)
    if run.model.transform_reference == "data_mean":  # before resume: a checkpoint holds the same x_ref
        x_ref = x_train.mean(0)  # the training mean
        for m in (state.model, state.ema):
            set_reference(m.transform, x_ref)
    meta = model_metadata(run, event_shape, levels)
    final_loss = resume(state, run, out / CHECKPOINT, out / METRICS if world.main else None, recorder)
    resumed_from, t_start = state.step, time.time()
    guard = NonFiniteGuard(device)

    def result() -> TrainResult:
        wall = time.time() - t_start
        return TrainResult(state.step, resumed_from, final_loss, wall, (state.step - resumed_from) / max(wall, 1e-9), out / MODEL)

    bar = tqdm(total=tc.steps, initial=state.step, desc=f"train {run.dataset}/{run.model_name}", file=sys.stderr, dynamic_ncols=True, mininterval=2.0, disable=not progress)
    with preemption_signals() as sig, bar:
        flops = training_flops_per_step(state.model, x_train, tc.batch_size, None if tc.loss == "continuous" else tc.loss_steps, tc.time_sampling)
        log = MetricsLog(out / METRICS, recorder, bar, state.step, probe=x_train[:OFFSET_PROBE], curve=TestCurve.for_run(run, device), flops_per_step=flops) if world.main else None
        while state.step < tc.steps:
            metrics = train_step(state, x_train, run, world)
            # N processes: the global batch's metrics, and a signal to any process stops all
            metrics, stop = average_metrics_and_stop(metrics, sig["signal"] is not None, world)
            guard.record(metrics["loss_bpd"], state.step)
            state.add_to_interval(metrics)
            bar.update(1)
            done = state.step >= tc.steps
            if state.step % tc.log_every == 0 or done:
                guard.check(run, out)
                if log is not None:
                    final_loss = log.append(state, run, done)
                else:
                    state.interval, state.interval_count = {}, 0
            preempted = stop if world.parallel else sig["signal"] is not None
            paused = stop_after is not None and state.step - resumed_from >= stop_after
            if state.step % tc.checkpoint_every == 0 or done or preempted or paused:
                guard.check(run, out)
                if world.main:
                    save_checkpoint(state, meta, out / CHECKPOINT)
            if preempted:
                barrier(world)  # rank 0's checkpoint is on disk before any process exits
                raise Preempted(f"signal {sig['signal'] or 'to another process'} at step {state.step}: checkpoint written to {out / CHECKPOINT}; rerun to resume")
            if paused and not done:
                return result()
    finished = result()
    if world.main:
        finish(state, run, out, meta, data_info, finished, recorder, processes=world.size)
    barrier(world)
    return finished


def _last_value(path: Path, key: str) -> float:
    """`key` of the last line of a metrics file that has it (0.0 when none does)."""
    value = 0.0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                value = float(json.loads(line).get(key, value))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
    return value


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:
        return "unknown"


def _plain(obj: Any) -> Any:
    """JSON-able, weights_only-loadable copy of loader info."""
    return json.loads(json.dumps(obj, default=str))
