"""Checkpoints: safe loads, format version and config hash.

A checkpoint is a dict of tensors and plain Python values, so it loads with
torch.load(weights_only=True): no code from a file is ever executed. It is written by
ndm.pipeline.results.atomic_torch_save (temporary file, fsync, rename), so a crash at any
instant leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file, the problem and the fix."""


def load_checkpoint(
    path: str | Path,
    *,
    expected_kind: str | None = None,
    expected_config_hash: str | None = None,
    expected_variant: str | None = None,
) -> dict:
    """Load and validate a checkpoint written by `ndm.pipeline.results.atomic_torch_save`.

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
