"""The ranking of a report's models at chosen training steps (ndm/report/ranking.py), from the
report's committed per-seed curves; writes ranking_over_training.csv beside them and prints it.

    python tools/ranking_over_training.py --tables reports/study/convergence/tables --steps 1200 2400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from ndm.report.ranking import ranking_over_training

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, required=True, help="a report's tables/ directory (per_seed_curves.csv)")
    p.add_argument("--model", default="ndm")
    p.add_argument("--baselines", nargs="+", default=["vdm-fixed", "ddpm"])
    p.add_argument("--steps", nargs="+", type=int, required=True)
    p.add_argument("--datasets", nargs="+", default=None, help="default: every dataset of the curves")
    args = p.parse_args(argv)
    curves = pd.read_csv(args.tables / "per_seed_curves.csv")
    table = ranking_over_training(curves, args.model, args.baselines, args.steps, args.datasets)
    out = args.tables / "ranking_over_training.csv"
    table.to_csv(out, index=False, float_format="%.10g")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[["dataset", "step", "baseline", "n_seeds", "diff_bpd", "ci_low", "ci_high", "ci_level", "verdict", "order"]].to_string(index=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
