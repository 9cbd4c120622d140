"""The energy distance to a law known in closed form: a mixture of uniform rectangles (toy2d).

ndm/metrics/distributional.py scores samples against fresh exact draws of the data; their terms
E|x - Y| are Monte Carlo and cost O(n m). For toy2d the data law is uniform on the black cells
of a checkerboard, so both data terms are exact:

- g(x) = E|x - Y| for Y uniform on a rectangle R is (1/|R|) times the mixed second difference of
  G over R's corners, with d^2 G / du dv = sqrt(u^2 + v^2):
      G(u, v) = u v r / 3 + (u^3 asinh(v / |u|) + v^3 asinh(u / |v|)) / 6,  r = sqrt(u^2 + v^2)
  (the x^3 ln|x| parts of the textbook form depend on one variable and cancel in the
  difference); a mixture averages its components' g.
- C = E|Y - Y'| = E g(Y), by Gauss-Legendre quadrature of g over each rectangle, on sub-squares
  whose edges hold every kink of g.

so D^2 = 2 E g(X) - E|X - X'| - C needs only the model's samples. The within-sample term is a
U-statistic; above `COMPLETE_UP_TO` points it is an incomplete one on the cyclic design (pairs
(i, i + j mod n), j = 1..k), still unbiased because the samples are i.i.d., at O(n k) cost. The
estimate's error is then the samples' own (first order: var(h(X)) / n, h(x) = 2 g(x) - 2 E|x - X'|),
with no reference term, which is what makes 30,000 samples per file affordable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial.distance import pdist, squareform

COMPLETE_UP_TO = 4000  # points; above, the within term uses the cyclic incomplete design
PAIRS_PER_POINT = 1000  # k of the cyclic design
QUADRATURE_SPLITS = 8  # sub-squares per rectangle side for C
QUADRATURE_POINTS = 12  # Gauss-Legendre nodes per sub-square side


def _g_antiderivative(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """G(u, v) with d^2 G / du dv = sqrt(u^2 + v^2); finite (and continuous) at u = 0 or v = 0."""
    r = np.hypot(u, v)
    au, av = np.abs(u), np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        tu = np.where(au > 0, u**3 * np.arcsinh(v / np.where(au > 0, au, 1.0)), 0.0)
        tv = np.where(av > 0, v**3 * np.arcsinh(u / np.where(av > 0, av, 1.0)), 0.0)
    return u * v * r / 3.0 + (tu + tv) / 6.0


@dataclass(frozen=True)
class UniformRectangles:
    """An equal-weight mixture of uniform laws on axis-aligned rectangles in the plane:
    rectangles[k] = (x0, x1, y0, y1) with x0 < x1, y0 < y1."""

    rectangles: tuple[tuple[float, float, float, float], ...]

    def __post_init__(self) -> None:
        if not self.rectangles:
            raise ValueError("UniformRectangles needs at least one rectangle")
        for x0, x1, y0, y1 in self.rectangles:
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"rectangle (x0, x1, y0, y1) = {(x0, x1, y0, y1)} is empty: need x0 < x1 and y0 < y1")

    def mean_distance_to(self, x: np.ndarray) -> np.ndarray:
        """g(x_i) = E|x_i - Y| for each row of x (n, 2), exact."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        if x.shape[1] != 2:
            raise ValueError(f"UniformRectangles lives in the plane: points must be (n, 2), got {x.shape}")
        total = np.zeros(len(x))
        for x0, x1, y0, y1 in self.rectangles:
            u0, u1, v0, v1 = x0 - x[:, 0], x1 - x[:, 0], y0 - x[:, 1], y1 - x[:, 1]
            integral = _g_antiderivative(u1, v1) - _g_antiderivative(u0, v1) - _g_antiderivative(u1, v0) + _g_antiderivative(u0, v0)
            total += integral / ((x1 - x0) * (y1 - y0))
        return total / len(self.rectangles)

    @cached_property
    def self_mean_distance(self) -> float:
        """C = E|Y - Y'| = E g(Y), Gauss-Legendre on QUADRATURE_SPLITS^2 sub-squares per rectangle."""
        nodes, weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
        total = 0.0
        for x0, x1, y0, y1 in self.rectangles:
            ex, ey = np.linspace(x0, x1, QUADRATURE_SPLITS + 1), np.linspace(y0, y1, QUADRATURE_SPLITS + 1)
            # nodes and weights of every sub-interval, mapped to [0, 1] weights summing to 1
            px = ((ex[:-1, None] + ex[1:, None]) / 2 + (ex[1:, None] - ex[:-1, None]) / 2 * nodes).ravel()
            py = ((ey[:-1, None] + ey[1:, None]) / 2 + (ey[1:, None] - ey[:-1, None]) / 2 * nodes).ravel()
            w = np.tile(weights / 2, QUADRATURE_SPLITS) / QUADRATURE_SPLITS
            gx, gy = np.meshgrid(px, py, indexing="ij")
            g = self.mean_distance_to(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
            total += float(w @ g @ w)
        return total / len(self.rectangles)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n exact draws (n, 2), for floors and tests."""
        r = np.asarray(self.rectangles)[rng.integers(len(self.rectangles), size=n)]
        u = rng.random((n, 2))
        return np.stack([r[:, 0] + u[:, 0] * (r[:, 1] - r[:, 0]), r[:, 2] + u[:, 1] * (r[:, 3] - r[:, 2])], axis=1)


def within_distances(x: np.ndarray, pairs_per_point: int = PAIRS_PER_POINT) -> tuple[float, np.ndarray]:
    """The unbiased estimate of E|X - X'| from i.i.d. rows of x, and each point's mean distance
    to its partners (for the first-order error): every pair up to COMPLETE_UP_TO points, the
    cyclic design (i, i + j mod n), j = 1..k, above it."""
    n = len(x)
    if n < 2:
        raise ValueError(f"the within-sample distance needs >= 2 points, got {n}")
    if n <= COMPLETE_UP_TO or 2 * pairs_per_point >= n:
        d = pdist(x)
        return float(d.mean()), squareform(d).sum(axis=1) / (n - 1)
    sums = np.zeros(n)
    for j in range(1, pairs_per_point + 1):
        d = np.hypot(*(x - np.roll(x, -j, axis=0)).T) if x.shape[1] == 2 else np.linalg.norm(x - np.roll(x, -j, axis=0), axis=1)
        sums += d  # pair (i, i + j) for point i ...
        sums += np.roll(d, j)  # ... and for point i + j
    per_point = sums / (2 * pairs_per_point)
    return float(per_point.mean()), per_point


def energy_to_law(samples: np.ndarray, law: UniformRectangles, pairs_per_point: int = PAIRS_PER_POINT) -> tuple[float, float]:
    """Unbiased D^2(samples' law, law) and its first-order standard error (module docstring)."""
    x = np.atleast_2d(np.asarray(samples, np.float64))
    g = law.mean_distance_to(x)
    within, per_point = within_distances(x, pairs_per_point)
    value = 2.0 * float(g.mean()) - within - law.self_mean_distance
    h = 2.0 * g - 2.0 * per_point
    return value, float(np.std(h, ddof=1) / math.sqrt(len(x)))


@dataclass(frozen=True)
class LawFloor:
    """D^2 of n exact draws against the law itself, over repeats: mean 0 (unbiased), this spread."""

    n: int
    mean: float
    std: float
    repeats: int


def energy_floor_to_law(law: UniformRectangles, n: int, repeats: int = 8, seed: int = 0) -> LawFloor:
    values = [energy_to_law(law.sample(n, np.random.default_rng([seed, r])), law)[0] for r in range(repeats)]
    return LawFloor(n, float(np.mean(values)), float(np.std(values, ddof=1)) if repeats > 1 else math.nan, repeats)


def checkerboard_law(cells: int = 4, half_width: float = 2.0) -> UniformRectangles:
    """toy2d's law (ndm/pipeline/datasets_packaged.py `sample_checkerboard`): uniform on the
    black cells (i + j even) of a cells x cells board on [-w, w]^2."""
    side = 2.0 * half_width / cells
    return UniformRectangles(tuple(
        (-half_width + i * side, -half_width + (i + 1) * side, -half_width + j * side, -half_width + (j + 1) * side)
        for i in range(cells) for j in range(cells) if (i + j) % 2 == 0
    ))  # fmt: skip


__all__ = ["COMPLETE_UP_TO", "LawFloor", "UniformRectangles", "checkerboard_law", "energy_floor_to_law", "energy_to_law", "within_distances"]
