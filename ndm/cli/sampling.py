"""`ndm sample`: draw samples from one trained model with one sampler at one step count.

    ndm sample --model results/.../model.pt --sampler ddim --steps 10 --n 64 --seed 0 --out samples.npz

Writes OUT (npz) with `samples` (uint8 levels (N, C, H, W) for discrete data, float32 model-space
arrays for continuous data), `nfe`, `nfe_F`, `seconds`, `steps` (0 for ode-adaptive), `seed`,
`time_grid` (--time-grid: the fixed-step samplers' grid, ndm.estimators.time_grids);
and OUT with the suffix .json beside it: the same numbers plus the model path, sampler,
tolerances, shapes, the sampler's NFE definition (ndm.estimators.sampling) and provenance. Both are
written atomically (ndm.pipeline.results), the JSON last, so its presence means the npz is complete.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ndm.cli.registry import command


def _sample_args(p: argparse.ArgumentParser) -> None:
    from ndm.estimators.sampling import SAMPLERS, TIME_GRIDS

    p.add_argument("--model", required=True, help="trained model file (OUT/model.pt of `ndm train`)")
    p.add_argument("--sampler", required=True, choices=SAMPLERS)
    p.add_argument("--steps", type=int, default=None, help="number of steps (every fixed-step sampler; not ode-adaptive)")
    p.add_argument("--time-grid", default="uniform-t", choices=TIME_GRIDS, help="grid of the fixed-step samplers (ndm.estimators.time_grids)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise generator (CPU, so any device gives the same noise)")
    p.add_argument("--out", required=True, help="output .npz (a .json with the same stem is written beside it)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ode-adaptive relative tolerance")
    p.add_argument("--atol", type=float, default=1e-5, help="ode-adaptive absolute tolerance")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; on a shared CPU 1 can be much faster)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--save-float", action="store_true", help="also store the decoded float samples `x` for discrete data")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("sample", "sample a trained model with one sampler at one step count (npz + json)")(_sample_args)
def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ndm.estimators.sampling import FIXED_STEP_SAMPLERS, SamplerSettings, sample, seed_generator
    from ndm.pipeline.results import atomic_write, write_result_json
    from ndm.pipeline.train import load_trained_model, pick_device

    if args.sampler in FIXED_STEP_SAMPLERS and (args.steps is None or args.steps < 1):
        raise SystemExit(f"ndm sample: --sampler {args.sampler} needs --steps >= 1")
    if args.n < 1:
        raise SystemExit("ndm sample: --n must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model, run = load_trained_model(args.model, device=device, ema=not args.raw_weights)
    steps = args.steps if args.sampler in FIXED_STEP_SAMPLERS else None
    res = sample(
        model,
        args.n,
        SamplerSettings(args.sampler, steps, time_grid=args.time_grid, rtol=args.rtol, atol=args.atol),
        generator=seed_generator(args.seed),
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
    )
    if not torch.isfinite(res.x).all():
        raise SystemExit(f"ndm sample: {args.sampler} produced non-finite samples (model {args.model})")
    out = Path(args.out)
    if out.suffix != ".npz":
        out = out.with_suffix(".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = res.levels if res.levels is not None else res.x.float()
    arrays = {
        "samples": samples.cpu().numpy(),
        "nfe": np.float64(res.nfe),
        "nfe_F": np.float64(res.nfe_F),
        "seconds": np.float64(res.seconds),
        "steps": np.int64(steps or 0),
        "seed": np.int64(args.seed),
        "time_grid": np.str_(args.time_grid),
    }
    if args.save_float and res.levels is not None:
        arrays["x"] = res.x.float().cpu().numpy()
    atomic_write(out, lambda f: np.savez(f, **arrays))
    meta = {
        **res.summary(),
        "model": str(args.model),
        "dataset": run.dataset,
        "variant": run.model_name,
        "seed": args.seed,
        "rtol": args.rtol if steps is None else None,
        "atol": args.atol if steps is None else None,
        "weights": "raw" if args.raw_weights else "ema",
        "device": str(device),
        "shape": list(samples.shape),
        "dtype": str(samples.dtype).replace("torch.", ""),
        "levels": model.levels,
        "npz": str(out),
        "nfe_definition": "x_hat network evaluations per sample, counted, including the decode call when F(x,0) != x; "
        "nfe_F: learned-F evaluations per sample (a JVP counts once); see ndm.estimators.sampling",
    }
    write_result_json(out.with_suffix(".json"), meta)
    print(json.dumps({k: meta[k] for k in ("sampler", "steps", "n", "nfe", "nfe_F", "seconds", "samples_per_s", "npz")}))
    return 0
