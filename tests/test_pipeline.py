"""The Snakemake pipeline with real Snakemake (issue 5 acceptance).

The smoke config runs end to end once per test session in a temporary working directory;
several tests read its outputs and its MLflow store. Dry runs check the paper config's DAG
through the SLURM profile and that a wrong config fails at DAG build time naming the key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ndm.pipeline.config import run_seeds

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
DEFERRED = ["--config", "tracking_mode=deferred"]


def snakemake(args: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NDM_TEST_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the `ndm` console script
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def workdir_copy(tmp: Path) -> Path:
    """A working directory holding the workflow the way a clone does (Snakefile, workflow, configs, profiles)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "configs", "profiles", "environment.yml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    (tmp / "slurm").symlink_to("profiles/slurm")
    return tmp


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    work = workdir_copy(tmp_path_factory.mktemp("smoke"))
    # Deferred tracking here (jobs journal, sync_tracking pushes at the end); the SLURM smoke
    # test runs the same DAG with live tracking (tests/test_slurm_pipeline.py).
    proc = snakemake(["all", "--configfile", "configs/smoke.yaml", "--cores", "2", *DEFERRED], cwd=work)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "results/smoke/logs").rglob("*.log")) if "Error" in p.read_text())
        pytest.fail(f"smoke pipeline failed:\n{proc.stderr[-6000:]}\n{logs[-6000:]}")
    return work


def test_smoke_pipeline_outputs(smoke_run):
    config = yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())
    results = smoke_run / config["results"]
    for d in config["datasets"]:
        data = json.loads((results / d / "data.json").read_text())
        assert data["n_train"] > 0 and data["n_test"] > 0
        for v in config["variants"]:
            run = results / d / v / "seed0"
            summary = json.loads((run / "train_summary.json").read_text())
            assert summary["steps"] == config["defaults"]["train"]["steps"]
            lik = json.loads((run / "likelihood.json").read_text())
            assert all(k in lik for k in ("nelbo_continuous", "nelbo_discrete", "ode_nll", "provenance"))
            assert set(lik["nelbo_discrete"]) == {str(t) for t in config["defaults"]["eval"]["nelbo_steps"]}
            for est in [lik["nelbo_continuous"], *lik["nelbo_discrete"].values()]:
                assert est["bpd"] == est["bpd"] and est["bpd_stderr"] > 0  # finite, with an error bar
            for sampler in config["defaults"]["eval"]["samplers"]:
                fid = json.loads((run / "fid" / f"{sampler}.json").read_text())
                steps = sorted(r["steps"] for r in fid["results"])
                assert set(config["defaults"]["eval"]["sample_steps"]) <= set(steps)
                for r in fid["results"]:
                    # digits: the FD and the unbiased KID in the classifier's features; toy2d: data-space FD
                    assert set(r["metrics"]) == ({"fd_classifier", "kid_classifier"} if d == "digits" else {"fd_data"})
                    fd_metric = "fd_classifier" if d == "digits" else "fd_data"
                    assert r["metrics"][fd_metric]["value"] >= 0 and r["nfe"] > 0
                    if d == "digits":
                        kid = r["metrics"]["kid_classifier"]
                        assert kid["stderr"] > 0 and kid["n_reference"] > 0 and "floor_mean" in kid
    reports = smoke_run / config["reports"]
    assert (reports / "README.md").read_text().startswith("#")
    assert all((reports / "figures" / f"fid_vs_nfe_{d}.png").stat().st_size > 1000 for d in config["datasets"])


def test_no_shell_directive_is_an_f_string():
    """Snakemake evaluates a rule's shell expression when a job runs, not where the rule is
    defined: an f-string there reads a rule loop's variables (`_d`) at their last value, so a
    rule declared per dataset ran another dataset's command (the dry run, which prints the
    rule-time text, showed the right one). Per-dataset values go through params instead."""
    offenders = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "shell:":
                indent = len(line) - len(line.lstrip())
                for body in lines[i + 1 :]:
                    if body.strip() and len(body) - len(body.lstrip()) <= indent:
                        break
                    if body.lstrip().startswith(("f\"", "f'", "rf\"", "fr\"")):
                        offenders.append(f"{smk.name}: {body.strip()[:80]}")
    assert not offenders, offenders


def generated_rules(text: str) -> list[str]:
    """Rules declared inside a block (a loop or conditional), unnamed (named from a variable in a
    loop), or with an empty-list sentinel."""
    import re

    found = [f"indented: {m.group(0).strip()}" for m in re.finditer(r"^[ \t]+rule\b.*$", text, re.M)]
    found += [f"unnamed: {m.group(0).strip()}" for m in re.finditer(r"^[ \t]*rule\s*:.*$", text, re.M)]
    return found + (["sentinel (none)"] if "(none)" in text else [])


def test_rules_are_static():
    """Every rule is declared once at the top level of its file (issue 27)."""
    loop = 'for _d in DATASETS:\n    rule:\n        name:\n            f"x_{_d}"\n'
    assert len(generated_rules(loop)) == 2 and generated_rules('X = ["(none)"]\nrule a:\n    shell: "x"\n') == ["sentinel (none)"]
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")) + [REPO / "Snakefile"]:
        assert not generated_rules(smk.read_text()), (smk.name, generated_rules(smk.read_text()))


