"""The unbiased KID (ndm.metrics.kid): equal to torchmetrics' polynomial MMD, unbiased against
the closed form for Gaussians, its standard error against the spread over independent sets, and
written by the pipeline beside the FD with its test-split floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ndm.metrics.kid import kid_with_stderr


def _moment3(mu: float, s: float) -> float:
    return mu**3 + 3 * mu * s**2


def _cross(a: tuple[float, float], b: tuple[float, float]) -> float:
    """E (x y + 1)^3 for independent x ~ N(a), y ~ N(b) in one dimension (D = 1)."""
    (ma, sa), (mb, sb) = a, b
    e1 = ma * mb
    e2 = (ma**2 + sa**2) * (mb**2 + sb**2)
    e3 = _moment3(ma, sa) * _moment3(mb, sb)
    return e3 + 3 * e2 + 3 * e1 + 1


def gaussian_mmd2(p: tuple[float, float], q: tuple[float, float]) -> float:
    """The population MMD^2 of the cubic kernel between two 1-D Gaussians: the Gaussian oracle."""
    return _cross(p, p) + _cross(q, q) - 2 * _cross(p, q)


def test_kid_equals_torchmetrics_polynomial_mmd():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 16)), rng.normal(0.2, 1.1, size=(300, 16))
    assert kid_with_stderr(x, y)[0] == pytest.approx(float(poly_mmd(torch.tensor(x), torch.tensor(y))), rel=1e-10)


def test_kid_is_unbiased_against_the_gaussian_closed_form_at_any_sample_size():
    """Averaged over draws, the estimate is the population MMD^2 (exact, 1-D Gaussians) at n = 20
    as at n = 400, unlike a Frechet distance, whose bias grows as n shrinks; the reported error
    matches the spread over independent draws."""
    rng = np.random.default_rng(1)
    p, q = (0.0, 1.0), (0.5, 1.3)
    exact = gaussian_mmd2(p, q)
    for n, m, draws in ((20, 30, 4000), (400, 300, 200)):
        runs = np.array([kid_with_stderr(rng.normal(*p, (n, 1)), rng.normal(*q, (m, 1))) for _ in range(draws)])
        spread = runs[:, 0].std(ddof=1)
        assert abs(runs[:, 0].mean() - exact) < 4 * spread / np.sqrt(draws), (n, runs[:, 0].mean(), exact)
        if n >= 400:  # the first-order error needs n large
            assert 0.8 < runs[:, 1].mean() / spread < 1.25, (runs[:, 1].mean(), spread)
    same = np.array([kid_with_stderr(rng.normal(size=(50, 1)), rng.normal(size=(60, 1)))[0] for _ in range(3000)])
    assert abs(same.mean()) < 4 * same.std(ddof=1) / np.sqrt(len(same)) and (same < 0).any()


def test_kid_refuses_mismatched_features():
    with pytest.raises(ValueError, match="of one width"):
        kid_with_stderr(np.zeros((5, 3)), np.zeros((5, 4)))


def test_pipeline_writes_kid_beside_the_fd_with_its_floor(tmp_path):
    """reference_stats keeps reference features, and evaluate_samples writes kid_<space> beside
    fd_<space>, with the test split's KID against the same reference as its floor; the test split
    itself scores the floor, a shifted set far above it."""
    import numpy as np

    from ndm.pipeline.data import load_dataset
    from ndm.pipeline.evaluate import data_floor
    from ndm.metrics.frechet import feature_stats

    class Flat:
        id, metric = "flat", "fd_flat"

        def __call__(self, x):
            return x.reshape(len(x), -1).double().numpy()

    digits = load_dataset("digits", seed=0)
    features = Flat()(digits.train)
    ref = feature_stats(features, "flat")
    import dataclasses

    ref = dataclasses.replace(ref, features=features.astype(np.float32))
    floor = data_floor(digits, Flat(), ref, 200)
    kid_test, _ = kid_with_stderr(Flat()(digits.test[:200]), features)
    assert floor["kid_mean"] == pytest.approx(kid_test) and floor["kid_se"] > 0
    shifted, _ = kid_with_stderr(Flat()(digits.test[:200]) + 1.0, features)
    assert shifted > floor["kid_mean"] + 10 * floor["kid_se"]
