"""Range checks of a RunConfig that a type check cannot express (split from config.py)."""

from __future__ import annotations

import re
from typing import Any

from ndm.model.specs import VARIANTS
from ndm.names import DATASETS
from ndm.pipeline.errors import ConfigError, unknown_name


# A decimal number in any of Python's spellings. YAML 1.1 (PyYAML, and so Snakemake's
# --configfile) wants a dot and a signed exponent, so it reads 1e-4 and 1e-05 (how Python prints
# 0.00001, and how a float reaches a SLURM job's --config) as strings; a float field takes them.
DECIMAL_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def validate_values(run: Any, where: str) -> None:
    """Range checks that a type check cannot express."""
    t, m = run.train, run.model
    checks = [
        (t.steps >= 1, f"{where}.train.steps must be >= 1, got {t.steps}"),
        (t.batch_size >= 1, f"{where}.train.batch_size must be >= 1, got {t.batch_size}"),
        (t.lr > 0, f"{where}.train.lr must be > 0, got {t.lr}"),
        (t.lr_schedule in ("constant", "cosine"), f"{where}.train.lr_schedule must be constant or cosine, got {t.lr_schedule!r}"),
        (0 <= t.ema_decay < 1, f"{where}.train.ema_decay must be in [0, 1), got {t.ema_decay}"),
        (t.loss in ("continuous", "discrete"), f"{where}.train.loss must be 'continuous' or 'discrete', got {t.loss!r}"),
        (t.loss_steps >= 1, f"{where}.train.loss_steps must be >= 1, got {t.loss_steps}"),
        (t.time_sampling in ("uniform", "gamma"), f"{where}.train.time_sampling must be 'uniform' or 'gamma', got {t.time_sampling!r}"),
        (t.checkpoint_every >= 1, f"{where}.train.checkpoint_every must be >= 1"),
        (t.eval_every >= 0 and (t.eval_every == 0 or t.eval_every % max(t.log_every, 1) == 0),
         f"{where}.train.eval_every must be 0 (off) or a multiple of train.log_every ({t.log_every}), got {t.eval_every}"),
        (t.eval_examples >= 2 and t.eval_time_samples >= 1, f"{where}.train.eval_examples must be >= 2 and eval_time_samples >= 1"),
        (t.device in ("auto", "cpu", "cuda"), f"{where}.train.device must be auto, cpu or cuda, got {t.device!r}"),
        (t.precision in ("fp32", "bf16"), f"{where}.train.precision must be fp32 or bf16, got {t.precision!r}"),
        (t.grad_clip is None or t.grad_clip > 0, f"{where}.train.grad_clip must be > 0 or null"),
        (m.variant in VARIANTS, f"{where}.model.variant: {unknown_name('variant', m.variant, VARIANTS)}"),
        (run.data.name in DATASETS, f"{where}.data.name: {unknown_name('dataset', run.data.name, DATASETS)}"),
        (m.parameterization in ("eps", "x", "v"), f"{where}.model.parameterization must be eps, x or v"),
        (m.network.kind in ("unet", "mlp"), f"{where}.model.network.kind must be unet or mlp"),
        *[
            (net.patch_size >= 1 and (net.patch_size == 1 or net.kind == "unet"),
             f"{where}.model.{name}.patch_size must be >= 1, and 1 for an mlp, got {net.patch_size} ({net.kind})")
            for name, net in (("network", m.network), ("transform_network", m.transform_network)) if net is not None
        ],
        (m.transform_time in ("jvp", "separable"), f"{where}.model.transform_time must be jvp or separable, got {m.transform_time!r}"),
        (m.transform_rank >= 1, f"{where}.model.transform_rank must be >= 1, got {m.transform_rank}"),
        (m.transform_gauge in ("none", "reference"), f"{where}.model.transform_gauge must be none or reference, got {m.transform_gauge!r}"),
        (m.transform_init in ("zero", "random"), f"{where}.model.transform_init must be zero or random, got {m.transform_init!r}"),
        (t.transform_lr_scale > 0, f"{where}.train.transform_lr_scale must be > 0, got {t.transform_lr_scale}"),
        (m.transform_reference in ("zero", "data_mean"), f"{where}.model.transform_reference must be zero or data_mean, got {m.transform_reference!r}"),
        (m.transform_reference == "zero" or m.transform_gauge == "reference",
         f"{where}.model.transform_reference: {m.transform_reference} sets x_ref of the reference gauge: add model.transform_gauge: reference (or drop transform_reference)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if m.parameterization == "eps" and VARIANTS[m.variant].transform != "identity":
        raise ConfigError(
            f"{where}.model.parameterization: 'eps' needs F = identity but variant {m.variant!r} has "
            f"F = {VARIANTS[m.variant].transform}; use 'v' or 'x'"
        )
