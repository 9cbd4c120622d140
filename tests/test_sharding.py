"""Sharded sampling (eval.sample_shards, issue 15 item 2): K shard jobs, one merge, the same FD.

A real toy2d model samples its set in K = 3 shards through `ndm sample-grid --shard k`, the
`ndm evaluate-samples --shards 3` job merges them and computes the Frechet distances (data
space, against toy2d's exact moments); the merged FD equals the FD of the same samples written
as one unsharded file. A dry run checks the DAG: 3 sample jobs per (model, sampler).
"""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest
import yaml
from test_config_overrides import job_counts
from test_pipeline import REPO, snakemake, workdir_copy

from ndm.cli.main import main as ndm_main
from ndm.pipeline.config import ConfigError, resolve_eval_config
from ndm.pipeline.config import run_seeds
from ndm.pipeline.shards import merge_shards, noise_seed, shard_size

K = 3
N_SAMPLES = 301  # not a multiple of K: shard sizes 101, 100, 100
CONFIG = {
    "datasets": {
        "toy2d": {
            "data": {"name": "toy2d", "options": {"n_train": 2000, "n_test": 200}},
            "model": {"network": {"kind": "mlp", "hidden": 32, "depth": 1}},
            "train": {"steps": 30, "batch_size": 64, "lr": 3e-3, "warmup_steps": 5, "log_every": 10, "checkpoint_every": 1000, "device": "cpu"},
            "eval": {"samplers": ["ancestral", "ode-heun"], "sample_steps": [3, 7], "paper_setting": {"sampler": "ancestral", "steps": 7},
                     "n_samples": N_SAMPLES, "batch_size": 64, "fid": {"features": ["data"]}, "sample_shards": K},
        }
    }
}  # fmt: skip


def test_shard_sizes_and_seeds():
    assert [shard_size(N_SAMPLES, k, K) for k in range(K)] == [101, 100, 100]
    assert sum(shard_size(50_000, k, 7) for k in range(7)) == 50_000
    assert noise_seed(2, 100, 0) == 2 * 100_003 + 100  # shard 0 = the unsharded stream (K = 1 files unchanged)
    # torch's CPU generator keeps the low 32 bits of a seed: distinct there, for seeds 0-41 and K <= 1024.
    seeds = {noise_seed(s, n, k) % 2**32 for s in (0, 1, 2, 41) for n in (1, 10, 1000, 10_000) for k in range(1024)}
    assert len(seeds) == 4 * 4 * 1024
    with pytest.raises(ValueError):
        shard_size(10, 3, 3)


