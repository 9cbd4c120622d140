"""One record per name a config may use: variants, samplers, time grids, datasets, feature spaces.

A sampler is its function plus its `SamplerSpec` here; a dataset its loader plus its
`DatasetSpec`. Everything else reads these records: the config checks (ndm.pipeline.config,
ndm.pipeline.config_check, run by the Snakefile at DAG build), the samplers' dispatch and NFE
counts (ndm.estimators.sampling), the FLOP counts (ndm.estimators.flops, ndm.pipeline.plan), the
loader registry (ndm.pipeline.data), the rules and the CLI. tests/test_names.py fails when a
record and its implementation disagree, and shows a sampler and a dataset added from a module of
their own (`register_sampler`, `register_dataset`, loaded through $NDM_EXTENSIONS) running
through the config check, the NFE count and a dry run of the DAG.

The name tuples below (SAMPLERS, DATASETS, ...) are live views of the records: a name registered
later is in them too.

Torch-free on purpose: the Snakefile imports it while building the DAG (also inside every
SLURM job), where a torch import would cost seconds.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ndm.model.specs import VARIANTS as _VARIANT_SPECS


class NameView:
    """The names of a record table (optionally those whose record passes `keep`), live: it
    reads the table on every use. Compares equal to a tuple of the same names in order."""

    def __init__(self, table: Mapping[str, Any], keep: Callable[[Any], bool] = lambda _: True):
        self._table, self._keep = table, keep

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, rec in self._table.items() if self._keep(rec))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._table and self._keep(self._table[name])

    def __getitem__(self, i):
        return self._names()[i]

    def __eq__(self, other: object) -> bool:
        return self._names() == (other._names() if isinstance(other, NameView) else tuple(other) if isinstance(other, (tuple, list)) else None)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


def _add(table: dict, spec: Any, what: str) -> Any:
    """Put a record in its table; the same name twice must be the same record."""
    if spec.name in table and table[spec.name] != spec:
        raise ValueError(f"{what} {spec.name!r} is already registered with another record")
    table[spec.name] = spec
    return spec


def load_object(path: str) -> Any:
    """The object a record names as "package.module:attribute"."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------ variants

# Model variants, in the order of their specs (ndm/model/specs.py defines each one's F and
# schedule; the name is the dict key there, so a new variant is its Variant(...) entry).
VARIANTS: tuple[str, ...] = tuple(_VARIANT_SPECS)


# ------------------------------------------------------------------ samplers


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler (docs/math.md, Few-step samplers).

    kind: "step" = one function z_s = step(model, z_t, t, s, generator) applied on the time grid;
    "grid" = a multistep solver run(model, z_1, grid, on_step) over the whole grid; "adaptive" =
    run(model, z_1, rtol, atol), choosing its own steps (no step count; its NFE is counted).
    x_hat_per_step: x_hat evaluations per step. f_per_step: evaluations of a learned,
    time-dependent F per step (a forward-mode pass each), f_saved: of those, how many the
    solver saves in all (a multistep method reusing a value); f_per_step_static: the same for a
    learned time-independent F (None: f_per_step).
    """

    name: str
    function: str  # "module:function"
    kind: Literal["step", "grid", "adaptive"]
    x_hat_per_step: int = 1
    f_per_step: int = 1
    f_saved: int = 0
    f_per_step_static: int | None = None

    @property
    def fixed_step(self) -> bool:
        return self.kind != "adaptive"

    def nfe(self, steps: int, f_learned: bool, f_time_dependent: bool) -> tuple[int, int]:
        """(x_hat calls, learned-F calls) per sample of `steps` steps (the decode not included)."""
        if not self.fixed_step:
            raise ValueError(f"{self.name}'s NFE is counted, not predicted")
        if not f_learned:
            return self.x_hat_per_step * steps, 0
        if f_time_dependent:
            return self.x_hat_per_step * steps, self.f_per_step * steps - self.f_saved
        static = self.f_per_step if self.f_per_step_static is None else self.f_per_step_static
        return self.x_hat_per_step * steps, static * steps


_SAMPLING = "ndm.estimators.sampling"
_MULTISTEP = "ndm.estimators.multistep"
SAMPLER_SPECS: dict[str, SamplerSpec] = {}


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add a sampler's record (its function must exist where `spec.function` says)."""
    if spec.kind not in ("step", "grid", "adaptive"):
        raise ValueError(f"sampler {spec.name!r}: kind must be step, grid or adaptive, got {spec.kind!r}")
    return _add(SAMPLER_SPECS, spec, "sampler")


