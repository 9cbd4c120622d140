"""Model variants: each special case of NDM is a config entry, not a code fork.

A variant names a transformation F and a schedule; `build_model` turns a ModelConfig
(variant plus architecture) into a DiffusionModel.
"""

from __future__ import annotations

from torch import nn

from ndm.model.diffusion import DiffusionModel
from ndm.model.networks import build_network, init_output_small_random
from ndm.model.schedules import build_schedule
from ndm.model.specs import GAUGES, VARIANTS, ModelConfig, NetworkConfig, Variant, get_variant
from ndm.model.transforms import BlurTransform, IdentityTransform, LatentTransform, NeuralTransform, SeparableTransform, Transform

__all__ = ["VARIANTS", "ModelConfig", "NetworkConfig", "Variant", "get_variant", "build_model", "build_transform"]


def build_transform(kind: str, cfg: ModelConfig, event_shape: tuple[int, ...], levels: int | None = None) -> Transform:
    transform = _build_transform(kind, cfg, event_shape, levels)
    if transform.learned and cfg.transform_init == "random":
        init_output_small_random(transform.net)
    elif cfg.transform_init not in ("zero", "random"):
        raise ValueError(f"model.transform_init must be 'zero' or 'random', got {cfg.transform_init!r}")
    return transform


def _build_transform(kind: str, cfg: ModelConfig, event_shape: tuple[int, ...], levels: int | None) -> Transform:
    if kind == "identity":
        return IdentityTransform()
    # The gauge concerns a learned time-dependent F only (ndm, ndm-vdm); the other F's ignore it,
    # as they ignore transform_time (a time-independent F has no null direction: docs/math.md).
    if kind == "neural" and cfg.transform_gauge not in GAUGES:
        raise ValueError(f"model.transform_gauge must be one of {GAUGES}, got {cfg.transform_gauge!r}")
    if kind == "neural" and cfg.transform_time == "separable":
        net = build_network(cfg.transform_network or cfg.network, event_shape, levels, out_multiplier=cfg.transform_rank)
        return SeparableTransform(net, cfg.transform_rank, gauge=cfg.transform_gauge, event_shape=event_shape)
    if kind == "neural" and cfg.transform_time != "jvp":
        raise ValueError(f"model.transform_time must be 'jvp' or 'separable', got {cfg.transform_time!r}")
    if kind in ("neural", "latent"):
        net = build_network(cfg.transform_network or cfg.network, event_shape, levels)
        return NeuralTransform(net, gauge=cfg.transform_gauge, event_shape=event_shape) if kind == "neural" else LatentTransform(net)
    if kind == "blur":
        side = event_shape[-1] if len(event_shape) == 3 else event_shape[0]
        sigma_max = cfg.blur_sigma_max if cfg.blur_sigma_max is not None else 0.625 * side
        return BlurTransform(event_shape, sigma_max)
    raise ValueError(f"unknown transform {kind!r}")


def build_model(
    cfg: ModelConfig,
    event_shape: tuple[int, ...],
    levels: int | None,
    net: nn.Module | None = None,
) -> DiffusionModel:
    """The DiffusionModel of cfg.variant for data of this shape; `net` replaces the x_hat network
    (the Gaussian oracle uses this)."""
    variant = get_variant(cfg.variant)
    schedule = build_schedule(
        cfg.schedule or variant.schedule,
        gamma_min=cfg.gamma_min,
        gamma_max=cfg.gamma_max,
        objective=variant.schedule_objective,
        flow_eps=cfg.flow_eps,
    )
    transform = build_transform(variant.transform, cfg, event_shape, levels)
    if net is None:
        net = build_network(cfg.network, event_shape, levels)
    return DiffusionModel(
        schedule,
        transform,
        net,
        event_shape=event_shape,
        levels=levels,
        parameterization=cfg.parameterization,
    )
