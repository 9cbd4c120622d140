"""Frechet distance between Gaussian fits of feature sets, and cached reference statistics.

FD = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}).  Which features go in decides the
name of the number: Inception pool3 through torch-fidelity (``fid_inception_tf``) or
clean-fid (``fid_clean``), a small classifier trained on the dataset (``fd_classifier``),
or the data itself (``fd_data``). Results always carry that metric name, the feature
extractor id, and the sample counts, so a classifier FD is never reported as "FID".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ndm.atomic import atomic_write

__all__ = [
    "DataSpaceFeatures",
    "FeatureExtractor",
    "FeatureStats",
    "FrechetResult",
    "bootstrap_stderr",
    "compute_reference_stats",
    "exact_reference_stats",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_from_samples",
    "frechet_from_features",
    "features_for",
    "frechet_to_reference",
    "load_stats",
    "save_stats",
]


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps a batch of samples to an (N, F) feature array.

    ``id`` identifies the exact features (library, layer, weights hash): statistics are
    only ever compared when their ids match. ``metric`` is the name results carry.
    """

    id: str
    metric: str

    def __call__(self, samples: Tensor) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean and covariance of features; ``n is None`` marks exact population moments."""

    mu: np.ndarray  # (F,) float64
    sigma: np.ndarray  # (F, F) float64
    n: int | None
    extractor: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    # The first KID_REFERENCE_MAX reference features (float32), for the unbiased KID
    # (ndm.metrics.kid); None for exact moments and for files written before KID existed.
    features: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


@dataclass(frozen=True)
class FrechetResult:
    """One Frechet distance with everything needed to read it correctly.

    ``n_reference is None`` means the reference was the exact population (data-space FD
    for generated data). ``stderr`` is a bootstrap standard error over the samples
    (the reference statistics held fixed) when requested.
    """

    metric: str
    value: float
    n_samples: int
    n_reference: int | None
    feature_extractor: str
    stderr: float | None = None
    stderr_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- statistics


def feature_stats(features: np.ndarray | Tensor, extractor: str, meta: Mapping[str, Any] | None = None) -> FeatureStats:
    """Sample mean and unbiased covariance (ddof=1, as torch-fidelity and clean-fid), float64."""
    f = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    f = f.astype(np.float64, copy=False)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, F), got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    sigma = np.atleast_2d(np.cov(f, rowvar=False))
    return FeatureStats(f.mean(axis=0), sigma, int(f.shape[0]), extractor, dict(meta or {}))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr (S1 S2)^{1/2} via scipy.linalg.sqrtm; if the product is too singular for a finite
    root, both covariances get eps * I added (pytorch-fid / clean-fid's fallback). A
    small imaginary part from round-off is dropped; a large one is an error, because it
    means the inputs are not covariance matrices.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# --------------------------------------------------------------------------- save / load


def save_stats(path: str | Path, stats: FeatureStats) -> Path:
    """Write stats to an .npz (keys mu, sigma as pytorch-fid/clean-fid, plus n, extractor, meta).

    Written atomically (ndm.atomic), so a crashed job never leaves half a cache.
    """
    arrays = {
        "mu": stats.mu,
        "sigma": stats.sigma,
        "n": np.int64(-1 if stats.n is None else stats.n),
        "extractor": np.str_(stats.extractor),
        "meta": np.str_(json.dumps(dict(stats.meta), sort_keys=True)),
    }
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_skipped_stats(path: str | Path, extractor: str, reason: str, meta: Mapping[str, Any] | None = None) -> Path:
    """A reference-stats file that holds no statistics, only why (no Inception weights and
    eval.fid.if_weights_missing: skip): no distance can be computed from it, and every
    distance that would have been is recorded as skipped with this reason."""
    arrays = {"skipped": np.str_(reason), "extractor": np.str_(extractor), "meta": np.str_(json.dumps(dict(meta or {}), sort_keys=True))}
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def skipped_reason(path: str | Path) -> str | None:
    """Why a reference-stats file holds no statistics (save_skipped_stats), or None when it does."""
    with np.load(Path(path), allow_pickle=False) as z:
        return str(z["skipped"]) if "skipped" in z.files else None


def load_stats(path: str | Path) -> FeatureStats:
    """Read stats written by :func:`save_stats` (no pickle)."""
    with np.load(Path(path), allow_pickle=False) as z:
        if "skipped" in z.files:
            raise ValueError(f"{path} holds no reference statistics: {z['skipped']}")
        n = int(z["n"])
        return FeatureStats(
            mu=z["mu"].astype(np.float64),
            sigma=z["sigma"].astype(np.float64),
            n=None if n < 0 else n,
            extractor=str(z["extractor"]),
            meta=json.loads(str(z["meta"])),
            features=z["features"] if "features" in z.files else None,
        )


def compute_reference_stats(
    samples: Tensor | Callable[[], Tensor],
    extractor: FeatureExtractor,
    *,
    cache: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
) -> FeatureStats:
    """Reference statistics of a dataset split, computed once and cached to ``cache``.

    The cache is reused only if its extractor id and its metadata (e.g. dataset, split,
    size) equal the requested ones; otherwise it is recomputed and overwritten. Pass a
    callable for ``samples`` to avoid loading the data when the cache is valid.
    """
    meta = dict(meta or {})
    if cache is not None and Path(cache).is_file():
        cached = load_stats(cache)
        if cached.extractor == extractor.id and dict(cached.meta) == json.loads(json.dumps(meta, sort_keys=True)):
            return cached
    data = samples() if callable(samples) else samples
    stats = feature_stats(extractor(data), extractor.id, meta)
    if cache is not None:
        save_stats(cache, stats)
    return stats


def exact_reference_stats(moments: tuple[Tensor, Tensor], meta: Mapping[str, Any] | None = None) -> FeatureStats:
    """Exact population moments (e.g. ``Dataset.moments``) as data-space reference stats."""
    mean, cov = moments
    return FeatureStats(
        mean.detach().cpu().numpy().astype(np.float64),
        cov.detach().cpu().numpy().astype(np.float64),
        None,
        DataSpaceFeatures.id,
        dict(meta or {}),
    )


# --------------------------------------------------------------------------- distances with provenance


def bootstrap_stderr(
    features: np.ndarray, reference: FeatureStats, n_bootstrap: int, seed: int = 0
) -> float:
    """Standard deviation of the FD over bootstrap resamples of the sample features.

    The reference is held fixed (it is a cached constant of the pipeline). Each resample
    costs one FD: one D x D sqrtm when n > D (seconds at D = 2048 on a CPU: docs/performance.md).
    Approximate: duplicates in a resample inflate the spread when the true FD is near 0.
    """
    if n_bootstrap < 2:
        raise ValueError("n_bootstrap must be >= 2")
    rng = np.random.default_rng(seed)
    n = features.shape[0]
    values = [
        frechet_distance_from_samples(features[rng.integers(0, n, n)], reference.mu, reference.sigma)
        for _ in range(n_bootstrap)
    ]
    return float(np.std(values, ddof=1))


def frechet_distance_from_samples(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of a feature sample (n, D) against N(mu2, sigma2), exact for n <= D.

    With n <= D samples the sample covariance is S1 = A A^T, A = centred features / sqrt(n - 1)
    (D x n), and the non-zero eigenvalues of S1 S2 are those of the symmetric PSD n x n
    matrix A^T S2 A. So tr (S1 S2)^{1/2} = sum_i sqrt(eig_i(A^T S2 A)) exactly, in
    O(n D^2) instead of a D x D sqrtm (the expensive step at D = 2048), and without
    the ~D spurious near-zero eigenvalues that make the full formula noisy for singular
    S1. For n > D it is :func:`frechet_distance` on the sample statistics.
    """
    f = np.asarray(features, dtype=np.float64)
    n, dim = f.shape
    if n > dim:
        s = feature_stats(f, "")
        return frechet_distance(s.mu, s.sigma, mu2, sigma2)
    mu2, sigma2 = np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64)
    if n < 2 or mu2.shape != (dim,) or sigma2.shape != (dim, dim):
        raise ValueError(f"shape mismatch: features {f.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    mu1 = f.mean(axis=0)
    a = (f - mu1).T / np.sqrt(n - 1)  # (D, n)
    m = a.T @ sigma2 @ a
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    tr_s1 = float(np.einsum("ij,ij->", a, a))
    return float(diff @ diff + tr_s1 + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_from_features(
    features: np.ndarray,
    reference: FeatureStats,
    metric: str,
    *,
    extractor: str | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> FrechetResult:
    """FD of a feature array against reference stats, as a :class:`FrechetResult`.

    Uses :func:`frechet_distance_from_samples` (sqrtm for n > D, the exact n x n route
    for n <= D).
    """
    extractor = reference.extractor if extractor is None else extractor
    if extractor != reference.extractor:
        raise ValueError(f"features from {extractor!r} cannot be compared with reference stats from {reference.extractor!r}")
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2 or not np.isfinite(f).all():
        raise ValueError(f"features must be finite (N >= 2, F), got shape {f.shape}")
    value = frechet_distance_from_samples(f, reference.mu, reference.sigma)
    stderr = bootstrap_stderr(f, reference, n_bootstrap, seed) if n_bootstrap else None
    return FrechetResult(
        metric=metric,
        value=value,
        n_samples=int(f.shape[0]),
        n_reference=reference.n,
        feature_extractor=extractor,
        stderr=stderr,
        stderr_method=f"bootstrap({n_bootstrap})" if n_bootstrap else None,
    )


def frechet_to_reference(
    samples: Tensor, reference: FeatureStats, extractor: FeatureExtractor, *, n_bootstrap: int = 0, seed: int = 0
) -> FrechetResult:
    """Extract features of ``samples`` and compare with ``reference`` (ids must match)."""
    return frechet_from_features(
        features_for(samples, reference, extractor), reference, extractor.metric, extractor=extractor.id, n_bootstrap=n_bootstrap, seed=seed
    )


def features_for(samples: Tensor, reference: FeatureStats, extractor: FeatureExtractor) -> np.ndarray:
    """The features of ``samples`` in ``reference``'s space (the extractor ids must match): one
    extraction serves every statistic against that reference (FD, KID)."""
    if extractor.id != reference.extractor:
        raise ValueError(f"extractor {extractor.id!r} does not match reference stats from {reference.extractor!r}")
    return extractor(samples)


class DataSpaceFeatures:
    """Identity features for continuous data (toy2d, gaussian): the FD is in data space."""

    id = "data-space"
    metric = "fd_data"

    def __call__(self, samples: Tensor) -> np.ndarray:
        if samples.dtype == torch.uint8:
            raise TypeError("data-space FD is for continuous (float) data, got uint8 images")
        return samples.detach().reshape(len(samples), -1).to(torch.float64).cpu().numpy()

