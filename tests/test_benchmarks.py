"""Every benchmark script runs at its CI size (--ci) and writes JSON with the expected keys.

The scripts run concurrently, one torch thread each, in subprocesses started once for the
module (about 30 s on 2 shared cores); each test then checks one script's output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "train": ["benchmarks/bench_train.py", "--ci"],
    "likelihood": ["benchmarks/bench_likelihood.py", "--ci"],
    "sampling": ["benchmarks/bench_sampling.py", "--ci", "--samplers", "ancestral,ddim,ode-euler"],
    "fid": ["benchmarks/bench_fid.py", "--ci", "--threads", "1"],
    "pipeline": ["benchmarks/bench_pipeline.py", "--ci"],
    "compress": ["benchmarks/bench_compress.py", "--ci"],
    "schedule": ["benchmarks/bench_schedule.py", "--ci"],
    "gpu_check": ["benchmarks/gpu_check.py", "--ci", "--device", "cpu", "--variants", "ddpm", "ndm"],
    "gpu_check_reproduce": ["benchmarks/gpu_check.py", "--ci", "--device", "cpu", "--config", "reproduce"],
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, dict | None]]:
    tmp = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = {}
    for name, argv in SCRIPTS.items():
        out = tmp / f"{name}.json"
        procs[name] = (
            subprocess.Popen([sys.executable, *argv, "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            out,
            time.perf_counter(),
        )
    results = {}
    for name, (proc, out, start) in procs.items():
        stdout, _ = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, None)
        results[name] = (done, json.loads(out.read_text()) if out.exists() else None)
        print(f"{name}: rc {proc.returncode}, {time.perf_counter() - start:.1f} s")
    return results


def _ok(outputs, name: str) -> dict:
    proc, doc = outputs[name]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert doc is not None, proc.stdout[-3000:]
    return doc


def test_bench_train(outputs):
    doc = _ok(outputs, "train")
    assert doc["benchmark"] == "train" and doc["ci"] is True and doc["target_ratio"] == 2.0
    assert set(doc["shapes"]) == {"digits", "cifar10"}
    for shape, res in doc["shapes"].items():
        assert {"event_shape", "batch_size", "rows", "ndm_ddpm_ratio", "ndm_ddpm_flop_ratio"} <= set(res)
        names = {r["row"] for r in res["rows"]}
        assert {"ddpm", "ndm/jvp", "ndm/separable"} <= names
        for r in res["rows"]:
            assert {"step_s_median", "images_per_s", "ratio_to_ddpm", "flops_per_step", "peak_memory_mib", "params_x_hat", "params_F"} <= set(r)
            assert r["step_s_median"] > 0 and r["images_per_s"] > 0
        ddpm = next(r for r in res["rows"] if r["row"] == "ddpm")
        assert ddpm["ratio_to_ddpm"] == 1.0 and ddpm["params_F"] == 0
        ndm = next(r for r in res["rows"] if r["row"] == "ndm/jvp")
        assert ndm["params_F"] == ndm["params_x_hat"]  # an F network of the same size
        # FLOPs are machine independent: the separable F halves the JVP form's extra work
        assert 2.5 < res["ndm_ddpm_flop_ratio"]["separable"] < 3.5 < res["ndm_ddpm_flop_ratio"]["jvp"] < 6.5
        # an F with x_hat's parameters on 2x2 patches: ~1/4 of its FLOPs, under the 2.0 target
        patched = next(r for r in res["rows"] if r["row"] == "ndm/separable-patch2")
        separable = next(r for r in res["rows"] if r["row"] == "ndm/separable")
        assert abs(patched["params_F"] / separable["params_F"] - 1) < 0.1  # first and last conv differ
        assert 1.2 < res["ndm_ddpm_flop_ratio"]["separable-patch2"] < 2.0
    assert set(doc["ndm_ddpm_ratio"]) == {"digits", "cifar10"}
    for shape in ("digits", "cifar10"):
        rec = doc["bf16_vs_fp32"][shape]
        assert {"ddpm", "ndm/jvp", "ndm/separable"} <= set(rec)
        for r in rec.values():
            assert {"loss_bpd_fp32", "bf16_all", "bf16_x_hat"} <= set(r)
            assert {"abs_diff_bpd", "grad_rel_error"} <= set(r["bf16_x_hat"])


def test_bench_likelihood(outputs):
    doc = _ok(outputs, "likelihood")
    assert doc["benchmark"] == "likelihood" and doc["ci"] is True
    rows = doc["rows"]
    assert {(r["shape"], r["estimator"]) for r in rows} >= {("digits", "ode_exact"), ("digits", "ode_hutchinson"), ("cifar10", "ode_hutchinson"), ("cifar10", "nelbo_continuous")}
    for r in rows:
        assert {"row", "seconds_per_image", "nfe_per_image", "ms_per_nfe_per_image", "ratio_to_ddpm"} <= set(r)
        assert r["seconds_per_image"] > 0
    ode = [r for r in rows if r["estimator"].startswith("ode")]
    assert all(r["nfe_per_image"] == 2 * r["steps"] for r in ode)  # Heun: 2 evaluations per step


def test_bench_sampling(outputs):
    doc = _ok(outputs, "sampling")
    assert doc["benchmark"] == "sampling" and doc["ci"] is True and doc["rows"]
    for r in doc["rows"]:
        assert {"model", "variant", "sampler", "steps", "nfe", "nfe_F", "seconds", "samples_per_s", "nfe_per_s", "ms_per_nfe_per_batch"} <= set(r)


def test_bench_fid(outputs):
    doc = _ok(outputs, "fid")
    assert doc["benchmark"] == "fid_feature_extraction" and doc["ci"] is True
    assert set(doc["paths"]) == {"torch-fidelity", "clean-fid"}
    for p in doc["paths"].values():
        assert {"images", "seconds", "images_per_s", "seconds_per_1000_images"} <= set(p)


def test_bench_pipeline(outputs):
    doc = _ok(outputs, "pipeline")
    assert doc["benchmark"] == "pipeline" and doc["ci"] is True
    total = doc["total"]
    assert {"wall_s", "sum_job_wall_s", "sum_cpu_s", "max_rss_mib", "parallel_speedup"} <= set(total)
    assert total["wall_s"] == pytest.approx(42.5) and total["jobs"] == 4 and total["max_rss_mib"] == 620.0
    assert doc["rules"]["train"]["jobs"] == 2 and doc["rules"]["train"]["wall_s"] == pytest.approx(52.5)
    assert doc["rules"]["report"]["source"].startswith("snakemake log")  # no TSV: timed from the log


def test_bench_compress(outputs):
    doc = _ok(outputs, "compress")
    assert doc["benchmark"] == "compress" and doc["ci"] is True
    assert {(r["variant"], r["order"]) for r in doc["rows"]} == {("ddpm", "bitswap"), ("ndm", "posterior")}
    for r in doc["rows"]:
        assert r["roundtrip_exact"] is True
        assert r["encode_images_per_s"] > 0 and r["decode_images_per_s"] > 0


def test_bench_schedule(outputs):
    doc = _ok(outputs, "schedule")
    assert doc["benchmark"] == "schedule" and doc["ci"] is True
    (row,) = doc["rows"]
    assert {"batch", "shared_time_ms", "distinct_times_ms", "invert_gamma_ms", "distinct_over_shared"} <= set(row)
    assert row["shared_time_ms"] > 0 and row["distinct_times_ms"] > 0


def test_gpu_check_on_cpu(outputs):
    """The GPU check's CPU form: the paper's cifar10 run (shrunk U-Net) of each variant trains,
    samples and evaluates in both precisions; the cost ratio to DDPM is measured, not assumed."""
    doc = _ok(outputs, "gpu_check")
    assert doc["benchmark"] == "gpu_check" and doc["ci"] is True and doc["device"] == "cpu"
    assert {(r["variant"], r["precision"]) for r in doc["rows"]} == {(v, p) for v in ("ddpm", "ndm") for p in ("fp32", "bf16")}
    for r in doc["rows"]:
        assert r["steps_timed"] == doc["steps"] and r["train_images_per_s"] > 0 and r["train_flops_per_step"] > 0
        assert r["samples_per_s"] > 0 and r["samples_finite"] and math.isfinite(r["nelbo_bpd"]) and r["nelbo_bpd"] > 0
        assert r["ddpm_over_variant"] > 0
    ndm = next(r for r in doc["rows"] if r["variant"] == "ndm" and r["precision"] == "fp32")
    ddpm = next(r for r in doc["rows"] if r["variant"] == "ddpm" and r["precision"] == "fp32")
    assert ndm["train_flops_per_step"] > 1.5 * ddpm["train_flops_per_step"]  # F's network and its dF/dt
    assert doc["ddp_rows"] == []  # no GPUs here
    assert "of bf16 peak" in outputs["gpu_check"][0].stdout


def test_gpu_check_of_reproduce_rows_on_cpu(outputs):
    """--config reproduce: configs/reproduce.yaml's CIFAR-10 rows (VDM's ResNet, DDPM's U-Net,
    NDM's two U-Nets; shrunk under --ci), each its own variant, in bf16 only; the ndm/ddpm
    ratio and each network's parameter count are in the rows."""
    doc = _ok(outputs, "gpu_check_reproduce")
    assert doc["config"] == "reproduce"
    got = {(r["dataset"], r["variant"], r["network"], r["precision"]) for r in doc["rows"]}
    assert got == {("vdm-cifar10", "vdm", "vdm", "bf16"), ("ddpm-cifar10", "ddpm", "unet", "bf16"), ("ndm-cifar10", "ndm", "unet", "bf16")}
    ndm = next(r for r in doc["rows"] if r["variant"] == "ndm")
    assert ndm["params_F"] == ndm["params_x_hat"] > 0 and ndm["ddpm_over_variant"] > 0 and math.isfinite(ndm["nelbo_bpd"])
