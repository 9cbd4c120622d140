"""The roles of the report being compiled (ndm.pipeline.report_config.ReportConfig): set once by
compile_report from the config's `report:` section, read by every table, answer and figure
through `roles()`, so no report module names a model or a sampler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ndm.pipeline.report_config import ReportConfig

_ACTIVE: list[ReportConfig] = [ReportConfig()]


def roles() -> ReportConfig:
    """The roles of the report being compiled (the defaults outside compile_report)."""
    return _ACTIVE[-1]


@contextmanager
def using_roles(report_config: ReportConfig) -> Iterator[ReportConfig]:
    _ACTIVE.append(report_config)
    try:
        yield report_config
    finally:
        _ACTIVE.pop()


__all__ = ["roles", "using_roles"]
