"""The state of a training run, and how a checkpoint saves and restores it exactly.

A checkpoint holds the model, its EMA copy, the optimizer, both RNG states (the global torch
RNG draws noise, times and dropout; a dedicated generator draws batch indices), the step, and
the metric sums since the last log line. Restoring all of them is what makes a killed and
resumed run take bit-for-bit the same steps on CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ndm.model.diffusion import DiffusionModel
from ndm.model.variants import build_model
from ndm.pipeline.checkpoint import load_checkpoint
from ndm.pipeline.config import RunConfig
from ndm.pipeline.results import atomic_torch_save, atomic_write_text


class Recorder(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


@dataclass
class TrainState:
    """What a checkpoint holds: enough for a resumed run to take bit-for-bit the same steps."""

    model: DiffusionModel
    ema: DiffusionModel
    opt: torch.optim.Optimizer
    data_gen: torch.Generator  # batch indices; noise, times and dropout use the global torch RNG
    device: torch.device
    step: int = 0
    # Sums of the step metrics since the last log line: saved with a checkpoint that falls
    # between log steps (a preemption), so the resumed run's next line averages the same steps.
    interval: dict[str, Tensor] = field(default_factory=dict)
    interval_count: int = 0

    def __post_init__(self) -> None:
        self.params = list(self.model.parameters())
        self.ema_params = list(self.ema.parameters())

    def add_to_interval(self, metrics: dict[str, Tensor]) -> None:
        for name, value in metrics.items():
            self.interval[name] = self.interval.get(name, 0.0) + value.float()
        self.interval_count += 1


def param_groups(model: torch.nn.Module, tc: Any) -> list[dict]:
    """The optimiser's groups: everything in one, or with train.transform_lr_scale != 1 F's
    parameters in a second group whose "lr_scale" multiplies the scheduled learning rate
    (ndm.pipeline.train.train_step sets lr = lr_at(step) * lr_scale per group)."""
    transform = getattr(model, "transform", None)
    if tc.transform_lr_scale == 1.0 or transform is None or not transform.learned:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    f_ids = {id(p) for p in transform.parameters()}
    rest = [p for p in model.parameters() if id(p) not in f_ids]
    return [{"params": rest, "lr_scale": 1.0}, {"params": list(transform.parameters()), "lr_scale": float(tc.transform_lr_scale)}]


def build_state(run: RunConfig, event_shape: tuple[int, ...], levels: int | None, device: torch.device, data_gen: torch.Generator) -> TrainState:
    """A fresh model, its EMA copy and the optimizer; both inits draw from the global torch RNG."""
    tc = run.train
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
    # bf16: autocast for the x_hat network only, on any device (CPU autocast is what the tests
    # run). F, its dF/dt and the loss stay in fp32: the loss weights errors in dF/dt by
    # SNR/gamma' (docs/performance.md).
    model.use_precision(tc.precision)
    ema = build_model(run.model, event_shape, levels).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(model, tc), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, tc.adam_beta2))
    return TrainState(model, ema, opt, data_gen, device)


def resume(state: TrainState, run: RunConfig, ckpt_path: Path, metrics_path: Path | None, recorder: Recorder | None) -> float:
    """Load the checkpoint into `state` if there is one; return the last logged loss (or NaN).

    The curve past the checkpoint is dropped (those steps are redone) and the rest is replayed
    to the recorder, so a resumed job's MLflow run holds the whole curve. Without a checkpoint
    this is a fresh start, and a curve left by an earlier, abandoned run is deleted.
    metrics_path None: leave the curve alone (the processes of data-parallel training but rank 0).
    """
    last_loss = float("nan")
    if not ckpt_path.exists():
        if metrics_path is not None:
            metrics_path.unlink(missing_ok=True)
        return last_loss
    ckpt = load_checkpoint(ckpt_path, expected_kind="train", expected_variant=run.model_name, expected_config_hash=run.hash())
    state.model.load_state_dict(ckpt["model"])
    state.ema.load_state_dict(ckpt["ema"])
    state.opt.load_state_dict(ckpt["optimizer"])
    _set_rng_state(ckpt["rng"], state.data_gen, state.device)
    state.step = int(ckpt["step"])
    state.interval = {k: v.to(state.device) for k, v in ckpt.get("log_interval", {}).items()}
    state.interval_count = int(ckpt.get("log_interval_count", 0))
    for record in _truncate_metrics(metrics_path, state.step) if metrics_path is not None else []:
        last_loss = record.get("loss_bpd", last_loss)  # a finished run's rerun reports it again
        if recorder is not None:
            recorder.log_metrics({k: v for k, v in record.items() if k != "step"}, step=record.get("step"))
    return last_loss


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
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


def save_checkpoint(state: TrainState, meta: dict[str, Any], path: Path) -> None:
    """Write the state atomically; meta (the config, its hash, the data shape) is what resume checks."""
    atomic_torch_save(
        {
            **meta,
            "kind": "train",
            "step": state.step,
            "model": state.model.state_dict(),
            "ema": state.ema.state_dict(),
            "optimizer": state.opt.state_dict(),
            "rng": _rng_state(state.data_gen, state.device),
            "log_interval": {k: v.detach().cpu() for k, v in state.interval.items()},
            "log_interval_count": state.interval_count,
        },
        path,
    )


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
