"""`ndm claims`: the papers' exact claims checked on the Gaussian oracle.

    ndm claims --out results/default/claims.json [--dim 8 --seed 0] [--strict]

Each claim (schedule invariance, variance not value, T-step convergence, equivalent
parameterisations, NDM's F = identity case) is computed exactly on x ~ N(m, S) and written with
its measured figure, tolerance and pass/fail (ndm.estimators.claims); the report turns the file
into tables/claims.*.
"""

from __future__ import annotations

import argparse

from ndm.cli.registry import command


def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="claims.json to write")
    p.add_argument("--dim", type=int, default=8, help="dimension D of the Gaussian data")
    p.add_argument("--seed", type=int, default=0, help="seed of the Gaussian (its mean and covariance)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a claim fails (default: record it and exit 0)")


@command("claims", "the papers' exact claims checked on the Gaussian oracle (claims.json)")(_claims_args)
def cmd_claims(args: argparse.Namespace) -> int:
    from ndm.estimators.claims import run_claims
    from ndm.pipeline.results import write_result_json

    if args.dim < 1:
        raise SystemExit(f"ndm claims: --dim must be >= 1, got {args.dim}")
    report = run_claims(args.dim, args.seed)
    write_result_json(args.out, report, device="cpu")
    for c in report["claims"]:
        print(f"{'pass' if c['passed'] else 'FAIL'}  {c['id']}: measured {c['measured']:.4g} ({c['unit']})")
    return 1 if args.strict and not report["all_passed"] else 0
