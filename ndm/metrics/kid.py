"""Kernel Inception Distance in any feature space: the unbiased MMD^2 with the cubic polynomial
kernel k(a, b) = (a . b / D + 1)^3 (Binkowski et al. 2018; torch-fidelity and torchmetrics use
the same kernel), between all samples and all reference features, with the first-order
standard error of the U-statistic.

Unlike the Frechet distance, KID has an unbiased estimator: its expectation is the population
MMD^2 at every sample size, so numbers at different sample counts compare, and two samples of the
data itself score 0 on average (it can be slightly negative).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


# Reference features kept for KID in a reference-stats file: the kernel matrices are
# n x KID_REFERENCE_MAX, and 2000 rows of 2048 float32 Inception features are 16 MB.
KID_REFERENCE_MAX = 2000


def kid_metric(feature_space: str) -> str:
    """The KID's metric name in a feature space: kid_classifier, kid_inception, kid_clean."""
    return f"kid_{feature_space}"


@dataclass(frozen=True)
class KidResult:
    metric: str
    value: float
    stderr: float
    n_samples: int
    n_reference: int
    feature_extractor: str
    stderr_method: str = "first-order U-statistic"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid_with_stderr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(unbiased MMD^2, its standard error) between features x (n, D) and y (m, D).

    MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean k(x_i, y_j). The error is
    the first-order (Hoeffding) term: 4 Var(h_x) / n + 4 Var(h_y) / m with h_x(x_i) = mean_j k(x_i,
    x_j) - mean_j k(x_i, y_j) and h_y likewise, which is what the estimate's spread over
    independent draws of both sets approaches for large n and m."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2 or x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs two feature arrays (N >= 2, D) of one width; got {x.shape} and {y.shape}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    row_xx = (kxx.sum(1) - np.diag(kxx)) / (n - 1)
    row_yy = (kyy.sum(1) - np.diag(kyy)) / (m - 1)
    value = row_xx.mean() + row_yy.mean() - 2.0 * kxy.mean()
    h_x = row_xx - kxy.mean(1)
    h_y = row_yy - kxy.mean(0)
    var = 4.0 * h_x.var(ddof=1) / n + 4.0 * h_y.var(ddof=1) / m
    return float(value), float(np.sqrt(var))


def kid_from_features(features: np.ndarray, reference: np.ndarray, metric: str, extractor: str) -> KidResult:
    value, se = kid_with_stderr(features, reference)
    return KidResult(metric, value, se, int(len(features)), int(len(reference)), extractor)


__all__ = ["KID_REFERENCE_MAX", "KidResult", "kid_from_features", "kid_metric", "kid_with_stderr", "polynomial_kernel"]
