"""Datasets behind one small interface: the registry, and the model-space conversion (docs/data.md).

Every loader returns a :class:`Dataset`: images as uint8 tensors (N, C, H, W) with
their number of levels K, or continuous data as float32 (N, D) with ``levels=None``.
Train/test membership is fixed by the data source (a fixed file, a fixed photograph,
a fixed stratified split); ``seed`` only draws generated data and optional
subsamples (``n_train``/``n_test``), so two runs with the same arguments see the
same tensors.

Files are never fetched unless the caller passes ``download=True`` (and only the
torchvision datasets can download). A missing dataset raises one
:class:`DatasetNotFound` that names every path searched and how to get the data.

Adding a dataset is one loader function ``f(request: LoadRequest, *, option=...)``
(in ndm/pipeline/datasets_packaged.py or ndm/pipeline/datasets_files.py, or a module of your
own; the :class:`Dataset` type and shared helpers are in ndm/pipeline/datasets_common.py)
plus its record, ``ndm.names.DatasetSpec`` (``register_dataset``); its keyword-only
parameters are the options :func:`load_dataset` accepts for it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from ndm.pipeline.datasets_common import (
    DATA_ROOT_ENV,
    Dataset,
    DatasetCorrupt,
    DatasetNotFound,
    LoadRequest,
    default_data_root,
)
from ndm.names import DATASET_SPECS, DATASETS, load_object  # noqa: F401 - DATASETS re-exported
from ndm.pipeline.datasets_packaged import (
    PATCH_PHOTOS_TEST,
    PATCH_PHOTOS_TRAIN,
    checkerboard_moments,
    extract_patches,
    sample_checkerboard,
)

__all__ = [
    "DATASETS",
    "loader",
    "DATA_ROOT_ENV",
    "Dataset",
    "DatasetCorrupt",
    "DatasetNotFound",
    "LoadRequest",
    "PATCH_PHOTOS_TEST",
    "PATCH_PHOTOS_TRAIN",
    "checkerboard_moments",
    "default_data_root",
    "extract_patches",
    "from_model_space",
    "load_dataset",
    "load_split",
    "sample_checkerboard",
    "to_model_space",
]


# --------------------------------------------------------------------------- model space


from ndm.model.data_space import from_model_space, to_model_space  # noqa: E402,F401 - re-exported


# --------------------------------------------------------------------------- registry

Loader = Callable[..., Dataset]


def loader(name: str) -> Loader:
    """The loader of a dataset's record: loader(LoadRequest(root, download, seed), **options);
    its keyword-only parameters are the options."""
    if name not in DATASET_SPECS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_SPECS))}")
    return load_object(DATASET_SPECS[name].loader)


def dataset_options(name: str) -> tuple[str, ...]:
    """The options (keyword-only parameters) a dataset's loader accepts."""
    params = inspect.signature(loader(name)).parameters.values()
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
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; "
            f"accepted: {', '.join(allowed) or '(none)'}"
        )
    return loader(name)(LoadRequest(None if root is None else Path(root), download, int(seed)), **options)


def load_split(run: Any, split: str, n: int | None = None) -> tuple[Tensor, Any]:
    """A split of a RunConfig's dataset in model space (first n examples: the same for every model)."""
    ds = load_dataset(run.data.name, root=run.data.root, download=False, seed=run.seed, **run.data.options)
    raw = ds.test if split == "test" else ds.train
    if n is not None:
        raw = raw[:n]
    x = to_model_space(raw, ds.levels) if ds.levels is not None else raw.float()
    return x, ds
