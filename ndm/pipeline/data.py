"""Datasets behind one small interface (DESIGN.md section 5).

Every loader returns a :class:`Dataset`: images as uint8 tensors (N, C, H, W) with
their number of levels K, or continuous data as float32 (N, D) with ``levels=None``.
Train/test membership is fixed by the data source (a fixed file, a fixed photograph,
a fixed stratified split); ``seed`` only draws generated data and optional
subsamples (``n_train``/``n_test``), so two runs with the same arguments see the
same tensors.

Files are never fetched unless the caller passes ``download=True`` (and only the
torchvision datasets can download). A missing dataset raises one
:class:`DatasetNotFound` that names every path searched and how to get the data.

Adding a dataset is one loader function ``f(root, download, seed, *, option=...)``
plus one entry in :data:`DATASETS`; its keyword-only parameters are the options
:func:`load_dataset` accepts for it.
"""

from __future__ import annotations

import inspect
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetCorrupt",
    "DatasetNotFound",
    "PATCH_PHOTOS_TEST",
    "PATCH_PHOTOS_TRAIN",
    "checkerboard_moments",
    "default_data_root",
    "from_model_space",
    "load_dataset",
    "sample_checkerboard",
    "to_model_space",
]

#: Environment variable naming the data root when the caller passes ``root=None``.
DATA_ROOT_ENV = "NDM_DATA_ROOT"


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are not where the loader looked.

    One error for every dataset so that a pipeline can catch it and print the message,
    which says which paths were searched and how to obtain the data.
    """

    def __init__(self, name: str, searched: Sequence[Path | str], how: str):
        self.name = name
        self.searched = [Path(p) for p in searched]
        self.how = how
        paths = ", ".join(str(p) for p in self.searched)
        super().__init__(f"dataset {name!r} not found; searched: {paths}. To obtain it: {how}")


class DatasetCorrupt(RuntimeError):
    """Dataset files exist but do not have the expected content (checksum, shape, keys)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset with fixed train/test splits.

    ``train``/``test`` are uint8 (N, C, H, W) with values in [0, levels) for images, or
    float32 (N, D) for continuous data (``levels is None``). ``moments`` holds the exact
    population mean (D,) and covariance (D, D), float64, when the generating distribution
    is known (``toy2d``, ``gaussian``): metrics use it for the exact data-space Frechet
    distance. ``info`` records the resolved options (seed, sizes, sources) for provenance.
    """

    name: str
    train: Tensor
    test: Tensor
    levels: int | None
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    moments: tuple[Tensor, Tensor] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) for images, (D,) for vectors."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.levels is not None


# --------------------------------------------------------------------------- model space


def to_model_space(v: Tensor, levels: int) -> Tensor:
    """Discrete levels v in {0..K-1} -> bin centres x = 2 (v + 1/2) / K - 1 in (-1, 1).

    Bin centres (not v / (K-1)) keep the discretised likelihood symmetric: every level
    owns an interval of width 2/K (DESIGN.md section 3).
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    return (2.0 * (v.to(torch.float32) + 0.5) / levels - 1.0).to(torch.float32)


def from_model_space(x: Tensor, levels: int) -> Tensor:
    """Inverse of :func:`to_model_space`: nearest level, clipped to {0..K-1}.

    Returns uint8 for K <= 256 (so images can go straight to metrics), int64 otherwise.
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    v = torch.round((x.to(torch.float64) + 1.0) * levels / 2.0 - 0.5)
    v = v.clamp(0, levels - 1)
    return v.to(torch.uint8 if levels <= 256 else torch.int64)


# --------------------------------------------------------------------------- helpers


def default_data_root() -> Path:
    """``$NDM_DATA_ROOT`` if set, else ``./data`` (relative to the working directory)."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data"))


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent torch generator per (seed, stream): train and test never share noise."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def _subset_indices(total: int, n: int | None, seed: int, stream: int, what: str) -> Tensor | None:
    """Sorted random subset of range(total) of size n, or None for "all"."""
    if n is None:
        return None
    if not 0 < n <= total:
        raise ValueError(f"{what} must be in [1, {total}], got {n}")
    return torch.randperm(total, generator=_generator(seed, stream))[:n].sort().values


