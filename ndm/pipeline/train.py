"""The training loop: EMA, atomic checkpoints and exact resume, NaN guard, progress bar.

Files in the job's output directory:
    checkpoint.pt       latest training state (model, EMA, optimizer, RNG states, step); resume point
    model.pt            final EMA and raw weights plus the config (what evaluation reads)
    metrics.jsonl       the training curve, one JSON line per logged step
    train_summary.json  final numbers and provenance (written last: its presence means "done")

Resume is exact on CPU: all randomness comes from the global torch RNG (noise, times,
dropout) and a dedicated generator for batch indices, and both states are saved with
every checkpoint, so a killed and resumed run takes bit-for-bit the same steps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import Tensor, nn

from ndm.pipeline.checkpoint import FORMAT_VERSION, CheckpointError, atomic_torch_save, load_checkpoint, remove_stale_temporaries
from ndm.pipeline.config import RunConfig, run_config_from_dict
from ndm.model.diffusion import DiffusionModel
from ndm.model.variants import build_model

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"
SUMMARY = "train_summary.json"
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: checkpointed on a signal, rerun to resume
NAN_AT_STEP_ENV = "NDM_FAULT_NAN_AT_STEP"  # fault injection (tests): NaN loss in that 0-based step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """SIGTERM/SIGUSR1 arrived; a checkpoint was written and the job should be rerun."""


class Recorder(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


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
    from ndm.pipeline.config import ConfigError
    from ndm.pipeline.data import load_dataset, to_model_space

    try:
        ds = load_dataset(run.data.name, root=run.data.root, download=run.data.download, seed=run.seed, **run.data.options)
    except ValueError as exc:  # unknown dataset name or option, option out of range: a config error
        raise ConfigError(f"datasets.{run.dataset}.data: {exc}") from None
    x = to_model_space(ds.train, ds.levels) if ds.levels is not None else ds.train.float()
    return x, ds.event_shape, ds.levels, dict(ds.info)


def lr_at(step: int, run: RunConfig) -> float:
    """Linear warm-up to train.lr, then constant (DDPM's and VDM's recipe)."""
    warm = run.train.warmup_steps
    return run.train.lr * min(1.0, (step + 1) / warm) if warm > 0 else run.train.lr


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


def _rng_state(data_gen: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, data_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def model_metadata(run: RunConfig, event_shape: tuple[int, ...], levels: int | None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "variant": run.model.variant,
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


def _truncate_metrics(path: Path, last_step: int) -> list[dict]:
    """Drop curve lines past the checkpoint we resume from (they will be redone); return the rest.

    A process killed mid-write can leave a torn last line: it is dropped, not fatal. The file is
    replaced atomically, so a kill during the rewrite cannot lose the kept curve.
    """
    if not path.exists():
        return []
    keep: list[dict] = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= last_step:
            keep.append(record)
    from ndm.pipeline.tracking_jobs import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


def train(
    run: RunConfig,
    out_dir: str | Path,
    *,
    recorder: Recorder | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    data: tuple[Tensor, tuple[int, ...], int | None, dict] | None = None,
    nan_at_step: int | None = None,
) -> TrainResult:
    """Train run's model into out_dir, resuming from out_dir/checkpoint.pt when present.

    stop_after: return after this many steps in this call (as a preemption would);
    nan_at_step: inject a NaN loss at that step (fault-injection tests only).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    if nan_at_step is None and os.environ.get(NAN_AT_STEP_ENV):
        nan_at_step = int(os.environ[NAN_AT_STEP_ENV])
    tc = run.train
    device = pick_device(tc.device)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    torch.manual_seed(run.seed)
    data_gen = torch.Generator().manual_seed(run.seed + 1_000_003)

    x_train, event_shape, levels, data_info = data if data is not None else load_training_data(run)
    x_train = x_train.to(device)
    model = build_model(run.model, event_shape, levels).to(device)
    if tc.channels_last and len(event_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    if tc.compile:
        # In place (Module.compile), so state_dict keys and checkpoints are unchanged. The F
        # network's dF/dt is its own forward-mode pass (plain ops), which compiles; see
        # docs/performance.md for what was measured.
        model.net.compile()
        if model.transform.learned:
            model.transform.net.compile()
    ema = build_model(run.model, event_shape, levels).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.99))
    meta = model_metadata(run, event_shape, levels)
    ckpt_path, metrics_path = out / CHECKPOINT, out / METRICS

    step = 0
    # Sums of the metrics since the last log line: saved with a checkpoint that falls between
    # log steps (a preemption), so the resumed run's next line averages the same steps.
    resumed_interval: dict[str, Tensor] = {}
    resumed_count = 0
    resumed_loss = float("nan")
    if ckpt_path.exists():
        ckpt = load_checkpoint(
            ckpt_path, expected_kind="train", expected_variant=run.model.variant, expected_config_hash=run.hash()
        )
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"], data_gen, device)
        step = int(ckpt["step"])
        resumed_interval = {k: v.to(device) for k, v in ckpt.get("log_interval", {}).items()}
        resumed_count = int(ckpt.get("log_interval_count", 0))
        for record in _truncate_metrics(metrics_path, step):
            resumed_loss = record.get("loss_bpd", resumed_loss)  # a finished run's rerun reports it again
            if recorder is not None:  # the resumed job's MLflow run gets the whole curve
                recorder.log_metrics({k: v for k, v in record.items() if k != "step"}, step=record.get("step"))
    elif metrics_path.exists():
        metrics_path.unlink()  # a fresh start: no stale curve from an earlier, abandoned run
    resumed_from = step

    def save_checkpoint() -> None:
        atomic_torch_save(
            {
                **meta,
                "kind": "train",
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": _rng_state(data_gen, device),
                "log_interval": {k: v.detach().cpu() for k, v in interval.items()},
                "log_interval_count": interval_count,
            },
            ckpt_path,
        )

    # bf16 on a GPU: autocast for the x_hat network only. F, its dF/dt and the loss stay in
    # fp32: the loss weights errors in dF/dt by SNR/gamma' (docs/performance.md).
    autocast = nullcontext()
    if tc.precision == "bf16" and device.type == "cuda":
        model.x_hat_autocast = torch.bfloat16
    n_steps = None if tc.loss == "continuous" else tc.loss_steps
    params = [p for p in model.parameters()]
    ema_params = [p for p in ema.parameters()]
    interval: dict[str, Tensor] = resumed_interval
    interval_count = resumed_count
    # Non-finite losses are detected on the device and checked at log/checkpoint
    # boundaries (no host sync per step); a checkpoint is never written after one.
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    t_start = time.time()
    last_log_time, last_log_step = t_start, step
    final_loss = resumed_loss
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=step, desc=f"train {run.dataset}/{run.model.variant}", file=sys.stderr, dynamic_ncols=True, mininterval=2.0)

    def check_finite() -> None:
        bad = int(first_bad.item())
        if bad >= 0:
            kept = f"the last good checkpoint {ckpt_path} (step {_ckpt_step(ckpt_path)}) is kept" if ckpt_path.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"non-finite loss at step {bad + 1} ({run.dataset}/{run.model.variant}, seed {run.seed}, "
                f"output {out}); {kept}. Fix: lower train.lr or set train.grad_clip, or check the data; a changed "
                f"config cannot resume, so also delete {ckpt_path} to retrain from step 0. Rerunning unchanged resumes "
                "from the checkpoint and, training being deterministic, diverges again unless the NaN was a hardware fault."
            )

    with preemption_signals() as sig:
        steps_this_call = 0
        while step < tc.steps:
            idx = torch.randint(0, x_train.shape[0], (tc.batch_size,), generator=data_gen)
            # pinned + non_blocking: the host-to-device copy does not wait for the GPU's queue
            idx = idx.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else idx.to(device)
            x = x_train[idx]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, run)
            with autocast:
                loss, terms = model.training_loss(x, n_steps, tc.time_sampling)
            if nan_at_step is not None and step == nan_at_step:
                loss = loss * torch.nan
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)  # a Python scalar: no host-to-device copy
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else float("inf"))
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay_at(step, tc.ema_decay))
                for name, value in (
                    ("loss_bpd", loss.detach()),
                    ("reconstruction_bpd", terms.reconstruction.mean().detach()),
                    ("diffusion_bpd", terms.diffusion.mean().detach()),
                    ("prior_bpd", terms.prior.mean().detach()),
                    ("grad_norm", grad_norm.detach()),
                ):
                    if name != "loss_bpd" and name != "grad_norm":
                        value = value / (model.dims * math.log(2.0))
                    interval[name] = interval.get(name, 0.0) + value.float()
            interval_count += 1
            step += 1
            steps_this_call += 1
            if bar is not None:
                bar.update(1)

            done = step >= tc.steps
            if step % tc.log_every == 0 or done:
                check_finite()
                now = time.time()
                record = {k: (v / interval_count).item() for k, v in interval.items()}
                record.update(step=step, lr=lr_at(step - 1, run), steps_per_s=(step - last_log_step) / max(now - last_log_time, 1e-9))
                if model.schedule.learned:
                    ends = model.schedule.values(torch.tensor([0.0, 1.0], device=device)).gamma
                    record.update(gamma_0=ends[0].item(), gamma_1=ends[1].item())
                final_loss = record["loss_bpd"]
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if recorder is not None:
                    recorder.log_metrics({k: v for k, v in record.items() if k != "step"}, step=step)
                if bar is not None:
                    bar.set_postfix(bpd=f"{final_loss:.3f}")
                interval, interval_count = {}, 0
                last_log_time, last_log_step = now, step
            preempt = sig["signal"] is not None
            if step % tc.checkpoint_every == 0 or done or preempt or (stop_after is not None and steps_this_call >= stop_after):
                check_finite()
                save_checkpoint()
            if preempt:
                if bar is not None:
                    bar.close()
                raise Preempted(f"signal {sig['signal']} at step {step}: checkpoint written to {ckpt_path}; rerun to resume")
            if stop_after is not None and steps_this_call >= stop_after and not done:
                if bar is not None:
                    bar.close()
                return TrainResult(step, resumed_from, final_loss, time.time() - t_start, steps_this_call / max(time.time() - t_start, 1e-9), out / MODEL)
    if bar is not None:
        bar.close()
    wall = time.time() - t_start
    model_file = out / MODEL
    atomic_torch_save({**meta, "kind": "model", "step": step, "ema": ema.state_dict(), "model": model.state_dict(), "data_info": _plain(data_info)}, model_file)
    result = TrainResult(step, resumed_from, final_loss, wall, (step - resumed_from) / max(wall, 1e-9), model_file)
    summary = {
        "dataset": run.dataset,
        "variant": run.model.variant,
        "seed": run.seed,
        "steps": step,
        "resumed_from": resumed_from,
        "final_loss_bpd": final_loss,
        "wall_s": wall,
        "steps_per_s": result.steps_per_s,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_params_x_hat": sum(p.numel() for p in model.net.parameters()),
        "n_params_F": sum(p.numel() for p in model.transform.parameters()),
        "config_hash": run.hash(),
        "device": str(device),
    }
    from ndm.pipeline.tracking_jobs import write_result_json

    write_result_json(out / SUMMARY, summary, run)  # adds provenance (GPU model name included)
    if recorder is not None:
        recorder.log_artifact(metrics_path)
    return result


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:
        return "unknown"


def _plain(obj: Any) -> Any:
    """JSON-able, weights_only-loadable copy of loader info."""
    return json.loads(json.dumps(obj, default=str))
