"""The paper DAG (configs/paper.yaml) through the SLURM profile on the local one-node cluster
(issue 15, item 4: the paper path in CI).

The run is `snakemake --profile profiles/slurm all --configfile configs/paper.yaml` on the
cluster that the `slurm_cluster` fixture starts (tests/slurm_fixtures.py), with the same
one-node-cluster settings as the smoke SLURM test (partition, squeue status, fast polling) and
`--config` overrides of sizes only: train steps and batch sizes, n_examples, n_samples, sample
step lists, sample shards, the likelihood's sample counts, classifier steps and the per-rule
resources. The architectures, samplers, schedules, data loaders and variant settings are the
paper's. The data are small files this test writes in the formats the loaders read (MNIST idx
files, CIFAR-10's pickled python batches, the downsampled-ImageNet npz batches), with the writers
of tests/test_data.py.

What else the run has to change, and why:
- CPU only: `defaults.train.device: cpu` (paper: cuda) and `gpu: 0` in every resources stage. The
  rules' CPU form of data-parallel training is `resources.train.tasks: N` (workflow/rules/
  train.smk): ImageNet 32 and 64 (paper: gpu 4 and 8, DDP) train as 2 processes through
  torchrun with gloo, a global batch of 2.
- CIFAR-10 files written here are not the official ones: `data.options.verify_checksums: false`
  (the loader's own switch for such files, ndm/pipeline/datasets_files.py).
- Inception FID needs the real weights. Where they are absent (CI) the Inception and clean-fid
  feature spaces are dropped and every dataset is scored with the classifier Frechet distance
  (docs/fid.md: the feature space of an image set without Inception weights);
  test_paper_inception_fid then skips and says so. No weights are faked.
- Variants: `variants` is one global list (no per-dataset lists), and each variant adds a model on
  every dataset, ImageNet 64's U-Net included, so the run trains one variant. Every rule of the
  paper DAG still runs: the test compares the rules of the real run with those of the
  unmodified paper DAG's dry run.
- Sample shards: CIFAR-10 keeps the paper's 2 (rule sample_shard), the others run 1 shard
  (rule sample_grid on MNIST as in the paper; ImageNet 32 and 64 would add 8 jobs per extra shard).
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_data import _write_cifar, _write_idx, _write_imagenet
from test_pipeline import REPO, snakemake, workdir_copy

pytestmark = pytest.mark.slurm

PAPER = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
# One variant: the cheapest (x_hat only, no F network); see the module docstring.
VARIANTS = ["ddpm"]
# Data-parallel datasets of the paper config (resources.train.gpu > 1) train as this many CPU processes.
DDP_PROCESSES = 2
DDP_DATASETS = [d for d, s in PAPER["datasets"].items() if int(((s.get("resources") or {}).get("train") or {}).get("gpu", 1)) > 1]
SHARDS = {"mnist": 1, "cifar10": 2, "imagenet32": 1, "imagenet64": 1}
RUN_TIMEOUT_S = 1800


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


def inception_weights() -> tuple[Path | None, str]:
    """The Inception weights the paper's FID needs, or None and why they are absent."""
    from ndm.metrics import InceptionWeightsNotFound, find_inception_weights

    configured = REPO / PAPER["defaults"]["eval"]["fid"]["inception_weights"]
    if configured.is_file():
        return configured.resolve(), ""
    try:  # $NDM_INCEPTION_WEIGHTS, then torch hub's checkpoint directory
        return find_inception_weights(None).resolve(), ""
    except InceptionWeightsNotFound as exc:
        return None, f"not at {PAPER['defaults']['eval']['fid']['inception_weights']} and {exc}"


