"""Checkpoints: atomic writes, safe loads, format version and config hash.

A checkpoint is a dict of tensors and plain Python values, so it loads with
torch.load(weights_only=True): no code from a file is ever executed. Writes go to a
temporary file in the same directory, are fsync'd and then renamed over the target,
so a crash at any instant leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file, the problem and the fix."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
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


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files of writes that a killed process never renamed; return them.

    Only files matching atomic_torch_save's pattern whose writer pid is not alive on this host
    are removed, so a concurrent writer on this machine is never disturbed (one job directory is
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


def load_checkpoint(
    path: str | Path,
    *,
    expected_kind: str | None = None,
    expected_config_hash: str | None = None,
    expected_variant: str | None = None,
) -> dict:
    """Load and validate a checkpoint written by `atomic_torch_save`.

    Raises CheckpointError (never a PyTorch internals error) when the file is missing,
    truncated or corrupt, of another format version, of another kind, or was written
    for a different config or variant.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train the model first (ndm train ...)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, unsafe content, empty file ...
        # an empty file raises an exception with an empty message: say what it is
        detail = (str(exc).splitlines() or ["the file is empty" if path.stat().st_size == 0 else "no detail"])[0]
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be loaded ({type(exc).__name__}: "
            f"{detail[:200]}). Delete it to retrain from the start, or restore it from a copy."
        ) from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(f"{path} is not an ndm checkpoint (no format_version); it was not written by `ndm train`")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt['format_version']}, this ndm reads version "
            f"{FORMAT_VERSION}; retrain, or use the ndm version that wrote it"
        )
    if expected_kind is not None and ckpt.get("kind") != expected_kind:
        raise CheckpointError(f"{path} is a {ckpt.get('kind')!r} file, expected a {expected_kind!r} file")
    if expected_variant is not None and ckpt.get("variant") != expected_variant:
        raise CheckpointError(
            f"checkpoint {path} belongs to variant {ckpt.get('variant')!r}, not {expected_variant!r}: "
            "the output directory of another job was given; check the paths or delete the checkpoint"
        )
    if expected_config_hash is not None and ckpt.get("config_hash") != expected_config_hash:
        raise CheckpointError(
            f"checkpoint {path} was written with config hash {ckpt.get('config_hash')}, but the current "
            f"config hashes to {expected_config_hash}: the config changed since it was written. Delete the "
            "checkpoint to retrain with the new config, or restore the old config to resume"
        )
    return ckpt
