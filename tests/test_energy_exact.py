"""The energy distance to toy2d's law in closed form (ndm/metrics/energy_exact.py): the data terms
against exact values, the estimate unbiased and its error the spread over sample sets, and the
pipeline's `eval.fid.energy_reference: exact` path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ndm.metrics.energy_exact import COMPLETE_UP_TO, UniformRectangles, checkerboard_law, energy_floor_to_law, energy_to_law, within_distances
from ndm.pipeline.datasets_packaged import sample_checkerboard

UNIT = UniformRectangles(((0.0, 1.0, 0.0, 1.0),))
# E|U - V| for U, V uniform on the unit square (the mean distance in a square)
UNIT_SQUARE_MEAN_DISTANCE = (2 + math.sqrt(2) + 5 * math.log(1 + math.sqrt(2))) / 15


def test_self_distance_of_the_unit_square_is_the_closed_form():
    assert UNIT.self_mean_distance == pytest.approx(UNIT_SQUARE_MEAN_DISTANCE, abs=1e-10)
    scaled = UniformRectangles(((-1.0, 2.0, 5.0, 8.0),))  # a square of side 3: distances scale by 3
    assert scaled.self_mean_distance == pytest.approx(3 * UNIT_SQUARE_MEAN_DISTANCE, abs=1e-9)


@pytest.mark.parametrize("point", [(0.5, 0.5), (0.0, 0.0), (1.0, 0.3), (1.7, -0.4), (-2.0, 3.0), (0.2, 0.999)])
def test_mean_distance_to_a_rectangle_matches_quadrature(point):
    """g(x) = E|x - Y| against adaptive quadrature of |x - y| over a 2 x 1 rectangle, inside, on
    edges and corners and outside."""
    rect = UniformRectangles(((0.0, 2.0, 0.0, 1.0),))
    px, py = point
    # split at the point so the kink of |x - y| lies on a cell edge of the quadrature
    xs = sorted({0.0, 2.0, min(max(px, 0.0), 2.0)})
    ys = sorted({0.0, 1.0, min(max(py, 0.0), 1.0)})
    total = sum(
        integrate.dblquad(lambda y, x: math.hypot(x - px, y - py), x0, x1, y0, y1, epsabs=1e-11, epsrel=1e-11)[0]
        for x0, x1 in zip(xs, xs[1:]) for y0, y1 in zip(ys, ys[1:]) if x1 > x0 and y1 > y0
    )  # fmt: skip
    assert rect.mean_distance_to(np.array([point]))[0] == pytest.approx(total / 2.0, abs=1e-9)


def test_checkerboard_law_is_the_datasets_law():
    """The coded law is what toy2d samples: its self-distance equals the U-statistic of many
    draws of sample_checkerboard (within 4 se), and every draw lies in one of its squares."""
    law = checkerboard_law(4, 2.0)
    assert len(law.rectangles) == 8
    x = sample_checkerboard(6000, torch.Generator().manual_seed(0), 4, 2.0).numpy()
    inside = np.zeros(len(x), bool)
    for x0, x1, y0, y1 in law.rectangles:
        inside |= (x[:, 0] >= x0) & (x[:, 0] <= x1) & (x[:, 1] >= y0) & (x[:, 1] <= y1)
    assert inside.all()
    within, per_point = within_distances(x)
    se = 2 * np.std(per_point, ddof=1) / math.sqrt(len(x))
    assert abs(within - law.self_mean_distance) < 4 * se


def test_cyclic_design_is_the_complete_statistic_below_the_threshold_and_unbiased_above():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((COMPLETE_UP_TO, 2))
    from scipy.spatial.distance import pdist

    assert within_distances(x)[0] == pytest.approx(pdist(x).mean(), rel=1e-12)
    # above: E|X - X'| of the standard normal in 2-D is sqrt(pi) (|X - X'| ~ Rayleigh(sqrt 2))
    values = [within_distances(rng.standard_normal((9000, 2)), pairs_per_point=200)[0] for _ in range(10)]
    assert abs(np.mean(values) - math.sqrt(math.pi)) < 4 * np.std(values, ddof=1) / math.sqrt(len(values))


def _cross_mean_distance(law: UniformRectangles, other: UniformRectangles, nodes: int = 24) -> float:
    """E|X - Y|, X ~ other, Y ~ law, by Gauss-Legendre over other's rectangles (test helper)."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for x0, x1, y0, y1 in other.rectangles:
        px, py = (x0 + x1) / 2 + (x1 - x0) / 2 * t, (y0 + y1) / 2 + (y1 - y0) / 2 * t
        gx, gy = np.meshgrid(px, py, indexing="ij")
        g = law.mean_distance_to(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
        total += float((w / 2) @ g @ (w / 2))
    return total / len(other.rectangles)


def test_energy_to_law_is_unbiased_for_a_shifted_law_and_its_error_is_the_spread():
    """A model whose law is the checkerboard shifted by 0.3 (the shifted squares do not straddle
    the law's edges except where quadrature is split): the exact D^2 = 2 E|X - Y| - 2 C, since X
    and Y have the same self-distance. The estimate over independent sample sets centres on it,
    and the reported error matches their spread."""
    law = checkerboard_law()
    shifted = UniformRectangles(tuple((x0 + 0.3, x1 + 0.3, y0, y1) for x0, x1, y0, y1 in law.rectangles))
    exact = 2 * _cross_mean_distance(law, shifted) - 2 * law.self_mean_distance
    assert exact > 0.01
    rng = np.random.default_rng(2)
    results = [energy_to_law(shifted.sample(1500, rng), law) for _ in range(16)]
    values, ses = np.array([v for v, _ in results]), np.array([s for _, s in results])
    assert abs(values.mean() - exact) < 4 * values.std(ddof=1) / math.sqrt(len(values))
    assert 0.6 < ses.mean() / values.std(ddof=1) < 1.6


def test_floor_of_exact_samples_centres_on_zero():
    law = checkerboard_law()
    floor = energy_floor_to_law(law, 300, repeats=60, seed=3)
    assert abs(floor.mean) < 4 * floor.std / math.sqrt(floor.repeats)
    assert floor.std > 0


def test_empty_rectangle_and_points_off_the_plane_are_refused():
    with pytest.raises(ValueError, match="is empty"):
        UniformRectangles(((0.0, 0.0, 0.0, 1.0),))
    with pytest.raises(ValueError, match=r"must be \(n, 2\)"):
        UNIT.mean_distance_to(np.zeros((3, 3)))


def test_pipeline_scores_against_the_law_when_configured(tmp_path):
    """eval.fid.energy_reference: exact: the reference file holds the law's floor, ed_data is
    scored in closed form (no reference draws), and a data without a coded law is refused with
    the fix named."""
    from ndm.pipeline.evaluate import evaluate_samples, reference_stats

    ev = {"fid": {"features": ["energy"], "energy_reference": "exact"}, "samplers": ["ancestral"], "sample_steps": [2], "n_samples": 400,
          "paper_setting": {"sampler": "ancestral", "steps": 2}}  # fmt: skip
    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"toy2d": {"data": {"name": "toy2d", "options": {"n_train": 500, "n_test": 100}}, "eval": ev}}}
    ref = tmp_path / "ref_energy.npz"
    info = reference_stats(config, "toy2d", "energy", ref)
    assert info["estimator"] == "exact" and info["m"] == 0 and abs(info["floor_mean"]) < 3 * info["floor_std"]
    run = tmp_path / "run"
    run.mkdir()
    x = sample_checkerboard(400, torch.Generator().manual_seed(5)).float().numpy() * 1.3
    np.savez(
        run / "steps2.npz", samples=x, nfe=2, nfe_F=0, seconds=0.1, steps=2, seed=0, sampler="ancestral", dataset="toy2d", variant="ddpm", time_grid="uniform-t"
    )
    out = evaluate_samples(config, "toy2d", [run / "steps2.npz"], {"energy": ref}, run / "ancestral.json", n_bootstrap=0)
    ed = out["results"][0]["metrics"]["ed_data"]
    assert ed["feature_extractor"] == "exact-law/toy2d" and ed["n_reference"] == 0
    assert ed["value"] == pytest.approx(energy_to_law(x.astype(np.float64), checkerboard_law())[0], rel=1e-12)
    assert ed["value"] > 4 * ed["stderr"]

    # data with a generator but no coded law: refused before any file is written, the fix named
    import dataclasses

    from ndm.pipeline.config import resolve_eval_config
    from ndm.pipeline.evaluate import config_dataset, energy_reference

    no_law = dataclasses.replace(config_dataset(config, "toy2d"), exact_law=None)
    with pytest.raises(ValueError, match="energy_reference: exact needs the data's law .* use energy_reference: draws"):
        energy_reference(no_law, resolve_eval_config(config, "toy2d"), tmp_path / "ref_none.npz", {"dataset": "toy2d"})
    assert not (tmp_path / "ref_none.npz").exists()
