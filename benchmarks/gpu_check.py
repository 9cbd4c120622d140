"""The GPU check (issue: paper scale on a real cluster): every variant at the CIFAR-10 shape of
configs/paper.yaml, trained a few hundred steps in fp32 and bf16, then sampled and evaluated.

    bash benchmarks/gpu_check.sh                       # one GPU, about 8 minutes on an H100-class card
    bash benchmarks/gpu_check.sh --steps 100           # shorter
    bash benchmarks/gpu_check.sh --config reproduce    # configs/reproduce.yaml's CIFAR-10 rows (VDM's
                                                       # ResNet, DDPM's U-Net, NDM) in bf16
    python benchmarks/gpu_check.py --device cpu --ci   # the CPU form the tests run (tiny U-Net, 2 steps)

Per (variant, precision) it prints: training images/s (after warm-up steps: the real
`ndm.pipeline.train.train`, resumed from its own warm-up checkpoint so that start-up and
autotuning are not timed), the ratio of DDPM's images/s to the variant's (the variant's cost in
DDPM steps), the achieved network TFLOP/s (FLOPs per step counted by torch.utils.flop_counter,
machine independent) and its fraction of the GPU's dense bf16 peak (a table of known cards, or
--peak-tflops), the final training loss, then ancestral samples/s at --sample-steps and the
continuous NELBO (bits/dim, finite) of the trained model on held-out synthetic images. With two
or more GPUs it also trains ddpm and ndm data-parallel on 2 processes (torchrun, NCCL) and
prints their images/s beside one process. The data are synthetic 8-bit images of the CIFAR-10
shape (speed does not depend on their content; no download). JSON in --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; matched
# against torch.cuda.get_device_name by substring, most specific first.
BF16_PEAK_TFLOPS = [
    ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("B200", 2250.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0),
]
CI_NETWORK = {"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}
CI_NETWORK_VDM = {"channels": 16, "num_res_blocks": 1}  # kind vdm has one resolution and no attention list


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--config", choices=["paper", "reproduce"], default="paper",
                   help="paper: every variant at configs/paper.yaml's CIFAR-10 U-Net; reproduce: the CIFAR-10 rows of configs/reproduce.yaml, each its paper's network")  # fmt: skip
    p.add_argument("--steps", type=int, default=200, help="timed training steps per (variant, precision)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before (start-up, cudnn autotune)")
    p.add_argument("--batch-size", type=int, default=128, help="the paper's CIFAR-10 batch")
    p.add_argument("--variants", nargs="+", default=None, help="default: every variant of ndm.names.VARIANTS")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--sample-steps", type=int, default=100)
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--eval-examples", type=int, default=256)
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: from the table of known cards)")
    p.add_argument("--ddp", choices=["auto", "off"], default="auto", help="auto: 2-process DDP rows when >= 2 GPUs")
    p.add_argument("--ci", action="store_true", help="tiny: a small U-Net, 2 steps, 4 samples (CPU tests)")
    p.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/gpu_check.json")
    p.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)  # a DDP rank: variant,precision
    a = p.parse_args(argv)
    if a.config == "reproduce" and "--precisions" not in (argv if argv is not None else sys.argv[1:]):
        a.precisions = ["bf16"]  # reproduce.yaml trains in bf16
    if a.ci:
        a.steps, a.warmup, a.batch_size, a.sample_steps, a.n_samples, a.eval_examples = 2, 1, 2, 2, 4, 4
    return a


def check_config(args: argparse.Namespace) -> dict:
    """configs/paper.yaml with only cifar10, or configs/reproduce.yaml with only its CIFAR-10 rows
    (their networks, schedules and variant overrides); --ci shrinks the networks."""
    import yaml

    config = yaml.safe_load((ROOT / f"configs/{args.config}.yaml").read_text())
    config["datasets"] = {d: s for d, s in config["datasets"].items() if (s.get("data") or {}).get("name", d) == "cifar10"}
    if args.ci:
        for section in config["datasets"].values():
            net = section["model"]["network"]
            net.update(CI_NETWORK_VDM if net.get("kind") == "vdm" else CI_NETWORK)
    return config


def check_rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(dataset, variant) pairs to time: every variant on paper.yaml's cifar10, or each CIFAR-10
    row of reproduce.yaml with its own variant; --variants filters by variant."""
    from ndm.names import VARIANTS
    from ndm.pipeline.config import run_seeds

    config = check_config(args)
    wanted = args.variants or list(VARIANTS)
    return [(d, v) for d in config["datasets"] for v in config["variants"] if v in wanted and run_seeds(config, d, v)]


