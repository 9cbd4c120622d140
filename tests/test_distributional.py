"""Metrics that see more than two moments (issue 31 item 4): the energy distance against fresh
exact samples, the mass off the data's support, and their floors; tested against closed forms."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from ndm.metrics.distributional import energy_distance, energy_floor, energy_to_exact, exact_draws, gaussian_energy_distance
from ndm.metrics.frechet import frechet_distance
from ndm.pipeline.datasets_packaged import checkerboard_moments, checkerboard_offsupport, sample_checkerboard


def checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    return sample_checkerboard(n, g, 4, 2.0)


@pytest.mark.parametrize("mu,sigma_q", [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (0.0, 2.0)])
def test_energy_distance_matches_the_gaussian_closed_form(mu, sigma_q):
    rng = np.random.default_rng(0)
    estimates = [energy_distance(rng.standard_normal((1500, 1)), mu + sigma_q * rng.standard_normal((1500, 1))) for _ in range(8)]
    exact = gaussian_energy_distance(mu, 1.0, sigma_q)
    se = np.std(estimates, ddof=1) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - exact) < 4 * se + 1e-4, (np.mean(estimates), exact, se)
    if mu == 0.0 and sigma_q == 1.0:
        assert exact == 0.0


def test_energy_distance_refuses_mismatched_sets():
    with pytest.raises(ValueError, match="two sets of >= 2 points"):
        energy_distance(np.zeros((5, 2)), np.zeros((5, 3)))


def test_offsupport_mass_of_data_uniform_and_outside_points():
    g = torch.Generator().manual_seed(1)
    assert checkerboard_offsupport(checkerboard(5000, g).numpy(), 4, 2.0) == 0.0
    uniform = (torch.rand(20000, 2, generator=g, dtype=torch.float64) * 4 - 2).numpy()
    assert checkerboard_offsupport(uniform, 4, 2.0) == pytest.approx(0.5, abs=4 * np.sqrt(0.25 / 20000))
    assert checkerboard_offsupport(np.array([[2.5, 0.0], [-1.9, -1.9], [-1.9, -0.9]]), 4, 2.0) == pytest.approx(2 / 3)


def test_a_gaussian_with_the_data_moments_is_seen_beyond_its_floor():
    """The case fd_data cannot see: N(mean, cov) of the checkerboard has Frechet distance ~0 to
    the exact moments, but its energy distance is many floor-sds above the floor, and it puts
    about half its mass off the board's black cells."""
    mean, cov = (t.numpy() for t in checkerboard_moments(4, 2.0))
    x = np.random.default_rng(3).multivariate_normal(mean, cov, 1000)
    assert frechet_distance(x.mean(0), np.cov(x, rowvar=False), mean, cov) < 0.02
    floor = energy_floor(checkerboard, 1000, 4000, repeats=8)
    assert abs(floor.mean) < 3 * floor.std  # exact against exact: zero up to noise
    value, se = energy_to_exact(x, exact_draws(checkerboard, 4000))
    assert energy_to_exact(x, exact_draws(checkerboard, 4000))[0] == value  # the draws depend on the seed only
    assert value > floor.mean + 5 * floor.std and value > 4 * se
    assert checkerboard_offsupport(x, 4, 2.0) > 0.4


