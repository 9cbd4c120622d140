"""compile_report: results -> every table, figure and README.md of the report (ndm.report)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from ndm.report.endpoint import endpoint_table
from ndm.report.per_seed import per_seed_table, results_from_tables, write_seed_sidecars
from ndm.report import figures, figures_models
from ndm.report.claims import CLAIMS_FILE, claims_table, estimator_std_table
from ndm.report.collect import Results, collect
from ndm.report.compression import compression_table
from ndm.model.specs import base_variant
from ndm.report.fewstep import answer, best_sampler_table, comparison_table, empty_comparison, seed_values
from ndm.report.study import convergence_figure, convergence_table, matched_compute_table
from ndm.pipeline.report_config import resolve_report_config
from ndm.report.roles import using_roles
from ndm.report.gauge import gauge_figure, gauge_frame, gauge_table
from ndm.report.likelihood_pairs import likelihood_pairs_table
from ndm.report.published import PublishedError, data_names, default_published_path, load_published
from ndm.report.outputs import TABLES, figure_names, sample_figure_samplers, samplers_of
from ndm.report.table_format import write_table
from ndm.report.tables import bpd_vs_T_table, few_step_table, fid_table, likelihood_table

log = logging.getLogger(__name__)


def _units(res: Results) -> dict[str, str]:
    lik = res.likelihood
    if lik.empty:
        return {}
    return {d: str(u) for d, u in lik.groupby("dataset")["units"].first().items() if isinstance(u, str)}


def _published(config: dict, path: str | Path | None) -> tuple[Path | None, pd.DataFrame | None, str | None]:
    p = Path(path) if path else default_published_path(config)
    if p is None or not p.exists():
        return p, None, "published.csv not found"
    try:
        return p, load_published(p), None
    except (PublishedError, ValueError, OSError) as exc:
        return p, None, f"published.csv unusable: {exc}"


def _is_gauge_copy(config: dict, variant: str) -> bool:
    """A tagged copy whose only model change is F's gauge (e.g. ndm@gauge)."""
    from ndm.pipeline.config import ConfigError, resolve_run_config

    try:
        datasets = list(config.get("datasets") or {})
        return bool(datasets) and all(resolve_run_config(config, d, variant, 0).model.transform_gauge != "none" for d in datasets)
    except (ConfigError, KeyError, TypeError, ValueError):
        return False


