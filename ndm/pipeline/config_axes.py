"""Which runs a pipeline config asks for, per dataset (split from config.py)."""

from __future__ import annotations


def dataset_seeds(config: dict, dataset: str) -> list[int]:
    """The training seeds of one dataset: its own `datasets.<name>.seeds`, else the global
    `seeds` (else [0]). One cheap dataset can then run several seeds while the others run one;
    the workflow, the report and `ndm plan` enumerate (dataset, variant, seed) runs through this."""
    section = (config.get("datasets") or {}).get(dataset) or {}
    own = section.get("seeds") if isinstance(section, dict) else None
    return [int(s) for s in (own if own is not None else config.get("seeds") or [0])]


def run_seeds(config: dict, dataset: str, variant: str) -> list[int]:
    """The seeds one model of a dataset trains: every seed of the dataset, or only its first
    when the dataset lists `multi_seed_variants` and the model (its full name, "ndm@gauge") is
    not in that list. The listed models then pair across seeds for the report's verdicts and
    the others cost one run each (the default's toy2d: docs/performance.md)."""
    seeds = dataset_seeds(config, dataset)
    section = (config.get("datasets") or {}).get(dataset) or {}
    multi = section.get("multi_seed_variants") if isinstance(section, dict) else None
    return seeds if multi is None or variant in multi else seeds[:1]


__all__ = ["dataset_seeds", "run_seeds"]
