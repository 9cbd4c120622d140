"""Data space <-> model space: K discrete levels and their bin centres in (-1, 1) (docs/math.md,
Notation). Pure tensor functions: the model, the samplers, the metrics and the data pipeline
all convert through them."""

from __future__ import annotations

import torch
from torch import Tensor


def to_model_space(v: Tensor, levels: int) -> Tensor:
    """Discrete levels v in {0..K-1} -> bin centres x = 2 (v + 1/2) / K - 1 in (-1, 1).

    Bin centres (not v / (K-1)) keep the discretised likelihood symmetric: every level
    owns an interval of width 2/K (docs/math.md, Notation).
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    return (2.0 * (v.to(torch.float32) + 0.5) / levels - 1.0).to(torch.float32)


def from_model_space(x: Tensor, levels: int) -> Tensor:
    """Inverse of :func:`to_model_space`: nearest level, clipped to {0..K-1}.

    Returns uint8 for K <= 256 (so images can go straight to metrics), int64 otherwise.
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    v = torch.round((x.to(torch.float64) + 1.0) * levels / 2.0 - 0.5)
    v = v.clamp(0, levels - 1)
    return v.to(torch.uint8 if levels <= 256 else torch.int64)