def test_sample_job_names_cover_every_granularity():
    from ndm.pipeline.config import EvalConfig
    from ndm.pipeline.sample_jobs import sample_job, sample_jobs, scored_in_sampling

    def names(**kw):
        return [j.name for j in sample_jobs(EvalConfig(samplers=["ddim", "ode-heun"], **kw))]

    assert names(sample_jobs="per_sampler") == ["ddim", "ode-heun"]
    assert names(sample_jobs="per_sampler", sample_shards=2) == ["ddim.shard0", "ddim.shard1", "ode-heun.shard0", "ode-heun.shard1"]
    assert names(sample_jobs="per_model") == ["all-samplers"]
    assert names(sample_jobs="per_model", sample_shards=3) == ["all-samplers.shard0", "all-samplers.shard1", "all-samplers.shard2"]
    ev = EvalConfig(samplers=["ddim", "ode-heun"], sample_jobs="per_model")
    job = sample_job(ev, "all-samplers")
    assert job.samplers == ("ddim", "ode-heun") and job.scores and scored_in_sampling(ev)
    sharded = EvalConfig(samplers=["ddim"], sample_jobs="per_model", sample_shards=2)
    assert sample_job(sharded, "all-samplers.shard1").shard == 1 and not scored_in_sampling(sharded)
    with pytest.raises(ValueError, match=r"no sampling job 'ddim' .* the jobs are \['all-samplers'\]"):
        sample_job(ev, "ddim")