def paper_overrides(data_root: Path, weights: Path | None) -> dict:
    """The --config overrides: sizes and resources only (module docstring)."""
    small = {"threads": 1, "mem_mb": 3000, "runtime": 20, "gpu": 0}
    fid: dict = {"classifier_steps": 5}
    if weights is None:
        fid["features"] = ["classifier"]
    else:
        fid["inception_weights"] = str(weights)
    datasets: dict = {}
    for d, section in PAPER["datasets"].items():
        eval_: dict = {"sample_shards": SHARDS[d], "batch_size": 2, "fid": copy.deepcopy(fid)}
        # The ODE likelihood (dopri5 at rtol 1e-5, a Hutchinson VJP per evaluation) on MNIST only:
        # on the 3-channel U-Nets it costs minutes per example on a CPU.
        eval_["ode"] = {"n_examples": 2 if d == "mnist" else 0}
        datasets[d] = {"train": {"steps": 2, "batch_size": 2}, "eval": eval_}
        if d in DDP_DATASETS:
            datasets[d]["resources"] = {"train": {**small, "threads": DDP_PROCESSES, "mem_mb": 6000, "tasks": DDP_PROCESSES}}
        if section["data"]["name"] == "cifar10":
            datasets[d]["data"] = {"options": {"verify_checksums": False}}
    return {
        "data_root": str(data_root),
        "seeds": [0],
        "variants": VARIANTS,
        "defaults": {
            "train": {"device": "cpu", "log_every": 1, "checkpoint_every": 2},
            "eval": {
                "n_examples": 2,
                "nelbo_time_samples": 2,
                "nelbo_step_samples": 2,
                "sample_steps": [2],
                "n_samples": 2,
                "batch_size": 2,
                "paper_setting": {"steps": 2},
                "fid": copy.deepcopy(fid),
            },
            "resources": {stage: dict(small) for stage in ("train", "evaluate", "sample", "small")},
        },
        "datasets": datasets,
    }


def config_args(overrides: dict) -> list[str]:
    """`--config key=<YAML flow>` per top-level key (the Snakefile merges nested mappings)."""
    def flow(v: object) -> str:
        return v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()

    return ["--config", *(f"{k}={flow(v)}" for k, v in overrides.items())]


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
    """The job-count table of a Snakemake run or dry run (rule -> count)."""
    rows = [line.split() for line in out.splitlines()]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit() and r[0] != "total"}


def submitted_rules(out: str) -> dict[str, int]:
    """SLURM submissions per rule, from the plugin's 'submitted with SLURM jobid ... rule_<rule>/' lines."""
    counts: dict[str, int] = {}
    for line in out.splitlines():
        m = re.search(r"submitted with SLURM jobid.*?slurm_logs/rule_(\w+)/", line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def failed_job_logs(work: Path, results: Path) -> str:
    logs = sorted((results / "logs").rglob("*.log")) + sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    bad = [p for p in logs if re.search(r"Error|Traceback|FAILED", p.read_text(errors="replace"))]
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-2500:]}" for p in bad[:6])


