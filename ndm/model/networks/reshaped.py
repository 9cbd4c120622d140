"""A network run on a fixed linear rearrangement of its input: images flattened for an MLP, or
folded into p x p patches for a U-Net."""

from __future__ import annotations

import torch.nn.functional as tnf
from torch import Tensor, nn


class Reshaped(nn.Module):
    """Runs a network on a fixed linear rearrangement of its input (`fold`) and rearranges the
    output back (`unfold`). Both maps are linear and independent of t, so the time derivative
    of the output is the unfolded time derivative of the inner network's."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def supports_time_derivative(self) -> bool:
        return getattr(self.net, "supports_time_derivative", False)

    def fold(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def unfold(self, y: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor, time_derivative: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if time_derivative:
            out, dout = self.net(self.fold(x), t, time_derivative=True)
            return self.unfold(out, x), self.unfold(dout, x)
        return self.unfold(self.net(self.fold(x), t), x)


class Flattened(Reshaped):
    """Runs a vector network on images flattened to (B, C*H*W); for tiny images an MLP is
    cheaper than a U-Net per step and its time derivative is cheap too."""

    def __init__(self, net: nn.Module, event_shape: tuple[int, ...]):
        super().__init__(net)
        self.event_shape = event_shape

    def fold(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def unfold(self, y: Tensor, x: Tensor) -> Tensor:
        return y.view(x.shape[0], -1, *self.event_shape[1:])


class Patched(Reshaped):
    """Runs an image network on p x p patches folded into channels: pixel_unshuffle to
    (C p^2, H/p, W/p), the network, pixel_shuffle back (a patchify stem: about 1/p^2 of the
    FLOPs at nearly the same parameters)."""

    def __init__(self, net: nn.Module, patch_size: int):
        super().__init__(net)
        self.patch_size = patch_size

    def fold(self, x: Tensor) -> Tensor:
        return tnf.pixel_unshuffle(x, self.patch_size)

    def unfold(self, y: Tensor, x: Tensor) -> Tensor:
        return tnf.pixel_shuffle(y, self.patch_size)
