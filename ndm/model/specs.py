"""Plain, torch-free descriptions of models: network architecture, model config, variants.

Kept free of torch so that reading and validating a config (the Snakefile does it for every
job, also inside each SLURM job) costs milliseconds, not a torch import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, get_args

# Options with a closed set of values: each a Literal type, the one place its values are listed
# (the config parser checks a value against it and names the allowed ones).
NetworkKind = Literal["unet", "vdm", "mlp"]
Parameterization = Literal["eps", "x", "v"]
TransformTime = Literal["jvp", "separable"]
TransformGauge = Literal["none", "reference"]
TransformReference = Literal["zero", "data_mean"]
TransformInit = Literal["zero", "random"]
PARAMETERIZATIONS: tuple[str, ...] = get_args(Parameterization)
GAUGES: tuple[str, ...] = get_args(TransformGauge)

# VDM's end points of the fixed linear schedule and the learned schedule's initialisation.
VDM_GAMMA_MIN = -13.3
VDM_GAMMA_MAX = 5.0


@dataclass
class NetworkConfig:
    """Architecture of one network (x_hat or F)."""

    # "unet" for images (C, H, W); "vdm" for VDM's image network, a ResNet without downsampling
    # (num_res_blocks residual blocks at `channels` down and num_res_blocks + 1 up with skips,
    # attention in the middle only: the U-Net at one resolution; channel_mult and
    # attn_resolutions must stay unset); "mlp" for vectors (D,)
    kind: NetworkKind = "unet"
    channels: int = 64  # U-Net base width
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.0
    # VDM's Fourier features of the input: sin/cos(w_n z) for n in [min, max]; [] = off.
    # w_n = 2^n pi K / 256 for data with K levels (n = 8 is the bin frequency for any K, and
    # K = 256 gives VDM's 2^n pi exactly), w_n = 2^n pi for continuous data.
    fourier_features: list[int] = field(default_factory=list)
    # U-Net only: run on p x p patches folded into channels (pixel unshuffle, C*p^2 channels at
    # H/p), unfolded again at the output. Same parameters up to the first and last convolution,
    # about 1/p^2 of the FLOPs (a patchify stem; docs/performance.md, the cheap same-size F).
    patch_size: int = 1
    hidden: int = 256  # MLP width
    depth: int = 3  # MLP residual blocks


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
    parameterization: Parameterization = "v"  # eps | x | v (eps only for F = identity)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    transform_network: NetworkConfig | None = None  # defaults to `network` (same family and size)
    # How a learned time-dependent F (variants ndm, ndm-vdm) is built: "jvp" = the paper's
    # F(x,t) = x + t NN(x,t), dF/dt by forward-mode AD; "separable" = F(x,t) = x + t sum_k
    # cos(k pi t) G_k(x), k < transform_rank, dF/dt exact and nearly free (docs/performance.md).
    transform_time: TransformTime = "jvp"
    transform_rank: int = 4
    # Gauge of a learned time-dependent F (docs/math.md "Gauge freedom of F"): "none" = the
    # paper's F, free to drift along input-independent offsets a(t) the bound cannot see;
    # "reference" = F(x,t) = x + t (NN(x,t) - NN(x_ref,t) + v), x_ref below, v learned.
    transform_gauge: TransformGauge = "none"
    # x_ref of the reference gauge: "zero" (the mid-range image) or "data_mean" (the training
    # split's mean, set when training starts and saved with the model): a point on the data,
    # so NN(x, t) - NN(x_ref, t) averages to about zero over the data (docs/math.md).
    transform_reference: TransformReference = "zero"
    # Last layer of F's network: "zero" (a fresh NDM is exactly its F = identity special case)
    # or "random" (that layer's default initialisation scaled by 0.1: F starts near, not at, the
    # identity, and its hidden layers get gradient from the first step).
    transform_init: TransformInit = "zero"
    blur_sigma_max: float | None = None  # None: 0.625 * image side (20 px at 32x32)
    flow_eps: float = 1e-3


# A model name is a variant, or a variant with a tag: "ddpm@params" is DDPM with its own
# `variant_overrides["ddpm@params"]` (e.g. an x_hat network of NDM's parameter count), a
# second model of the same variant in one config. The tag names what the copy changes.
TAG_SEPARATOR = "@"
_TAG = re.compile(r"[a-z0-9][a-z0-9-]*")


def base_variant(name: str) -> str:
    """The variant a model name builds: "ddpm@params" -> "ddpm", "ndm" -> "ndm"."""
    return name.split(TAG_SEPARATOR, 1)[0]


def model_name_problem(name: str) -> str | None:
    """Why `name` is not a model name (None when it is one)."""
    if not isinstance(name, str):
        return f"{name!r} is not a name"
    base, sep, tag = name.partition(TAG_SEPARATOR)
    if base not in VARIANTS:
        return f"unknown variant {base!r}"
    if sep and not _TAG.fullmatch(tag):
        return f"{name!r}: the tag after '{TAG_SEPARATOR}' must be lower-case letters, digits and '-', e.g. 'ddpm{TAG_SEPARATOR}params'"
    return None


def get_variant(name: str) -> Variant:
    """The Variant of a model name (a tagged name gives its base variant)."""
    try:
        return VARIANTS[base_variant(name)]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}") from None
