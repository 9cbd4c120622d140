"""bf16 training and evaluation (issue 29, item 5), on the CPU where autocast also works: x_hat
runs under bf16 autocast, while gamma, alpha, sigma, F and every NELBO term stay fp32, and the
test NELBO of a trained default model moves by less than 1%."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from ndm.estimators.likelihood import continuous_nelbo
from ndm.pipeline.config import load_yaml, resolve_run_config
from ndm.pipeline.data import load_split
from ndm.pipeline.train import load_trained_model, train

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 150


def _default_run(variant: str, **train):
    config = copy.deepcopy(load_yaml(REPO / "configs/default.yaml"))
    config["datasets"]["digits"].setdefault("train", {}).update({"steps": TRAIN_STEPS, "log_every": 50, "eval_every": 0, **train})
    return resolve_run_config(config, "digits", variant, 0)


@pytest.fixture(scope="module")
def trained_ndm(tmp_path_factory):
    """The default config's digits NDM (U-Net x_hat, MLP F), trained fp32 for TRAIN_STEPS steps."""
    run = _default_run("ndm")
    out = tmp_path_factory.mktemp("ndm_fp32")
    train(run, out, progress=False)
    return out / "model.pt", run


class _DtypeProbe:
    """Records the dtypes of the schedule's values, x_hat's raw network output and F's output."""

    def __init__(self, model):
        self.seen: dict[str, set] = {"gamma": set(), "alpha": set(), "sigma": set(), "net": set(), "F": set(), "x_hat": set()}
        values, x_hat, transform = model.values, model.x_hat, model.transform.forward

        def probe_values(t):
            v = values(t)
            for name in ("gamma", "alpha", "sigma"):
                self.seen[name].add(getattr(v, name).dtype)
            return v

        def probe_x_hat(*a, **k):
            out = x_hat(*a, **k)
            self.seen["x_hat"].add(out.dtype)
            return out

        def probe_transform(*a, **k):
            out = transform(*a, **k)
            self.seen["F"].add((out[0] if isinstance(out, tuple) else out).dtype)
            return out

        model.values, model.x_hat, model.transform.forward = probe_values, probe_x_hat, probe_transform
        model.net.register_forward_hook(lambda m, i, o: self.seen["net"].add(o.dtype))


def test_bf16_nelbo_of_a_trained_model_is_within_one_percent_and_gamma_stays_fp32(trained_ndm):
    path, run = trained_ndm
    x, _ = load_split(run, "test", 297)
    model, _ = load_trained_model(path)
    fp32 = continuous_nelbo(model, x, 16, generator=torch.Generator().manual_seed(0))
    model.use_precision("bf16")
    probe = _DtypeProbe(model)
    bf16 = continuous_nelbo(model, x, 16, generator=torch.Generator().manual_seed(0))
    rel = bf16.bpd / fp32.bpd - 1.0
    print(f"test NELBO fp32 {fp32.bpd:.5f} bpd, bf16 {bf16.bpd:.5f} bpd, relative difference {rel:+.3e}")
    assert math.isfinite(bf16.bpd) and abs(rel) < 0.01
    assert probe.seen["net"] == {torch.bfloat16}  # autocast is really on for x_hat's network
    for name in ("gamma", "alpha", "sigma", "F", "x_hat"):
        assert probe.seen[name] == {torch.float32}, (name, probe.seen[name])
    assert all(t.dtype == torch.float32 for t in (bf16.terms or {}).values())
    model.use_precision("fp32")
    again = continuous_nelbo(model, x, 16, generator=torch.Generator().manual_seed(0))
    assert again.bpd == fp32.bpd  # fp32 restores the exact computation


def test_bf16_training_stays_finite_with_the_network_in_bf16(tmp_path):
    run = _default_run("ndm", steps=20, precision="bf16")
    result = train(run, tmp_path / "m", progress=False)
    model, loaded = load_trained_model(tmp_path / "m" / "model.pt")
    assert loaded.train.precision == "bf16"
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert math.isfinite(result.final_loss_bpd)


def test_precision_is_checked():
    from ndm.model.variants import build_model

    m = build_model(_default_run("ddpm").model, (1, 8, 8), 17)
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        m.use_precision("fp16")
