"""Where a result came from: the config's hash, the code version, the packages and the machine.
Stored in every result file and, as flat tags, on every MLflow run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def config_hash(obj: Any) -> str:
    """Stable 12-hex-digit hash of a JSON-able config: sha256 of its sorted-key JSON.

    The package's only config hash (RunConfig.hash, checkpoints, result files, Snakemake params).
    json.dumps' default separators (", ", ": ") are part of it: every recorded hash was made
    with them, and a checkpoint whose hash differs is refused (retrained).
    """
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _default_device() -> str:
    try:
        import torch
    except ImportError:
        return "unknown"
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def provenance(device: str | None = None, repo_dir: Path | None = None) -> dict[str, Any]:
    """Where a result came from: code version, packages, machine. Stored in every result file.

    The git commit is looked up in the repository holding the ``ndm`` package, else the working
    directory's (or only ``repo_dir``'s); outside a git checkout it is "unknown" and
    ``git_dirty`` is None. ``git_dirty`` ignores untracked files.
    ``device`` defaults to the first CUDA device's name, else "cpu" (this imports torch).
    """
    candidates = [repo_dir] if repo_dir is not None else [Path(__file__).resolve().parent,
                                                          Path.cwd()]
    commit: str | None = None
    dirty: bool | None = None
    for where in candidates:
        commit = _git(["rev-parse", "HEAD"], where)
        if commit is not None:
            status = _git(["status", "--porcelain", "--untracked-files=no"], where)
            dirty = bool(status) if status is not None else None
            break
    return {
        "git_commit": commit or "unknown",
        "git_dirty": dirty,
        "versions": {"ndm": _version("ndm-bench"), "torch": _version("torch"),
                     "numpy": _version("numpy"), "mlflow": _version("mlflow")},
        "device": device if device is not None else _default_device(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def provenance_tags(prov: Mapping[str, Any]) -> dict[str, str]:
    """Provenance as flat MLflow tags: ``git_commit``, ``ndm.git_dirty``, ``ndm.version.torch``."""
    tags = {"git_commit": str(prov.get("git_commit", "unknown"))}
    for key, value in prov.items():
        if key == "git_commit" or value is None:
            continue
        if isinstance(value, Mapping):
            for k, v in value.items():
                tags[f"ndm.{key.rstrip('s')}.{k}"] = str(v)
        else:
            tags[f"ndm.{key}"] = str(value)
    return tags