for _spec in (
    # The posterior samplers evaluate F(x_hat, s) and F(x_hat, t) per step (2 F calls); the drift
    # samplers one JVP of F per x_hat evaluation.
    SamplerSpec("ancestral", f"{_SAMPLING}:ancestral_step", "step", 1, 2),
    SamplerSpec("ddim", f"{_SAMPLING}:ddim_step", "step", 1, 2),
    SamplerSpec("ode-euler", f"{_SAMPLING}:euler_step", "step", 1, 1),
    SamplerSpec("ode-heun", f"{_SAMPLING}:heun_step", "step", 2, 2),
    SamplerSpec("ode-adaptive", f"{_SAMPLING}:adaptive_solve", "adaptive", 0, 0),
    SamplerSpec("sde-em", f"{_SAMPLING}:em_step", "step", 1, 1),
    # NDM's DPM-Solver++(2M): F at x_hat, its JVP and F(x_hat, next t) per step, the first step's
    # F(x_hat, t) reused (3N - 1); a time-independent F needs one F call per step.
    SamplerSpec("dpmpp-2m", f"{_MULTISTEP}:multistep_2m", "grid", 1, 3, f_saved=1, f_per_step_static=1),
    SamplerSpec("edm-heun", f"{_MULTISTEP}:edm_heun", "grid", 2, 2),
):
    register_sampler(_spec)

SAMPLERS = NameView(SAMPLER_SPECS)
FIXED_STEP_SAMPLERS = NameView(SAMPLER_SPECS, lambda s: s.fixed_step)


# Time grids of the fixed-step samplers (ndm/estimators/time_grids.py; eval.time_grid).
TIME_GRIDS: tuple[str, ...] = ("uniform-t", "uniform-logsnr", "edm")

# A fixed-step sampler on a grid of its own: "<sampler>@<grid>" ("edm-heun@edm") runs on that
# grid instead of eval.time_grid. A config lists it as a sampler of its own (its samples, fid file
# and report rows are keyed by the whole name), so one study runs a sampler on several grids.
GRID_SEPARATOR = "@"


def split_sampler(name: str) -> tuple[str, str | None]:
    """("edm-heun", "edm") for "edm-heun@edm"; (name, None) for a plain sampler."""
    base, sep, grid = name.partition(GRID_SEPARATOR)
    return base, (grid if sep else None)


def sampler_spec(name: str) -> SamplerSpec:
    """The record of a sampler, or of the sampler in "<sampler>@<grid>" (checked: a known grid,
    a fixed-step sampler)."""
    base, grid = split_sampler(name)
    if base not in SAMPLER_SPECS:
        raise ValueError(f"unknown sampler {base!r}; choose one of {tuple(SAMPLER_SPECS)} (optionally @<grid>, grid one of {TIME_GRIDS})")
    spec = SAMPLER_SPECS[base]
    if grid is not None and grid not in TIME_GRIDS:
        raise ValueError(f"sampler {name!r}: unknown time grid {grid!r}; choose one of {TIME_GRIDS}")
    if grid is not None and not spec.fixed_step:
        raise ValueError(f"sampler {name!r}: {base} chooses its own steps (adaptive), so it takes no grid; use {base!r}")
    return spec


