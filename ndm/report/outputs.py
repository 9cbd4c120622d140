"""The files the report writes (`report_outputs`, the report rule's outputs), without the report's
heavy imports: the Snakefile reads it at every start, which on a cluster is every job."""

from __future__ import annotations

from ndm.pipeline.config import ConfigError, resolve_eval_config


def samplers_of(config: dict, dataset: str) -> list[str]:
    try:
        return list(resolve_eval_config(config, dataset).samplers)
    except (ConfigError, TypeError, ValueError):
        return []


def sample_figure_samplers(config: dict, dataset: str) -> list[str]:
    """The samplers with a sample-grid figure: each sampler on its own grid once (the plain
    name, uniform-t), not every grid it also runs on (the study's 12 sampler-grid pairs)."""
    samplers = samplers_of(config, dataset)
    plain = [s for s in samplers if "@" not in s]
    return plain + [s for s in samplers if "@" in s and s.split("@")[0] not in plain]


# Tables whose CSV is written gzipped: the per-seed table of a study has thousands of rows (870 KB
# as text, past the 500 KB limit on a file under reports/; pandas reads .csv.gz as it is).
GZIPPED = ("per_seed",)


def csv_extension(name: str) -> str:
    """A table's CSV file extension: csv, or csv.gz for the GZIPPED tables."""
    return "csv.gz" if name in GZIPPED else "csv"


TABLES = [
    "likelihood", "bpd_vs_T", "fid", "few_step", "few_step_best", "few_step_comparison", "likelihood_pairs", "gauge_comparison",
    "estimator_std", "claims", "gauge", "compression", "convergence", "matched_compute", "primary_endpoint", "per_seed",
]  # fmt: skip
GLOBAL_FIGURES = ["bpd_vs_T", "schedules", "training_curves", "convergence"]


def figure_names(config: dict) -> list[str]:
    """Every figure's name (without extension) for this config."""
    datasets = list((config.get("datasets") or {}).keys())
    names = list(GLOBAL_FIGURES)
    names += [f"fid_vs_nfe_{d}" for d in datasets]
    names += [f"transforms_{d}" for d in datasets]
    names += [f"gauge_{d}" for d in datasets]
    names += [f"samples_{d}_{s}" for d in datasets for s in sample_figure_samplers(config, d)]
    return names


def report_outputs(config: dict) -> list[str]:
    """Files compile_report writes, relative to its out directory."""
    files = ["README.md"]
    files += [f"tables/{t}.{ext}" for t in TABLES for ext in (csv_extension(t), "md", "tex")]
    # the tables-only report's inputs beside per_seed.csv.gz (ndm.report.per_seed)
    files += ["tables/per_seed_train.csv", "tables/per_seed_curves.csv", "tables/per_seed_meta.json"]
    files += [f"figures/{f}.png" for f in figure_names(config)]  # one format per figure: PNG
    return files


__all__ = ["GZIPPED", "TABLES", "csv_extension", "GLOBAL_FIGURES", "figure_names", "report_outputs", "sample_figure_samplers", "samplers_of"]
