"""The journal: a job's own JSONL record of everything it sends to MLflow, written (and fsync'd)
before MLflow sees it, so that a run can be replayed into any store later (ndm/pipeline/tracking_sync.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

JOURNAL_FORMAT = 1


def _now_ms() -> int:
    return int(time.time() * 1000)


def process_start_ms(pid: int | str = "self") -> int | None:
    """When a process started (ms since the epoch, about 10 ms resolution), or None off Linux.

    A job's MLflow run starts here, not when the job opens its recorder: an evaluation job
    opens it after its work, and a deferred run would otherwise last a few ms (docs/tracking.md).
    /proc/<pid>/stat field 22 is the start in clock ticks after boot; /proc/stat's btime the boot.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name: 3, 4, ...; 22 is index 19
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return int((btime + ticks / os.sysconf("SC_CLK_TCK")) * 1000)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class Journal:
    """Append-only JSONL file; each record is flushed and fsync'd before MLflow sees it."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._f = open(self.path, "w", encoding="utf-8")  # a rerun of the job starts afresh

    def append(self, record: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(record, default=str, allow_nan=True) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """All complete records of a journal (a torn last line from a crash is ignored)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    if not records or records[0].get("type") != "start":
        raise ValueError(f"{path} is not an ndm tracking journal")
    return records


def journal_summary(path: Path) -> dict[str, Any]:
    """journal_id, experiment, run_name, finished, status, synced (live), run_id, n_metrics."""
    recs = read_journal(path)
    start = recs[0]
    end = next((r for r in reversed(recs) if r["type"] == "end"), None)
    run = next((r for r in recs if r["type"] == "mlflow_run"), None)
    return {
        "journal_id": start["journal_id"],
        "experiment": start["experiment"],
        "run_name": start["run_name"],
        "finished": end is not None,
        "status": end["status"] if end else "RUNNING",
        "synced": bool(end and end.get("synced")),
        "run_id": run["run_id"] if run else None,
        "n_metrics": sum(len(r["values"]) for r in recs if r["type"] == "metrics"),
    }
