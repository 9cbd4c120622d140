"""The dataset type every loader returns, its errors, and the sampling helpers loaders share.

Kept apart from the loaders (ndm/pipeline/datasets_packaged.py, ndm/pipeline/datasets_files.py)
and from the registry (ndm/pipeline/data.py), which both import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

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
    # Generated data: fresh exact samples (n, generator) -> (n, D) float64, and the fraction of
    # points off the data's support, for the metrics that see more than two moments.
    exact_sampler: Callable[[int, torch.Generator], Tensor] | None = None
    offsupport: Callable[[Any], float] | None = None
    # The data's law in closed form where one is coded (toy2d: a mixture of uniform squares,
    # ndm/metrics/energy_exact.py), for the energy distance without reference draws.
    exact_law: Any | None = None

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) for images, (D,) for vectors."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.levels is not None


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


@dataclass(frozen=True)
class LoadRequest:
    """What every loader is given besides its own options (its keyword-only parameters).

    ``root``: the data root of file-backed datasets (None: :func:`default_data_root`);
    ``download``: whether torchvision may fetch missing files; ``seed``: draws generated
    data and the optional ``n_train``/``n_test`` subsamples.
    """

    root: Path | None = None
    download: bool = False
    seed: int = 0

    @property
    def data_root(self) -> Path:
        return Path(self.root) if self.root is not None else default_data_root()

