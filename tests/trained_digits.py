"""A tiny model trained on digits for 40 steps (seconds), shared by the sampling and likelihood
tests: cached by config hash under the session's base temp dir, so it is trained once."""

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
