"""Datasets read from files under a data root: MNIST (idx files) and CIFAR-10 (pickled batches)
through torchvision, downsampled ImageNet from its official npz batches. Registered in
ndm/pipeline/data.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ndm.pipeline.datasets_common import Dataset, DatasetCorrupt, DatasetNotFound, LoadRequest, _subsample, _subset_indices


# --------------------------------------------------------------------------- torchvision


def load_mnist(req: LoadRequest, *, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """MNIST through torchvision.datasets.MNIST: uint8 (N, 1, 28, 28), 256 levels, labels 0..9.

    Reads ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (torchvision's layout).
    """
    from torchvision.datasets import MNIST

    base, download, seed = req.data_root, req.download, req.seed
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
    req: LoadRequest, *, n_train: int | None = None, n_test: int | None = None, verify_checksums: bool = True
) -> Dataset:
    """CIFAR-10 through torchvision.datasets.CIFAR10: uint8 (N, 3, 32, 32), 256 levels, labels 0..9.

    Reads ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``. torchvision
    checks the official MD5 sums; ``verify_checksums=False`` only checks that the files exist.
    """
    from torchvision.datasets import CIFAR10

    base, download, seed = req.data_root, req.download, req.seed
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


def _load_imagenet(res: int, req: LoadRequest, n_train: int | None, n_test: int | None) -> Dataset:
    base, seed = req.data_root, req.seed
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


def load_imagenet32(req: LoadRequest, *, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Downsampled ImageNet 32x32 (official npz batches): uint8 (N, 3, 32, 32), labels 0..999.

    Test split = the official validation file. ``download`` is not supported (login-gated).
    """
    return _load_imagenet(32, req, n_train, n_test)


def load_imagenet64(req: LoadRequest, *, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """Downsampled ImageNet 64x64 (official npz batches): uint8 (N, 3, 64, 64), labels 0..999."""
    return _load_imagenet(64, req, n_train, n_test)
