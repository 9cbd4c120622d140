"""Networks for x_hat_theta(z_t, t) and F_phi(x, t): a DDPM/VDM-style U-Net and an MLP.

Both take (input, t) with t of shape (B,) in [0, 1] and return a tensor shaped like
the input. The last layer is zero-initialised, so a fresh network outputs 0: the
NDM transformation F(x, t) = x + t NN(x, t) then starts as the identity (NDM
starts as its F = identity special case) and x_hat starts as the linear skip.
Every op here supports forward-mode autodiff (torch.func.jvp), which the
continuous-time NDM loss needs for dF/dt; that is why attention is written out
instead of calling scaled_dot_product_attention.

`net(x, t, time_derivative=True)` returns (NN(x, t), d/dt NN(x, t)) at fixed x from one pass
that carries the t-tangent by hand (forward-mode AD written out per layer, the rules in
`layers`). It equals torch.func.jvp to float64 precision (tests/test_diffusion.py) and costs
a fraction of it (docs/performance.md): PyTorch's forward-mode formula for group_norm expands
into many elementwise ops and its conv formula runs an extra convolution for the (zero) weight
tangent. The time embedding is the only path from t into the networks, so layers before the
first embedding injection carry no tangent (None = 0).

Modules: `embedding` (time embedding, Fourier features), `layers` (initialisation and the
per-layer tangent rules), `unet`, `mlp`, `reshaped` (a network run on flattened or patched
input); `build_network` here picks one for a data shape.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from torch import nn

from ndm.model.networks.embedding import fourier_features, timestep_embedding, timestep_embedding_and_derivative
from ndm.model.networks.mlp import MLP
from ndm.model.networks.reshaped import Flattened, Patched, Reshaped
from ndm.model.networks.unet import AttnBlock, ResBlock, UNet
from ndm.model.specs import NetworkConfig

__all__ = [
    "MLP",
    "AttnBlock",
    "Flattened",
    "NetworkConfig",
    "Patched",
    "ResBlock",
    "Reshaped",
    "UNet",
    "build_network",
    "fourier_features",
    "timestep_embedding",
    "timestep_embedding_and_derivative",
]


def build_network(cfg: NetworkConfig, event_shape: tuple[int, ...], levels: int | None = None, out_multiplier: int = 1) -> nn.Module:
    """The network for data of shape event_shape: kind unet for (C, H, W) images, kind mlp for
    vectors (D,) or for images flattened.

    out_multiplier k: k outputs per input channel (images) or dimension (vectors), e.g. the k
    spatial factors G_k(x) of the time-separable F (ndm.model.transforms.SeparableTransform).
    """
    if cfg.kind == "unet":
        if len(event_shape) != 3 or event_shape[1] != event_shape[2]:
            raise ValueError(f"the U-Net needs square images (C, H, H), got event shape {event_shape}")
        c, h, p = event_shape[0], event_shape[1], cfg.patch_size
        if p == 1:
            return UNet(c, h, cfg, levels, out_channels=c * out_multiplier)
        if p < 1 or h % p:
            raise ValueError(f"network.patch_size {p} must be >= 1 and divide the image side {h}")
        # attn_resolutions count in the patched feature maps (the U-Net's top level is H/p).
        return Patched(UNet(c * p * p, h // p, cfg, levels, out_channels=c * out_multiplier * p * p), p)
    if cfg.kind == "vdm":
        # VDM's ScoreUNet (google-research/vdm model_vdm.py, with_attention=False): conv_in, n
        # residual blocks at one width, middle block-attention-block, n + 1 blocks on the skips,
        # norm and conv_out. That is this U-Net at a single resolution; its parameter count is
        # the official one within 0.03% (tests/test_network_sizes.py says where they differ).
        if len(event_shape) != 3 or event_shape[1] != event_shape[2] or cfg.patch_size != 1:
            raise ValueError(f"the vdm network needs square images (C, H, H) and patch_size 1, got event shape {event_shape}, patch_size {cfg.patch_size}")
        c = event_shape[0]
        return UNet(c, event_shape[1], vdm_unet_config(cfg), levels, out_channels=c * out_multiplier)
    if cfg.kind == "mlp":
        if cfg.patch_size != 1:
            raise ValueError(f"network.patch_size is for the U-Net; an mlp needs 1, got {cfg.patch_size}")
        dim = int(math.prod(event_shape))
        mlp = MLP(dim, cfg, levels, out_dim=dim * out_multiplier)
        return mlp if len(event_shape) == 1 else Flattened(mlp, tuple(event_shape))
    raise ValueError(f"unknown network kind {cfg.kind!r}; choose 'unet', 'vdm' or 'mlp'")


def vdm_unet_config(cfg: NetworkConfig) -> NetworkConfig:
    """The U-Net settings of kind vdm: one resolution, no attention outside the middle."""
    return dataclasses.replace(cfg, kind="unet", channel_mult=[1], attn_resolutions=[])


def output_layer(net: nn.Module) -> nn.Module:
    """The zero-initialised last layer of a network that build_network made."""
    for candidate in (net, getattr(net, "net", None)):  # Flattened / Patched wrap theirs in .net
        for name in ("out", "conv_out"):
            layer = getattr(candidate, name, None)
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                return layer
    raise ValueError(f"no output layer (out / conv_out) found in {type(net).__name__}")


@torch.no_grad()
def init_output_small_random(net: nn.Module, scale: float = 0.1) -> None:
    """Replace the zero last layer by its default (Kaiming-uniform) initialisation times `scale`:
    the network then starts near, not at, zero output (draws from the global torch RNG)."""
    layer = output_layer(net)
    layer.reset_parameters()
    layer.weight.mul_(scale)
    if layer.bias is not None:
        layer.bias.mul_(scale)
