"""The paper path in CI (issue 15, item 4): configs/paper.yaml's real DAG through the SLURM
profile on the local one-node cluster, and a 2-process SLURM training job that is stopped by
a signal and resumes.

test_paper_dag_through_slurm runs

    snakemake all --profile profiles/slurm --configfile configs/paper.yaml <sizes.yaml>
              --config data_root=<tmp> variants=[ddpm]   ($NDM_PAPER_VARIANTS: ddpm,ndm)

on the cluster that the `slurm_cluster` fixture starts (tests/slurm_fixtures.py), with the smoke
SLURM test's one-node settings (partition, squeue status, fast polling). The second config file
holds sizes only (train steps and batch sizes, example and sample counts, step lists, shards,
seeds, per-rule resources); `assert_sizes_only` checks it against an explicit whitelist and
that the merged config has the paper's networks, samplers, feature spaces and data loaders.
Three keys of the whitelist are not sizes, and are there because this machine is not the
paper's: `defaults.train.device: cpu` (the paper's `cuda` raises without a GPU; the GPU count
itself is the resource `gpu: 0`), CIFAR-10's `data.options.verify_checksums: false` (the
files written here are not the official ones; the loader's own switch for such files) and
`defaults.eval.fid.if_weights_missing: skip` (this machine has no Inception weights).
The data are a few images per dataset in the real on-disk formats (MNIST idx files, CIFAR-10's
pickled batches, the ImageNet 32/64 npz batches), written with tests/test_data.py's writers.

Inception FID: the paper's feature spaces (inception, clean) need local weights
(docs/fid.md), which CI does not have and which are never downloaded or faked. Without them,
and with `fid.if_weights_missing: skip`, each `reference_stats` job of those features writes a
stats file holding only InceptionWeightsNotFound's message (the places searched), every fid
JSON records those distances as skipped with that reason, and the report marks the FID rows
`skipped` and lists the reason; the classifier distances are computed as usual. Where the
weights exist the test asserts the Inception metrics instead.

test_two_task_slurm_training_resumes: the real train rule with `resources.train.tasks: 2`
(torchrun, 2 gloo processes) through the SLURM profile on a tiny toy2d config; once a
checkpoint exists the job gets `scancel --signal=USR1` (what SLURM's --signal=USR1@lead sends
before the time limit), the processes checkpoint and exit 75, the rule's retry resubmits the job
and it resumes; its parameters then equal those of an uninterrupted 2-process run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from test_data import _write_cifar, _write_idx, _write_imagenet
from test_pipeline import REPO, snakemake, workdir_copy

pytestmark = pytest.mark.slurm

PAPER = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
# The documented trim (`--config variants=[...]`): ddpm, the cheapest of the paper's networks on a
# CPU, runs every rule of the paper DAG in 10 minutes (67 SLURM jobs; 2026-12-02); with ndm too
# (NDM_PAPER_VARIANTS=ddpm,ndm) its F, a second U-Net under forward-mode JVP, makes it > 40 minutes.
VARIANTS = os.environ.get("NDM_PAPER_VARIANTS", "ddpm").split(",")
# The dataset whose train jobs run as 2 CPU processes (torchrun, gloo); the paper trains it on 4 GPUs.
DDP_DATASET = "imagenet32"
DDP_PROCESSES = 2
# eval.sample_shards per dataset: CIFAR-10 keeps the paper's 2 (jobs <sampler>.shard<k>, merged
# by evaluate_samples); MNIST's 1 is the paper's (jobs <sampler>); ImageNet 32/64 (paper 2, 12)
# run 1 shard: each extra shard adds a job per (model, sampler).
SHARDS = {"mnist": 1, "cifar10": 2, "imagenet32": 1, "imagenet64": 1}
RUN_TIMEOUT_S = 2400

# The sizes file may set only these keys (dotted paths; <d> = a dataset of paper.yaml,
# <stage> = a resources stage). Anything else (a network, a sampler list, a feature space, a
# data loader) fails the test.
_EVAL_SIZES = [
    "n_examples", "nelbo_time_samples", "nelbo_steps", "nelbo_step_samples", "ode.n_examples", "ode.steps",
    "sample_steps", "n_samples", "batch_size", "sample_shards", "paper_setting.steps",
    "fid.classifier_steps", "fid.n_reference",
]
_TRAIN_SIZES = ["steps", "batch_size", "log_every", "checkpoint_every"]
_RESOURCES = ["threads", "mem_mb", "runtime", "gpu", "tasks"]
SIZE_KEYS = (
    ["seeds"]
    + [f"defaults.train.{k}" for k in _TRAIN_SIZES]
    + [f"defaults.eval.{k}" for k in _EVAL_SIZES]
    + [f"defaults.resources.<stage>.{k}" for k in _RESOURCES]
    + [f"datasets.<d>.train.{k}" for k in _TRAIN_SIZES]
    + [f"datasets.<d>.eval.{k}" for k in _EVAL_SIZES]
    + [f"datasets.<d>.resources.<stage>.{k}" for k in _RESOURCES]
)
# Not sizes: this machine has no GPU, and the CIFAR-10 files written here are not the official ones.
# precision: paper.yaml's bf16 is for GPUs; bf16 autocast on this CPU more than doubles the run
# (1316 s against 596 s, 2026-12-08), and tests/test_precision.py covers bf16 on the CPU.
MACHINE_KEYS = {"defaults.train.device": "cpu", "datasets.cifar10.data.options.verify_checksums": False, "defaults.eval.fid.if_weights_missing": "skip",
                "defaults.train.precision": "fp32", "defaults.eval.precision": "fp32"}  # fmt: skip


def size_overrides() -> dict:
    """The second --configfile: sizes and resources only (checked by assert_sizes_only)."""
    one = {"threads": 1, "mem_mb": 3000, "runtime": 30, "gpu": 0}
    datasets: dict = {}
    for d in PAPER["datasets"]:
        datasets[d] = {
            "train": {"steps": 2, "batch_size": 2},
            "eval": {"sample_shards": SHARDS[d], "batch_size": 2},
            # the paper's dataset-level resources (ImageNet: 4 and 8 GPUs) replaced as a whole
            "resources": {"train": dict(one)},
        }
    datasets[DDP_DATASET]["resources"]["train"] = {**one, "threads": DDP_PROCESSES, "mem_mb": 6000, "tasks": DDP_PROCESSES}
    datasets["cifar10"]["data"] = {"options": {"verify_checksums": False}}
    return {
        "seeds": [0],
        "defaults": {
            "train": {"steps": 2, "batch_size": 2, "log_every": 1, "device": "cpu", "precision": "fp32"},
            "eval": {
                "precision": "fp32",
                "n_examples": 2,
                "nelbo_time_samples": 1,
                "nelbo_steps": [10],
                "nelbo_step_samples": 1,
                "ode": {"n_examples": 0},  # the ODE NLL (dopri5, rtol 1e-5) is minutes per example here
                "sample_steps": [2],
                "n_samples": 2,
                "batch_size": 2,
                "paper_setting": {"steps": 2},
                "fid": {"classifier_steps": 5, "if_weights_missing": "skip"},
            },
            "resources": {stage: dict(one) for stage in ("train", "evaluate", "sample", "small")},
        },
        "datasets": datasets,
    }


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_leaves(v, path + "."))
        else:
            out[path] = v
    return out


def _pattern(key: str) -> re.Pattern:
    datasets = "|".join(map(re.escape, PAPER["datasets"]))
    stages = "train|evaluate|sample|small"
    return re.compile(re.escape(key).replace("<d>", f"(?:{datasets})").replace("<stage>", f"(?:{stages})") + r"\Z")


def assert_sizes_only(overrides: dict) -> None:
    """Every key of the override file is a size (SIZE_KEYS) or one of MACHINE_KEYS with its value,
    and the merged config keeps the paper's networks, samplers, feature spaces and loaders."""
    from snakemake.utils import update_config

    from ndm.pipeline.config import resolve_eval_config, resolve_run_config

    patterns = [_pattern(k) for k in SIZE_KEYS]
    for key, value in _leaves(overrides).items():
        if key in MACHINE_KEYS:
            assert value == MACHINE_KEYS[key], (key, value)
            continue
        assert any(p.match(key) for p in patterns), f"{key} is not a size key; allowed: {SIZE_KEYS}"
    merged = json.loads(json.dumps(PAPER))
    update_config(merged, json.loads(json.dumps(overrides)))
    for d in PAPER["datasets"]:
        for v in VARIANTS:
            ours, paper = resolve_run_config(merged, d, v, 0), resolve_run_config(PAPER, d, v, 0)
            assert ours.model == paper.model, (d, v)  # network, schedule, parameterization, F
            assert ours.data.name == paper.data.name and ours.train.lr == paper.train.lr
        ev, ev_paper = resolve_eval_config(merged, d), resolve_eval_config(PAPER, d)
        assert ev.samplers == ev_paper.samplers and ev.fid.features == ev_paper.fid.features, d
        assert ev.fid.inception_weights == ev_paper.fid.inception_weights and ev.ode.method == ev_paper.ode.method


