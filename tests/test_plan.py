"""`ndm plan` (issue 15 item 3): GPU-hours from counted FLOPs, and the paper config's full DAG.

The arithmetic is checked on a constructed case (given per-example costs, known step counts);
the counting on a real tiny model against a count on real tensors; the command end to end on a
tiny config; and the acceptance line: the SLURM-profile dry run of configs/paper.yaml plans one
training job per (variant, dataset, seed) for all eight variants.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_config_overrides import job_counts
from test_pipeline import REPO, snakemake, workdir_copy

from ndm import names
from ndm.cli.main import main as ndm_main
from ndm.pipeline.config import resolve_run_config
from ndm.pipeline.plan import ESTIMATOR_STD_EVALS, ModelCosts, count_model_costs, gpu_hours, plan, plan_row

TINY = {
    "seeds": [0, 1],
    "variants": ["ddpm", "ndm"],
    "datasets": {
        "toy2d": {
            "data": {"name": "toy2d", "options": {"n_train": 200, "n_test": 50}},
            "model": {"network": {"kind": "mlp", "hidden": 16, "depth": 1}},
            "train": {"steps": 1000, "batch_size": 32},
            "eval": {"n_examples": 50, "nelbo_time_samples": 4, "nelbo_steps": [10, 100], "nelbo_step_samples": 3,
                     "ode": {"n_examples": 20, "method": "heun", "steps": 5, "probes": 1},
                     "samplers": ["ancestral"], "sample_steps": [2, 5], "paper_setting": {"sampler": "ancestral", "steps": 5},
                     "n_samples": 100, "sample_shards": 4},
        }
    },
}  # fmt: skip


def test_arithmetic_on_a_constructed_case():
    """Given C_fwd = 10, C_xhat = 4 (so C_F = 6): every term by hand."""
    costs = ModelCosts(fwd=10.0, xhat=4.0)
    likelihood = 50 * (4 + 2 * 3 + ESTIMATOR_STD_EVALS) * 10 + 20 * (2 * 5) * (1 + 2 * 1) * 10
    for variant, sample_per_example in [("ddpm", (2 + 5) * 4.0), ("ndm", (2 + 5) * 4.0 + 2 * (2 + 5) * 6.0)]:
        _, model = count_model_costs(resolve_run_config(TINY, "toy2d", variant, 0))
        row = plan_row(TINY, "toy2d", variant, adaptive_nfe=200, costs_model=(costs, model))
        assert row.train_flops == 1000 * 32 * 3 * 10
        # ancestral at 2 and 5 steps: nfe = N (F = identity: no decode); ndm's F twice per step.
        assert row.sample_flops == pytest.approx(100 * sample_per_example)
        assert row.longest_sample_job_flops == pytest.approx(100 * sample_per_example / 4)  # 4 shards
        assert row.likelihood_flops == pytest.approx(likelihood)
        assert row.total_flops == pytest.approx(row.train_flops + row.sample_flops + row.likelihood_flops)
    assert gpu_hours(3.6e15, 1.0) == pytest.approx(1.0)  # 1 TFLOP/s for an hour


def test_a_dataset_s_own_seeds_count_in_its_rows():
    """datasets.<name>.seeds replaces the global list for that dataset's GPU-hours."""
    costs = ModelCosts(fwd=10.0, xhat=4.0)
    _, model = count_model_costs(resolve_run_config(TINY, "toy2d", "ddpm", 0))
    assert plan_row(TINY, "toy2d", "ddpm", adaptive_nfe=200, costs_model=(costs, model)).seeds == 2  # the global [0, 1]
    own = {**TINY, "datasets": {"toy2d": {**TINY["datasets"]["toy2d"], "seeds": [0, 1, 2]}}}
    assert plan_row(own, "toy2d", "ddpm", adaptive_nfe=200, costs_model=(costs, model)).seeds == 3


def test_meta_device_count_equals_a_count_on_real_tensors():
    """The plan counts on the meta device (no weights, no data); the count is the real one."""
    from ndm.estimators.flops import count_flops
    from ndm.model.variants import build_model

    for variant in ("ddpm", "ndm"):
        run = resolve_run_config(TINY, "toy2d", variant, 0)
        costs, _ = count_model_costs(run)
        model = build_model(run.model, (2,), None)
        x, t = torch.randn(2, 2), torch.full((2,), 0.5)
        with torch.no_grad():
            assert costs.xhat == count_flops(lambda: model.net(x, t)) / 2
            assert costs.fwd == count_flops(lambda: model.diffusion_loss(x, t, torch.zeros_like(x))) / 2
        assert (costs.f > 0) == (variant == "ndm")  # a learned F costs; the identity costs nothing
        assert costs.xhat > 0


