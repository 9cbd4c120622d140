"""GPU-hours of a pipeline config before it is submitted (`ndm plan`, issue 15).

Per (dataset, variant) the network FLOPs are counted on the real model (ndm.estimators.flops'
FlopCounterMode) built on torch's meta device: shapes only, no weights, no data, so the paper
networks are counted in seconds on a CPU. From them:

    C_fwd    FLOPs of the loss' diffusion term per example (x_hat, and F with its dF/dt
             for a learned F): also the cost of one NELBO term and one probability-flow drift
    C_xhat   FLOPs of one x_hat network evaluation;  C_F = C_fwd - C_xhat (F and its JVP)
    train    steps x batch_size x 3 C_fwd            (backward ~ 2 forward)
    sample   n_samples x sum over samplers and step counts of (nfe C_xhat + nfe_F C_F),
             nfe, nfe_F from ndm.estimators.sampling.expected_nfe; an adaptive sampler at an assumed NFE
    likelihood  n_examples x (nelbo_time_samples + len(nelbo_steps) nelbo_step_samples + 12) C_fwd
             + ode.n_examples x NFE_ode x (1 + 2 probes) C_fwd   (12: the estimator-std probes;
             NFE_ode = 2 ode.steps for heun, the assumed adaptive NFE for dopri5)

GPU-hours = FLOPs / (sustained FLOP/s) / 3600, the rate an assumption given by the caller.
Elementwise work is not counted (as in ndm.estimators.flops), so the hours are a lower bound
at the stated rate; the rate, not the counts, carries the uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

from ndm.names import sampler_spec
from ndm.pipeline.network_sizes import event_shape, network_size

ESTIMATOR_STD_EVALS = 12  # ndm.pipeline.evaluate.estimator_std: 3 schemes x 2 estimates x 2 times


@dataclass(frozen=True)
class ModelCosts:
    """Counted FLOPs of one model (per example / per network evaluation)."""

    fwd: float  # training loss forward per example
    xhat: float  # one x_hat evaluation

    @property
    def f(self) -> float:
        return max(self.fwd - self.xhat, 0.0)


@dataclass(frozen=True)
class PlanRow:
    dataset: str
    variant: str
    seeds: int
    train_flops: float  # per seed
    sample_flops: float
    likelihood_flops: float
    longest_sample_job_flops: float  # the largest sampling job (one shard of one sampler or model)
    precision: str = "fp32"  # train.precision: picks the assumed rate when --tflops is not given
    size: object | None = None  # ndm.pipeline.network_sizes.NetworkSize

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.sample_flops + self.likelihood_flops


def count_model_costs(run) -> tuple[ModelCosts, object]:
    """(costs, meta-device model) of a run's model, counted on the meta device."""
    import torch

    from ndm.estimators.flops import count_flops
    from ndm.model.variants import build_model

    shape, levels = event_shape(run)
    with torch.device("meta"):
        model = build_model(run.model, shape, levels)
    x = torch.zeros(2, *shape, device="meta")
    t = torch.full((2,), 0.5, device="meta")
    with torch.no_grad():
        # The diffusion term of the loss (x_hat, and F with dF/dt): the loss' network work.
        fwd = count_flops(lambda: model.diffusion_loss(x, t, torch.zeros_like(x))) / 2
        xhat = count_flops(lambda: model.net(x, t)) / 2
    return ModelCosts(float(fwd), float(xhat)), model


def sampling_flops_per_sample(model, costs: ModelCosts, sampler: str, steps: int, adaptive_nfe: float) -> float:
    from ndm.estimators.sampling import expected_nfe

    if not sampler_spec(sampler).fixed_step:
        return adaptive_nfe * costs.fwd
    nfe, nfe_f = expected_nfe(model, sampler, steps)
    return nfe * costs.xhat + nfe_f * costs.f