def _safe(what: str, fn, *args, errors: list[str], **kwargs) -> list[Path]:
    """Run one figure; a failure becomes a message figure and a line in the summary, never a crash."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one broken input must not lose the whole report
        log.exception("figure %s failed", what)
        errors.append(f"{what}: {type(exc).__name__}: {exc}")
        path = next(a for a in args if isinstance(a, Path))
        return figures.message_figure(path, what, [f"Could not draw this figure: {type(exc).__name__}: {str(exc)[:200]}"])


def compile_report(
    config: dict, results: str | Path | None, out: str | Path, published: str | Path | None = None, from_tables: str | Path | None = None
) -> dict[str, Any]:
    """Write tables/, figures/ and README.md under out from whatever results exist; return a summary.
    The report's roles (which model, baselines, controls and samplers) come from the config's
    `report:` section (ndm.pipeline.report_config).

    from_tables: a report's tables/ directory instead of results/: every table computed from the
    per-seed numbers (means, intervals, verdicts, endpoints, curves) and the figures drawn from
    them are rewritten from its per-seed tables alone; the README and what needs the model files
    or other result files (claims, gauge, estimator_std, compression, sample and transform
    figures) are left as they are."""
    with using_roles(resolve_report_config(config)):
        return _compile(config, results, out, published, from_tables)


# The tables a tables-only compile rewrites (everything computed from per-seed numbers).
FROM_TABLES = ["likelihood", "bpd_vs_T", "fid", "few_step", "few_step_best", "few_step_comparison", "likelihood_pairs", "gauge_comparison",
               "convergence", "matched_compute", "primary_endpoint", "per_seed"]  # fmt: skip


def _compile(config: dict, results: str | Path | None, out: str | Path, published: str | Path | None, from_tables: str | Path | None = None) -> dict[str, Any]:
    out = Path(out)
    res = results_from_tables(Path(from_tables)) if from_tables is not None else collect(config, results)
    names = data_names(config)
    pub_path, pub, pub_error = _published(config, published)

    lik = likelihood_table(res, config, pub, names)
    bpd_T = bpd_vs_T_table(res, pub, names)
    fid = fid_table(res, config, pub, names)
    few = few_step_table(res)
    best = best_sampler_table(few.data, res.variants)
    per_seed = seed_values(res.fd, res.likelihood)
    comp = comparison_table(few.data, bpd_T.data, per_seed)
    # The reference gauge against the paper's F, for every gauge-fixed copy of a learned-F variant.
    gauge_pairs = [(v, base_variant(v)) for v in res.variants if v != base_variant(v) and base_variant(v) in res.variants and _is_gauge_copy(config, v)]
    gauge_comp = comparison_table(few.data, bpd_T.data, per_seed, model=gauge_pairs[0][0], baselines=[gauge_pairs[0][1]], name="gauge_comparison") if gauge_pairs else empty_comparison("gauge_comparison")
    pairs = likelihood_pairs_table(res)
    convergence = convergence_table(res.curves, res.variants)
    matched = matched_compute_table(res.curves, res.variants)
    endpoint = endpoint_table(res)
    seeds_tab = per_seed_table(res)
    errors: list[str] = []
    if from_tables is not None:
        return _write_from_tables(res, out, [lik, bpd_T, fid, few, best, comp, pairs, gauge_comp, convergence, matched, endpoint, seeds_tab], errors)
    est_std = estimator_std_table(res)
    claims = claims_table(Path(results) / CLAIMS_FILE)
    # The gauge split of every learned F (from likelihood.json): one frame serves the table and the figures.
    gauge_data = gauge_frame(res, config, errors)
    gauge_tab = gauge_table(gauge_data, res)
    compression = compression_table(results, pub)
    # Every table once, in the order of outputs.TABLES (the report rule's outputs and README list them from there).
    built = {t.name: t for t in (lik, bpd_T, fid, few, best, comp, pairs, gauge_comp, est_std, claims, gauge_tab, compression, convergence, matched, endpoint, seeds_tab)}
    if set(built) != set(TABLES):
        raise AssertionError(f"tables built {sorted(built)} differ from ndm.report.outputs.TABLES {sorted(TABLES)}")
    written: list[Path] = []
    for name in TABLES:
        written += write_table(built[name], out / "tables")
    written += write_seed_sidecars(res, out / "tables")

    fig_dir = out / "figures"
    written += _per_seed_figures(res, few.data, bpd_T.data, fig_dir, errors)
    written += _safe("schedules", figures_models.schedules_figure, res, config, fig_dir / "schedules.png", errors=errors)
    samplers = {d: samplers_of(config, d) for d in res.datasets}
    for d in res.datasets:
        written += _safe(f"transforms_{d}", figures_models.transforms_figure, res, d, fig_dir / f"transforms_{d}.png", errors=errors)
        written += _safe(f"gauge_{d}", gauge_figure, gauge_data, d, fig_dir / f"gauge_{d}.png", errors=errors)
        for s in sample_figure_samplers(config, d):
            written += _safe(f"samples_{d}_{s}", figures_models.samples_figure, res, config, d, s, fig_dir / f"samples_{d}_{s}.png", errors=errors)

    answers = answer(comp.data, res.datasets)
    from ndm.report.readme import write_readme
    from ndm.report.reviewer import reviewer_lines

    from ndm.report.summary import answer_summary

    reviewer = reviewer_lines(res, config, few.data, comp.data, pairs.data, gauge_comp.data, gauge_tab.data, convergence.data)
    summary = answer_summary(res, comp.data, few.data, gauge_comp.data, gauge_tab.data, pairs=pairs.data, endpoint=endpoint.data)
    written.append(
        write_readme(out, res, TABLES, figure_names(config), samplers, answers, pub_path, pub, str(results), claims=claims.data, reviewer=reviewer, summary=summary)
    )
    return {
        "out": str(out),
        "files": len(written),
        "rows": {name: len(built[name].data) for name in TABLES},
        "missing_files": len(res.missing),
        "unreadable_files": len(res.unreadable),
        "figure_errors": errors,
        "published": str(pub_path) if pub is not None else pub_error,
        "few_step_answer": answers,
    }


def _per_seed_figures(res: Results, few: pd.DataFrame, bpd_T: pd.DataFrame, fig_dir: Path, errors: list[str]) -> list[Path]:
    """The figures drawn from per-seed numbers alone (both compiles draw them): few-step per
    dataset, bits/dim versus T, training curves, convergence."""
    units = _units(res)
    written: list[Path] = []
    for d in res.datasets:
        written += _safe(f"fid_vs_nfe_{d}", figures.fid_vs_nfe_figure, few, fig_dir / f"fid_vs_nfe_{d}.png", d, res.fd_floors, errors=errors)
    written += _safe("bpd_vs_T", figures.bpd_vs_T_figure, bpd_T, units, fig_dir / "bpd_vs_T.png", errors=errors)
    written += _safe("training_curves", figures.training_curves_figure, res.curves, units, fig_dir / "training_curves.png", errors=errors)
    written += _safe("convergence", convergence_figure, res.curves, fig_dir / "convergence.png", errors=errors)
    return written


def _write_from_tables(res: Results, out: Path, tables: list, errors: list[str]) -> dict[str, Any]:
    """The tables-only compile: the per-seed tables' derived tables and the figures drawn from them."""
    built = {t.name: t for t in tables}
    if set(built) != set(FROM_TABLES):
        raise AssertionError(f"tables-only compile built {sorted(built)}, expected {sorted(FROM_TABLES)}")
    written: list[Path] = []
    for name in FROM_TABLES:
        written += write_table(built[name], out / "tables")
    written += _per_seed_figures(res, built["few_step"].data, built["bpd_vs_T"].data, out / "figures", errors)
    return {"out": str(out), "files": len(written), "rows": {name: len(built[name].data) for name in FROM_TABLES}, "figure_errors": errors, "from_tables": True}


__all__ = ["FROM_TABLES", "compile_report"]
