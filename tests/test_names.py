"""ndm.names is the one list of names: every registry, CLI choice and rule agrees with it.

The torch-side registries (samplers, dataset loaders, feature extractors, report metrics)
either read ndm.names or are checked equal to it here, so a name added in one place and
forgotten in another fails this test instead of a job.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ndm import names

REPO = Path(__file__).resolve().parents[1]


def test_names_and_the_config_check_import_without_torch():
    """The Snakefile imports them at DAG build (also inside every SLURM job)."""
    code = "import sys, ndm.names, ndm.pipeline.config, ndm.pipeline.config_check; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_variants_are_the_specs():
    from ndm.model.specs import VARIANTS

    assert names.VARIANTS == tuple(VARIANTS)


def test_sampler_records_name_real_functions_of_their_kind():
    """Every SamplerSpec points at a function with the signature its kind calls (the counted NFE
    of every sampler is checked against its record in tests/test_sampling.py)."""
    import inspect

    from ndm.estimators import sampling

    assert tuple(sampling.SAMPLERS) == tuple(names.SAMPLER_SPECS)
    assert tuple(names.FIXED_STEP_SAMPLERS) == tuple(n for n, s in names.SAMPLER_SPECS.items() if s.kind != "adaptive")
    params = {"step": ["model", "z", "t", "s", "generator"], "grid": ["model", "z", "grid", "on_step"], "adaptive": ["model", "z1", "rtol", "atol"]}
    for name, spec in names.SAMPLER_SPECS.items():
        fn = names.load_object(spec.function)
        assert list(inspect.signature(fn).parameters)[: len(params[spec.kind])] == params[spec.kind], name
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling._check("no-such-sampler", 10)
    with pytest.raises(ValueError, match="kind"):
        names.register_sampler(names.SamplerSpec("x", "m:f", "stepwise"))


def test_datasets_agree_with_the_loaders(tmp_path):
    from ndm.pipeline.data import DATASETS, DatasetNotFound, load_dataset, loader

    assert set(DATASETS) == set(names.DATASET_SPECS)
    for name in names.DATASETS:
        assert callable(loader(name))
    # File datasets read from a root: an empty one is a DatasetNotFound naming it.
    for name in names.FILE_DATASETS:
        spec = names.DATASET_SPECS[name]
        assert spec.event_shape and spec.levels
        with pytest.raises(DatasetNotFound) as err:
            load_dataset(name, root=tmp_path)
        assert str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="event_shape and levels"):
        names.register_dataset(names.DatasetSpec("x", "m:f", "files"))


EXTENSION = """
import torch
from ndm.names import DatasetSpec, SamplerSpec, register_dataset, register_sampler
from ndm.pipeline.datasets_common import Dataset, _generator


def midpoint_step(model, z, t, s, generator):
    from ndm.estimators.sampling import ode_drift
    mid = 0.5 * (t + s)
    k1 = ode_drift(model, z, t)
    return z + model._bc(s - t) * ode_drift(model, z + model._bc(mid - t) * k1, mid)


def load_ring2d(req, *, n_train: int = 512, n_test: int = 128, radius: float = 1.5):
    def draw(n, k):
        g = _generator(req.seed, k)
        a = torch.rand(n, generator=g) * 6.283185307179586
        return torch.stack([radius * torch.cos(a), radius * torch.sin(a)], 1) + 0.05 * torch.randn(n, 2, generator=g)
    return Dataset("ring2d", draw(n_train, 1), draw(n_test, 2), None, info={"seed": req.seed})


