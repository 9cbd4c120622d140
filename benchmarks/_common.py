"""What every benchmark script records beside its figures, and how it writes them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine_info(load_before: tuple[float, float, float] | list[float]) -> dict:
    """The machine and torch of the run; other jobs on a shared machine change the numbers, and
    the load average before and after says how busy it was."""
    import torch  # here, not at import: bench_pipeline reads logs and never needs torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


def write_report(out_path: Path, report: dict) -> None:
    """Write the JSON atomically through ndm.pipeline.results (a crash leaves the old file or the
    new one) and say where."""
    from ndm.pipeline.results import atomic_write_text

    atomic_write_text(out_path, json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out_path}")
