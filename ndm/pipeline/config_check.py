"""A whole pipeline config checked at DAG build, in the user's terms.

The JSON schema (workflow/schemas/config.schema.yaml) holds the structure and the types; it
says "Additional properties are not allowed" for a typo and "'-1' is not of type 'integer'"
for a negative seed given on the command line. This module runs before it and says what is
wrong instead: an unknown key with its closest valid key, a negative seed, a name that is not
in ndm.names (the one list of variants, datasets, samplers and feature spaces). The names
inside each dataset's sections (data.name, samplers, feature spaces, variant_overrides) are
checked per job by ndm.pipeline.config, which the Snakefile runs for every job at DAG build.

Snakemake's --config parser reads a top-level value as int, float or bool but leaves every
value inside a list or mapping a string (`seeds=[0,1]` arrives as ['0', '1']);
`typed_overrides` reads those the way YAML reads them in a config file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ndm.pipeline.config import ConfigError, model_name_error, unknown_key
from ndm.pipeline.config import DECIMAL_NUMBER
from ndm.pipeline.report_config import resolve_report_config

_BOOLEANS = {"true": True, "false": False}


def _scalar(text: str) -> Any:
    """`text` as a YAML scalar (int, float, null; bool only for true/false), else unchanged.

    Only these change: a path, a name or a date stays a string, and YAML 1.1's yes/no/on/off
    stay strings too (an experiment called "yes" is not a boolean).
    """
    if text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    if DECIMAL_NUMBER.fullmatch(text):
        return float(text)
    return text


def typed_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """--config overrides with their string scalars read as YAML: '1' -> 1, '-1' -> -1, 'null' -> None."""

    def typed(value: Any) -> Any:
        if isinstance(value, str):
            return _scalar(value)
        if isinstance(value, Mapping):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [typed(v) for v in value]
        return value

    return {k: typed(v) for k, v in overrides.items()}


def _resolve(node: Mapping, schema: Mapping) -> Mapping:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        for part in ref[2:].split("/"):
            schema = schema[part]
        return schema
    return node


def _check_keys(value: Any, node: Mapping, schema: Mapping, where: str) -> None:
    """Every mapping the schema closes (additionalProperties: false) holds only its keys."""
    node = _resolve(node, schema)
    if not isinstance(value, Mapping):
        return
    props = node.get("properties") or {}
    if node.get("additionalProperties") is False and props:
        for key in value:
            if key not in props:
                raise ConfigError(unknown_key(where, key, props))
    for key, sub in value.items():
        child = f"{where}.{key}" if where else str(key)
        if key in props:
            _check_keys(sub, props[key], schema, child)
        elif isinstance(node.get("additionalProperties"), Mapping):
            _check_keys(sub, node["additionalProperties"], schema, child)


def _check_seeds(seeds: Any, key: str = "seeds", example: str = "e.g. --config 'seeds=[0,1,2]'") -> None:
    """A seed list (the global `seeds`, or a dataset's own under `key`): non-empty, integers >= 0, no repeats."""
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{key} must be a non-empty list of integers >= 0, {example}; got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ConfigError(f"{key}: {s!r} is not an integer; a seed is an integer >= 0, {example}")
        if s < 0:
            raise ConfigError(f"{key}: {s} is negative; a seed is an integer >= 0 (it seeds the random generators), {example}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{key}: {repeated[0]} appears more than once; each seed is one run of every model")


def _check_dataset_seeds(datasets: Mapping) -> None:
    """A dataset's own `seeds` (replacing the global list for that dataset) gets the same checks."""
    for name, section in datasets.items():
        if isinstance(section, Mapping) and "seeds" in section:
            example = f"e.g. --config 'datasets={{{name}: {{seeds: [0,1]}}}}'"
            _check_seeds(section["seeds"], f"datasets.{name}.seeds", example)


def _check_multi_seed_variants(datasets: Mapping) -> None:
    """datasets.<name>.multi_seed_variants: a list of model names (the models that run every
    seed of the dataset; the others run its first seed only). A name that `variants` does not
    list trains nothing (`--config variants=[ddpm]` on a config that lists more is fine)."""
    for name, section in datasets.items():
        if not isinstance(section, Mapping) or "multi_seed_variants" not in section:
            continue
        key, listed = f"datasets.{name}.multi_seed_variants", section["multi_seed_variants"]
        if not isinstance(listed, list) or not all(isinstance(v, str) for v in listed):
            raise ConfigError(f"{key} must be a list of model names, e.g. [ddpm, vdm, ndm]; got {listed!r}")
        for v in listed:
            if model_name_error(v) is not None:
                raise ConfigError(f"{key}: {model_name_error(v)}")


def _check_seed_counts(datasets: Mapping, seeds: Any) -> None:
    """datasets.<name>.seed_counts: model name -> n, 1 <= n <= the dataset's seeds (its first n)."""
    for name, section in datasets.items():
        if not isinstance(section, Mapping) or "seed_counts" not in section:
            continue
        key, counts = f"datasets.{name}.seed_counts", section["seed_counts"]
        available = len(section.get("seeds") or seeds or [0])
        if not isinstance(counts, Mapping):
            raise ConfigError(f"{key} must map model names to seed counts, e.g. {{vdm: 3}}; got {counts!r}")
        for model, n in counts.items():
            if model_name_error(str(model)) is not None:
                raise ConfigError(f"{key}: {model_name_error(str(model))}")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= available:
                raise ConfigError(f"{key}.{model} must be a whole number from 1 to the dataset's {available} seeds (its first n run); got {n!r}")


def _check_dataset_variants(datasets: Mapping, variants: list) -> None:
    """datasets.<name>.variants: a non-empty subset of the top-level variants."""
    for name, section in datasets.items():
        if not isinstance(section, Mapping) or "variants" not in section:
            continue
        own = section["variants"]
        if not isinstance(own, list) or not own:
            raise ConfigError(f"datasets.{name}.variants must be a non-empty list of models from the top-level variants {variants}; got {own!r}")
        extra = [v for v in own if v not in variants]
        if extra:
            raise ConfigError(f"datasets.{name}.variants: {extra[0]!r} is not in the top-level variants {variants}; add it there or drop it here")


def _check_variants(variants: Any) -> None:
    if not isinstance(variants, list) or not variants:
        raise ConfigError(f"variants must be a non-empty list of names, e.g. --config 'variants=[ddpm,ndm]'; got {variants!r}")
    for v in variants:
        if model_name_error(v) is not None:
            raise ConfigError(f"variants: {model_name_error(v)}")
    repeated = sorted({v for v in variants if variants.count(v) > 1})
    if repeated:
        raise ConfigError(f"variants: {repeated[0]!r} appears more than once")


def check_pipeline_config(config: Any, schema: Mapping) -> None:
    """Raise ConfigError naming the first problem a user would fix: a key, a seed, a variant.

    `schema` is the pipeline's JSON schema (its closed mappings give the allowed keys).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(config).__name__}")
    _check_keys(config, schema, schema, "")
    missing = [k for k in schema.get("required", []) if k not in config]
    if missing:
        raise ConfigError(
            f"missing key {missing[0]!r} (required: {', '.join(schema['required'])}). Name a complete config "
            f"with --configfile (configs/default.yaml, smoke.yaml, paper.yaml) and change single keys with --config"
        )
    _check_seeds(config["seeds"])
    _check_variants(config["variants"])
    datasets = config["datasets"]
    if not isinstance(datasets, Mapping) or not datasets:
        raise ConfigError(f"datasets must be a non-empty mapping of dataset sections; got {datasets!r}")
    _check_dataset_seeds(datasets)
    _check_multi_seed_variants(datasets)
    _check_seed_counts(datasets, config["seeds"])
    _check_dataset_variants(datasets, list(config["variants"]))
    resolve_report_config(dict(config))  # the report's roles: known model and sampler names


__all__ = ["check_pipeline_config", "typed_overrides"]
