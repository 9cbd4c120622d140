"""Which runs a pipeline config asks for, per dataset (split from config.py)."""

from __future__ import annotations


def dataset_seeds(config: dict, dataset: str) -> list[int]:
    """The training seeds of one dataset: its own `datasets.<name>.seeds`, else the global
    `seeds` (else [0]). One cheap dataset can then run several seeds while the others run one;
    the workflow, the report and `ndm plan` enumerate (dataset, variant, seed) runs through this."""
    section = (config.get("datasets") or {}).get(dataset) or {}
    own = section.get("seeds") if isinstance(section, dict) else None
    return [int(s) for s in (own if own is not None else config.get("seeds") or [0])]


__all__ = ["dataset_seeds"]
