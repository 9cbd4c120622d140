"""Sampling speed per sampler: samples/s and NFE/s for `digits` (8x8x1) and a 32x32x3 U-Net.

For each (model, variant, sampler, steps) it draws n samples with ndm.estimators.sampling.sample and
reports seconds, samples/s, NFE per sample (x_hat network evaluations, counted) and NFE/s
(= NFE x n / seconds: per-sample network evaluations per second, the throughput of the
x_hat network inside the sampler), and nfe_F for learned F (ndm pays a JVP of F per drift
evaluation, two F calls per posterior step). Writes JSON under results/benchmarks/.

Speed does not depend on the weights' values, so fresh models are used (their zero last
layers make x_hat a linear skip and F the identity, but every layer still runs); the
adaptive solver's NFE on them is NOT representative of a trained model: pass --model
PATH/model.pt to time a trained digits model instead.

    python benchmarks/bench_sampling.py             # digits + DDPM-CIFAR-size U-Net (35.7M), 10/100 steps
    python benchmarks/bench_sampling.py --ci        # tiny: digits + a 32x32x3 U-Net of width 32, 10 steps
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
from _common import write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)

from ndm.model.networks import NetworkConfig
from ndm.estimators.sampling import FIXED_STEP_SAMPLERS, SAMPLERS, SamplerSettings, sample, seed_generator
from ndm.model.variants import ModelConfig, build_model

# The digits network of configs/default.yaml; DDPM's CIFAR-10 U-Net (35.7M parameters) and a CI-size one.
NETWORKS = {
    "digits": ((1, 8, 8), 17, NetworkConfig(kind="unet", channels=16, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], fourier_features=[6, 8])),
    "cifar32": ((3, 32, 32), 256, NetworkConfig(kind="unet", channels=128, channel_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[16], dropout=0.1)),
    "cifar32-ci": ((3, 32, 32), 256, NetworkConfig(kind="unet", channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[16])),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true", help="tiny run: n=4, 10 steps, the CI-size 32x32 U-Net")
    p.add_argument("--models", default=None, help="comma-separated from " + ",".join(NETWORKS) + " (default: digits and cifar32, or cifar32-ci with --ci)")
    p.add_argument("--variants", default="ddpm,ndm", help="comma-separated variants (default ddpm,ndm)")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--steps", default=None, help="comma-separated step counts (default 10,100; --ci: 10)")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 32; --ci: 4)")
    p.add_argument("--batch-size", type=int, default=None, help="default: n (one batch)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--model", type=Path, default=None, help="a trained model.pt to time instead of fresh digits models")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: oversubscribed threads on a shared CPU are far slower, docs/performance.md; 0 = torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/benchmarks/bench_sampling[_ci].json)")
    return p.parse_args()


def build(name: str, variant: str, device: torch.device):
    shape, levels, net = NETWORKS[name]
    model = build_model(ModelConfig(variant=variant, network=net), shape, levels).to(device).eval()
    n_params = sum(p.numel() for p in model.net.parameters())
    return model, n_params


def main() -> int:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    models = (args.models or ("digits,cifar32-ci" if args.ci else "digits,cifar32")).split(",")
    steps_list = [int(s) for s in (args.steps or ("10" if args.ci else "10,100")).split(",")]
    n = args.n or (4 if args.ci else 32)
    batch_size = args.batch_size or n
    samplers = [s for s in args.samplers.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    out_path = args.out or Path(f"results/benchmarks/bench_sampling{'_ci' if args.ci else ''}.json")

    rows = []
    print(f"{'model':<11} {'variant':<8} {'sampler':<13} {'steps':>5} {'nfe':>6} {'nfe_F':>6} {'seconds':>8} {'samples/s':>10} {'NFE/s':>9}")
    for name in models:
        for variant in variants:
            if args.model is not None and name == "digits":
                from ndm.pipeline.train import load_trained_model

                model, run = load_trained_model(args.model, device=device)
                if run.model.variant != variant:
                    continue
                n_params = sum(p.numel() for p in model.net.parameters())
            else:
                model, n_params = build(name, variant, device)
            # warm-up: allocator, oneDNN/cuDNN kernels, the first functorch JVP
            sample(model, min(2, n), SamplerSettings("ode-euler", 1), generator=seed_generator(0), device=device)
            for sampler in samplers:
                for steps in (steps_list if sampler in FIXED_STEP_SAMPLERS else [None]):
                    res = sample(model, n, SamplerSettings(sampler, steps, rtol=args.rtol, atol=args.atol), generator=seed_generator(0), batch_size=batch_size, device=device)
                    row = {
                        "model": name,
                        "variant": variant,
                        "params_x_hat": n_params,
                        "sampler": sampler,
                        "steps": steps,
                        "n": n,
                        "batch_size": batch_size,
                        "nfe": res.nfe,
                        "nfe_F": res.nfe_F,
                        "seconds": round(res.seconds, 4),
                        "samples_per_s": n / res.seconds,
                        "nfe_per_s": res.nfe * n / res.seconds,
                        "ms_per_nfe_per_batch": 1000 * res.seconds / max(res.nfe, 1) / -(-n // batch_size),
                        "finite": bool(torch.isfinite(res.x).all()),
                    }
                    rows.append(row)
                    print(
                        f"{name:<11} {variant:<8} {sampler:<13} {str(steps or '-'):>5} {res.nfe:>6.0f} {res.nfe_F:>6.0f} "
                        f"{res.seconds:>8.3f} {row['samples_per_s']:>10.2f} {row['nfe_per_s']:>9.1f}",
                        flush=True,
                    )
    report = {
        "benchmark": "sampling",
        "ci": args.ci,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "weights": str(args.model) if args.model else "fresh (zero last layers): speed only; adaptive NFE not representative",
        "nfe_definition": "x_hat evaluations per sample (counted); NFE/s = nfe * n / seconds",
        "rows": rows,
    }
    write_report(out_path, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