def test_plan_command_prints_the_table_and_writes_json(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "plan.json"
    assert ndm_main(["plan", "--config", str(cfg), "--tflops", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ASSUMED" in text and "2 TFLOP/s" in text and "| toy2d | ndm | fp32 (2) | 2 |" in text and "**total**" in text
    assert "| toy2d | ndm | " in text.split("# GPU-hours")[0]  # the sizes table comes first
    doc = json.loads(out.read_text())
    assert doc["tflops"] == 2 and [r["variant"] for r in doc["rows"]] == ["ddpm", "ndm"]
    for r in doc["rows"]:
        assert r["gpu_hours_all_seeds"] == pytest.approx(2 * r["total_flops"] / 2e12 / 3600)
    ndm_row, ddpm_row = doc["rows"][1], doc["rows"][0]
    assert ndm_row["train_flops"] > ddpm_row["train_flops"]  # F and its dF/dt cost
    assert ndm_row["params_F"] > 0 and ddpm_row["params_F"] == 0 and ndm_row["params_x_hat"] == ddpm_row["params_x_hat"] > 0


def test_plan_of_reproduce_yaml_prints_sizes_and_hours_at_its_precision(capsys, tmp_path):
    """The acceptance line: `ndm plan --config configs/reproduce.yaml` on a CPU machine without
    data prints, per published row, our and the published parameter counts and the GPU-hours;
    the assumed rate follows train.precision (bf16 there, a third of it in fp32)."""
    import dataclasses

    from ndm.pipeline.plan import ASSUMED_TFLOPS, PlanRow, row_tflops

    out = tmp_path / "plan.json"
    assert ndm_main(["plan", "--config", str(REPO / "configs/reproduce.yaml"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    sizes, hours = text.split("# GPU-hours")
    assert "| vdm-cifar10 | vdm | 30,586,243 | 30,578,179 (vdm-cifar10, counted) | +0.03% |" in sizes
    assert "| ddpm-cifar10 | ddpm | 35,746,307 | 35,700,000 (ddpm-cifar10, published) | +0.13% |" in sizes
    reproduce = yaml.safe_load((REPO / "configs/reproduce.yaml").read_text())
    for d, section in reproduce["datasets"].items():
        assert f"| {d} | {section['variants'][0]} | bf16 (297) | 1 |" in hours, d
    rows = json.loads(out.read_text())["rows"]
    assert [r["dataset"] for r in rows] == list(reproduce["datasets"]) and all(r["tflops"] == ASSUMED_TFLOPS["bf16"] for r in rows)
    assert all(r["params_x_hat"] > 0 and r["train_flops"] > 0 for r in rows)
    row = PlanRow(**{k: rows[0][k] for k in ("dataset", "variant", "seeds", "train_flops", "sample_flops", "likelihood_flops", "longest_sample_job_flops", "precision")})
    assert row_tflops(dataclasses.replace(row, precision="fp32"), None) == ASSUMED_TFLOPS["fp32"] == pytest.approx(ASSUMED_TFLOPS["bf16"] / 3)
    assert row_tflops(row, 50.0) == 50.0


def test_reproduce_slurm_dry_run_plans_every_row(tmp_path: Path):
    """The acceptance line: `snakemake -n --profile slurm all --configfile configs/reproduce.yaml
    --config data_root=<empty dir>` plans one training job per published row, its own variant only."""
    work = workdir_copy(tmp_path / "w")
    data_root = tmp_path / "empty"
    data_root.mkdir()
    proc = snakemake(["-n", "--profile", "slurm", "all", "--configfile", "configs/reproduce.yaml", "--config", f"data_root={data_root}"], cwd=work, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    reproduce = yaml.safe_load((REPO / "configs/reproduce.yaml").read_text())
    assert job_counts(out)["train"] == len(reproduce["datasets"])
    for d, section in reproduce["datasets"].items():
        for v in reproduce["variants"]:
            assert (f"results/reproduce/{d}/{v}/seed0/model.pt" in out) == (v in section["variants"]), (d, v)


def test_plan_of_the_paper_config_has_every_variant():
    """All eight variants on the four paper datasets, each with positive costs (meta-device counts)."""
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    assert paper["variants"] == list(names.VARIANTS)
    assert sorted(paper["datasets"]) == sorted(["mnist", "cifar10", "imagenet32", "imagenet64"])
    rows = plan({**paper, "datasets": {"mnist": paper["datasets"]["mnist"]}})
    assert [r.variant for r in rows] == list(names.VARIANTS)
    assert all(r.train_flops > 0 and r.sample_flops > 0 and r.likelihood_flops > 0 for r in rows)


def test_paper_slurm_dry_run_plans_every_variant(tmp_path: Path):
    """The acceptance line: `snakemake -n --profile slurm all --config data_root=<empty dir>`."""
    work = workdir_copy(tmp_path / "w")
    data_root = tmp_path / "empty"
    data_root.mkdir()
    proc = snakemake(["-n", "--profile", "slurm", "all", "--config", f"data_root={data_root}"], cwd=work, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    counts = job_counts(out)
    assert counts["train"] == len(names.VARIANTS) * len(paper["datasets"]) * len(paper["seeds"])
    for d in paper["datasets"]:
        for v in names.VARIANTS:
            for s in paper["seeds"]:
                assert f"results/paper/{d}/{v}/seed{s}/model.pt" in out