def run_config(args: argparse.Namespace, variant: str, precision: str, dataset: str = "cifar10"):
    """The config's CIFAR-10 run of `variant`, with this check's steps, batch, device and precision."""
    import dataclasses

    from ndm.pipeline.config import resolve_run_config

    run = resolve_run_config(check_config(args), dataset, variant, seed=0)
    total = args.warmup + args.steps
    train = dataclasses.replace(
        run.train, steps=total, batch_size=args.batch_size, device=args.device, precision=precision,
        warmup_steps=min(run.train.warmup_steps, total), checkpoint_every=10**9, log_every=max(1, total), eval_every=0,
    )  # fmt: skip
    return dataclasses.replace(run, train=train)


def synthetic_images(n: int, seed: int):
    """n 8-bit images of the CIFAR-10 shape in model space (bin centres of 256 levels)."""
    import torch

    from ndm.pipeline.data import to_model_space

    g = torch.Generator().manual_seed(seed)
    return to_model_space(torch.randint(0, 256, (n, 3, 32, 32), generator=g), 256)


def peak_tflops(args: argparse.Namespace) -> tuple[float, str]:
    import torch

    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    if args.device != "cuda" or not torch.cuda.is_available():
        return math.nan, "no GPU"
    name = torch.cuda.get_device_name()
    for key, value in BF16_PEAK_TFLOPS:
        if key in name:
            return value, f"table ({key})"
    return math.nan, f"unknown card {name!r}: pass --peak-tflops"


def train_row(args: argparse.Namespace, variant: str, precision: str, work: Path, dataset: str = "cifar10") -> dict:
    """Train (warm-up, then timed steps), sample and evaluate one (variant, precision)."""
    import torch

    from ndm.estimators.flops import training_flops_per_step
    from ndm.estimators.likelihood import continuous_nelbo
    from ndm.estimators.sampling import SamplerSettings, sample
    from ndm.pipeline.train import load_trained_model, train

    run = run_config(args, variant, precision, dataset)
    x_train = synthetic_images(max(4 * args.batch_size, 512), seed=0)
    data = (x_train, (3, 32, 32), 256, {"name": "synthetic-cifar10-shape"})
    out = work / f"{dataset}-{variant}-{precision}"
    train(run, out, progress=False, stop_after=args.warmup, data=data)  # untimed warm-up, checkpointed
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = train(run, out, progress=False, data=data)  # resumes: times the remaining steps only
    model, _ = load_trained_model(result.model_path)
    device = torch.device(args.device)
    model = model.to(device)
    flops = training_flops_per_step(model, x_train[: args.batch_size].to(device), args.batch_size, None, run.train.time_sampling)
    images_per_s = result.steps_per_s * args.batch_size
    from ndm.pipeline.network_sizes import model_network_sizes

    params_x_hat, params_f = model_network_sizes(model)
    row = {
        "config": args.config,
        "dataset": dataset,
        "variant": variant,
        "network": run.model.network.kind,
        "params_x_hat": params_x_hat,
        "params_F": params_f,
        "precision": precision,
        "steps_timed": result.steps - result.resumed_from,
        "batch_size": args.batch_size,
        "train_images_per_s": images_per_s,
        "train_flops_per_step": flops,
        "train_tflops_per_s": flops * result.steps_per_s / 1e12,
        "final_loss_bpd": result.final_loss_bpd,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else math.nan,
    }
    t0 = time.perf_counter()
    s = sample(model, args.n_samples, SamplerSettings("ancestral", args.sample_steps), generator=torch.Generator().manual_seed(0), batch_size=args.n_samples, device=device)
    if args.device == "cuda":
        torch.cuda.synchronize()
    row["sample_steps"] = args.sample_steps
    row["samples_per_s"] = args.n_samples / (time.perf_counter() - t0)
    row["samples_finite"] = bool(torch.isfinite(s.x).all())
    x_test = synthetic_images(args.eval_examples, seed=1).to(device)
    est = continuous_nelbo(model, x_test, n_time_samples=4, generator=torch.Generator(device=device).manual_seed(0))
    row["nelbo_bpd"] = est.bpd
    return row