register_sampler(SamplerSpec("ode-midpoint", f"{__name__}:midpoint_step", "step", x_hat_per_step=2, f_per_step=2))
register_dataset(DatasetSpec("ring2d", f"{__name__}:load_ring2d", "generated"))
"""

CONFIG = {
    "experiment": "ext", "results": "results/ext", "reports": "results/ext/reports", "tracking_uri": None, "seeds": [0],
    "variants": ["ddpm", "ndm"],
    "defaults": {"train": {"steps": 4, "batch_size": 8}, "eval": {"n_examples": 8, "samplers": ["ode-midpoint", "ancestral"], "sample_steps": [3], "n_samples": 8, "batch_size": 8, "nelbo_steps": [10], "ode": {"n_examples": 0}, "paper_setting": {"sampler": "ode-midpoint", "steps": 3}, "fid": {"features": ["data"]}, "sample_jobs": "per_model"}},
    "datasets": {"ring2d": {"data": {"name": "ring2d"}, "model": {"network": {"kind": "mlp", "hidden": 16, "depth": 1}}}},
}  # fmt: skip

CHECK = """
import torch
from ndm.names import SAMPLERS, DATASETS
from ndm.pipeline.config import load_yaml, resolve_eval_config, resolve_run_config
from ndm.pipeline.data import load_dataset
from ndm.model.variants import build_model
from ndm.estimators.sampling import SamplerSettings, expected_nfe, sample, seed_generator
assert "ode-midpoint" in SAMPLERS and "ring2d" in DATASETS
config = load_yaml("ext.yaml")
ev = resolve_eval_config(config, "ring2d")  # the config check accepts both names
run = resolve_run_config(config, "ring2d", "ndm", 0)
ds = load_dataset("ring2d", seed=0)
torch.manual_seed(0)
model = build_model(run.model, ds.event_shape, ds.levels)
for p in model.parameters():
    p.data.add_(0.01 * torch.randn_like(p))
res = sample(model, 4, SamplerSettings("ode-midpoint", 3), generator=seed_generator(0), batch_size=4, progress=False)
print("NFE", (res.nfe, res.nfe_F), expected_nfe(model, "ode-midpoint", 3))
assert (res.nfe, res.nfe_F) == expected_nfe(model, "ode-midpoint", 3) == (6, 6)
"""


def test_a_sampler_and_a_dataset_added_through_their_records_alone(tmp_path):
    """A module of its own (loaded through $NDM_EXTENSIONS) holds a sampler's step function and a
    dataset's loader with their records, nothing else: the config check accepts them, the NFE
    count of the record matches the counted one, and the DAG dry-runs a config that uses them."""
    import os
    import shutil

    (tmp_path / "my_extension.py").write_text(EXTENSION)
    for name in ("Snakefile", "workflow", "configs", "profiles", "environment.yml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "ext.yaml").write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, names.EXTENSIONS_ENV: "my_extension", "PYTHONPATH": f"{tmp_path}:{REPO}"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    check = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "NFE (6.0, 6.0) (6, 6)" in check.stdout
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "all", "--configfile", "ext.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    out = dry.stdout + dry.stderr
    assert "results/ext/ring2d/ndm/seed0/model.pt" in out and "--sampler ode-midpoint ancestral" in out
    # Without the extension the same config fails the check, naming the unknown dataset.
    env.pop(names.EXTENSIONS_ENV)
    bad = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--configfile", "ext.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "ring2d" in bad.stdout + bad.stderr


def test_feature_spaces_agree_with_extractors_and_reports():
    from ndm.pipeline.config import EvalConfig
    from ndm.pipeline.evaluate import feature_extractor
    from ndm.report.tables import FEATURE_METRIC

    assert set(FEATURE_METRIC) == set(names.FEATURE_SPACES)
    with pytest.raises(ValueError, match="unknown feature space"):
        feature_extractor("no-such-space", "digits", EvalConfig(), None)
    for name in names.FEATURE_SPACES:
        try:
            feature_extractor(name, "digits", EvalConfig(), None)
        except Exception as exc:  # missing weights or classifier: the name itself was known
            assert "unknown feature space" not in str(exc), name


def _choices(parser: argparse.ArgumentParser, command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_cli_choices_are_the_names():
    from ndm.cli.main import build_parser

    parser = build_parser()
    assert _choices(parser, "sample", "--sampler") == names.SAMPLERS
    assert set(_choices(parser, "fid-stats", "--feature")) == set(names.FEATURE_SPACES)


def test_schema_copies_no_name_list():
    """The schema keeps structure and types; names are checked in Python against ndm.names."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    every_name = {*names.VARIANTS, *names.SAMPLERS, *names.DATASETS, *names.FEATURE_SPACES, *names.SAMPLE_JOBS, *names.TIME_GRIDS}

    def enums(node):
        if isinstance(node, dict):
            if "enum" in node:
                yield from node["enum"]
            for value in node.values():
                yield from enums(value)
        elif isinstance(node, list):
            for item in node:
                yield from enums(item)

    assert not every_name & set(enums(schema))
