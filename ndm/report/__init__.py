"""Results -> the papers' tables and figures, with our numbers beside the published ones.

    compile_report(config, results, out)   the entry point (`ndm report`, the DAG's report rule; compile.py)
    report_outputs(config)                 the files it writes, relative to out (the rule's outputs; outputs.py)

Modules: collect (result files -> frames), published (configs/published.csv), table_format
(the Table record and its files), tables, fewstep (the best-sampler table, the few-step comparison
and its answer), claims (the claims and estimator-std tables), gauge (the gauge table and
figures), compression (the compression table), figures, figures_models, style, readme.
The report compiles from whatever results exist: missing rows are marked, missing files
listed in README.md, and a figure without inputs says so instead of failing.
"""

from __future__ import annotations

from typing import Any

from ndm.report.outputs import TABLES, figure_names, report_outputs

# The report's own modules (pandas, scipy, matplotlib) load on first use, so that the
# Snakefile, which needs report_outputs only, starts fast in every job (docs/performance.md).
_LAZY = {"compile_report": "ndm.report.compile", "collect": "ndm.report.collect", "Results": "ndm.report.collect", "load_published": "ndm.report.published"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ndm.report' has no attribute {name!r}")


__all__ = ["compile_report", "report_outputs", "figure_names", "collect", "Results", "load_published", "TABLES"]
