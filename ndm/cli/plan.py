"""`ndm plan`: GPU-hours per dataset and variant of a config, before submitting it.

    ndm plan --config configs/paper.yaml [--tflops 297] [--adaptive-nfe 200] [--json plan.json]

FLOPs are counted on the config's real networks (ndm/pipeline/plan.py, on torch's meta device:
no GPU, no data files); hours = FLOPs / the sustained rate --tflops, an assumption printed with
the table.
"""

from __future__ import annotations

import argparse
import json

from ndm.cli.registry import command


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (e.g. configs/paper.yaml)")
    p.add_argument("--tflops", type=float, default=None,
                   help="assumed sustained TFLOP/s per GPU for every row (default: by each row's train.precision, 297 in bf16 = 30%% of an H100's bf16 peak, 99 in fp32)")  # fmt: skip
    p.add_argument("--adaptive-nfe", type=float, default=200.0, help="assumed NFE of ode-adaptive sampling and dopri5 ODE NLL (counted only when run)")
    p.add_argument("--variants", nargs="+", default=None, help="only these variants (as --config variants=[...] would)")
    p.add_argument("--json", default=None, help="also write the rows (FLOPs and GPU-hours) as JSON")


@command("plan", "GPU-hours per dataset and variant of a config (counted FLOPs / an assumed GPU rate)")(_plan_args)
def cmd_plan(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.pipeline.network_sizes import format_sizes
    from ndm.pipeline.plan import format_table, gpu_hours, plan, row_tflops

    if args.tflops is not None and args.tflops <= 0:
        raise SystemExit("ndm plan: --tflops must be > 0")
    config = load_yaml(args.config)
    if args.variants:
        config["variants"] = list(args.variants)
    rows = plan(config, adaptive_nfe=args.adaptive_nfe)
    defaults = ((config.get("defaults") or {}).get("resources") or {}).get("sample") or {}
    runtime = {d: {**defaults, **(((s or {}).get("resources") or {}).get("sample") or {})}.get("runtime") for d, s in config["datasets"].items()}
    print(f"# Network sizes of {args.config}: parameters of x_hat and F built on the meta device, beside the published")
    print("# network each dataset names (datasets.<d>.published_networks, configs/published_sizes.csv).\n")
    print(format_sizes([r.size for r in rows]) + "\n")
    rate = f"{args.tflops:.0f} TFLOP/s per GPU (--tflops)" if args.tflops else "TFLOP/s per GPU by train.precision (bf16 297 = 30% of an H100's bf16 peak, fp32 99)"
    print(f"# GPU-hours of {args.config}: network FLOPs counted on the real models (ndm/pipeline/plan.py) at an ASSUMED")
    print(f"# sustained {rate}; ode-adaptive and")
    print(f"# dopri5 at an assumed {args.adaptive_nfe:.0f} NFE. Elementwise work is not counted. 'longest sampling job' is one")
    print("# sampling job (one shard, eval.sample_shards) against the config's resources.sample.runtime in hours.\n")
    print(format_table(rows, args.tflops, {d: r for d, r in runtime.items() if r}))
    if args.json:
        doc = []
        for r in rows:
            row = {k: v for k, v in r.__dict__.items() if k != "size"}
            row.update(params_x_hat=r.size.x_hat, params_F=r.size.F, published={k: v.__dict__ for k, v in r.size.published.items()})
            rate = row_tflops(r, args.tflops)
            doc.append({**row, "total_flops": r.total_flops, "tflops": rate, "gpu_hours_all_seeds": r.seeds * gpu_hours(r.total_flops, rate)})
        with open(args.json, "w") as f:
            json.dump({"tflops": args.tflops, "adaptive_nfe": args.adaptive_nfe, "rows": doc}, f, indent=2)
    return 0
