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


def test_samplers_agree_with_the_sampling_module():
    from ndm.estimators import sampling

    assert tuple(sampling.SAMPLERS) == names.SAMPLERS
    assert tuple(sampling.FIXED_STEP_SAMPLERS) == names.FIXED_STEP_SAMPLERS
    assert set(sampling.EVALS_PER_STEP) == set(names.FIXED_STEP_SAMPLERS)
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling._check("no-such-sampler", 10)


def test_datasets_agree_with_the_loaders(tmp_path):
    from ndm.pipeline.data import DATASETS, DatasetNotFound, load_dataset

    assert set(DATASETS) == set(names.DATASETS)
    # File datasets read from a root: an empty one is a DatasetNotFound naming it.
    for name in names.FILE_DATASETS:
        with pytest.raises(DatasetNotFound) as err:
            load_dataset(name, root=tmp_path)
        assert str(tmp_path) in str(err.value)


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
