"""The residual MLP for vector data, with its forward-mode pass in t written out per block."""

from __future__ import annotations

import torch
import torch.nn.functional as tnf
from torch import Tensor, nn

from ndm.model.networks.embedding import fourier_features, timestep_embedding, timestep_embedding_and_derivative
from ndm.model.networks.layers import _dlayer_norm, _dlinear, _dsequential_mlp, _dsilu, _zero
from ndm.model.specs import NetworkConfig


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