def _take(x: Tensor, labels: Tensor | None, idx: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if idx is None:
        return x, labels
    return x[idx], (None if labels is None else labels[idx])


def _subsample(
    train: Tensor,
    train_labels: Tensor | None,
    test: Tensor,
    test_labels: Tensor | None,
    n_train: int | None,
    n_test: int | None,
    seed: int,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    train, train_labels = _take(train, train_labels, _subset_indices(len(train), n_train, seed, 1, "n_train"))
    test, test_labels = _take(test, test_labels, _subset_indices(len(test), n_test, seed, 2, "n_test"))
    return train, train_labels, test, test_labels


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
    root: Path | None,
    download: bool,
    seed: int,
    *,
    n_train: int = 50_000,
    n_test: int = 10_000,
    cells: int = 4,
    half_width: float = 2.0,
) -> Dataset:
    """Checkerboard toy data, float32 (N, 2); generated, so ``root``/``download`` are unused."""
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
    )


# --------------------------------------------------------------------------- gaussian


def load_gaussian(
    root: Path | None,
    download: bool,
    seed: int,
    *,
    dim: int = 8,
    n_train: int = 50_000,
    n_test: int = 10_000,
) -> Dataset:
    """x ~ N(m, S) from :class:`ndm.estimators.gaussian.GaussianSpec` ``make(dim, seed)``, float32 (N, D).

    The spec's exact mean and covariance ride along in ``moments`` (float64).
    """
    from ndm.estimators.gaussian import GaussianSpec  # local: keeps `ndm.pipeline.data` importable on its own

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
    root: Path | None,
    download: bool,
    seed: int,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """scikit-learn's bundled 8x8 digits: uint8 (N, 1, 8, 8), 17 levels (0..16), labels 0..9.

    The 1500/297 train/test split is stratified by label with a fixed random_state (0),
    independent of ``seed``; ``seed`` only draws ``n_train``/``n_test`` subsamples.
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
        images[idx_train], labels[idx_train], images[idx_test], labels[idx_test], n_train, n_test, seed
    )
    return Dataset("digits", tr, te, 17, trl, tel, info={"seed": seed, "n_train": len(tr), "n_test": len(te)})


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
    root: Path | None,
    download: bool,
    seed: int,
    *,
    patch_size: int = 32,
    patch_stride: int = 16,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """RGB patches, uint8 (N, 3, s, s), 256 levels, of scikit-image's bundled photographs.

    Train patches come from PATCH_PHOTOS_TRAIN, test patches from the different
    photographs PATCH_PHOTOS_TEST, so no test pixel was ever seen in training. Each split
    is stored in one fixed shuffled order, so prefixes are representative. Labels
    are photograph indices (train 0..3, test 4..5): they give the feature classifier
    something real to learn (DESIGN.md section 6).
    """
    if patch_size < 1 or patch_stride < 1:
        raise ValueError("patch_size and patch_stride must be >= 1")
    tr, trl = _fixed_shuffle(*_photo_patches(PATCH_PHOTOS_TRAIN, 0, patch_size, patch_stride))
    te, tel = _fixed_shuffle(*_photo_patches(PATCH_PHOTOS_TEST, len(PATCH_PHOTOS_TRAIN), patch_size, patch_stride))
    tr, trl, te, tel = _subsample(tr, trl, te, tel, n_train, n_test, seed)
    info = {
        "seed": seed,
        "patch_size": patch_size,
        "patch_stride": patch_stride,
        "n_train": len(tr),
        "n_test": len(te),
        "train_photos": list(PATCH_PHOTOS_TRAIN),
        "test_photos": list(PATCH_PHOTOS_TEST),
    }
    return Dataset("patches", tr, te, 256, trl, tel, info=info)


# --------------------------------------------------------------------------- torchvision


def _root(root: Path | str | None) -> Path:
    return Path(root) if root is not None else default_data_root()


def load_mnist(
    root: Path | None,
    download: bool,
    seed: int,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """MNIST through torchvision.datasets.MNIST: uint8 (N, 1, 28, 28), 256 levels, labels 0..9.

    Reads ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (torchvision's layout).
    """
    from torchvision.datasets import MNIST

    base = _root(root)
    raw = base / "MNIST" / "raw"
    files = [raw / Path(name).stem for name, _ in MNIST.resources]  # the .gz names without .gz
    if not download and not all(f.is_file() for f in files):
        raise DatasetNotFound(
            "mnist",
            [f for f in files if not f.is_file()],
            f"run `python -c \"import torchvision; torchvision.datasets.MNIST('{base}', download=True)\"` "
            f"on a machine with internet (mirrors: {', '.join(MNIST.mirrors)}) or pass download=True",
        )
    splits = []
    for train in (True, False):
        ds = MNIST(str(base), train=train, download=download)
        splits.append((ds.data.to(torch.uint8).unsqueeze(1).contiguous(), ds.targets.to(torch.int64)))
    tr, trl, te, tel = _subsample(*splits[0], *splits[1], n_train, n_test, seed)
    return Dataset("mnist", tr, te, 256, trl, tel, info={"seed": seed, "n_train": len(tr), "n_test": len(te)})


def _cifar10_class(verify_checksums: bool) -> type:
    """torchvision's CIFAR10, or a subclass that checks presence but not MD5 sums.

    Only the checksum lists change (md5=None makes torchvision's check_integrity test
    existence); reading stays torchvision's own code. Needed for small files written
    by tests or for re-packed copies.
    """
    from torchvision.datasets import CIFAR10

    if verify_checksums:
        return CIFAR10

    class CIFAR10Unverified(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10Unverified


def load_cifar10(
    root: Path | None,
    download: bool,
    seed: int,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    verify_checksums: bool = True,
) -> Dataset:
    """CIFAR-10 through torchvision.datasets.CIFAR10: uint8 (N, 3, 32, 32), 256 levels, labels 0..9.

    Reads ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``. torchvision
    checks the official MD5 sums; ``verify_checksums=False`` only checks that the files exist.
    """
    from torchvision.datasets import CIFAR10

    base = _root(root)
    folder = base / CIFAR10.base_folder
    names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    missing = [folder / n for n in names if not (folder / n).is_file()]
    if not download and missing:
        raise DatasetNotFound(
            "cifar10",
            missing,
            f"download {CIFAR10.url} and extract it into {base} (tar xzf cifar-10-python.tar.gz -C {base}), "
            "or pass download=True",
        )
    cls = _cifar10_class(verify_checksums)
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(base), train=train, download=download)
        except RuntimeError as err:
            raise DatasetCorrupt(
                f"CIFAR-10 files under {folder} failed torchvision's checks ({err}); "
                "re-extract the official archive, or pass verify_checksums=False for files you wrote yourself"
            ) from err
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        splits.append((x, torch.tensor(ds.targets, dtype=torch.int64)))
    tr, trl, te, tel = _subsample(*splits[0], *splits[1], n_train, n_test, seed)
    info = {"seed": seed, "n_train": len(tr), "n_test": len(te), "verify_checksums": verify_checksums}
    return Dataset("cifar10", tr, te, 256, trl, tel, info=info)


# --------------------------------------------------------------------------- downsampled ImageNet

IMAGENET_TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
IMAGENET_VAL_FILE = "val_data.npz"


def _imagenet_dirs(base: Path, res: int) -> list[Path]:
    """Where the npz batches may be: <root>/imagenet{res}/ and the folders the official zips unpack to."""
    top = base / f"imagenet{res}"
    subs = [f"Imagenet{res}_train_npz", f"Imagenet{res}_train_part1_npz", f"Imagenet{res}_train_part2_npz",
            f"Imagenet{res}_val_npz"]
    return [top] + [top / s for s in subs] + [base / s for s in subs]


def _find_file(dirs: Sequence[Path], name: str) -> Path | None:
    return next((d / name for d in dirs if (d / name).is_file()), None)


def _npz_rows(path: Path, key: str = "data") -> tuple[int, ...]:
    """Shape of one array in an .npz, read from its .npy header only (no data read)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return tuple(shape)


def _read_imagenet_npz(path: Path, res: int, rows: np.ndarray | None) -> tuple[Tensor, Tensor]:
    """Rows of one official batch: data (N, 3*res*res) uint8, channel-major; labels 1..1000."""
    with np.load(path) as z:
        if "data" not in z.files or "labels" not in z.files:
            raise DatasetCorrupt(f"{path} lacks the keys 'data' and 'labels' (has {z.files})")
        data, labels = z["data"], np.asarray(z["labels"])
    if data.ndim != 2 or data.shape[1] != 3 * res * res or data.dtype != np.uint8:
        raise DatasetCorrupt(
            f"{path}: expected data of shape (N, {3 * res * res}) uint8 for {res}x{res} images, "
            f"got {data.shape} {data.dtype}"
        )
    if labels.shape != (data.shape[0],) or labels.min(initial=1) < 1:
        raise DatasetCorrupt(f"{path}: expected {data.shape[0]} labels in 1..1000")
    if rows is not None:
        data, labels = data[rows], labels[rows]
    x = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, res, res)
    return x, torch.from_numpy(labels.astype(np.int64) - 1)


