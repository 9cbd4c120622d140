"""Atomic file writes: a temporary file, fsync, rename, fsync of the directory, so that a killed
job never leaves half a file under its final name. No dependency on the rest of ndm: the
metrics, the pipeline and the report all write through it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _temporary(path: Path) -> Path:
    """The temporary name of a write to `path`: hidden, and carrying the writer's pid so that
    `remove_stale_temporaries` can tell a dead writer's leftover from a live write."""
    return path.with_name(f".{path.name}.tmp.{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call write(f) on a temporary binary file, fsync it, rename it to `path`, fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`text` (UTF-8) to `path` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save(obj) to `path` atomically (checkpoints and trained models)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
