"""Networks for x_hat_theta(z_t, t) and F_phi(x, t): a DDPM/VDM-style U-Net and an MLP.

Both take (input, t) with t of shape (B,) in [0, 1] and return a tensor shaped like
the input. The last layer is zero-initialised, so a fresh network outputs 0: the
NDM transformation F(x, t) = x + t NN(x, t) then starts as the identity (NDM
starts as its F = identity special case) and x_hat starts as the linear skip.
Every op here supports forward-mode autodiff (torch.func.jvp), which the
continuous-time NDM loss needs for dF/dt; that is why attention is written out
instead of calling scaled_dot_product_attention.

`net(x, t, time_derivative=True)` returns (NN(x, t), d/dt NN(x, t)) at fixed x from one pass
that carries the t-tangent by hand (forward-mode AD written out per layer, the `_d*` helpers
below). It equals torch.func.jvp to float64 precision (tests/test_diffusion.py) but costs
about 2 forward passes and its backward about 4, where torch.func.jvp cost 5-8 forward
passes and 13-20 with its backward on CPU (docs/performance.md): PyTorch's forward-mode
formula for group_norm expands into many elementwise ops and its conv formula runs an extra
convolution for the (zero) weight tangent. The time embedding is the only path from t into
the networks, so layers before the first embedding injection carry no tangent (None = 0).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as tnf
from torch import Tensor, nn

from ndm.model.specs import NetworkConfig


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of t * scale (DDPM's, with t in [0, 1] mapped to [0, 1000])."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    args = (t * scale).unsqueeze(-1) * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = tnf.pad(emb, (0, 1))
    return emb


def fourier_features(z: Tensor, n_min: int, n_max: int, dim: int = 1, levels: int | None = None) -> Tensor:
    """VDM's input features sin(w_n z), cos(w_n z) for n = n_min..n_max, along `dim`.

    w_n = 2^n pi K / 256: at n = 8 the period is the bin width 2/K, so the features tell the
    network where z sits inside its bin, which is what makes the low-noise end of the
    likelihood cheap (VDM's observation, generalised from K = 256 to any K).
    """
    base = math.pi * (levels / 256.0 if levels else 1.0)
    feats = []
    for n in range(n_min, n_max + 1):
        w = (2.0**n) * base
        feats += [torch.sin(w * z), torch.cos(w * z)]
    return torch.cat(feats, dim=dim)


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
    three outputs), 2-3x faster on CPU than var_mean plus elementwise ops.
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
    """The same mask for primal and tangent."""
    if not drop.training or drop.p == 0.0:
        return h, dh
    mask = torch.empty_like(h).bernoulli_(1.0 - drop.p) / (1.0 - drop.p)
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


def timestep_embedding_and_derivative(t: Tensor, dim: int, scale: float = 1000.0) -> tuple[Tensor, Tensor]:
    """timestep_embedding(t) and its derivative in t (per example)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    args = (t * scale).unsqueeze(-1) * freqs
    c, s = torch.cos(args), torch.sin(args)
    w = scale * freqs
    emb, demb = torch.cat([c, s], dim=-1), torch.cat([-s * w, c * w], dim=-1).expand(t.shape[0], -1)
    if dim % 2:
        emb, demb = tnf.pad(emb, (0, 1)), tnf.pad(demb, (0, 1))
    return emb, demb


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        r = self.conv1(tnf.silu(self.norm1(h)))
        r = r + self.emb(tnf.silu(emb))[:, :, None, None]
        r = self.conv2(self.dropout(tnf.silu(self.norm2(r))))
        return self.skip(h) + r

    def forward_dual(self, h: Tensor, dh: Tensor | None, emb: Tensor, demb: Tensor) -> tuple[Tensor, Tensor]:
        r, dr = _dsilu(*_dgroup_norm(self.norm1, h, dh))
        r, dr = _dlinear(self.conv1, r, dr)
        e, de = _dlinear(self.emb, *_dsilu(emb, demb))
        r = r + e[:, :, None, None]
        dr = de[:, :, None, None].expand_as(r) if dr is None else dr + de[:, :, None, None]
        r, dr = _dsilu(*_dgroup_norm(self.norm2, r, dr))
        r, dr = _dlinear(self.conv2, *_ddropout(self.dropout, r, dr))
        if isinstance(self.skip, nn.Identity):
            s, ds = h, dh
        else:
            s, ds = _dlinear(self.skip, h, dh)
        return s + r, (dr if ds is None else ds + dr)


class AttnBlock(nn.Module):
    """Single-head self-attention over spatial positions (written out for forward-mode AD)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, h: Tensor) -> Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, hh * ww).unbind(1)
        attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=-1)
        out = torch.einsum("bij,bcj->bci", attn, v).reshape(b, c, hh, ww)
        return h + self.proj(out)

    def forward_dual(self, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if dh is None:
            return self(h), None
        b, c, hh, ww = h.shape
        qkv, dqkv = _dlinear(self.qkv, *_dgroup_norm(self.norm, h, dh))
        q, k, v = qkv.reshape(b, 3, c, hh * ww).unbind(1)
        dq, dk, dv = dqkv.reshape(b, 3, c, hh * ww).unbind(1)
        scale = 1.0 / math.sqrt(c)
        attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * scale, dim=-1)
        dlogits = (torch.einsum("bci,bcj->bij", dq, k) + torch.einsum("bci,bcj->bij", q, dk)) * scale
        # softmax's Jacobian is symmetric: its JVP is its VJP.
        dattn = torch.ops.aten._softmax_backward_data(dlogits, attn, -1, attn.dtype)
        out = torch.einsum("bij,bcj->bci", attn, v).reshape(b, c, hh, ww)
        dout = (torch.einsum("bij,bcj->bci", dattn, v) + torch.einsum("bij,bcj->bci", attn, dv)).reshape(b, c, hh, ww)
        out, dout = _dlinear(self.proj, out, dout)
        return h + out, dh + dout


class UNet(nn.Module):
    """DDPM-style U-Net: residual blocks, attention at low resolution, time embedding."""

    supports_time_derivative = True  # forward(x, t, time_derivative=True) -> (out, d out / dt)

    def __init__(self, in_channels: int, resolution: int, cfg: NetworkConfig, levels: int | None = None, out_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.levels = levels
        ch = cfg.channels
        emb_dim = 4 * ch
        self.emb = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.n_fourier = 0
        if cfg.fourier_features:
            n_min, n_max = cfg.fourier_features
            self.n_fourier = 2 * (n_max - n_min + 1) * in_channels
        self.conv_in = nn.Conv2d(in_channels + self.n_fourier, ch, 3, padding=1)

        self.down = nn.ModuleList()
        chans = [ch]
        c_cur, res = ch, resolution
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(c_cur, ch * mult, emb_dim, cfg.dropout)])
                c_cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c_cur))
                self.down.append(blocks)
                chans.append(c_cur)
            if level != len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c_cur, c_cur, 3, stride=2, padding=1)]))
                chans.append(c_cur)
                res //= 2
        self.mid = nn.ModuleList(
            [ResBlock(c_cur, c_cur, emb_dim, cfg.dropout), AttnBlock(c_cur), ResBlock(c_cur, c_cur, emb_dim, cfg.dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(c_cur + chans.pop(), ch * mult, emb_dim, cfg.dropout)])
                c_cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c_cur))
                self.up.append(blocks)
            if level != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_cur, c_cur, 3, padding=1)]))
                res *= 2
        self.norm_out = nn.GroupNorm(_groups(c_cur), c_cur)
        self.conv_out = _zero(nn.Conv2d(c_cur, out_channels or in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, time_derivative: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if time_derivative:
            return self._forward_dual(x, t)
        emb = self.emb(timestep_embedding(t, self.cfg.channels))
        h = x
        if self.n_fourier:
            h = torch.cat([x, fourier_features(x, *self.cfg.fourier_features, dim=1, levels=self.levels)], dim=1)
        h = self.conv_in(h)
        skips = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return self.conv_out(tnf.silu(self.norm_out(h)))

    def _forward_dual(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(NN(x, t), d/dt NN(x, t)) at fixed x: forward-mode AD in t, written out per layer."""
        emb, demb = _dsequential_mlp(self.emb, *timestep_embedding_and_derivative(t, self.cfg.channels))
        h = x
        if self.n_fourier:
            h = torch.cat([x, fourier_features(x, *self.cfg.fourier_features, dim=1, levels=self.levels)], dim=1)
        h, dh = self.conv_in(h), None  # no t-path before the first time embedding
        skips = [(h, dh)]

        def run(block: nn.Module, h: Tensor, dh: Tensor | None) -> tuple[Tensor, Tensor | None]:
            if isinstance(block, ResBlock):
                return block.forward_dual(h, dh, emb, demb)
            if isinstance(block, AttnBlock):
                return block.forward_dual(h, dh)
            if isinstance(block, nn.Conv2d):
                return _dlinear(block, h, dh)
            if isinstance(block, nn.Upsample):
                return block(h), (None if dh is None else block(dh))
            raise TypeError(f"no tangent rule for {type(block).__name__}")

        for blocks in self.down:
            for block in blocks:
                h, dh = run(block, h, dh)
            skips.append((h, dh))
        for block in self.mid:
            h, dh = run(block, h, dh)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                s, ds = skips.pop()
                if dh is not None or ds is not None:
                    dh = torch.cat([torch.zeros_like(h) if dh is None else dh, torch.zeros_like(s) if ds is None else ds], dim=1)
                h = torch.cat([h, s], dim=1)
            for block in blocks:
                h, dh = run(block, h, dh)
        h, dh = _dsilu(*_dgroup_norm(self.norm_out, h, dh))
        return _dlinear(self.conv_out, h, dh)


class MLP(nn.Module):
    """Residual MLP for vector data (toy2d, gaussian), or small images flattened (8x8 digits)."""

    supports_time_derivative = True  # forward(x, t, time_derivative=True) -> (out, d out / dt)

    def __init__(self, dim: int, cfg: NetworkConfig, levels: int | None = None, out_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.levels = levels
        hidden = cfg.hidden
        n_in = dim
        if cfg.fourier_features:
            n_min, n_max = cfg.fourier_features
            n_in += 2 * (n_max - n_min + 1) * dim
        self.inp = nn.Linear(n_in, hidden)
        self.emb = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList()
        for _ in range(cfg.depth):
            self.blocks.append(nn.ModuleDict({"norm": nn.LayerNorm(hidden), "l1": nn.Linear(hidden, hidden), "l2": nn.Linear(hidden, hidden), "e": nn.Linear(hidden, hidden)}))
        self.out = _zero(nn.Linear(hidden, out_dim or dim))

    def forward(self, x: Tensor, t: Tensor, time_derivative: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if time_derivative:
            return self._forward_dual(x, t)
        h = x
        if self.cfg.fourier_features:
            h = torch.cat([x, fourier_features(x, *self.cfg.fourier_features, dim=-1, levels=self.levels)], dim=-1)
        h = self.inp(h)
        emb = self.emb(timestep_embedding(t, self.cfg.hidden))
        for b in self.blocks:
            r = tnf.silu(b["l1"](tnf.silu(b["norm"](h))) + b["e"](emb))
            h = h + b["l2"](r)
        return self.out(tnf.silu(h))

    def _forward_dual(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(NN(x, t), d/dt NN(x, t)) at fixed x: forward-mode AD in t, written out per layer."""
        h = x
        if self.cfg.fourier_features:
            h = torch.cat([x, fourier_features(x, *self.cfg.fourier_features, dim=-1, levels=self.levels)], dim=-1)
        h, dh = self.inp(h), None
        emb, demb = _dsequential_mlp(self.emb, *timestep_embedding_and_derivative(t, self.cfg.hidden))
        for b in self.blocks:
            r, dr = _dlinear(b["l1"], *_dsilu(*_dlayer_norm(b["norm"], h, dh)))
            e, de = _dlinear(b["e"], emb, demb)
            r, dr = _dsilu(r + e, de if dr is None else dr + de)
            r, dr = _dlinear(b["l2"], r, dr)
            h, dh = h + r, (dr if dh is None else dh + dr)
        return _dlinear(self.out, *_dsilu(h, dh))


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
    if cfg.kind == "mlp":
        if cfg.patch_size != 1:
            raise ValueError(f"network.patch_size is for the U-Net; an mlp needs 1, got {cfg.patch_size}")
        dim = int(math.prod(event_shape))
        mlp = MLP(dim, cfg, levels, out_dim=dim * out_multiplier)
        return mlp if len(event_shape) == 1 else Flattened(mlp, tuple(event_shape))
    raise ValueError(f"unknown network kind {cfg.kind!r}; choose 'unet' or 'mlp'")
