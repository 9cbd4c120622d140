"""The papers' training recipes (issue 29): DDPM's random horizontal flips and Adam's beta2."""

from __future__ import annotations

import pytest
import torch

from ndm.pipeline.config import ConfigError, resolve_run_config
from ndm.pipeline.train import load_trained_model, train

NET = {"kind": "unet", "channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": []}


def _run(**train_options):
    config = {"datasets": {"digits": {"data": {"name": "digits"}, "model": {"network": NET},
                                      "train": {"steps": 6, "batch_size": 16, "checkpoint_every": 3, "log_every": 3, **train_options}}}}  # fmt: skip
    return resolve_run_config(config, "digits", "ddpm", seed=0)


def test_random_flips_change_training_and_resume_bit_exactly(tmp_path):
    """Flips draw from the data generator: a run with flips differs from one without, and a run
    stopped after 3 steps and resumed equals the uninterrupted one to the bit."""
    flipped = train(_run(random_flip=True), tmp_path / "whole", progress=False)
    plain = train(_run(), tmp_path / "plain", progress=False)
    train(_run(random_flip=True), tmp_path / "split", progress=False, stop_after=3)
    split = train(_run(random_flip=True), tmp_path / "split", progress=False)
    a, b, c = (load_trained_model(r.model_path)[0].state_dict() for r in (flipped, split, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_adam_beta2_reaches_the_optimiser_and_is_range_checked(tmp_path):
    from ndm.pipeline.train_state import build_state

    run = _run(adam_beta2=0.999)
    state = build_state(run, (1, 8, 8), 17, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert state.opt.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ConfigError, match=r"train.adam_beta2 must be in \(0, 1\)"):
        _run(adam_beta2=1.0)