def ddp_rows(args: argparse.Namespace, work: Path) -> list[dict]:
    """ddpm and ndm on 2 processes (torchrun, NCCL), rank 0 reporting, when >= 2 GPUs."""
    import torch

    if args.ddp == "off" or args.device != "cuda" or torch.cuda.device_count() < 2:
        return []
    rows = []
    for variant in ("ddpm", "ndm"):
        for precision in args.precisions:
            out = work / f"ddp-{variant}-{precision}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
                   "--worker", f"{variant},{precision},{out}", "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--batch-size", str(args.batch_size), "--device", "cuda"]  # fmt: skip
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                rows.append({"variant": variant, "precision": precision, "processes": 2, "error": proc.stderr[-2000:]})
                continue
            rows.append(json.loads(out.read_text()))
    return rows


def worker(args: argparse.Namespace) -> None:
    """One rank of a DDP row: the real train() picks up torchrun's environment (world_from_env)."""
    from ndm.pipeline.train import train

    variant, precision, out = args.worker.split(",", 2)
    run = run_config(args, variant, precision)
    data = (synthetic_images(max(4 * args.batch_size, 512), seed=0), (3, 32, 32), 256, {"name": "synthetic"})
    work = Path(out).with_suffix("")
    train(run, work, progress=False, stop_after=args.warmup, data=data)
    result = train(run, work, progress=False, data=data)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps({"variant": variant, "precision": precision, "processes": 2, "train_images_per_s": result.steps_per_s * args.batch_size}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    import torch

    from _common import machine_info, write_report

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU node, or with --device cpu (slow, for testing)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    peak, peak_source = peak_tflops(args)
    pairs = check_rows(args)
    rows: list[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for precision in args.precisions:
            for dataset, variant in pairs:
                row = train_row(args, variant, precision, Path(tmp), dataset)
                row["fraction_of_bf16_peak"] = row["train_tflops_per_s"] / peak if peak == peak else math.nan
                rows.append(row)
                print(f"{dataset}/{variant:>11} {precision}: {row['train_images_per_s']:9.1f} img/s train, {row['train_tflops_per_s']:7.2f} TFLOP/s "
                      f"({row['fraction_of_bf16_peak']:.1%} of bf16 peak), {row['samples_per_s']:8.1f} samples/s at {args.sample_steps} steps, "
                      f"NELBO {row['nelbo_bpd']:.3f} bpd", flush=True)  # fmt: skip
        ddp = ddp_rows(args, Path(tmp)) if args.config == "paper" else []
    for row in rows:  # cost in DDPM steps: DDPM's images/s over the variant's, same precision
        base = next((r for r in rows if r["variant"] == "ddpm" and r["precision"] == row["precision"]), None)
        row["ddpm_over_variant"] = base["train_images_per_s"] / row["train_images_per_s"] if base else math.nan
    print("\ndataset        variant      params      precision  img/s     x DDPM  TFLOP/s  of peak  peak GiB")
    for r in rows:
        print(f"{r['dataset']:<14} {r['variant']:<12} {(r['params_x_hat'] + r['params_F']) / 1e6:7.1f}M    {r['precision']:<9} {r['train_images_per_s']:8.1f}  "
              f"{r['ddpm_over_variant']:6.2f}  {r['train_tflops_per_s']:7.2f}  {r['fraction_of_bf16_peak']:6.1%}  {r['peak_memory_gib']:7.2f}")  # fmt: skip
    for r in ddp:
        one = next((x for x in rows if x["variant"] == r["variant"] and x["precision"] == r["precision"]), None)
        if "error" in r:
            print(f"DDP 2 processes {r['variant']} {r['precision']}: FAILED\n{r['error']}")
        elif one:
            print(f"DDP 2 processes {r['variant']} {r['precision']}: {r['train_images_per_s']:.1f} img/s ({r['train_images_per_s'] / one['train_images_per_s']:.2f}x one process)")
    report = {
        "benchmark": "gpu_check",
        "config": args.config,
        "ci": args.ci,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "bf16_peak_tflops": peak,
        "bf16_peak_source": peak_source,
        "steps": args.steps,
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
        "ddp_rows": ddp,
        "machine": machine_info(load_before),
    }
    print(f"\ngpu_check: {report['wall_s']:.0f} s")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