def test_pipeline_writes_energy_scores_with_their_floor_and_the_report_prints_it(tmp_path):
    from ndm.pipeline.evaluate import evaluate_samples, reference_stats
    from ndm.report.collect import collect
    from ndm.report.tables import few_step_table

    ev = {"fid": {"features": ["data", "energy"]}, "samplers": ["ancestral"], "sample_steps": [2, 5], "n_samples": 200,
          "paper_setting": {"sampler": "ancestral", "steps": 5}}  # fmt: skip
    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"toy2d": {"data": {"name": "toy2d", "options": {"n_train": 500, "n_test": 100}}, "eval": ev}}}
    refs = {f: tmp_path / f"ref_{f}.npz" for f in ("data", "energy")}
    for f, path in refs.items():
        reference_stats(config, "toy2d", f, path)
    run = tmp_path / "results" / "toy2d" / "ddpm" / "seed0"
    (run / "fid").mkdir(parents=True)
    files = []
    for steps in (2, 5):
        x = checkerboard(200, torch.Generator().manual_seed(steps)).float().numpy() * (1.0 if steps == 5 else 1.5)
        np.savez(run / f"steps{steps}.npz", samples=x, nfe=steps, nfe_F=0, seconds=0.1, steps=steps, seed=0, sampler="ancestral",
                 dataset="toy2d", variant="ddpm", time_grid="uniform-t")  # fmt: skip
        files.append(run / f"steps{steps}.npz")
    out = evaluate_samples(config, "toy2d", files, refs, run / "fid" / "ancestral.json", n_bootstrap=0)
    by_steps = {r["steps"]: r["metrics"] for r in out["results"]}
    assert set(by_steps[5]) == {"fd_data", "ed_data", "offsupport_mass"}
    assert by_steps[5]["offsupport_mass"]["value"] == 0.0 and by_steps[2]["offsupport_mass"]["value"] > 0.2
    assert by_steps[2]["ed_data"]["value"] > by_steps[5]["ed_data"]["value"] + 10 * by_steps[5]["ed_data"]["floor_std"]
    notes = " ".join(few_step_table(collect(config, tmp_path / "results")).notes)
    assert "toy2d, ed_data: floor" in notes and "(8 exact draws of 200 samples)" in notes and "toy2d, fd_data: floor" in notes


def test_energy_on_data_without_a_generator_says_how_to_fix_it(tmp_path):
    from ndm.pipeline.evaluate import reference_stats

    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"digits": {"data": {"name": "digits"}, "eval": {"fid": {"features": ["energy"]}}}}}
    with pytest.raises(ValueError, match="needs data with a known generator .* drop 'energy' from datasets.digits.eval.fid.features"):
        reference_stats(config, "digits", "energy", tmp_path / "ref_energy.npz")
    assert not (tmp_path / "ref_energy.npz").exists()


def test_floor_without_a_generator_is_the_test_split_and_with_one_exact_draws():
    """data_floor: held-out test examples where the generator is unknown (digits), exact draws
    where it is known (toy2d: mean and sd over draws, about 0.01 at 200 samples in data space)."""
    from ndm.metrics.frechet import DataSpaceFeatures, exact_reference_stats, feature_stats, frechet_from_features
    from ndm.pipeline.data import load_dataset
    from ndm.pipeline.evaluate import data_floor

    class Flat:
        id, metric = "flat", "fd_flat"

        def __call__(self, x):
            return x.reshape(len(x), -1).double().numpy()

    digits = load_dataset("digits", seed=0)
    ref = feature_stats(Flat()(digits.train), "flat")
    floor = data_floor(digits, Flat(), ref, 100)
    assert floor["source"] == "test split" and floor["n"] == 100 and floor["std"] is None
    shifted = frechet_from_features(Flat()(digits.test[:100].double() + 1.0), ref, "fd_flat").value
    assert 0 < floor["mean"] < shifted
    toy = load_dataset("toy2d", seed=0, n_train=500, n_test=100)
    exact = data_floor(toy, DataSpaceFeatures(), exact_reference_stats(toy.moments), 200)
    assert exact["source"] == "8 exact draws" and 0 < exact["mean"] < 0.1 and exact["std"] > 0


def test_energy_standard_error_matches_the_spread_over_sample_sets():
    """The error of ed_data includes the samples' own variability: over independent sample sets
    of a Gaussian with the checkerboard's moments, the spread of the estimates is within a factor
    of two of the standard error reported for one set."""
    mean, cov = (t.numpy() for t in checkerboard_moments(4, 2.0))
    draws = exact_draws(checkerboard, 2000)
    rng = np.random.default_rng(11)
    results = [energy_to_exact(rng.multivariate_normal(mean, cov, 500), draws) for _ in range(12)]
    spread = np.std([v for v, _ in results], ddof=1)
    reported = np.mean([se for _, se in results])
    assert 0.5 < reported / spread < 2.0, (reported, spread)


def test_the_workflow_plans_the_energy_space(tmp_path):
    """`energy` in a config's features reaches the DAG: a reference_stats job with --feature
    energy (its floor) and the sampling jobs reading ref_energy.npz."""
    from test_pipeline import snakemake, workdir_copy

    work = workdir_copy(tmp_path / "w")
    proc = snakemake(["-n", "-p", "all", "--config", "datasets={toy2d: {eval: {fid: {features: [data, energy]}}}}"], cwd=work, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "--feature energy" in out and "energy=results/default/toy2d/ref_energy.npz" in out
