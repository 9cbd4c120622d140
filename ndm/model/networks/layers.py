"""Layer helpers shared by the U-Net and the MLP: zero initialisation, the group count of a group
norm, and each layer's forward-mode rule in t, written out (see the package docstring for why)."""

from __future__ import annotations

import torch
import torch.nn.functional as tnf
from torch import Tensor, nn

from ndm.model.time_sampling import current_batch_rows


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# ----------------------------------------------- forward-mode AD in t, written out
# Each helper maps (primal, tangent) -> (primal, tangent); a tangent of None is zero.


def _dlinear(layer: nn.Module, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Conv2d or Linear: y = W h + b, dy = W dh (no bias)."""
    y = layer(h)
    if dh is None:
        return y, None
    if isinstance(layer, nn.Conv2d):
        return y, layer._conv_forward(dh, layer.weight, None)
    return y, tnf.linear(dh, layer.weight)


def _dsilu(a: Tensor, da: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """silu(a) = a s, s = sigmoid(a); silu'(a) = s + silu(a) (1 - s)."""
    if da is None:
        return tnf.silu(a), None
    s = torch.sigmoid(a)
    y = a * s
    return y, da * (s + y * (1.0 - s))


def _dnorm(h: Tensor, dh: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float, channel_dim: int) -> tuple[Tensor, Tensor]:
    """Group norm (channel_dim 1, GroupNorm) or layer norm (groups 1, channel_dim -1, LayerNorm):
    n = (h - mean) rstd per group, dn = rstd (dh - mean(dh) - n mean(n dh)).

    For group norm n, mean and rstd come from the fused native kernel (differentiable in all
    three outputs), which on CPU beats var_mean plus elementwise ops (docs/performance.md).
    """
    b = h.shape[0]
    if channel_dim == 1:
        c = h.shape[1]
        n, _, rstd = torch.ops.aten.native_group_norm(h, None, None, b, c, h[0, 0].numel(), groups, eps)
        ng, dhg, rstd = n.reshape(b, groups, -1), dh.reshape(b, groups, -1), rstd.view(b, groups, 1)
        affine_shape = (1, c) + (1,) * (h.dim() - 2)
    else:
        # Not native_layer_norm: its backward drops the gradients of its mean and rstd outputs
        # (torch 2.14; the same bug makes backward through torch.func.jvp of LayerNorm wrong).
        var, mean = torch.var_mean(h, dim=-1, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + eps)
        n = (h - mean) * rstd
        ng, dhg = n, dh
        affine_shape = (h.shape[-1],)
    dn = (rstd * (dhg - dhg.mean(-1, keepdim=True) - ng * (ng * dhg).mean(-1, keepdim=True))).reshape(h.shape)
    if weight is not None:
        w = weight.view(affine_shape)
        n = torch.addcmul(bias.view(affine_shape), n, w) if bias is not None else n * w
        dn = dn * w
    elif bias is not None:
        n = n + bias.view(affine_shape)
    return n, dn


def _dgroup_norm(norm: nn.GroupNorm, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if dh is None:
        return norm(h), None
    return _dnorm(h, dh, norm.num_groups, norm.weight, norm.bias, norm.eps, 1)


def _dlayer_norm(norm: nn.LayerNorm, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if dh is None:
        return norm(h), None
    return _dnorm(h, dh, 1, norm.weight, norm.bias, norm.eps, -1)


def _ddropout(drop: nn.Dropout, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The same mask for primal and tangent; inside time_sampling.global_batch_rows, this
    process's rows of the global batch's mask (a batch of another size draws its own)."""
    if not drop.training or drop.p == 0.0:
        return h, dh
    rows = current_batch_rows()
    if rows is not None and h.shape[0] != rows.stop - rows.start:
        rows = None
    shape = h.shape if rows is None else (rows.total, *h.shape[1:])
    keep = torch.empty(shape, dtype=h.dtype, device=h.device).bernoulli_(1.0 - drop.p)
    mask = (keep if rows is None else rows.take(keep)) / (1.0 - drop.p)
    return h * mask, (None if dh is None else dh * mask)


def _dsequential_mlp(seq: nn.Sequential, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
    for layer in seq:
        if isinstance(layer, nn.Linear):
            h, dh = _dlinear(layer, h, dh)
        elif isinstance(layer, nn.SiLU):
            h, dh = _dsilu(h, dh)
        else:
            raise TypeError(f"no tangent rule for {type(layer).__name__}")
    return h, dh
