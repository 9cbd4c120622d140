# Shared helpers: the resolved config, paths, per-dataset resources, and a validation of
# every job's config at DAG build time (a typo fails here, naming the key, before any job).

import json
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from ndm.names import FEATURE_SPACES, FILE_DATASETS
from ndm.pipeline.config import ConfigError, resolve_eval_config, resolve_run_config
from ndm.pipeline.config import run_seeds
from ndm.pipeline.sample_jobs import sample_job, sample_jobs, scored_in_sampling

# The `ndm` command line every rule calls. With --sdm conda a job runs in the environment
# built from environment.yml (dependencies only) and finds the package through PYTHONPATH
# (set in the Snakefile's shell prefix); otherwise it uses the interpreter running Snakemake,
# so a virtual environment works without being activated.
_USE_CONDA = "conda" in {str(m).lower().split(".")[-1] for m in workflow.deployment_settings.deployment_method}
NDM = "python -m ndm" if _USE_CONDA else f"{sys.executable} -m ndm"

RESULTS = config.get("results", "results/default")
REPORTS = config.get("reports", "reports")
DATASETS = list(config["datasets"])
VARIANTS = list(config["variants"])


def seeds_of(dataset, variant):
    """The seeds a model trains: the dataset's own, else the global list, cut to the first for a
    model not in datasets.<name>.multi_seed_variants (ndm.pipeline.config.run_seeds)."""
    return run_seeds(config, dataset, variant)


def _check_configs():
    """Resolve every (dataset, variant, seed) job's config; raise with the key on error."""
    for d in DATASETS:
        try:
            for v in VARIANTS:
                for s in seeds_of(d, v):
                    run = resolve_run_config(config, d, v, s)
            resolve_eval_config(config, d)
        except ConfigError as exc:
            raise WorkflowError(f"config error: {exc}") from None
        if run.data.name in FILE_DATASETS:
            root = run.data.root or config.get("data_root")
            if not root or not Path(root).is_dir():
                raise WorkflowError(
                    f"config error: datasets.{d}.data.root (or the top-level data_root) must be an existing "
                    f"directory holding the {run.data.name} files; got {root!r}. Set it, e.g. "
                    f"--config data_root=/path/to/data"
                )


