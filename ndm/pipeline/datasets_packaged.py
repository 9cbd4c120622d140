"""Datasets that need no files: generated (toy2d, gaussian) or shipped inside a Python package
(digits from scikit-learn, patches of scikit-image's photographs). Registered in ndm/pipeline/data.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from ndm.pipeline.datasets_common import Dataset, DatasetNotFound, LoadRequest, _generator, _subsample


# --------------------------------------------------------------------------- toy2d


def _checkerboard_cells(cells: int) -> list[tuple[int, int]]:
    """The "black" cells (i + j even) of a cells x cells board; i indexes x, j indexes y."""
    return [(i, j) for i in range(cells) for j in range(cells) if (i + j) % 2 == 0]


def sample_checkerboard(n: int, generator: torch.Generator, cells: int = 4, half_width: float = 2.0) -> Tensor:
    """n points uniform on the black cells of a checkerboard on [-w, w]^2, float64 (n, 2).

    With cells=4 this is FFJORD's "checkerboard" toy data scaled by half_width / 4.
    """
    black = torch.tensor(_checkerboard_cells(cells), dtype=torch.float64)
    side = 2.0 * half_width / cells
    pick = torch.randint(len(black), (n,), generator=generator)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return -half_width + (black[pick] + u) * side


def checkerboard_offsupport(x: np.ndarray, cells: int, half_width: float) -> float:
    """Fraction of points off the black cells (i + j even) of toy2d's board on [-w, w]^2,
    outside the board included; 0 for the data."""
    x = np.asarray(x, np.float64)
    side = 2.0 * half_width / cells
    ij = np.floor((x + half_width) / side)
    inside = np.all((ij >= 0) & (ij < cells), axis=1)
    black = (ij.sum(axis=1) % 2) == 0
    return float(1.0 - np.mean(inside & black))


def checkerboard_moments(cells: int = 4, half_width: float = 2.0) -> tuple[Tensor, Tensor]:
    """Exact mean (2,) and covariance (2, 2) of :func:`sample_checkerboard`, float64.

    An equal-weight mixture of uniform squares of side s with centres c_k has
    mean = avg c_k and cov = s^2/12 I + Cov_k[c_k] (law of total covariance).
    """
    side = 2.0 * half_width / cells
    centres = -half_width + (torch.tensor(_checkerboard_cells(cells), dtype=torch.float64) + 0.5) * side
    mean = centres.mean(0)
    d = centres - mean
    cov = d.T @ d / len(centres) + torch.eye(2, dtype=torch.float64) * side**2 / 12.0
    return mean, cov


def load_toy2d(
    req: LoadRequest, *, n_train: int = 50_000, n_test: int = 10_000, cells: int = 4, half_width: float = 2.0
) -> Dataset:
    """Checkerboard toy data, float32 (N, 2); generated, so ``req.root``/``req.download`` are unused."""
    from ndm.metrics.energy_exact import checkerboard_law

    seed = req.seed
    if cells < 2:
        raise ValueError(f"cells must be >= 2, got {cells}")
    train = sample_checkerboard(n_train, _generator(seed, 1), cells, half_width).to(torch.float32)
    test = sample_checkerboard(n_test, _generator(seed, 2), cells, half_width).to(torch.float32)
    return Dataset(
        "toy2d",
        train,
        test,
        None,
        moments=checkerboard_moments(cells, half_width),
        info={"seed": seed, "n_train": n_train, "n_test": n_test, "cells": cells, "half_width": half_width},
        exact_sampler=functools.partial(sample_checkerboard, cells=cells, half_width=half_width),
        offsupport=functools.partial(checkerboard_offsupport, cells=cells, half_width=half_width),
        exact_law=checkerboard_law(cells, half_width),
    )


# --------------------------------------------------------------------------- gaussian


def load_gaussian(req: LoadRequest, *, dim: int = 8, n_train: int = 50_000, n_test: int = 10_000) -> Dataset:
    """x ~ N(m, S) from :class:`ndm.estimators.gaussian.GaussianSpec` ``make(dim, seed)``, float32 (N, D).

    The spec's exact mean and covariance ride along in ``moments`` (float64).
    """
    from ndm.estimators.gaussian import GaussianSpec  # local: keeps `ndm.pipeline.data` importable on its own

    seed = req.seed
    spec = GaussianSpec.make(dim, seed)
    train = spec.sample(n_train, _generator(seed, 1)).to(torch.float32)
    test = spec.sample(n_test, _generator(seed, 2)).to(torch.float32)
    return Dataset(
        "gaussian",
        train,
        test,
        None,
        moments=(spec.mean.clone(), spec.cov.clone()),
        info={"seed": seed, "dim": dim, "n_train": n_train, "n_test": n_test},
    )


# --------------------------------------------------------------------------- digits

DIGITS_N_TEST = 297  # 1797 = 1500 + 297


def load_digits(
    req: LoadRequest, *, n_train: int | None = None, n_test: int | None = None, continuous_scale: float | None = None
) -> Dataset:
    """scikit-learn's bundled 8x8 digits: uint8 (N, 1, 8, 8), 17 levels (0..16), labels 0..9.

    The 1500/297 train/test split is stratified by label with a fixed random_state (0),
    independent of ``req.seed``, which only draws ``n_train``/``n_test`` subsamples.

    continuous_scale s: instead, continuous vectors float32 (N, 64): each level k dequantized
    uniformly within its bin of [-1, 1] (a fixed generator, so every seed sees the same values),
    centred at the training split's mean and times s. With s = 3 the pixels' variance is 9 times
    that of the images and no offset of F can lower the prior term: the data for the positive
    control of a learned F (docs/math.md, "What a learned F can win").
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.from_numpy(np.rint(bunch.images).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_N_TEST, random_state=0, stratify=bunch.target
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    tr, trl, te, tel = _subsample(
        images[idx_train], labels[idx_train], images[idx_test], labels[idx_test], n_train, n_test, req.seed
    )
    info = {"seed": req.seed, "n_train": len(tr), "n_test": len(te)}
    if continuous_scale is None:
        return Dataset("digits", tr, te, 17, trl, tel, info=info)
    if not continuous_scale > 0:
        raise ValueError(f"digits option continuous_scale must be > 0, got {continuous_scale}")
    tr, te = (_dequantize(x, 17, _generator(0, k)) for k, x in ((1, tr), (2, te)))
    mean = tr.mean(0, keepdim=True)
    tr, te = (tr - mean) * float(continuous_scale), (te - mean) * float(continuous_scale)
    return Dataset("digits", tr, te, None, trl, tel, info={**info, "continuous_scale": float(continuous_scale)})


def _dequantize(levels: Tensor, n_levels: int, generator: torch.Generator) -> Tensor:
    """Uniform dequantization of integer levels into [-1, 1] bins, flattened to (N, D) float32."""
    u = torch.rand(levels.shape, generator=generator, dtype=torch.float64)
    return ((levels.double() + u) * (2.0 / n_levels) - 1.0).flatten(1).to(torch.float32)


# --------------------------------------------------------------------------- patches

#: Colour photographs that ship inside scikit-image (no pooch download). The label of
#: a patch is the index of its photograph in PATCH_PHOTOS_TRAIN + PATCH_PHOTOS_TEST.
#: motorcycle_right.png is left out on purpose: it is the stereo twin of motorcycle_left.
PATCH_PHOTOS_TRAIN: tuple[str, ...] = ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "ihc.png")
PATCH_PHOTOS_TEST: tuple[str, ...] = ("chelsea.png", "coffee.png")


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _read_photo(path: Path) -> Tensor:
    """A photograph as uint8 (3, H, W)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def extract_patches(image: Tensor, size: int, stride: int) -> Tensor:
    """All size x size patches of a (C, H, W) image on a stride grid, (N, C, size, size)."""
    c = image.shape[0]
    p = image.unfold(1, size, stride).unfold(2, size, stride)  # (C, nh, nw, size, size)
    return p.permute(1, 2, 0, 3, 4).reshape(-1, c, size, size).contiguous()


def _photo_patches(names: Iterable[str], first_label: int, size: int, stride: int) -> tuple[Tensor, Tensor]:
    folder = _skimage_data_dir()
    images, labels = [], []
    for k, name in enumerate(names):
        path = folder / name
        if not path.is_file():
            raise DatasetNotFound(
                "patches", [path], "reinstall scikit-image (pip install --force-reinstall scikit-image); "
                "the photographs ship inside the package"
            )
        patches = extract_patches(_read_photo(path), size, stride)
        images.append(patches)
        labels.append(torch.full((len(patches),), first_label + k, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def _fixed_shuffle(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """One fixed permutation (independent of ``seed``), so that any prefix of the split,
    e.g. ``train[:n]``, mixes all photographs instead of holding only the first one."""
    perm = torch.randperm(len(x), generator=_generator(_FIXED_ORDER_SEED, 0))
    return x[perm], labels[perm]


_FIXED_ORDER_SEED = 20240501


def load_patches(
    req: LoadRequest, *, patch_size: int = 32, patch_stride: int = 16, n_train: int | None = None, n_test: int | None = None
) -> Dataset:
    """RGB patches, uint8 (N, 3, s, s), 256 levels, of scikit-image's bundled photographs.

    Train patches come from PATCH_PHOTOS_TRAIN, test patches from the different
    photographs PATCH_PHOTOS_TEST, so no test pixel was ever seen in training. Each split
    is stored in one fixed shuffled order, so prefixes are representative. Labels
    are photograph indices (train 0..3, test 4..5): they give the feature classifier
    something real to learn (docs/fid.md).
    """
    if patch_size < 1 or patch_stride < 1:
        raise ValueError("patch_size and patch_stride must be >= 1")
    tr, trl = _fixed_shuffle(*_photo_patches(PATCH_PHOTOS_TRAIN, 0, patch_size, patch_stride))
    te, tel = _fixed_shuffle(*_photo_patches(PATCH_PHOTOS_TEST, len(PATCH_PHOTOS_TRAIN), patch_size, patch_stride))
    tr, trl, te, tel = _subsample(tr, trl, te, tel, n_train, n_test, req.seed)
    info = {
        "seed": req.seed,
        "patch_size": patch_size,
        "patch_stride": patch_stride,
        "n_train": len(tr),
        "n_test": len(te),
        "train_photos": list(PATCH_PHOTOS_TRAIN),
        "test_photos": list(PATCH_PHOTOS_TEST),
    }
    return Dataset("patches", tr, te, 256, trl, tel, info=info)