def test_sampling_job_scores_as_the_evaluate_samples_command(smoke_run, tmp_path):
    """toy2d's sample_jobs: per_model: its sample_grid job wrote fid/<sampler>.json itself (and
    listed them in its index); the standalone `ndm evaluate-samples` on the same samples gives
    the same distances."""
    config = yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())
    assert config["datasets"]["toy2d"]["eval"]["sample_jobs"] == "per_model"
    run = Path(config["results"]) / "toy2d" / "ndm" / "seed0"
    samplers = config["defaults"]["eval"]["samplers"]
    assert not list((smoke_run / config["results"] / "logs").glob("evaluate_samples/toy2d_*"))
    index = json.loads((smoke_run / run / "jobs" / "sample-all-samplers.json").read_text())
    assert index["fid"] == [f"{run}/fid/{s}.json" for s in samplers]
    assert index["manifests"] == [f"{run}/samples/{s}/manifest.json" for s in samplers]
    outs = [str(tmp_path / f"{s}.json") for s in samplers]
    proc = subprocess.run(
        [sys.executable, "-m", "ndm", "evaluate-samples", "--config", f"{config['results']}/config.resolved.json", "--dataset", "toy2d",
         "--manifest", *[f"{run}/samples/{s}/manifest.json" for s in samplers], "--ref", f"data={config['results']}/toy2d/ref_data.npz",
         "--out", *outs, "--no-tracking"],
        cwd=smoke_run, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for s, out in zip(samplers, outs):
        folded = json.loads((smoke_run / run / "fid" / f"{s}.json").read_text())["results"]
        alone = json.loads(Path(out).read_text())["results"]
        assert [r["metrics"] for r in folded] == [r["metrics"] for r in alone] and len(folded) == len(config["defaults"]["eval"]["sample_steps"])


def test_smoke_pipeline_mlflow_store(smoke_run):
    """tracking_mode deferred: no job wrote to MLflow itself, the one sync_tracking job pushed
    every journal, and the store holds the same runs as with live tracking."""
    config = yaml.safe_load((smoke_run / "configs/smoke.yaml").read_text())
    results = smoke_run / config["results"]
    journals = sorted(results.rglob("*mlflow_journal.jsonl"))
    assert journals and all(not tr_summary(j)["synced"] and tr_summary(j)["run_id"] is None for j in journals)
    pushed = json.loads((results / "tracking_sync.json").read_text())["runs"]
    assert sorted(pushed) == sorted(str(j.relative_to(smoke_run)) for j in journals)
    assert_mlflow_runs(smoke_run, config)


def tr_summary(journal: Path) -> dict:
    from ndm.pipeline.tracking import journal_summary

    return journal_summary(journal)


def assert_mlflow_runs(work: Path, config: dict) -> None:
    """One MLflow run per train and evaluate job, each with metrics and the required tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / config['results'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name(config["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    n_models = len(config["datasets"]) * len(config["variants"]) * len(config["seeds"])
    n_samplers = len(config["defaults"]["eval"]["samplers"])
    kinds = Counter(r.data.tags["kind"].split("/")[0] for r in runs)
    assert kinds == {"train": n_models, "evaluate-likelihood": n_models, "evaluate-samples": n_models * n_samplers}
    for r in runs:
        assert r.data.metrics, f"run {r.info.run_name} has no metrics"
        for tag in ("dataset", "variant", "seed", "git_commit", "config_hash"):
            assert tag in r.data.tags, f"run {r.info.run_name} lacks tag {tag}"
        assert r.info.status == "FINISHED"
    train_runs = [r for r in runs if r.data.tags["kind"] == "train"]
    history = client.get_metric_history(train_runs[0].info.run_id, "loss_bpd")
    assert len(history) >= 2  # a training curve, not one number


def test_smoke_pipeline_is_complete_and_idempotent(smoke_run):
    """A second invocation finds nothing to do (no output looks stale)."""
    proc = snakemake(["-n", "all", "--configfile", "configs/smoke.yaml", *DEFERRED], cwd=smoke_run, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_paper_dry_run_through_slurm_profile(tmp_path):
    """One training job per (dataset, variant, seed) of the paper config, and the evaluations behind
    them, through profiles/slurm (the README's `--profile slurm`, the symlink, is
    tests/test_plan.py's acceptance dry run)."""
    profile = "profiles/slurm"
    work = workdir_copy(tmp_path / "w")
    data_root = tmp_path / "data"
    data_root.mkdir()
    proc = snakemake(["-n", "--profile", profile, "all", "--config", f"data_root={data_root}"], cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    n_models = len(paper["datasets"]) * len(paper["variants"]) * len(paper["seeds"])
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["train"] == n_models
    assert counts["evaluate_likelihood"] == n_models
    # eval.sample_shards: K sample jobs per (model, sampler) where K > 1 (tests/test_sharding.py).
    shards = {d: ((paper["datasets"][d].get("eval") or {}).get("sample_shards") or paper["defaults"]["eval"].get("sample_shards", 1)) for d in paper["datasets"]}
    per_dataset = len(paper["variants"]) * len(paper["seeds"]) * len(paper["defaults"]["eval"]["samplers"])
    assert counts["sample_grid"] == per_dataset * sum(shards.values())
    for d in paper["datasets"]:
        for v in paper["variants"]:
            for s in paper["seeds"]:
                assert f"results/paper/{d}/{v}/seed{s}/model.pt" in out


def test_default_dry_run_samples_once_per_model(tmp_path):
    """configs/default.yaml sets eval.sample_jobs: per_model: one job per model samples every
    sampler and scores the samples (no separate Frechet-distance job), every variant on every
    dataset."""
    work = workdir_copy(tmp_path / "w")
    proc = snakemake(["-n", "-p", "all"], cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    default = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    assert default["defaults"]["eval"]["sample_jobs"] == "per_model"
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    # A dataset's own seeds (datasets.<name>.seeds), for its multi_seed_variants only.
    n_models = {d: sum(len(run_seeds(default, d, v)) for v in default["variants"]) for d in default["datasets"]}
    assert counts["train"] == sum(n_models.values())
    assert counts["sample_grid"] == sum(n_models.values()) and "evaluate_samples" not in counts
    assert "--sampler ancestral ddim ode-heun sde-em" in out
    assert "--dataset digits --fid-out results/default/digits/ddpm/seed0/fid/ancestral.json" in out
    assert ("--ref classifier=results/default/digits/ref_classifier.npz inception=results/default/digits/ref_inception.npz "
            "--classifier results/default/digits/classifier.pt") in out
    assert default["tracking_mode"] == "deferred" and counts["sync_tracking"] == 1  # one MLflow push at the end
    assert "tracking-sync --under results/default --summary" in out


BAD_CONFIGS = [
    ("unknown variant", lambda c: c["variants"].append("ndm-typo"), "ndm-typo"),
    ("negative step count", lambda c: c["datasets"]["digits"].setdefault("eval", {}).update(sample_steps=[-5, 10]), "sample_steps"),
    ("unknown key", lambda c: c["datasets"]["digits"]["train"].update(stepz=10), "stepz"),
    ("bad network key", lambda c: c["datasets"]["digits"]["model"]["network"].update(chanels=4), "chanels"),
    ("missing dataset root", lambda c: c["datasets"].update(cifar10={"data": {"name": "cifar10", "root": "/nonexistent/cifar"}}), "data.root"),
]


@pytest.mark.parametrize("name,mutate,needle", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_wrong_config_fails_at_dag_build_time(tmp_path, name, mutate, needle):
    work = workdir_copy(tmp_path / "w")
    config = yaml.safe_load((work / "configs/default.yaml").read_text())
    config["datasets"]["digits"].setdefault("train", {})
    mutate(config)
    (work / "configs/bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(["-n", "all", "--configfile", "configs/bad.yaml"], cwd=work, timeout=300)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert needle in err, err[-3000:]
    assert not (work / "results/default/digits").exists()  # no job ran


def test_snakemake_lint_is_clean():
    proc = snakemake(["--lint", "--configfile", "configs/smoke.yaml"], cwd=REPO, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Lints for" not in out, out[-3000:]


def test_environment_yml_agrees_with_pyproject():
    """Cluster users' conda environment lists the same dependencies and pins as pyproject.toml."""
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    assert sorted(pip_section) == sorted(deps)
    python = next(item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python"))
    assert python == "python=3.11"