def _resolved_config_path():
    """The merged config (configfile + --config overrides) as one file every job reads.

    Datasets without their own data.root get the top-level data_root. The file is
    rewritten only when its content changes, so it never looks newer than the outputs.
    """
    resolved = json.loads(json.dumps(config))
    for d, section in resolved["datasets"].items():
        data = section.setdefault("data", {}) if section is not None else {}
        if config.get("data_root") and not data.get("root"):
            data["root"] = config["data_root"]
    path = Path(RESULTS) / "config.resolved.json"
    text = json.dumps(resolved, indent=2, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(path)


_check_configs()
CONFIG_PATH = _resolved_config_path()
CONFIG_RESOLVED = json.loads(Path(CONFIG_PATH).read_text())


def eval_cfg(dataset):
    return resolve_eval_config(CONFIG_RESOLVED, dataset)


def run_hash(dataset, variant, seed):
    """Params that change when a job's own config changes (Snakemake reruns the job)."""
    return resolve_run_config(CONFIG_RESOLVED, dataset, variant, int(seed)).hash()


def eval_hash(dataset):
    return json.dumps(CONFIG_RESOLVED["datasets"][dataset].get("eval") or {}, sort_keys=True)


def res(dataset, stage, key, default):
    """A resource of a stage (train, evaluate, sample, small) of a dataset, from the config."""
    merged = {**(config.get("defaults", {}).get("resources", {}).get(stage, {}) or {})}
    merged.update(((config["datasets"][dataset] or {}).get("resources", {}) or {}).get(stage, {}) or {})
    return merged.get(key, default)


def stage_resources(stage, mem_mb, runtime):
    """The resources of a job of `stage` (train, evaluate, sample, small): the config's
    resources.<stage> for the job's dataset (the wildcard), else these defaults. Every rule's
    `resources: **stage_resources(...)`."""
    return dict(
        mem_mb=lambda wc: res(wc.dataset, stage, "mem_mb", mem_mb),
        runtime=lambda wc: res(wc.dataset, stage, "runtime", runtime),
        gpu=lambda wc: res(wc.dataset, stage, "gpu", 0),
    )


# Data-parallel training (workflow/rules/train.smk, docs/slurm.md): N processes per train job.
def train_processes(dataset):
    return max(1, int(res(dataset, "train", "gpu", 0)), int(res(dataset, "train", "tasks", 1)))


def train_launcher(dataset):
    """`ndm` for one process, torchrun over N processes otherwise (same interpreter)."""
    n = train_processes(dataset)
    if n == 1:
        return f"exec {NDM}"
    torchrun = NDM.replace(" -m ndm", f" -m torch.distributed.run --standalone --nproc_per_node {n} -m ndm")
    return f"trap '' USR1; exec {torchrun}"


# Sampling and scoring jobs (workflow/rules/evaluate.smk; the job names:
# ndm/pipeline/sample_jobs.py). Every job writes an index (jobs/*.json) as its declared output,
# listing the per-sampler files it wrote, so each rule has one static output whatever the
# granularity.
def shards(dataset):
    return eval_cfg(dataset).sample_shards


def sample_job_index(d, v, s, job):
    return f"{model_dir(d, v, s)}/jobs/sample-{job}.json"


def score_index(d, v, s):
    return f"{model_dir(d, v, s)}/jobs/score.json"


def model_sample_jobs(d):
    return sample_jobs(eval_cfg(d))


def _job(wc):
    try:
        return sample_job(eval_cfg(wc.dataset), wc.job)
    except ValueError as exc:
        raise WorkflowError(f"{wc.dataset}: {exc}") from None


def sampled_and_scored(d, v, s):
    """The index files that say a model's samples exist and are scored: the sampling job's own
    (an unsharded per_model job scores its samples) or the evaluate_samples job's."""
    if scored_in_sampling(eval_cfg(d)):
        return [sample_job_index(d, v, s, job.name) for job in model_sample_jobs(d)]
    return [score_index(d, v, s)]


def sample_job_inputs(wc):
    """The model, and where the job scores its samples, the reference stats and classifier."""
    inputs = {"model": f"{model_dir(wc.dataset, wc.variant, wc.seed)}/model.pt"}
    if _job(wc).scores:
        inputs.update(_score_inputs(wc.dataset))
    return inputs


def sample_job_args(wc):
    """`ndm sample-grid` options past --model: samplers, their directories, the shard, and what
    scoring in the same job needs. Built from the wildcards, never from `output` (a params
    function of `output` is not recorded for Snakemake's params rerun trigger)."""
    job, m = _job(wc), model_dir(wc.dataset, wc.variant, wc.seed)
    dirs = [_sample_dir(m, s, job.shard if job.shards > 1 else None) for s in job.samplers]
    args = f"--sampler {' '.join(job.samplers)} --out-dir {' '.join(dirs)}"
    if job.shards > 1:
        args += f" --shard {job.shard} --shards {job.shards}"
    if job.scores:
        args += f" --dataset {wc.dataset} --fid-out {' '.join(f'{m}/fid/{s}.json' for s in job.samplers)} {_fd_args(wc.dataset)}"
    return args


def score_inputs(wc):
    """Every sampling job of the model (shard manifests sampler-major), reference stats, classifier."""
    d = wc.dataset
    jobs = [sample_job_index(d, wc.variant, wc.seed, job.name) for job in model_sample_jobs(d)]
    return {"jobs": jobs, **_score_inputs(d)}


def score_args(wc):
    """`ndm evaluate-samples` options: the sample manifests (K per sampler when sharded, merged
    into the sampler's directory first), one fid file per sampler, the references."""
    d, m, k = wc.dataset, model_dir(wc.dataset, wc.variant, wc.seed), shards(wc.dataset)
    parts = [None] if k == 1 else range(k)
    manifests = " ".join(f"{_sample_dir(m, s, i)}/manifest.json" for s in samplers(d) for i in parts)
    fid = " ".join(f"{m}/fid/{s}.json" for s in samplers(d))
    return f"--dataset {d} --manifest {manifests} --out {fid} {_fd_args(d)}" + (f" --shards {k}" if k > 1 else "")


def _sample_dir(m, sampler, shard):
    """samples/<sampler>, or its shard<k> subdirectory."""
    base = f"{m}/samples/{sampler}"
    return base if shard is None else f"{base}/shard{shard}"


def _score_inputs(d):
    return {
        "refs": [f"{RESULTS}/{d}/ref_{f}.npz" for f in features(d)],
        "classifier": [f"{RESULTS}/{d}/classifier.pt"] if "classifier" in features(d) else [],
    }


def signal_lead_seconds(dataset):
    """Seconds before a training job's time limit that SLURM sends SIGUSR1: 10% of the
    runtime, at most 10 minutes (enough to write a checkpoint of a large model)."""
    return int(min(600, 6 * res(dataset, "train", "runtime", 60)))


def model_dir(d, v, s):
    return f"{RESULTS}/{d}/{v}/seed{s}"


def features(dataset):
    return list(eval_cfg(dataset).fid.features)


def samplers(dataset):
    return list(eval_cfg(dataset).samplers)


# ----------------------------------------------------- input functions of the rules


def _stats_inputs(wc):
    inputs = [f"{RESULTS}/{wc.dataset}/data.json"]
    if wc.feature == "classifier":
        inputs.append(f"{RESULTS}/{wc.dataset}/classifier.pt")
    return inputs


def _fd_args(d):
    refs = " ".join(f"{f}={RESULTS}/{d}/ref_{f}.npz" for f in features(d))
    clf = f"--classifier {RESULTS}/{d}/classifier.pt" if "classifier" in features(d) else ""
    return f"--ref {refs} {clf}"


def all_results():
    files = []
    for d in DATASETS:
        for v in VARIANTS:
            for s in seeds_of(d, v):
                m = model_dir(d, v, s)
                files += [f"{m}/train_summary.json", f"{m}/likelihood.json"]
                files += sampled_and_scored(d, v, s)
                if eval_cfg(d).compression.steps:
                    files.append(f"{m}/compression.json")
    return files


# ---------------------------------------------------------------- report stage

from ndm.report import report_outputs

# Every file the report writes: the report rule's outputs, and `rule all` (Snakefile) asks
# for them all.
REPORT_OUTPUTS = [f"{REPORTS}/{rel}" for rel in report_outputs(CONFIG_RESOLVED)]
PUBLISHED_CSV = config.get("published", "configs/published.csv")


def report_inputs():
    files = list(all_results())
    for d in DATASETS:
        files.append(f"{RESULTS}/{d}/data.json")
    if Path(PUBLISHED_CSV).exists():
        files.append(PUBLISHED_CSV)
    return files
