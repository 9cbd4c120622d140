"""Sample metrics that see more than two moments, for data whose generator is known (toy2d).

A Frechet distance in data space compares means and covariances only: on toy2d's checkerboard,
samples that fill the empty cells score as well as the data (issue 31). Two metrics see the
shape of the distribution:

- the energy distance D^2(P, Q) = 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely and Rizzo), zero
  iff P = Q, estimated without bias from the samples and a fresh exact sample of the data;
- the mass the samples put where the data have none (for toy2d, off the black cells: the
  dataset's `offsupport`, ndm/pipeline/datasets_packaged.py).

Both have a floor: what exact samples of the same size score. `energy_floor` measures it over
independent exact draws, so a report can print it beside every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.spatial.distance import cdist, pdist, squareform

ExactSampler = Callable[[int, torch.Generator], torch.Tensor]

ENERGY_METRIC = "ed_data"
OFFSUPPORT_METRIC = "offsupport_mass"


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of D^2(P, Q) from x ~ P (n, d) and y ~ Q (m, d), Euclidean norm.

    The within-sample terms average over distinct pairs (U-statistics), so the estimate is
    unbiased and can be slightly negative when P = Q."""
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f"energy_distance needs two sets of >= 2 points of one dimension, got {x.shape} and {y.shape}")
    return float(2.0 * cdist(x, y).mean() - pdist(x).mean() - pdist(y).mean())


def gaussian_energy_distance(mu: float, sigma_p: float = 1.0, sigma_q: float = 1.0) -> float:
    """Exact D^2 between N(0, sigma_p^2) and N(mu, sigma_q^2) in one dimension (the oracle the
    estimator is tested against): E|Z| for Z ~ N(m, s^2) is s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s))."""

    def abs_mean(m: float, s: float) -> float:
        return s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * math.erf(m / (s * math.sqrt(2)))

    cross = abs_mean(mu, math.hypot(sigma_p, sigma_q))
    return 2 * cross - abs_mean(0.0, math.sqrt(2) * sigma_p) - abs_mean(0.0, math.sqrt(2) * sigma_q)


@dataclass(frozen=True)
class EnergyFloor:
    """D^2 of exact samples of size n against fresh exact samples of size m, over repeats."""

    n: int
    m: int
    mean: float
    std: float
    repeats: int


def energy_floor(sample: ExactSampler, n: int, m: int, repeats: int = 8, seed: int = 0) -> EnergyFloor:
    """What a perfect model scores: D^2 between two independent exact draws of sizes n and m."""
    values = []
    for r in range(repeats):
        g = torch.Generator().manual_seed(1_000_003 * seed + r)
        values.append(energy_distance(sample(n, g).numpy(), sample(m, g).numpy()))
    return EnergyFloor(n, m, float(np.mean(values)), float(np.std(values, ddof=1)) if repeats > 1 else math.nan, repeats)


@dataclass(frozen=True)
class ExactDraws:
    """Fresh exact samples to score against, with each draw's within-set mean distance computed
    once (the same draws serve every sample file: they depend only on the seed)."""

    points: tuple[np.ndarray, ...]
    within: tuple[float, ...]

    @property
    def m(self) -> int:
        return len(self.points[0])


def exact_draws(sample: ExactSampler, m: int, seed: int = 0, references: int = 4) -> ExactDraws:
    points = tuple(sample(m, torch.Generator().manual_seed(2_000_003 * seed + 7919 * r + 1)).double().numpy() for r in range(references))
    return ExactDraws(points, tuple(float(pdist(y).mean()) for y in points))


def energy_to_exact(samples: np.ndarray, draws: ExactDraws) -> tuple[float, float]:
    """D^2 of samples against the exact draws (averaged over the draws) and its standard error.

    The error has two parts: the samples' own (the first-order U-statistic term: D^2 ~ mean_i
    h(x_i) with h(x) = 2 E|x - Y| - 2 E|x - X'|, so var ~ var(h) / n) and the draws' (their
    spread / sqrt(draws)). Near D^2 = 0 the first-order term vanishes and the error is rough."""
    x = np.atleast_2d(np.asarray(samples, np.float64))
    n = len(x)
    if n < 2:
        raise ValueError(f"energy_to_exact needs >= 2 samples, got {n}")
    pair = squareform(pdist(x))
    within_i = pair.sum(axis=1) / (n - 1)  # E|x_i - X'| over the other samples
    within_x = float(within_i.mean())
    cross = [cdist(x, y).mean(axis=1) for y in draws.points]  # E|x_i - Y| per draw
    values = [2.0 * float(c.mean()) - within_x - w for c, w in zip(cross, draws.within)]
    h = 2.0 * np.mean(cross, axis=0) - 2.0 * within_i
    se_samples = float(np.std(h, ddof=1) / math.sqrt(n))
    se_draws = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(np.mean(values)), math.hypot(se_samples, se_draws)
