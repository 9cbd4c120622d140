"""The DDPM/VDM-style U-Net, with its forward-mode pass in t written out per block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as tnf
from torch import Tensor, nn

from ndm.model.networks.embedding import fourier_features, timestep_embedding, timestep_embedding_and_derivative
from ndm.model.networks.layers import _ddropout, _dgroup_norm, _dlinear, _dsequential_mlp, _dsilu, _groups, _zero
from ndm.model.specs import NetworkConfig


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
        r = self.conv2(_ddropout(self.dropout, tnf.silu(self.norm2(r)), None)[0])  # the masks of forward_dual
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
