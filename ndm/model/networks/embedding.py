"""How t and the input enter the networks: DDPM's sinusoidal time embedding (and its derivative
in t, for the hand-written forward-mode pass) and VDM's Fourier features of the input."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as tnf
from torch import Tensor


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