def plan_row(config: dict, dataset: str, variant: str, adaptive_nfe: float, costs_model=None) -> PlanRow:
    """The FLOPs of one (dataset, variant): training, sampling (all samplers and step counts), likelihood."""
    from ndm.pipeline.config import resolve_eval_config, resolve_run_config
    from ndm.pipeline.config import run_seeds
    from ndm.pipeline.evaluate import sample_steps_for

    run = resolve_run_config(config, dataset, variant, 0)
    ev = resolve_eval_config(config, dataset)
    costs, model = costs_model or count_model_costs(run)
    train = run.train.steps * run.train.batch_size * 3 * costs.fwd
    per_sampler = {s: sum(sampling_flops_per_sample(model, costs, s, n, adaptive_nfe) for n in sample_steps_for(ev, s)) * ev.n_samples for s in ev.samplers}
    sample = sum(per_sampler.values())
    per_job = (sample if ev.sample_jobs == "per_model" else max(per_sampler.values(), default=0.0)) / ev.sample_shards
    ode_nfe = 2 * ev.ode.steps if ev.ode.method == "heun" else adaptive_nfe
    nelbo_terms = ev.nelbo_time_samples + len(ev.nelbo_steps) * ev.nelbo_step_samples + ESTIMATOR_STD_EVALS
    likelihood = ev.n_examples * nelbo_terms * costs.fwd + ev.ode.n_examples * ode_nfe * (1 + 2 * ev.ode.probes) * costs.fwd
    # The dataset's own seeds (datasets.<name>.seeds) when it has them: each is one more run.
    size = network_size(config, dataset, variant, model)
    return PlanRow(dataset, variant, len(run_seeds(config, dataset, variant)), train, sample, likelihood, per_job, run.train.precision, size)


def plan(config: dict, adaptive_nfe: float = 200.0) -> list[PlanRow]:
    """One row per (dataset, variant) of the config; models of the same architecture are counted once."""
    from ndm.pipeline.config import resolve_run_config, run_seeds

    rows, cache = [], {}
    for d in config["datasets"]:
        for v in config["variants"]:
            if not run_seeds(config, d, v):
                continue  # datasets.<d>.variants leaves this model out
            run = resolve_run_config(config, d, v, 0)
            key = (d, repr(run.model))
            if key not in cache:
                cache[key] = count_model_costs(run)
            rows.append(plan_row(config, d, v, adaptive_nfe, cache[key]))
    return rows


# Assumed sustained rates per train.precision: 30% of an H100 SXM's dense bf16 tensor-core
# peak (989 TFLOP/s) in bf16, a third of that in fp32 (TF32 peak is half of bf16's, and fp32
# runs keep more in full precision). Assumptions, printed with every table: measure your rate.
ASSUMED_TFLOPS = {"bf16": 0.30 * 989.0, "fp32": 0.10 * 989.0}


def gpu_hours(flops: float, tflops: float) -> float:
    return flops / (tflops * 1e12) / 3600.0


def row_tflops(row: PlanRow, tflops: float | None) -> float:
    """The rate a row's hours assume: the caller's, else the one of its training precision."""
    return tflops if tflops is not None else ASSUMED_TFLOPS[row.precision]


def format_table(rows: list[PlanRow], tflops: float | None, runtime_min: dict[str, float] | None = None) -> str:
    """Markdown table of GPU-hours (all seeds) per (dataset, variant), dataset totals, grand total.
    tflops None: each row at ASSUMED_TFLOPS of its precision (a column says which)."""
    lines = [
        "| dataset | variant | precision (TFLOP/s) | seeds | train GPU-h | sampling GPU-h | likelihood GPU-h | total GPU-h | longest sampling job h (limit) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    totals: dict[str, float] = {}
    for r in rows:
        rate = row_tflops(r, tflops)
        h = lambda f: f"{gpu_hours(f, rate):,.1f}"  # noqa: E731
        s = r.seeds
        limit = f" ({runtime_min[r.dataset] / 60:.0f})" if runtime_min and r.dataset in runtime_min else ""
        lines.append(f"| {r.dataset} | {r.variant} | {r.precision} ({rate:.0f}) | {s} | {h(s * r.train_flops)} | {h(s * r.sample_flops)} | {h(s * r.likelihood_flops)} "
                     f"| {h(s * r.total_flops)} | {gpu_hours(r.longest_sample_job_flops, rate):.1f}{limit} |")  # fmt: skip
        totals[r.dataset] = totals.get(r.dataset, 0.0) + s * gpu_hours(r.total_flops, rate)
    for d, hours in totals.items():
        lines.append(f"| **{d}** | all | | | | | | **{hours:,.1f}** | |")
    lines.append(f"| **total** | | | | | | | **{sum(totals.values()):,.1f}** | |")
    return "\n".join(lines)
