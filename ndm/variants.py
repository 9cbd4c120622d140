"""Model variants: each special case of NDM is a config entry, not a code fork.

A variant names a transformation F and a schedule; `build_model` turns a ModelConfig
(variant plus architecture) into a DiffusionModel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .diffusion import DiffusionModel
from .networks import NetworkConfig, build_network
from .schedules import VDM_GAMMA_MAX, VDM_GAMMA_MIN, build_schedule
from .transforms import BlurTransform, IdentityTransform, LatentTransform, NeuralTransform, Transform


@dataclass(frozen=True)
class Variant:
    name: str
    transform: str  # identity | neural | latent | blur
    schedule: str  # ddpm | linear | cosine | flow | learned
    description: str
    # How a learned schedule's interior is trained (VDM: minimise the loss variance).
    schedule_objective: str = "nelbo"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("ddpm", "identity", "ddpm", "DDPM: F = identity, DDPM's fixed linear-beta schedule"),
        Variant("vdm", "identity", "learned", "VDM: F = identity, learned monotone schedule", "variance"),
        Variant("vdm-fixed", "identity", "linear", "VDM with its fixed linear gamma (the control for ndm)"),
        Variant("ndm", "neural", "linear", "NDM: learned F(x,t) = x + t NN(x,t), fixed linear gamma"),
        Variant("ndm-vdm", "neural", "learned", "NDM with learned F and a learned schedule"),
        Variant("flow", "identity", "flow", "Flow-matching linear path alpha = 1 - t, sigma = t (floored)"),
        Variant("ndm-latent", "latent", "linear", "Time-independent learned F(x,t) = E(x) (latent-style)"),
        Variant("ndm-blur", "blur", "linear", "Fixed linear F(x,t) = C_t x, DCT heat dissipation (blurring-style)"),
    ]
}


@dataclass
class ModelConfig:
    """Everything that defines a model's architecture; the variant picks F and the schedule."""

    variant: str = "ddpm"
    schedule: str | None = None  # override the variant's schedule
    gamma_min: float = VDM_GAMMA_MIN
    gamma_max: float = VDM_GAMMA_MAX
    parameterization: str = "v"  # eps | x | v (eps only for F = identity)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    transform_network: NetworkConfig | None = None  # defaults to `network` (same family and size)
    blur_sigma_max: float | None = None  # None: 0.625 * image side (20 px at 32x32)
    flow_eps: float = 1e-3


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}") from None


def build_transform(kind: str, cfg: ModelConfig, event_shape: tuple[int, ...], levels: int | None = None) -> Transform:
    if kind == "identity":
        return IdentityTransform()
    if kind in ("neural", "latent"):
        net = build_network(cfg.transform_network or cfg.network, event_shape, levels)
        return NeuralTransform(net) if kind == "neural" else LatentTransform(net)
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