def sampler_problem(name: str) -> str | None:
    """Why `name` is not a sampler a config may list (None when it is)."""
    try:
        sampler_spec(name)
    except ValueError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------ datasets


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its loader f(LoadRequest, *, option=...) -> Dataset, where the data come from
    ("files" under a root directory, "package" inside a Python package, "generated"), and for
    file datasets the shape of one example and the number of levels (known without the files:
    `ndm plan`)."""

    name: str
    loader: str  # "module:function"
    source: Literal["files", "package", "generated"]
    event_shape: tuple[int, ...] | None = None
    levels: int | None = None

    @property
    def file_backed(self) -> bool:
        return self.source == "files"


_PACKAGED = "ndm.pipeline.datasets_packaged"
_FILES = "ndm.pipeline.datasets_files"
DATASET_SPECS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset's record (its loader must exist where `spec.loader` says)."""
    if spec.source not in ("files", "package", "generated"):
        raise ValueError(f"dataset {spec.name!r}: source must be files, package or generated, got {spec.source!r}")
    if spec.file_backed and (spec.event_shape is None or spec.levels is None):
        raise ValueError(f"file dataset {spec.name!r} needs its event_shape and levels (ndm plan reads them without the files)")
    return _add(DATASET_SPECS, spec, "dataset")


for _dspec in (
    DatasetSpec("toy2d", f"{_PACKAGED}:load_toy2d", "generated"),
    DatasetSpec("gaussian", f"{_PACKAGED}:load_gaussian", "generated"),
    DatasetSpec("digits", f"{_PACKAGED}:load_digits", "package"),
    DatasetSpec("patches", f"{_PACKAGED}:load_patches", "package"),
    DatasetSpec("mnist", f"{_FILES}:load_mnist", "files", (1, 28, 28), 256),
    DatasetSpec("cifar10", f"{_FILES}:load_cifar10", "files", (3, 32, 32), 256),
    DatasetSpec("imagenet32", f"{_FILES}:load_imagenet32", "files", (3, 32, 32), 256),
    DatasetSpec("imagenet64", f"{_FILES}:load_imagenet64", "files", (3, 64, 64), 256),
):
    register_dataset(_dspec)

DATASETS = NameView(DATASET_SPECS)
FILE_DATASETS = NameView(DATASET_SPECS, lambda s: s.file_backed)


# ------------------------------------------------------------------ the rest

# Feature spaces of the Frechet distances (docs/fid.md): a classifier trained in the DAG,
# Inception through torch-fidelity or clean-fid, and the data space itself (vectors only); and
# "energy": the energy distance to fresh exact samples and the mass off the data's support, for
# data whose generator is known and fixed (toy2d; ndm/metrics/distributional.py).
FEATURE_SPACES: tuple[str, ...] = ("classifier", "inception", "clean", "data", "energy")

# How sampling jobs are split: one per (model, sampler) or one per model.
SampleJobs = Literal["per_sampler", "per_model"]
SAMPLE_JOBS: tuple[str, ...] = get_args(SampleJobs)


# Extensions: modules (comma-separated in $NDM_EXTENSIONS) that register samplers or datasets
# of their own. Imported here, after the built-in records, so every process that reads the
# names (the Snakefile, each job) sees the same set.
EXTENSIONS_ENV = "NDM_EXTENSIONS"
for _module in filter(None, (m.strip() for m in os.environ.get(EXTENSIONS_ENV, "").split(","))):
    importlib.import_module(_module)

__all__ = [
    "DATASETS", "DATASET_SPECS", "DatasetSpec", "FEATURE_SPACES", "FILE_DATASETS", "FIXED_STEP_SAMPLERS", "SAMPLERS",
    "SAMPLER_SPECS", "SAMPLE_JOBS", "SampleJobs", "SamplerSpec", "TIME_GRIDS", "VARIANTS", "load_object", "register_dataset",
    "register_sampler", "sampler_spec", "split_sampler", "sampler_problem", "GRID_SEPARATOR",
]  # fmt: skip
