"""Dataset loaders: exact values, real file formats written small, splits, errors."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ndm.pipeline.data import (
    DATASETS,
    PATCH_PHOTOS_TEST,
    PATCH_PHOTOS_TRAIN,
    DatasetCorrupt,
    DatasetNotFound,
    checkerboard_moments,
    extract_patches,
    from_model_space,
    load_dataset,
    to_model_space,
)

# --------------------------------------------------------------------------- model space


def test_to_model_space_bin_centres_exact():
    v = torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8)
    x = to_model_space(v, 256)
    expected = torch.tensor([-1 + 1 / 256, -1 + 3 / 256, -1 / 256, 1 / 256, 1 - 1 / 256])
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(to_model_space(torch.tensor([0, 8, 16]), 17), torch.tensor([-16 / 17, 0.0, 16 / 17]))


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_from_model_space_inverts_and_clips(levels):
    v = torch.arange(levels)
    back = from_model_space(to_model_space(v, levels), levels)
    assert back.dtype == torch.uint8
    assert torch.equal(back.long(), v)
    # Anything within half a bin maps to that level; outside [-1, 1] clips.
    jitter = (torch.rand(levels, generator=torch.Generator().manual_seed(0)) - 0.5) * (1.98 / levels)
    assert torch.equal(from_model_space(to_model_space(v, levels) + jitter, levels).long(), v)
    assert from_model_space(torch.tensor([-5.0, 5.0]), levels).tolist() == [0, levels - 1]


def test_from_model_space_wide_levels_are_int64():
    assert from_model_space(torch.tensor([1.0]), 1024).dtype == torch.int64


# --------------------------------------------------------------------------- registry and options


def test_registry_and_option_errors():
    assert set(DATASETS) == {"toy2d", "gaussian", "digits", "patches", "mnist", "cifar10", "imagenet32", "imagenet64"}
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="'patch_strde'.*accepted: patch_size, patch_stride, n_train, n_test"):
        load_dataset("patches", patch_strde=8)
    with pytest.raises(ValueError, match="n_train must be in"):
        load_dataset("digits", n_train=10_000)


# --------------------------------------------------------------------------- toy2d


def test_checkerboard_moments_exact_values():
    mean, cov = checkerboard_moments(cells=4, half_width=2.0)
    # Cell side 1: within-cell variance 1/12; black-cell centres {-1.5..1.5} have variance
    # 1.25 per axis and covariance 1/4 (i + j even correlates the two indices).
    torch.testing.assert_close(mean, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(cov, torch.tensor([[4 / 3, 1 / 4], [1 / 4, 4 / 3]], dtype=torch.float64))


def test_toy2d_samples_on_black_cells_and_match_moments():
    d = load_dataset("toy2d", seed=3, n_train=200_000, n_test=1000)
    assert d.train.dtype == torch.float32 and d.train.shape == (200_000, 2) and d.test.shape == (1000, 2)
    assert d.levels is None and d.event_shape == (2,)
    cell = torch.floor(d.train.double() + 2.0).long()  # side 1 on [-2, 2]
    assert cell.min() >= 0 and cell.max() <= 3
    assert torch.all((cell.sum(1) % 2) == 0)
    mean, cov = d.moments
    x = d.train.double()
    # 200k samples: standard error of a mean ~ 1.15 / sqrt(2e5) = 0.0026.
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=0.013)
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.02)


def test_toy2d_seeded_and_splits_differ():
    a, b, c = (load_dataset("toy2d", seed=s, n_train=100, n_test=100) for s in (0, 0, 1))
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)
    assert not torch.equal(a.train, a.test)


# --------------------------------------------------------------------------- gaussian


def test_gaussian_uses_spec_and_exact_moments():
    from ndm.estimators.gaussian import GaussianSpec

    d = load_dataset("gaussian", seed=2, dim=5, n_train=100_000, n_test=10)
    spec = GaussianSpec.make(5, 2)
    assert d.train.dtype == torch.float32 and d.train.shape == (100_000, 5)
    torch.testing.assert_close(d.moments[0], spec.mean)
    torch.testing.assert_close(d.moments[1], spec.cov)
    x = d.train.double()
    torch.testing.assert_close(x.mean(0), spec.mean, rtol=0, atol=0.01)
    torch.testing.assert_close(torch.cov(x.T), spec.cov, rtol=0, atol=0.01)


# --------------------------------------------------------------------------- digits


def test_digits_split_levels_labels():
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    assert d.train.shape == (1500, 1, 8, 8) and d.test.shape == (297, 1, 8, 8)
    assert d.train.dtype == torch.uint8 and d.levels == 17
    assert int(d.train.max()) == 16 and int(d.test.max()) <= 16
    bunch = load_digits()
    # Train and test partition the 1797 images: same label histogram as the source.
    both = torch.cat([d.train_labels, d.test_labels])
    assert torch.equal(torch.bincount(both), torch.from_numpy(np.bincount(bunch.target)))
    assert torch.bincount(d.test_labels).min() >= 29  # stratified: about 297 / 10 per class
    # Exact pixels: every test image is one of sklearn's images with that label.
    src = torch.from_numpy(np.rint(bunch.images).astype(np.uint8))
    i = 0
    matches = (src == d.test[i, 0]).flatten(1).all(1)
    assert matches.any() and torch.all(torch.from_numpy(bunch.target)[matches] == d.test_labels[i])


def test_digits_subsample_is_seeded():
    a = load_dataset("digits", seed=1, n_train=100, n_test=50)
    b = load_dataset("digits", seed=1, n_train=100, n_test=50)
    c = load_dataset("digits", seed=2, n_train=100, n_test=50)
    assert a.train.shape == (100, 1, 8, 8) and a.test.shape == (50, 1, 8, 8)
    assert torch.equal(a.train, b.train) and torch.equal(a.train_labels, b.train_labels)
    assert not torch.equal(a.train, c.train)


# --------------------------------------------------------------------------- patches


def _patch_count(h: int, w: int, size: int, stride: int) -> int:
    return ((h - size) // stride + 1) * ((w - size) // stride + 1)


def test_patches_disjoint_photographs():
    d = load_dataset("patches", patch_stride=32)
    # (H, W) of the bundled photographs: astronaut, rocket, motorcycle_left, ihc | chelsea, coffee.
    sizes_train = [(512, 512), (427, 640), (500, 741), (512, 512)]
    sizes_test = [(300, 451), (400, 600)]
    assert len(d.train) == sum(_patch_count(h, w, 32, 32) for h, w in sizes_train) == 1117
    assert len(d.test) == sum(_patch_count(h, w, 32, 32) for h, w in sizes_test) == 342
    assert d.train.dtype == torch.uint8 and d.event_shape == (3, 32, 32) and d.levels == 256
    train_photos = set(d.train_labels.tolist())
    test_photos = set(d.test_labels.tolist())
    assert train_photos == set(range(len(PATCH_PHOTOS_TRAIN)))
    assert test_photos == set(range(len(PATCH_PHOTOS_TRAIN), len(PATCH_PHOTOS_TRAIN) + len(PATCH_PHOTOS_TEST)))
    assert not set(PATCH_PHOTOS_TRAIN) & set(PATCH_PHOTOS_TEST)
    # No test patch occurs in the training set, pixel for pixel.
    train_bytes = {bytes(p.numpy().tobytes()) for p in d.train}
    assert not any(bytes(p.numpy().tobytes()) in train_bytes for p in d.test)


def test_patches_are_crops_of_the_photograph_in_fixed_shuffled_order():
    import skimage.data

    astronaut = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)
    d = load_dataset("patches", patch_stride=16)
    crops = extract_patches(astronaut, 32, 16)
    assert torch.equal(crops[0], astronaut[:, :32, :32]) and torch.equal(crops[1], astronaut[:, :32, 16:48])
    mine = d.train[d.train_labels == 0]
    assert len(mine) == len(crops) == 31 * 31
    # The same set of crops, in a fixed order that does not depend on the seed ...
    key = lambda t: sorted(bytes(p.numpy().tobytes()) for p in t)  # noqa: E731
    assert key(mine) == key(crops)
    assert torch.equal(load_dataset("patches", seed=7).train, d.train)
    # ... and shuffled across photographs, so that a prefix holds all of them.
    assert set(d.train_labels[:100].tolist()) == {0, 1, 2, 3}
    assert set(d.test_labels[:50].tolist()) == {4, 5}


def test_extract_patches_grid():
    img = torch.arange(2 * 5 * 7).reshape(2, 5, 7)
    p = extract_patches(img, 3, 2)
    assert p.shape == (2 * 3, 2, 3, 3)
    assert torch.equal(p[4], img[:, 2:5, 2:5])


# --------------------------------------------------------------------------- MNIST (idx files)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """IDX format as torchvision reads it: magic (0, 0, 0x08=ubyte, ndim), big-endian dims, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    tr_x, te_x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    tr_y, te_y = rng.integers(0, 10, 20, dtype=np.uint8), rng.integers(0, 10, 7, dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", tr_x)
    _write_idx(raw / "train-labels-idx1-ubyte", tr_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", te_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", te_y)
    d = load_dataset("mnist", root=tmp_path)
    assert d.train.shape == (20, 1, 28, 28) and d.test.shape == (7, 1, 28, 28) and d.levels == 256
    assert torch.equal(d.train[:, 0], torch.from_numpy(tr_x)) and torch.equal(d.test[:, 0], torch.from_numpy(te_x))
    assert d.train_labels.tolist() == tr_y.tolist() and d.test_labels.tolist() == te_y.tolist()
    sub = load_dataset("mnist", root=tmp_path, n_train=5, seed=4)
    idx = [i for i in range(20) if any(torch.equal(d.train[i], s) for s in sub.train)]
    assert len(idx) == 5 and sub.train_labels.tolist() == [int(tr_y[i]) for i in idx]


def test_mnist_missing_names_path(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in msg
    assert "download=True" in msg and isinstance(err.value, FileNotFoundError)


def test_default_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NDM_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFound, match=str(tmp_path / "elsewhere" / "MNIST")):
        load_dataset("mnist")


# --------------------------------------------------------------------------- CIFAR-10 (python pickles)


def _write_cifar(root: Path, per_batch: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """cifar-10-batches-py as distributed: dicts with 'data' (N, 3072) channel-major rows, 'labels'."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        img = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        lab = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": img.reshape(n, -1), "labels": lab, "filenames": []}, f)
        images.append(img)
        labels.append(lab)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return np.concatenate(images), sum(labels, [])


def test_cifar10_from_pickles(tmp_path):
    images, labels = _write_cifar(tmp_path, per_batch=3, n_test=4)
    d = load_dataset("cifar10", root=tmp_path, verify_checksums=False)
    assert d.train.shape == (15, 3, 32, 32) and d.test.shape == (4, 3, 32, 32) and d.train.dtype == torch.uint8
    assert torch.equal(d.train, torch.from_numpy(images[:15])) and torch.equal(d.test, torch.from_numpy(images[15:]))
    assert d.train_labels.tolist() == labels[:15] and d.test_labels.tolist() == labels[15:]
    # torchvision's MD5 check (the default) rejects files that are not the official ones.
    with pytest.raises(DatasetCorrupt, match="verify_checksums=False"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_missing_names_path(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(err.value)
    assert "cifar-10-python.tar.gz" in str(err.value)


# --------------------------------------------------------------------------- downsampled ImageNet (npz)


def _write_imagenet(root: Path, res: int, per_batch: int, n_val: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The official layout after unzipping: Imagenet{res}_train_npz/train_data_batch_{1..10}.npz
    and Imagenet{res}_val_npz/val_data.npz; data (N, 3*res*res) channel-major, labels 1..1000."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"train": [], "train_labels": [], "val": [], "val_labels": []}
    for i in range(1, 12):
        is_val = i == 11
        n = n_val if is_val else per_batch
        img = rng.integers(0, 256, (n, 3, res, res), dtype=np.uint8)
        lab = rng.integers(1, 1001, n)
        if is_val:
            path = root / f"imagenet{res}" / f"Imagenet{res}_val_npz" / "val_data.npz"
            extra = {}
        else:
            path = root / f"imagenet{res}" / f"Imagenet{res}_train_npz" / f"train_data_batch_{i}.npz"
            extra = {"mean": img.reshape(n, -1).mean(0)}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, data=img.reshape(n, -1), labels=lab.tolist(), **extra)
        out["val" if is_val else "train"].append(img)
        out["val_labels" if is_val else "train_labels"].append(lab)
    return {k: np.concatenate(v) for k, v in out.items()}


def test_imagenet32_from_npz_batches(tmp_path):
    ref = _write_imagenet(tmp_path, 32, per_batch=3, n_val=5)
    d = load_dataset("imagenet32", root=tmp_path)
    assert d.train.shape == (30, 3, 32, 32) and d.test.shape == (5, 3, 32, 32) and d.levels == 256
    assert torch.equal(d.train, torch.from_numpy(ref["train"])) and torch.equal(d.test, torch.from_numpy(ref["val"]))
    assert d.train_labels.tolist() == (ref["train_labels"] - 1).tolist()  # 1-based on disk, 0-based here
    assert d.test_labels.tolist() == (ref["val_labels"] - 1).tolist()
    # Subsample across batches: the selected rows are exactly the rows at the chosen indices.
    sub = load_dataset("imagenet32", root=tmp_path, n_train=7, n_test=2, seed=5)
    chosen = [i for i in range(30) if any(torch.equal(d.train[i], s) for s in sub.train)]
    assert len(chosen) == 7 and torch.equal(sub.train, d.train[chosen])
    assert torch.equal(sub.train_labels, d.train_labels[chosen])


def test_imagenet64_wrong_resolution_and_missing(tmp_path):
    _write_imagenet(tmp_path, 32, per_batch=1, n_val=1)
    flat = tmp_path / "imagenet64"  # files directly in <root>/imagenet64 are found too
    flat.mkdir()
    for f in sorted((tmp_path / "imagenet32").rglob("*.npz")):
        f.rename(flat / f.name)  # 32x32 rows where 64x64 are expected
    with pytest.raises(DatasetCorrupt, match=r"expected data of shape \(N, 12288\)"):
        load_dataset("imagenet64", root=tmp_path)
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("imagenet32", root=tmp_path)
    assert str(tmp_path / "imagenet32") in str(err.value) and "val_data.npz" in str(err.value)
