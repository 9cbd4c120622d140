"""The sampling jobs of one model, named: what each draws, which shard, and whether it scores.

eval.sample_jobs and eval.sample_shards choose the granularity of the sampling stage; the
workflow has one static rule for it (workflow/rules/evaluate.smk, rule sample_grid) whose
wildcard `job` is one of these names:

- per_sampler: one job per sampler, named after it (`ddim`); sharded, `ddim.shard2`;
- per_model: one job for every sampler, `all-samplers`; sharded, `all-samplers.shard2`.

An unsharded per_model job also scores its samples (the Frechet distances, in the same process:
on a CPU a job's start-up rivals the sampling of a small model, docs/performance.md); otherwise
one evaluate_samples job per model merges the shards and scores every sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

from ndm.pipeline.config import EvalConfig

PER_MODEL_JOB = "all-samplers"


@dataclass(frozen=True)
class SampleJob:
    name: str
    samplers: tuple[str, ...]
    shard: int  # this job's shard (0 when unsharded)
    shards: int  # K of eval.sample_shards
    scores: bool  # writes fid/<sampler>.json itself (no evaluate_samples job for the model)


def sample_jobs(ev: EvalConfig) -> list[SampleJob]:
    """Every sampling job of one model of a dataset with these evaluation settings."""
    units = [(PER_MODEL_JOB, tuple(ev.samplers))] if ev.sample_jobs == "per_model" else [(s, (s,)) for s in ev.samplers]
    k = ev.sample_shards
    scores = ev.sample_jobs == "per_model" and k == 1
    return [
        SampleJob(unit if k == 1 else f"{unit}.shard{shard}", samplers, shard, k, scores)
        for unit, samplers in units
        for shard in range(k)
    ]


def sample_job(ev: EvalConfig, name: str) -> SampleJob:
    """The job called `name`; a ValueError lists the names this dataset's settings give."""
    jobs = {job.name: job for job in sample_jobs(ev)}
    if name not in jobs:
        raise ValueError(
            f"no sampling job {name!r} with sample_jobs: {ev.sample_jobs} and sample_shards: {ev.sample_shards}; "
            f"the jobs are {sorted(jobs)}"
        )
    return jobs[name]


def scored_in_sampling(ev: EvalConfig) -> bool:
    """True when the sampling job scores its samples, so no evaluate_samples job runs."""
    return any(job.scores for job in sample_jobs(ev))
