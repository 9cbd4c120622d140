"""The report's roles (the config's `report:` section): which model the report is about, which
models are its baselines and controls, and which samplers its answer reads.

Nothing in ndm/report names a model or a sampler: it reads them from here. The defaults
reproduce the report of configs/default.yaml and configs/study.yaml; a config about another
model sets its own, e.g.

    report:
      model: ndm-vdm
      baselines: [vdm]

A role whose model the config does not run is skipped by the report (a row not shown), so one
set of defaults serves the default run, the study and a single-variant smoke run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ndm.model.specs import model_name_problem
from ndm.names import sampler_problem
from ndm.pipeline.errors import ConfigError


@dataclass
class EndpointConfig:
    """The pre-registered primary endpoints (docs/protocol.md, "Pre-registered analysis"); a
    dataset without a metric here has no endpoint rows."""

    # dataset -> the sample metric of its few-step endpoint (fd_classifier, ed_data, ...)
    metrics: dict[str, str] = field(default_factory=dict)
    # datasets whose metric is averaged over the NFEs before the log (the energy distance can be
    # 0 or below at its floor); the others average the log over the NFEs
    log_after_mean: list[str] = field(default_factory=list)
    nfes: list[int] = field(default_factory=lambda: [2, 5, 10, 20])
    # equivalence margin of the few-step endpoint: +-10% in the metric, +-log(1.1) in the log
    relative_margin: float = 0.10
    # dataset -> equivalence margin of the test-NELBO endpoint in bits/dim
    nelbo_margins: dict[str, float] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=lambda: ["vdm-fixed", "ddpm", "vdm"])


@dataclass
class ReportConfig:
    # The model whose gains the report judges, and the models it is compared with in the
    # few-step tables (the T-step NELBO and Frechet distances at every NFE).
    model: str = "ndm"
    baselines: list[str] = field(default_factory=lambda: ["ddpm", "vdm", "vdm-fixed"])
    # The likelihood comparisons (tables/likelihood_pairs): the NELBO against these, the ODE NLL
    # against ode_baselines; the README's answer reads answer_likelihood_baselines and
    # answer_few_step_baselines.
    likelihood_baselines: list[str] = field(default_factory=lambda: ["ddpm", "vdm", "vdm-fixed", "ddpm@params", "vdm@params"])
    ode_baselines: list[str] = field(default_factory=lambda: ["ddpm", "vdm"])
    answer_likelihood_baselines: list[str] = field(default_factory=lambda: ["ddpm", "vdm", "ddpm@params", "vdm@params"])
    answer_few_step_baselines: list[str] = field(default_factory=lambda: ["ddpm", "vdm"])
    # Controls of the study (configs/study.yaml): baselines given the model's parameter count,
    # the model trained for the first baseline's training FLOPs, the model in the reference gauge.
    size_controls: list[str] = field(default_factory=lambda: ["ddpm@params", "vdm@params"])
    compute_control: str = "ndm@compute"
    # The baseline of the training-compute comparisons and of the per-sampler sentences.
    reference_baseline: str = "ddpm"
    gauge_control: str = "ndm@gauge"
    # Samplers the answer and the reviewer points read: the one the T-step NELBO describes, the
    # fixed-step and adaptive ODE solvers, and the few-step samplers of the gauge comparison.
    nelbo_sampler: str = "ancestral"
    ode_sampler: str = "ode-heun"
    adaptive_sampler: str = "ode-adaptive"
    deterministic_sampler: str = "ddim"
    gauge_samplers: list[str] = field(default_factory=lambda: ["ode-heun", "ddim", "dpmpp-2m"])
    answer_samplers: list[str] = field(default_factory=lambda: ["ode-heun", "ddim"])
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    # Drawn in colour in the few-step figures; every other model muted.
    highlight: list[str] = field(default_factory=lambda: ["ndm", "vdm-fixed", "ddpm"])

    def model_names(self) -> list[str]:
        return [self.model, *self.baselines, *self.likelihood_baselines, *self.ode_baselines, *self.answer_likelihood_baselines,
                *self.answer_few_step_baselines, *self.size_controls, self.compute_control, self.gauge_control, self.reference_baseline,
                *self.endpoint.baselines, *self.highlight]  # fmt: skip

    def sampler_names(self) -> list[str]:
        return [self.nelbo_sampler, self.ode_sampler, self.adaptive_sampler, self.deterministic_sampler, *self.gauge_samplers, *self.answer_samplers]


def resolve_report_config(config: dict) -> ReportConfig:
    """The `report:` section as a ReportConfig (defaults for what it leaves out), checked."""
    from ndm.pipeline.config import from_dict

    roles = from_dict(ReportConfig, config.get("report") or {}, "report")
    for name in roles.model_names():
        if (problem := model_name_problem(name)) is not None:
            raise ConfigError(f"report: {problem}")
    for name in roles.sampler_names():
        if (problem := sampler_problem(name)) is not None:
            raise ConfigError(f"report: {problem}")
    return roles


__all__ = ["EndpointConfig", "ReportConfig", "resolve_report_config"]
