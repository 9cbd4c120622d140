"""Likelihood evaluation speed: ODE NLL time per image and per function evaluation, NELBO time per image.

For `digits` (1x8x8, configs/default.yaml's network) and `cifar10` (3x32x32, the paper's U-Net;
--ci shrinks it) and the variants ddpm, ndm (dF/dt by the hand-written forward-mode pass),
ndm/jvp-functorch (the same by torch.func.jvp) and ndm/separable, it times
    ode_exact        ndm.estimators.likelihood.ode_nll, exact divergence (D vector-Jacobian products per
                     evaluation of the drift h), fixed Heun steps (2 N evaluations); only when
                     D <= --exact-max-dims (digits: D = 64)
    ode_hutchinson   the same with one Rademacher probe (one vjp per evaluation)
    nelbo_continuous ndm.estimators.likelihood.continuous_nelbo with K time samples per image
and reports seconds per image, NFE per image (x_hat evaluations, counted by ndm's EvalCounter)
and milliseconds per NFE per image. Each ndm row's ratio to ddpm is the median over repeats of
the ratio within a repeat (rows interleaved). Fresh models (zero last layers, randomised here
so that F and x_hat are not trivial); the fixed-step cost does not depend on the weights.

    python benchmarks/bench_likelihood.py            # digits 8 images, paper CIFAR U-Net 1 image, Heun 10 steps
    python benchmarks/bench_likelihood.py --ci       # tiny
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import machine_info, write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SHAPES, model_config, randomize_zero_layers  # noqa: E402

from ndm.estimators.likelihood import OdeSolver, continuous_nelbo, ode_nll  # noqa: E402
from ndm.model.variants import build_model  # noqa: E402

ROWS = (("ddpm", "default"), ("ndm", "jvp"), ("ndm", "jvp-functorch"), ("ndm", "separable"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true", help="tiny: 1 digits image, 1 CIFAR image on a small U-Net, Heun 2 steps, 3 rows")
    p.add_argument("--shapes", default="digits,cifar10")
    p.add_argument("--rows", default=None, help="variant or variant/option, comma-separated (default: ddpm, ndm/jvp, ndm/jvp-functorch, ndm/separable; --ci without jvp-functorch)")
    p.add_argument("--n", type=int, default=None, help="images per shape (default: digits 8, cifar10 1; --ci 2 and 1)")
    p.add_argument("--steps", type=int, default=None, help="Heun steps of the ODE (default 10; --ci 2)")
    p.add_argument("--time-samples", type=int, default=16, help="time samples per image of the continuous NELBO")
    p.add_argument("--exact-max-dims", type=int, default=64, help="exact divergence only up to this D")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 2; --ci 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/benchmarks/bench_likelihood[_ci].json)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    steps = args.steps or (2 if args.ci else 10)
    repeats = args.repeats or (1 if args.ci else 2)
    rows_arg = args.rows or ("ddpm,ndm/jvp,ndm/separable" if args.ci else ",".join(f"{v}/{o}" if o != "default" else v for v, o in ROWS))
    rows_spec = [tuple(r.split("/")) if "/" in r else (r, "default") for r in rows_arg.split(",") if r]
    out_path = args.out or Path(f"results/benchmarks/bench_likelihood{'_ci' if args.ci else ''}.json")
    results = []
    load_before = os.getloadavg()
    for shape in [s for s in args.shapes.split(",") if s]:
        _, _, event_shape, levels, _ = SHAPES[shape]
        dims = math.prod(event_shape)
        n = args.n or ({"digits": 1, "cifar10": 1}[shape] if args.ci else {"digits": 8, "cifar10": 1}[shape])
        g = torch.Generator().manual_seed(0)
        x = (2.0 * (torch.randint(0, levels, (n, *event_shape), generator=g).float() + 0.5) / levels - 1.0).to(device)
        models = {}
        for variant, option in rows_spec:
            cfg, _ = model_config(shape, variant, option, args.ci)
            torch.manual_seed(0)
            m = build_model(cfg, event_shape, levels).to(device).eval()
            randomize_zero_layers(m)
            if option == "jvp-functorch":
                m.transform.tangent = "functorch"
            models[variant if option == "default" else f"{variant}/{option}"] = m
        estimators = (["ode_exact"] if dims <= args.exact_max_dims else []) + ["ode_hutchinson", "nelbo_continuous"]
        net = next(iter(models.values())).net
        print(f"\n== {shape} {tuple(event_shape)} (D = {dims}), {n} images, Heun {steps} steps, x_hat: {net.__class__.__name__} "
              f"{sum(p.numel() for p in net.parameters()):,} parameters")
        times: dict[tuple[str, str], list[float]] = {}
        nfes: dict[tuple[str, str], float] = {}
        for name, m in models.items():  # warm-up (allocator, kernels)
            ode_nll(m, x[:1], OdeSolver(divergence="hutchinson", method="heun", steps=1), generator=torch.Generator(device=device).manual_seed(0))
        for _ in range(repeats):
            for est in estimators:
                for name, m in models.items():
                    gen = torch.Generator(device=device).manual_seed(1)
                    start = time.perf_counter()
                    if est == "nelbo_continuous":
                        res = continuous_nelbo(m, x, n_time_samples=args.time_samples, generator=gen)
                        nfe = float(args.time_samples)
                    else:
                        res = ode_nll(m, x, OdeSolver(divergence=est.split("_")[1], method="heun", steps=steps), generator=gen)
                        nfe = res.nfe
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    times.setdefault((est, name), []).append(time.perf_counter() - start)
                    nfes[(est, name)] = nfe
        print(f"{'estimator':<17} {'row':<18} {'NFE/image':>9} {'s/image':>9} {'ms/NFE/image':>12} {'ratio to ddpm':>13}")
        for est in estimators:
            for name in models:
                ts = times[(est, name)]
                ref = times.get((est, "ddpm"))
                ratio = statistics.median(a / b for a, b in zip(ts, ref)) if ref else None
                s_img = statistics.median(ts) / n
                nfe = nfes[(est, name)]
                rec = {
                    "shape": shape,
                    "row": name,
                    "estimator": est,
                    "n_images": n,
                    "steps": None if est == "nelbo_continuous" else steps,
                    "nfe_per_image": nfe,
                    "seconds": statistics.median(ts),
                    "seconds_per_image": s_img,
                    "ms_per_nfe_per_image": 1000 * s_img / max(nfe, 1.0),
                    "ratio_to_ddpm": ratio,
                    "all_seconds": ts,
                }
                results.append(rec)
                print(f"{est:<17} {name:<18} {nfe:>9.0f} {s_img:>9.3f} {rec['ms_per_nfe_per_image']:>12.2f} {ratio if ratio is not None else float('nan'):>13.2f}", flush=True)
    report = {
        "benchmark": "likelihood",
        "ci": args.ci,
        "device": str(device),
        "heun_steps": steps,
        "time_samples": args.time_samples,
        "weights": "fresh, zero-initialised last layers randomised (speed only)",
        "rows": results,
        "machine": machine_info(load_before),
    }
    write_report(out_path, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
