"""`ndm calibrate`: every likelihood estimator against the exact NLL of Gaussian data.

    ndm calibrate --dim 16 --variant vdm-fixed --steps 10,100,1000 --extra ode

The model is the Gaussian oracle (ndm.estimators.gaussian): its x_hat is the exact posterior
mean, so the report compares each estimator with the exact NLL with no training error in the way.
"""

from __future__ import annotations

import argparse
import json

from ndm.cli.registry import command


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    from ndm.estimators.calibrate import CALIBRATABLE

    p.add_argument("--dim", type=int, required=True, help="dimension D of the Gaussian data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="vdm-fixed", choices=CALIBRATABLE)
    p.add_argument("--n", type=int, default=2000, help="number of data samples")
    p.add_argument("--time-samples", type=int, default=64, help="time (or step) samples per example")
    p.add_argument("--steps", default="10,100,1000", help="comma-separated T for the discrete NELBO")
    p.add_argument("--extra", default="", help="comma-separated extra estimators (e.g. ode)")


@command("calibrate", "all likelihood estimators vs the exact NLL on Gaussian data (oracle model)")(_calibrate_args)
def cmd_calibrate(args: argparse.Namespace) -> int:
    from ndm.estimators.calibrate import calibrate

    steps = tuple(int(s) for s in args.steps.split(",") if s.strip())
    extra = tuple(s for s in args.extra.split(",") if s.strip())
    report = calibrate(args.dim, args.seed, args.variant, args.n, args.time_samples, steps, extra)
    print(json.dumps(report, indent=2))
    return 0
