"""The one list of every name a config may use: variants, samplers, time grids, datasets, feature spaces.

This module is the single place these names are defined. The config checks
(ndm.pipeline.config_check and ndm.pipeline.config, run by the Snakefile at DAG build), the rules
and the CLI read them from here; the torch-side registries (the samplers' dispatch in
ndm.estimators.sampling, the loader registry in ndm.pipeline.data, the feature extractors in
ndm.pipeline.evaluate) are keyed from these tuples or asserted equal to them by tests/test_names.py. Adding a name is one edit here plus its implementation and test.

Torch-free on purpose: the Snakefile imports it while building the DAG (also inside every
SLURM job), where a torch import would cost seconds.
"""

from __future__ import annotations

from ndm.model.specs import VARIANTS as _VARIANT_SPECS

# Model variants, in the order of their specs (ndm/model/specs.py defines each one's F and
# schedule; the name is the dict key there, so a new variant is its Variant(...) entry).
VARIANTS: tuple[str, ...] = tuple(_VARIANT_SPECS)

# Samplers (ndm/estimators/sampling.py). Fixed-step samplers take a step count; the others
# (ode-adaptive) choose their own steps from a tolerance. dpmpp-2m and edm-heun are the few-step
# solvers of ndm/estimators/multistep.py.
SAMPLERS: tuple[str, ...] = ("ancestral", "ddim", "ode-euler", "ode-heun", "ode-adaptive", "sde-em", "dpmpp-2m", "edm-heun")
FIXED_STEP_SAMPLERS: tuple[str, ...] = ("ancestral", "ddim", "ode-euler", "ode-heun", "sde-em", "dpmpp-2m", "edm-heun")

# Time grids of the fixed-step samplers (ndm/estimators/time_grids.py; eval.time_grid).
TIME_GRIDS: tuple[str, ...] = ("uniform-t", "uniform-logsnr", "edm")

# Datasets (ndm/pipeline/data.py). File datasets are read from files under a root directory
# (data.root or the top-level data_root); the others are generated or ship inside a package.
DATASETS: tuple[str, ...] = ("toy2d", "gaussian", "digits", "patches", "mnist", "cifar10", "imagenet32", "imagenet64")
FILE_DATASETS: tuple[str, ...] = ("mnist", "cifar10", "imagenet32", "imagenet64")

# Feature spaces of the Frechet distances (docs/fid.md): a classifier trained in the DAG,
# Inception through torch-fidelity or clean-fid, and the data space itself (vectors only).
FEATURE_SPACES: tuple[str, ...] = ("classifier", "inception", "clean", "data")

# How sampling jobs are split: one per (model, sampler) or one per model.
SAMPLE_JOBS: tuple[str, ...] = ("per_sampler", "per_model")

assert set(FIXED_STEP_SAMPLERS) <= set(SAMPLERS), "every fixed-step sampler is a sampler"
assert set(FILE_DATASETS) <= set(DATASETS), "every file dataset is a dataset"

__all__ = ["DATASETS", "FEATURE_SPACES", "FILE_DATASETS", "FIXED_STEP_SAMPLERS", "SAMPLERS", "SAMPLE_JOBS", "TIME_GRIDS", "VARIANTS"]
