"""The one writer of result files: atomic replacement, and JSON with provenance.

Every file a job leaves for others to read (checkpoints, train_summary.json, evaluation and
sample JSON, metric logs, tracking summaries) is written by `atomic_write`: to a temporary
file in the same directory, fsync'd, renamed over the target, and the directory fsync'd. A
crash at any instant leaves the old file or the new one, never half of one, and a reader
(Snakemake, the report) never sees a partial file. Result JSON goes through
`write_result_json`, which adds provenance (git commit, config hash, package versions, device),
so every number under results/ says which code, config and machine produced it.

Torch-free at import (`ndm tracking-sync` writes through here); `atomic_torch_save` imports
torch when called.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ndm.pipeline.provenance import provenance

if TYPE_CHECKING:  # annotations only
    from ndm.pipeline.config import RunConfig


# Atomic writes live in ndm.atomic (no dependency on the pipeline, so metrics use them too).
from ndm.atomic import _temporary, atomic_torch_save, atomic_write, atomic_write_text  # noqa: E402,F401 - re-exported


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files of writes that a killed process never renamed; return them.

    Only files matching `atomic_write`'s pattern whose writer pid is not alive on this host are
    removed, so a concurrent writer on this machine is never disturbed (one job directory is
    written by one job at a time; a second job on another node would be a bug of its own).
    """
    removed = []
    for tmp in Path(directory).glob(".*.tmp.*"):
        pid = tmp.name.rsplit(".", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


# ------------------------------------------------------------------------ JSON with provenance


def device_label(run: RunConfig | None) -> str | None:
    """The device a job will use, for provenance; None lets provenance() detect it."""
    if run is not None and run.train.device == "cpu":
        return "cpu"
    return None


@functools.lru_cache(maxsize=8)
def _provenance_cached(device: str | None) -> str:
    # git is a subprocess: look it up once per process (JSON keeps the cached value immutable)
    return json.dumps(provenance(device=device))


def job_provenance(device: str | None = None) -> dict[str, Any]:
    """provenance() (git commit, versions, device, host, SLURM job id), cached per process."""
    return json.loads(_provenance_cached(device))


def with_provenance(payload: Mapping[str, Any], run: RunConfig | None = None,
                    device: str | None = None) -> dict[str, Any]:
    """``payload`` plus ``provenance`` (and ``config_hash`` when a RunConfig is given)."""
    doc = dict(payload)
    if run is not None:
        doc.setdefault("config_hash", run.hash())
    doc["provenance"] = job_provenance(device if device is not None else device_label(run))
    return doc


def to_json(obj: Any) -> str:
    """Indented JSON with a final newline; numpy scalars and arrays as numbers, paths as strings.

    Anything else that JSON cannot hold raises TypeError naming its type, so that no result
    file ever holds the repr of an object instead of a number.
    """
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and type(obj).__module__ in ("numpy", "torch"):  # scalars, arrays, tensors
        return obj.tolist()
    raise TypeError(
        f"a result file holds a {type(obj).__module__}.{type(obj).__name__}, which JSON cannot store; "
        "convert it to a number, string, list or dict before writing"
    )


def write_result_json(path: str | Path, payload: Mapping[str, Any], run: RunConfig | None = None,
                      device: str | None = None) -> dict[str, Any]:
    """Write a result file with provenance, atomically; return what was written."""
    doc = with_provenance(payload, run, device)
    atomic_write_text(path, to_json(doc))
    return doc
