"""The files the report writes (`report_outputs`, the report rule's outputs), without the report's
heavy imports: the Snakefile reads it at every start, which on a cluster is every job."""

from __future__ import annotations

from ndm.pipeline.config import ConfigError, resolve_eval_config


def samplers_of(config: dict, dataset: str) -> list[str]:
    try:
        return list(resolve_eval_config(config, dataset).samplers)
    except (ConfigError, TypeError, ValueError):
        return []


TABLES = [
    "likelihood", "bpd_vs_T", "fid", "few_step", "few_step_best", "few_step_comparison", "likelihood_pairs", "gauge_comparison",
    "estimator_std", "claims", "gauge", "compression", "convergence", "matched_compute",
]  # fmt: skip
GLOBAL_FIGURES = ["fid_vs_nfe", "bpd_vs_T", "schedules", "training_curves", "convergence"]


def figure_names(config: dict) -> list[str]:
    """Every figure's name (without extension) for this config."""
    datasets = list((config.get("datasets") or {}).keys())
    names = list(GLOBAL_FIGURES)
    names += [f"transforms_{d}" for d in datasets]
    names += [f"gauge_{d}" for d in datasets]
    names += [f"samples_{d}_{s}" for d in datasets for s in samplers_of(config, d)]
    return names


def report_outputs(config: dict) -> list[str]:
    """Files compile_report writes, relative to its out directory."""
    files = ["README.md"]
    files += [f"tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    files += [f"figures/{f}.png" for f in figure_names(config)]  # one format per figure: PNG
    return files


__all__ = ["TABLES", "GLOBAL_FIGURES", "figure_names", "report_outputs", "samplers_of"]
