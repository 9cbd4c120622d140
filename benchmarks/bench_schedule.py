"""The learned (VDM) schedule's cost on a CPU: gamma(t) and gamma'(t) for a batch, and its inverse.

The monotone network is n_features (1024) wide, so one evaluation over a batch of B times costs
B x 1024 sigmoids: on a CPU that was most of a sampler's time for vdm and ndm-vdm on toy2d.
Samplers pass one time for the whole batch, which LearnedSchedule evaluates once; training draws
a distinct time per example (the full cost), and `invert_gamma` (times uniform in gamma) stops
Newton's method at its exact fixed point. Both fast paths give the same bits as the full
evaluation (tests/test_schedules.py); this measures what they save, in one run:

- `shared_time_ms`: values(t) with one time broadcast over the batch (the sampler path);
- `distinct_times_ms`: values(t) with a distinct time per example (the full evaluation);
- `invert_gamma_ms`: t = gamma^{-1}(target) for a batch of distinct targets (training's draw).

    python benchmarks/bench_schedule.py          # batch 1000, 200 repeats
    python benchmarks/bench_schedule.py --ci     # batch 256, 20 repeats
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _common import machine_info, write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)

from ndm.model.schedules import LearnedSchedule, invert_gamma


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ci", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/schedule.json"))
    args = ap.parse_args()
    load = os.getloadavg()
    torch.set_num_threads(args.threads)
    batch = args.batch or (256 if args.ci else 1000)
    repeats = args.repeats or (20 if args.ci else 200)
    schedule = LearnedSchedule(seed=0)
    g = torch.Generator().manual_seed(0)
    shared = torch.full((batch,), 0.37)
    distinct = torch.rand(batch, generator=g)
    with torch.no_grad():
        ends = schedule.values(torch.linspace(0.0, 1.0, 2)).gamma
        target = ends[0] + torch.rand(batch, generator=g) * (ends[1] - ends[0])
        row = {
            "batch": batch,
            "n_features": schedule.n_features,
            "shared_time_ms": _ms(lambda: schedule.values(shared), repeats),
            "distinct_times_ms": _ms(lambda: schedule.values(distinct), repeats),
            "invert_gamma_ms": _ms(lambda: invert_gamma(schedule, target), max(1, repeats // 4)),
        }
    row["distinct_over_shared"] = row["distinct_times_ms"] / row["shared_time_ms"]
    for k, v in row.items():
        print(f"{k:>22}: {v:.3f}" if isinstance(v, float) else f"{k:>22}: {v}")
    write_report(args.out, {"benchmark": "schedule", "ci": args.ci, "machine": machine_info(load), "rows": [row]})


if __name__ == "__main__":
    main()