def _load_imagenet_split(
    files: Sequence[Path], res: int, n: int | None, seed: int, stream: int, what: str
) -> tuple[Tensor, Tensor]:
    """Concatenate batches into one preallocated tensor, reading only batches a subsample needs."""
    counts = [_npz_rows(f)[0] for f in files]
    idx = _subset_indices(sum(counts), n, seed, stream, what)
    total = sum(counts) if idx is None else len(idx)
    out = torch.empty(total, 3, res, res, dtype=torch.uint8)
    out_labels = torch.empty(total, dtype=torch.int64)
    pos, offset = 0, 0
    for f, count in zip(files, counts):
        rows = None
        if idx is not None:
            sel = idx[(idx >= offset) & (idx < offset + count)] - offset
            rows = sel.numpy()
        offset += count
        if rows is not None and len(rows) == 0:
            continue
        x, y = _read_imagenet_npz(f, res, rows)
        out[pos : pos + len(x)] = x
        out_labels[pos : pos + len(x)] = y
        pos += len(x)
    return out, out_labels


def _load_imagenet(res: int, root: Path | None, seed: int, n_train: int | None, n_test: int | None) -> Dataset:
    base = _root(root)
    dirs = _imagenet_dirs(base, res)
    names = list(IMAGENET_TRAIN_FILES) + [IMAGENET_VAL_FILE]
    found = {name: _find_file(dirs, name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DatasetNotFound(
            f"imagenet{res}",
            dirs,
            f"missing {', '.join(missing)}. Download the official 'Downsampled ImageNet {res}x{res}' npz "
            f"archives (Imagenet{res}_train_npz / Imagenet{res}_val_npz; the 64x64 train set comes in two "
            "parts) from https://image-net.org/download-images.php (login required) and unzip them into "
            f"{base / f'imagenet{res}'}",
        )
    train_files = [found[n] for n in IMAGENET_TRAIN_FILES]
    tr, trl = _load_imagenet_split(train_files, res, n_train, seed, 1, "n_train")  # type: ignore[arg-type]
    te, tel = _load_imagenet_split([found[IMAGENET_VAL_FILE]], res, n_test, seed, 2, "n_test")  # type: ignore[list-item]
    info = {"seed": seed, "n_train": len(tr), "n_test": len(te), "dir": str(Path(found[IMAGENET_VAL_FILE]).parent)}
    return Dataset(f"imagenet{res}", tr, te, 256, trl, tel, info=info)


def load_imagenet32(
    root: Path | None, download: bool, seed: int, *, n_train: int | None = None, n_test: int | None = None
) -> Dataset:
    """Downsampled ImageNet 32x32 (official npz batches): uint8 (N, 3, 32, 32), labels 0..999.

    Test split = the official validation file. ``download`` is not supported (login-gated).
    """
    return _load_imagenet(32, root, seed, n_train, n_test)


def load_imagenet64(
    root: Path | None, download: bool, seed: int, *, n_train: int | None = None, n_test: int | None = None
) -> Dataset:
    """Downsampled ImageNet 64x64 (official npz batches): uint8 (N, 3, 64, 64), labels 0..999."""
    return _load_imagenet(64, root, seed, n_train, n_test)


# --------------------------------------------------------------------------- registry

Loader = Callable[..., Dataset]

#: name -> loader(root, download, seed, **options). Keyword-only parameters are the options.
DATASETS: dict[str, Loader] = {
    "toy2d": load_toy2d,
    "gaussian": load_gaussian,
    "digits": load_digits,
    "patches": load_patches,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "imagenet32": load_imagenet32,
    "imagenet64": load_imagenet64,
}

def dataset_options(name: str) -> tuple[str, ...]:
    """The options (keyword-only parameters) a dataset's loader accepts."""
    params = inspect.signature(DATASETS[name]).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load a dataset by name; unknown names and options raise ValueError naming them.

    ``root`` defaults to ``$NDM_DATA_ROOT`` or ``./data`` (used by file-backed datasets only).
    ``download=True`` lets torchvision fetch mnist/cifar10 when missing; generated and
    bundled datasets need nothing, and downsampled ImageNet is login-gated, so for it a
    missing file still raises DatasetNotFound with instructions.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; "
            f"accepted: {', '.join(allowed) or '(none)'}"
        )
    return DATASETS[name](None if root is None else Path(root), download, int(seed), **options)