def write_paper_data(root: Path) -> None:
    """A few images per dataset in the on-disk formats of the real files (tests/test_data.py)."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    for prefix, n in (("train", 24), ("t10k", 8)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    _write_cifar(root, per_batch=4, n_test=8)
    _write_imagenet(root, 32, per_batch=2, n_val=8)
    _write_imagenet(root, 64, per_batch=2, n_val=8)


def inception_weights_present() -> tuple[bool, str]:
    """Whether the jobs would find the paper's Inception weights, and if not the searched places."""
    from ndm.metrics import InceptionWeightsNotFound, find_inception_weights

    configured = PAPER["defaults"]["eval"]["fid"]["inception_weights"]
    try:  # the jobs look at the configured path (relative to the working directory) only
        find_inception_weights(REPO / configured)
        return True, ""
    except InceptionWeightsNotFound as exc:
        return False, str(exc)


def cluster_args(partition: str) -> list[str]:
    """The one-node cluster's settings, as in tests/test_slurm_pipeline.py."""
    return [
        "--jobs", "4",
        "--latency-wait", "10",
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
        "--slurm-keep-successful-logs",
        "--default-resources", f"slurm_partition={partition}",
    ]


def job_counts(out: str) -> dict[str, int]:
    """The first "Job stats" table of a Snakemake run or dry run (rule -> count), without `all`."""
    counts: dict[str, int] = {}
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    for line in lines[start + 3:]:  # after the header and the dashes
        row = line.split()
        if len(row) != 2 or not row[1].isdigit() or row[0] == "total":
            break
        counts[row[0]] = int(row[1])
    counts.pop("all", None)
    return counts


SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*?slurm_logs/rule_([^/]+)/")


def submissions(out: str) -> list[tuple[str, str]]:
    """(SLURM job id, rule) of every submission the executor logged."""
    return [(m.group(1), m.group(2)) for m in SUBMITTED.finditer(out)]


def _logs_with(paths: list[Path], pattern: str) -> str:
    bad = [p for p in paths if re.search(pattern, p.read_text(errors="replace"))]
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-2500:]}" for p in bad[:6])


# Not in the default suite: 10 minutes on 2 idle cores (ddpm, 596 s, 67 SLURM jobs, 2026-12-02),
# 22 minutes when paper.yaml's bf16 ran on the CPU (1316 s, 2026-12-08; the test now sets fp32 as
# a machine key), would take the CI run past its 40-minute budget on the CI machine
# (docs/performance.md, The test suite); .ci/run sets NDM_PAPER_TEST=1. Issue #15 tracks it.
@pytest.mark.skipif(os.environ.get("NDM_PAPER_TEST", "") in ("", "0"),
                    reason="the paper DAG through SLURM takes 10 min on 2 cores (ddpm): set NDM_PAPER_TEST=1 to run it (issue #15)")
def test_paper_dag_through_slurm(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = workdir_copy(tmp_path / "w")
    data_root = tmp_path / "data"
    write_paper_data(data_root)
    overrides = size_overrides()
    assert_sizes_only(overrides)
    (work / "ci_sizes.yaml").write_text(yaml.safe_dump(overrides, sort_keys=False))
    weights, why = inception_weights_present()
    base = ["all", "--profile", "profiles/slurm", "--configfile", "configs/paper.yaml"]
    config = ["--config", f"data_root={data_root}", f"variants=[{','.join(VARIANTS)}]"]

    # The rules of the paper DAG, from dry runs: at the paper's sizes and at ours (the same rules).
    dry_paper = snakemake(["-n", *base, *config], cwd=work, timeout=900)
    assert dry_paper.returncode == 0, (dry_paper.stdout + dry_paper.stderr)[-3000:]
    dry = snakemake(["-n", *base, "ci_sizes.yaml", *config], cwd=work, timeout=900)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    rules, planned = set(job_counts(dry_paper.stdout + dry_paper.stderr)), job_counts(dry.stdout + dry.stderr)
    assert set(planned) == rules, (sorted(rules), planned)
    assert {"train", "sample_grid", "evaluate_samples", "reference_stats", "feature_classifier", "report"} <= rules
    assert planned["train"] == len(PAPER["datasets"]) * len(VARIANTS)

    t0 = time.monotonic()
    proc = snakemake([*base, "ci_sizes.yaml", *config, *cluster_args(slurm_cluster.partition)], cwd=work, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    (tmp_path / "snakemake.log").write_text(out)
    results = work / PAPER["results"]
    logs = sorted((results / "logs").rglob("*.log"))
    submitted = submissions(out)
    ran = {rule for _, rule in submitted}
    print(f"paper DAG through SLURM: {elapsed:.0f} s, {len(submitted)} SLURM jobs, snakemake exit {proc.returncode}")

    assert proc.returncode == 0, f"{out[-6000:]}\n{_logs_with(logs, r'Error|Traceback')}"
    missing = sorted(rules - ran)
    assert not missing, f"rules of the paper DAG that did not run as SLURM jobs: {missing}\n{out[-4000:]}\n{_logs_with(logs, 'Error|error|Traceback')}"
    assert sum(rule == "train" for _, rule in submitted) == len(PAPER["datasets"]) * len(VARIANTS)

    for d in PAPER["datasets"]:
        assert json.loads((results / d / "data.json").read_text())["n_train"] > 0
        for v in VARIANTS:
            run = results / d / v / "seed0"
            summary = json.loads((run / "train_summary.json").read_text())
            assert summary["steps"] == 2 and summary["device"] == "cpu" and summary["provenance"]["slurm_job_id"]
            # data parallel: rank 0 records the size of the process group it trained in
            assert summary["processes"] == (DDP_PROCESSES if d == DDP_DATASET else 1), (d, v, summary)
            lik = json.loads((run / "likelihood.json").read_text())
            assert np.isfinite(lik["nelbo_continuous"]["bpd"]) and set(lik["nelbo_discrete"]) == {"10"}
            for sampler in PAPER["defaults"]["eval"]["samplers"]:
                if SHARDS[d] > 1:
                    shards = sorted((run / "samples" / sampler).glob("shard*/manifest.json"))
                    assert len(shards) == SHARDS[d], (d, v, sampler)
                    assert sum(json.loads(p.read_text())["n_samples"] for p in shards) == 2
                if weights or SHARDS[d] == 1:
                    assert json.loads((run / "samples" / sampler / "manifest.json").read_text())["n_samples"] == 2
    # The DDP train jobs were launched through torchrun with 2 processes (the rule's shell command).
    job_logs = "\n".join(p.read_text(errors="replace") for p in (work / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    launches = re.findall(r"torch\.distributed\.run --standalone --nproc_per_node (\d+) -m ndm train .*?--dataset (\w+)", out + job_logs)
    assert {d for _, d in launches} == {DDP_DATASET} and {int(n) for n, _ in launches} == {DDP_PROCESSES}, launches

    reports = work / PAPER["reports"]
    readme = (reports / "README.md").read_text()
    assert readme.startswith("#")
    names = {"inception": "fid_inception_tf", "clean": "fid_clean", "classifier": "fd_classifier"}
    for d in PAPER["datasets"]:
        fid = json.loads((results / d / VARIANTS[0] / "seed0" / "fid" / "ancestral.json").read_text())
        computed = set().union(*(r["metrics"] for r in fid["results"]))
        inception = [f for f in _features(d) if f in ("inception", "clean")]
        if weights:
            assert {names[f] for f in _features(d)} <= computed, d
        else:  # skipped with the reason, never faked: no Inception metric, the classifier's computed
            assert not computed & {names[f] for f in inception}, (d, computed)
            assert {names[f] for f in _features(d) if f not in inception} <= computed, d
            for f in inception:
                assert "Inception weights not found; searched:" in fid["skipped"][f], fid.get("skipped")
                assert f"- {d}, {f} feature space: not computed. Inception weights not found" in readme
    if not weights:
        print(f"Inception weights absent ({why}): the Inception distances are recorded as skipped")


def _features(dataset: str) -> list[str]:
    from ndm.pipeline.config import resolve_eval_config

    return list(resolve_eval_config(PAPER, dataset).fid.features)


# ---------------------------------------------------------------------------------------------
# One row of configs/reproduce.yaml through SLURM at reduced size (issue 29)
# ---------------------------------------------------------------------------------------------

REPRODUCE = yaml.safe_load((REPO / "configs/reproduce.yaml").read_text())
REPRODUCE_ROW = os.environ.get("NDM_REPRODUCE_ROW", "vdm-cifar10")


def reproduce_row_config(row: str) -> dict:
    """configs/reproduce.yaml with only `row` (the row's section unchanged: its network, recipe,
    variant and published_networks), and the sizes of the paper test (train 2 steps, 2 examples,
    2 samples at 2 steps) plus the machine keys: CPU, the CIFAR-10 files written here, no
    Inception weights."""
    config = json.loads(json.dumps(REPRODUCE))
    config["datasets"] = {row: config["datasets"][row]}
    return config


def reproduce_sizes(row: str) -> dict:
    one = {"threads": 1, "mem_mb": 6000, "runtime": 30, "gpu": 0}
    return {
        "seeds": [0],
        "defaults": {
            "train": {"steps": 2, "batch_size": 2, "log_every": 1, "device": "cpu", "precision": "fp32"},
            "eval": {"precision": "fp32", "n_examples": 2, "nelbo_time_samples": 1, "nelbo_steps": [10], "nelbo_step_samples": 1, "sample_steps": [2],
                     "n_samples": 2, "batch_size": 2, "sample_shards": 1, "paper_setting": {"steps": 2}, "fid": {"if_weights_missing": "skip"}},
            "resources": {stage: dict(one) for stage in ("train", "evaluate", "sample", "small")},
        },
        "datasets": {row: {"train": {"steps": 2, "batch_size": 2}, "eval": {"n_samples": 2, "sample_shards": 1, "batch_size": 2},
                           "resources": {"train": dict(one)}, "data": {"options": {"verify_checksums": False}}}},
    }  # fmt: skip


# Its own switch, not set by .ci/run: with the paper DAG the CI run would pass 40 minutes.
@pytest.mark.skipif(os.environ.get("NDM_REPRODUCE_TEST", "") in ("", "0"),
                    reason="a reproduce.yaml row (VDM's 30.6M ResNet on CPU) through SLURM takes minutes: set NDM_REPRODUCE_TEST=1 to run it (issue #29)")
def test_reproduce_row_through_slurm(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`snakemake all --profile profiles/slurm` on one row of configs/reproduce.yaml at reduced
    size: every rule of the row runs as a SLURM job, the row's own network and variant train
    (only that variant), and the report joins the row's published number by data name."""
    from ndm.pipeline.config import resolve_run_config

    row = REPRODUCE_ROW
    work = workdir_copy(tmp_path / "w")
    data_root = tmp_path / "data"
    _write_cifar(data_root, per_batch=4, n_test=8)
    config, sizes = reproduce_row_config(row), reproduce_sizes(row)
    (work / "configs" / "reproduce_row.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (work / "ci_sizes.yaml").write_text(yaml.safe_dump(sizes, sort_keys=False))
    from snakemake.utils import update_config

    merged = json.loads(json.dumps(config))
    update_config(merged, json.loads(json.dumps(sizes)))
    variant = REPRODUCE["datasets"][row]["variants"][0]
    assert resolve_run_config(merged, row, variant, 0).model == resolve_run_config(REPRODUCE, row, variant, 0).model  # the row's network, unshrunk

    t0 = time.monotonic()
    args = ["all", "--profile", "profiles/slurm", "--configfile", "configs/reproduce_row.yaml", "ci_sizes.yaml", "--config", f"data_root={data_root}"]
    proc = snakemake([*args, *cluster_args(slurm_cluster.partition)], cwd=work, timeout=RUN_TIMEOUT_S)
    out = proc.stdout + proc.stderr
    results = work / REPRODUCE["results"]
    logs = sorted((results / "logs").rglob("*.log"))
    assert proc.returncode == 0, f"{out[-6000:]}\n{_logs_with(logs, r'Error|Traceback')}"
    submitted = submissions(out)
    print(f"reproduce row {row} through SLURM: {time.monotonic() - t0:.0f} s, {len(submitted)} SLURM jobs")
    assert {"train", "evaluate_likelihood", "sample_grid", "report"} <= {rule for _, rule in submitted}
    runs = sorted(p.relative_to(results).as_posix() for p in results.glob(f"{row}/*/seed0/train_summary.json"))
    assert runs == [f"{row}/{variant}/seed0/train_summary.json"]  # only the row's own variant
    summary = json.loads((results / row / variant / "seed0" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["provenance"]["slurm_job_id"]
    lik = json.loads((results / row / variant / "seed0" / "likelihood.json").read_text())
    assert np.isfinite(lik["nelbo_continuous"]["bpd"])
    likelihood = (work / REPRODUCE["reports"] / "tables" / "likelihood.csv").read_text()
    assert row in likelihood and "published" in likelihood.splitlines()[0]


# ---------------------------------------------------------------------------------------------
# A 2-process SLURM training job stopped by a signal resumes from its checkpoint
# ---------------------------------------------------------------------------------------------

RESUME_STEPS = 300


def resume_config(results: str) -> dict:
    return {
        "experiment": "ndm-test-slurm-resume",
        "results": results,
        "reports": f"{results}/reports",
        "tracking_uri": None,
        "tracking_mode": "deferred",
        "retries": 2,
        "seeds": [0],
        "variants": ["ndm"],
        "defaults": {
            "train": {"steps": RESUME_STEPS, "batch_size": 16, "lr": 1.0e-3, "warmup_steps": 5, "grad_clip": 1.0,
                      "log_every": 1, "checkpoint_every": 25, "time_sampling": "gamma", "device": "cpu"},
            "resources": {
                "train": {"threads": 2, "tasks": 2, "mem_mb": 2000, "runtime": 10},
                "small": {"threads": 1, "mem_mb": 1000, "runtime": 10},
            },
        },
        "datasets": {
            "toy2d": {"data": {"name": "toy2d", "options": {"n_train": 512, "n_test": 64}}, "model": {"network": {"kind": "mlp", "hidden": 32, "depth": 2}}},
        },
    }


def test_two_task_slurm_training_resumes(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from test_distributed import curve, weights

    work = workdir_copy(tmp_path / "w")
    (work / "configs" / "resume.yaml").write_text(yaml.safe_dump(resume_config("results/resume")))
    target = "results/resume/toy2d/ndm/seed0"
    out = work / target
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    log_path = tmp_path / "snakemake.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", f"{target}/train_summary.json", "--profile", "profiles/slurm",
             "--configfile", "configs/resume.yaml", *cluster_args(slurm_cluster.partition)],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        (job_id,) = [j for j, rule in submissions(log_path.read_text()) if rule == "train"]
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)
        assert proc.wait(timeout=600) == 0, log_path.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - t0
    text = log_path.read_text()
    # One SLURM job: the rule's retry reran the stopped command in the same allocation (the
    # jobstep executor inside the job retries it, train.smk); Snakemake deletes the rule's log
    # before each attempt, so the stop shows in the SLURM job's log, not the rule's.
    assert [j for j, rule in submissions(text) if rule == "train"] == [job_id], text[-3000:]
    job_log = "\n".join(p.read_text(errors="replace") for p in (work / ".snakemake" / "slurm_logs" / "rule_train").rglob(f"{job_id}.log"))
    assert "Error in rule train" in job_log and "Trying to restart job" in job_log, job_log[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    stopped_at = summary["resumed_from"]
    assert 0 < stopped_at < RESUME_STEPS, summary  # resumed from the checkpoint, not restarted
    assert summary["processes"] == 2 and summary["steps"] == RESUME_STEPS
    assert summary["provenance"]["slurm_job_id"] == job_id

    # The same config uninterrupted, 2 processes (torchrun here, no SLURM): identical parameters.
    resolved = work / "results/resume/config.resolved.json"
    ref = tmp_path / "reference"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ndm", "train",
         "--config", str(resolved), "--dataset", "toy2d", "--variant", "ndm", "--seed", "0", "--out", str(ref),
         "--threads", "1", "--no-progress", "--no-tracking"],
        cwd=work, env={k: v for k, v in env.items() if not k.startswith("SLURM_")}, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    a, b = weights(ref), weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert curve(out) == curve(ref)
    print(f"2-task SLURM training: stopped at step {stopped_at} of {RESUME_STEPS}, resumed exactly; {elapsed:.0f} s through SLURM")


def test_resolved_json_config_keeps_small_floats(tmp_path: Path) -> None:
    """Jobs read results/<config>/config.resolved.json (json.dumps writes 1.0e-5 as 1e-05, which
    PyYAML reads as a string): paper.yaml's eval.ode.rtol/atol must come back as floats."""
    from ndm.pipeline.config import load_yaml, resolve_eval_config

    path = tmp_path / "config.resolved.json"
    path.write_text(json.dumps(PAPER))
    ode = resolve_eval_config(load_yaml(path), "imagenet64").ode
    assert ode.rtol == ode.atol == 1e-5 and isinstance(ode.atol, float)
