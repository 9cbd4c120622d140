"""`ndm train`: train one (dataset, variant, seed) into an output directory, resuming if possible.

    ndm train --config configs/default.yaml --dataset digits --variant ndm --seed 0 --out OUT

What OUT holds, and how resume, preemption (exit code 75) and a diverged loss (exit code 1)
behave, is ndm.pipeline.train's docstring and docs/reliability.md. Launched as N processes
(torchrun --nproc_per_node N -m ndm train ..., or srun with N tasks) it trains data-parallel
(ndm.pipeline.distributed, docs/slurm.md "Data-parallel training").
"""

from __future__ import annotations

import argparse
import json

from ndm.cli.registry import command, recorder, tracking_args


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML (configs/default.yaml, ...)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory of this job")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (the rule's threads)")
    tracking_args(p)


@command("train", "train one (dataset, variant, seed); resumes from OUT/checkpoint.pt")(_train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml, resolve_run_config
    from ndm.pipeline.distributed import world_from_env
    from ndm.pipeline.train import train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = load_yaml(args.config)
    run = resolve_run_config(config, args.dataset, args.variant, args.seed)
    main = world_from_env().main
    if not main:  # data-parallel training: rank 0 alone records to MLflow and prints the result
        args.no_tracking = True
    with recorder(args, config, run, "train") as rec:
        result = train(run, args.out, recorder=rec, progress=not args.no_progress)
    if main:
        print(json.dumps({"model": str(result.model_path), "steps": result.steps, "final_loss_bpd": result.final_loss_bpd, "wall_s": round(result.wall_s, 2)}))
    return 0