def test_sample_shards_range_is_checked():
    bad = json.loads(json.dumps(CONFIG))
    bad["datasets"]["toy2d"]["eval"]["sample_shards"] = 0
    with pytest.raises(ConfigError, match="sample_shards must be between 1 and min"):
        resolve_eval_config(bad, "toy2d")
    bad["datasets"]["toy2d"]["eval"]["sample_shards"] = N_SAMPLES + 1
    with pytest.raises(ConfigError, match="sample_shards"):
        resolve_eval_config(bad, "toy2d")
    assert resolve_eval_config({"datasets": {"toy2d": {}}}, "toy2d").sample_shards == 1


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A trained toy2d model, its sample set in K shards (CLI), reference stats, the merge + FD (CLI)."""
    from ndm.pipeline.config import resolve_run_config
    from ndm.pipeline.evaluate import reference_stats
    from ndm.pipeline.train import MODEL, train

    tmp = tmp_path_factory.mktemp("shards")
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(CONFIG))
    run = resolve_run_config(CONFIG, "toy2d", "ddpm", 0)
    train(run, tmp / "model", progress=False)
    model = tmp / "model" / MODEL
    reference_stats(CONFIG, "toy2d", "data", tmp / "ref_data.npz")
    samples = tmp / "samples"
    for k in range(K):
        dirs = [str(samples / s / f"shard{k}") for s in ("ancestral", "ode-heun")]
        rc = ndm_main(["sample-grid", "--config", str(cfg_path), "--model", str(model), "--sampler", "ancestral", "ode-heun",
                       "--out-dir", *dirs, "--shard", str(k), "--shards", str(K), "--device", "cpu", "--no-progress"])  # fmt: skip
        assert rc == 0
    manifests = [str(samples / s / f"shard{k}" / "manifest.json") for s in ("ancestral", "ode-heun") for k in range(K)]
    outs = [str(tmp / "fid" / f"{s}.json") for s in ("ancestral", "ode-heun")]
    rc = ndm_main(["evaluate-samples", "--config", str(cfg_path), "--dataset", "toy2d", "--manifest", *manifests, "--shards", str(K),
                   "--out", *outs, "--ref", f"data={tmp / 'ref_data.npz'}", "--device", "cpu", "--no-tracking"])  # fmt: skip
    assert rc == 0
    return tmp, model


def test_shards_hold_their_share_and_differ(sharded):
    tmp, _ = sharded
    shard_samples = []
    for k in range(K):
        man = json.loads((tmp / "samples/ancestral" / f"shard{k}" / "manifest.json").read_text())
        assert (man["shard"], man["shards"], man["n_samples"]) == (k, K, shard_size(N_SAMPLES, k, K))
        with np.load(tmp / "samples/ancestral" / f"shard{k}" / "steps7.npz") as z:
            shard_samples.append(z["samples"])
    assert [len(s) for s in shard_samples] == [101, 100, 100]
    assert not np.allclose(shard_samples[1], shard_samples[2])  # own noise streams
    with np.load(tmp / "samples/ancestral/steps7.npz") as z:  # the merged file: the shards in order
        np.testing.assert_array_equal(z["samples"], np.concatenate(shard_samples))
        assert int(z["shards"]) == K
    merged = json.loads((tmp / "samples/ancestral/manifest.json").read_text())
    assert merged["n_samples"] == N_SAMPLES and len(merged["shards"]) == K
    assert [r["steps"] for r in merged["records"]] == [3, 7]


def test_a_shard_is_deterministic_from_seed_steps_and_shard(sharded, tmp_path):
    from ndm.pipeline.evaluate import sample_grid

    tmp, model = sharded
    sample_grid(model, CONFIG, "ancestral", tmp_path / "again", shard=2, shards=K, progress=False)
    for steps in (3, 7):
        with np.load(tmp_path / "again" / f"steps{steps}.npz") as a, np.load(tmp / "samples/ancestral/shard2" / f"steps{steps}.npz") as b:
            np.testing.assert_array_equal(a["samples"], b["samples"])


def test_merged_fd_equals_unsharded_fd_of_the_same_samples(sharded, tmp_path):
    """The FD of the merge job equals the FD of one file holding the same samples (1e-6 relative)."""
    from ndm.pipeline.evaluate import evaluate_samples

    tmp, _ = sharded
    merged_fid = json.loads((tmp / "fid/ancestral.json").read_text())
    files = []
    for steps in (3, 7):
        parts = [np.load(tmp / "samples/ancestral" / f"shard{k}" / f"steps{steps}.npz") for k in range(K)]
        arrays = {key: parts[0][key] for key in parts[0].files}
        arrays["samples"] = np.concatenate([p["samples"] for p in parts])
        path = tmp_path / f"steps{steps}.npz"
        np.savez(path, **arrays)
        files.append(path)
    single = evaluate_samples(CONFIG, "toy2d", files, {"data": tmp / "ref_data.npz"}, tmp_path / "fid.json")
    assert len(merged_fid["results"]) == len(single["results"]) == 2
    for m, s in zip(merged_fid["results"], single["results"]):
        assert m["steps"] == s["steps"] and m["n_samples"] == s["n_samples"] == N_SAMPLES
        for name, metric in s["metrics"].items():
            assert metric["value"] > 0
            assert m["metrics"][name]["value"] == pytest.approx(metric["value"], rel=1e-6)
            assert m["metrics"][name]["stderr"] == pytest.approx(metric["stderr"], rel=1e-6)


def test_merge_rejects_missing_shards(sharded, tmp_path):
    tmp, _ = sharded
    with pytest.raises(ValueError, match="expected shards"):
        merge_shards([tmp / "samples/ancestral/shard0/manifest.json", tmp / "samples/ancestral/shard2/manifest.json"], tmp_path)


def test_dry_run_plans_k_sample_jobs_per_model_and_sampler(tmp_path):
    """K = 3: 3 sampling jobs per (model, sampler) with per_sampler jobs, 3 per model with
    per_model; one merge (evaluate_samples) job per model either way; the same static rules."""
    default = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    n_models = {d: sum(len(run_seeds(default, d, v)) for v in default["variants"]) for d in default["datasets"]}
    for mode in ("per_sampler", "per_model"):
        work = workdir_copy(tmp_path / mode)
        proc = snakemake(["-n", "-p", "all", "--config", f"defaults={{eval: {{sample_shards: 3, sample_jobs: {mode}}}}}"], cwd=work, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        counts = job_counts(out)
        assert counts["evaluate_samples"] == sum(n_models.values())
        if mode == "per_model":
            assert counts["sample_grid"] == 3 * sum(n_models.values())
            assert "jobs/sample-all-samplers.shard2.json" in out
        else:
            n_sets = sum(len(resolve_eval_config(default, d).samplers) * n_models[d] for d in default["datasets"])
            assert counts["sample_grid"] == 3 * n_sets
            assert "jobs/sample-ddim.shard2.json" in out
        assert "--shard 2 --shards 3" in out and "--shards 3 --index" in out
        assert set(counts) & {"sample_shard", "sample_grid_digits", "evaluate_samples_digits"} == set()


def test_a_sampler_on_its_own_grid(sharded, tmp_path):
    """"<sampler>@<grid>" runs the sampler on that grid instead of eval.time_grid: a sampler of its
    own in the config (checked), its files record the grid, its samples differ from the default
    grid's, and its NFE is the sampler's."""
    from ndm.estimators.sampling import expected_nfe
    from ndm.names import sampler_problem
    from ndm.pipeline.evaluate import sample_grid

    _, model = sharded
    config = json.loads(json.dumps(CONFIG))
    config["datasets"]["toy2d"]["eval"].update(samplers=["ancestral", "ancestral@uniform-logsnr"], sample_shards=1)
    assert resolve_eval_config(config, "toy2d").samplers[1] == "ancestral@uniform-logsnr"
    for bad, needle in [("ode-adaptive@edm", "takes no grid"), ("ddim@cosine", "unknown time grid 'cosine'"), ("dim@edm", "unknown sampler 'dim'")]:
        assert needle in sampler_problem(bad)
        config["datasets"]["toy2d"]["eval"]["samplers"] = [bad]
        with pytest.raises(ConfigError, match=needle.split("'")[0]):
            resolve_eval_config(config, "toy2d")
    config["datasets"]["toy2d"]["eval"]["samplers"] = ["ancestral", "ancestral@uniform-logsnr"]
    plain = sample_grid(model, config, "ancestral", tmp_path / "plain", progress=False)
    own = sample_grid(model, config, "ancestral@uniform-logsnr", tmp_path / "own", progress=False)
    with np.load(plain[0]) as a, np.load(own[0]) as b:
        assert str(a["time_grid"]) == "uniform-t" and str(b["time_grid"]) == "uniform-logsnr"
        assert str(b["sampler"]) == "ancestral@uniform-logsnr" and int(a["nfe"]) == int(b["nfe"])
        assert not np.allclose(a["samples"], b["samples"])
    manifest = json.loads((tmp_path / "own" / "manifest.json").read_text())
    assert manifest["time_grid"] == "uniform-logsnr" and manifest["sampler"] == "ancestral@uniform-logsnr"
    from ndm.pipeline.evaluate import load_trained_model

    net, _ = load_trained_model(model)
    assert expected_nfe(net, "ancestral@edm", 7) == expected_nfe(net, "ancestral", 7)


def test_an_identical_grid_reuses_the_default_grid_samples(tmp_path):
    """A schedule linear in gamma (vdm-fixed) makes uniform-logsnr the uniform-t grid to the last
    bit: ddim@uniform-logsnr then copies ddim's files (recording reused_from) and they equal what
    sampling on that grid gives; DDPM's schedule is not linear, so its grid is sampled."""
    from trained_digits import trained_digits

    from ndm.estimators.sampling import SamplerSettings, sample
    from ndm.pipeline.evaluate import sample_grid
    from ndm.pipeline.shards import noise_seed

    config = {"seeds": [0], "variants": ["vdm-fixed", "ddpm"], "datasets": {"digits": {"data": {"name": "digits"},
              "eval": {"samplers": ["ddim", "ddim@uniform-logsnr"], "sample_steps": [3], "n_samples": 8, "batch_size": 8,
                       "paper_setting": {"sampler": "ddim", "steps": 3}}}}}  # fmt: skip
    # (DDPM's schedule is not linear in gamma: its own grid is sampled, test_a_sampler_on_its_own_grid)
    for variant, reused in (("vdm-fixed", True),):
        net, path = trained_digits(variant, tmp_path / variant)
        root = tmp_path / variant / "samples"
        (plain,) = sample_grid(path, config, "ddim", root / "ddim", progress=False)
        (own,) = sample_grid(path, config, "ddim@uniform-logsnr", root / "ddim@uniform-logsnr", progress=False)
        with np.load(plain) as a, np.load(own) as b:
            assert ("reused_from" in b.files) == reused and str(b["time_grid"]) == "uniform-logsnr"
            assert str(b["sampler"]) == "ddim@uniform-logsnr"
            res = sample(net, 8, SamplerSettings("ddim", 3, time_grid="uniform-logsnr"), generator=torch.Generator().manual_seed(noise_seed(0, 3, 0)), batch_size=8, progress=False)
            direct = (res.levels if res.levels is not None else res.x.float()).numpy()
            assert np.array_equal(b["samples"], direct)  # copied or sampled: what the grid gives
            assert np.array_equal(a["samples"], b["samples"]) == reused


def test_sampler_settings_refuse_a_grid_suffix():
    from ndm.estimators.sampling import SamplerSettings

    with pytest.raises(ValueError, match=r"SamplerSettings\('edm-heun', steps, time_grid='edm'\)"):
        SamplerSettings("edm-heun@edm", 10)