@pytest.fixture(scope="module")
def paper_run(slurm_cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("paper")
    work = workdir_copy(tmp / "w")
    data_root = tmp / "data"
    write_paper_data(data_root)
    weights, why = inception_weights()
    profile = ["--profile", "profiles/slurm", "--configfile", "configs/paper.yaml"]
    # The unmodified paper DAG (sizes and all): the rules the small run must run.
    dry = snakemake(["-n", "all", *profile, "--config", f"data_root={data_root}"], cwd=work, timeout=600)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    paper_rules = set(job_counts(dry.stdout + dry.stderr)) - {"all"}
    overrides = paper_overrides(data_root, weights)
    t0 = time.monotonic()
    proc = snakemake(["all", *profile, *config_args(overrides), *cluster_args(slurm_cluster.partition)], cwd=work, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    results = work / PAPER["results"]
    if proc.returncode != 0:
        pytest.fail(f"paper DAG through SLURM failed after {elapsed:.0f} s:\n{out[-6000:]}\n{failed_job_logs(work, results)}")
    print(f"paper DAG through SLURM: {elapsed:.0f} s, {sum(submitted_rules(out).values())} SLURM jobs")
    return {"work": work, "out": out, "results": results, "reports": work / PAPER["reports"], "paper_rules": paper_rules,
            "overrides": overrides, "weights": weights, "why": why, "elapsed": elapsed}


def test_paper_dag_runs_every_rule_through_slurm(paper_run) -> None:  # type: ignore[no-untyped-def]
    out, results = paper_run["out"], paper_run["results"]
    submitted = submitted_rules(out)
    assert {"train", "sample_grid", "sample_shard", "report", "claims"} <= paper_run["paper_rules"]
    missing = sorted(paper_run["paper_rules"] - set(submitted))
    assert not missing, f"rules of the paper DAG that did not run as SLURM jobs: {missing}; ran: {submitted}"
    n_models = len(PAPER["datasets"]) * len(VARIANTS)
    assert submitted["train"] == n_models
    for d in PAPER["datasets"]:
        data = json.loads((results / d / "data.json").read_text())
        assert data["n_train"] > 0 and data["n_test"] > 0
        for v in VARIANTS:
            run = results / d / v / "seed0"
            summary = json.loads((run / "train_summary.json").read_text())
            assert summary["steps"] == 2 and summary["device"] == "cpu"
            lik = json.loads((run / "likelihood.json").read_text())
            assert lik["nelbo_continuous"]["bpd"] == lik["nelbo_continuous"]["bpd"]
            assert ("bpd" in lik["ode_nll"]) == (d == "mnist"), lik["ode_nll"]
            for sampler in PAPER["defaults"]["eval"]["samplers"]:
                fid = json.loads((run / "fid" / f"{sampler}.json").read_text())
                assert fid["results"] and all(r["metrics"] for r in fid["results"])
                manifest = json.loads((run / "samples" / sampler / "manifest.json").read_text())
                assert manifest["n_samples"] == 2
                if SHARDS[d] > 1:
                    assert len(list((run / "samples" / sampler).glob("shard*/manifest.json"))) == SHARDS[d]
    # Data-parallel training: the ImageNet train jobs ran torchrun over DDP_PROCESSES processes.
    assert DDP_DATASETS == ["imagenet32", "imagenet64"]
    train_logs = "\n".join(p.read_text(errors="replace") for p in (paper_run["work"] / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    launches = re.findall(r"torch\.distributed\.run --standalone --nproc_per_node (\d+) -m ndm train .*?--dataset (\w+)", out + train_logs)
    assert {d for n, d in launches if int(n) == DDP_PROCESSES} == set(DDP_DATASETS), launches
    assert not any(d not in DDP_DATASETS for _, d in launches)


def test_paper_reports_compile(paper_run) -> None:  # type: ignore[no-untyped-def]
    from ndm.report import TABLES

    reports = paper_run["reports"]
    readme = (reports / "README.md").read_text()
    assert readme.startswith("#")
    for table in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (reports / "tables" / f"{table}.{ext}").exists(), f"tables/{table}.{ext}"
    likelihood = (reports / "tables" / "likelihood.csv").read_text()
    for d in PAPER["datasets"]:
        assert d in likelihood
    assert (reports / "figures" / "fid_vs_nfe.png").stat().st_size > 1000


def test_paper_inception_fid(paper_run) -> None:  # type: ignore[no-untyped-def]
    """With the Inception weights present the run kept the paper's feature spaces."""
    if paper_run["weights"] is None:
        pytest.skip(f"Inception FID skipped: no Inception weights ({paper_run['why']}); the paper DAG ran with the classifier FD")
    results = paper_run["results"]
    for d, section in PAPER["datasets"].items():
        wanted = ((section.get("eval") or {}).get("fid") or {}).get("features") or PAPER["defaults"]["eval"]["fid"]["features"]
        names = {"inception": "fid_inception_tf", "clean": "fid_clean", "classifier": "fd_classifier"}
        fid = json.loads((results / d / VARIANTS[0] / "seed0" / "fid" / "ancestral.json").read_text())
        got = set().union(*(r["metrics"] for r in fid["results"]))
        assert {names[f] for f in wanted} <= got, (d, got)
