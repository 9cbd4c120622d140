"""Digits models shared across test modules, cached by config hash under the session's base
temp dir, so each is trained once per session:

    trained_digits   a tiny model, 40 steps (seconds): the sampling and likelihood tests
    default_digits   configs/default.yaml's digits model (400 steps, about a minute on a core):
                     the training and compression tests
"""

from __future__ import annotations

from pathlib import Path

DIGITS_NET = {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}


def trained_digits(variant: str, base: Path) -> tuple:
    """(model, path of its model.pt)."""
    from ndm.pipeline.config import resolve_run_config
    from ndm.pipeline.train import MODEL, load_trained_model, train

    cfg = {
        "datasets": {
            "digits": {
                "data": {"name": "digits"},
                "model": {"network": DIGITS_NET},
                "train": {"steps": 40, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "ema_decay": 0.9, "log_every": 20, "checkpoint_every": 1000, "device": "cpu"},
            }
        }
    }
    run = resolve_run_config(cfg, "digits", variant, 0)
    out = base / f"digits-{variant}-{run.hash()}"
    if not (out / MODEL).exists():
        train(run, out, progress=False)
    model, _ = load_trained_model(out / MODEL)
    return model, out / MODEL


def default_digits(variant: str, base: Path, repo: Path = Path(__file__).resolve().parents[1]) -> Path:
    """The model.pt of configs/default.yaml's digits run of `variant`, seed 0: the pipeline's
    results/default one when it exists with the same config hash, else trained under base."""
    from ndm.pipeline.config import load_yaml, resolve_run_config
    from ndm.pipeline.train import MODEL, load_trained_model, train

    run = resolve_run_config(load_yaml(repo / "configs/default.yaml"), "digits", variant, 0)
    pipeline_model = repo / f"results/default/digits/{variant}/seed0/{MODEL}"
    if pipeline_model.exists() and load_trained_model(pipeline_model)[1].hash() == run.hash():
        return pipeline_model
    out = base / f"default-digits-{variant}-{run.hash()}"
    if not (out / MODEL).exists():
        train(run, out, progress=False)
    return out / MODEL
