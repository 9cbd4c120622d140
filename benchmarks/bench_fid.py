"""Feature-extraction speed of the two FID paths (torch-fidelity, clean-fid) on this machine.

Prints images/s for 32x32 uint8 images through each path and the cost of one 2048-d
Frechet distance (sqrtm vs the exact n x n route), and writes JSON under
results/benchmarks/. Speed does not depend on the weights' values, so without local
Inception weights a random state dict is used and the JSON says so.

    python benchmarks/bench_fid.py            # 256 images per path
    python benchmarks/bench_fid.py --ci       # 16 images: a smoke run for CI
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_info, write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)

from ndm.pipeline.data import load_dataset
from ndm.metrics import (
    CleanFIDInception,
    InceptionWeightsNotFound,
    TorchFidelityInception,
    feature_stats,
    find_inception_weights,
    frechet_distance,
    frechet_distance_from_samples,
    save_random_inception_weights,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true", help="tiny run (16 images, no sqrtm timing)")
    p.add_argument("--n-images", type=int, default=256, help="images per path (default 256)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--weights", type=Path, default=None, help="Inception state dict (default: search; else random)")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/bench_fid.json"))
    return p.parse_args()


def images_32(n: int) -> torch.Tensor:
    """Real 32x32 photo patches (content does not change speed, but keeps the input realistic)."""
    patches = load_dataset("patches", seed=0).train
    reps = -(-n // len(patches))
    return patches.repeat(reps, 1, 1, 1)[:n].contiguous()


def time_path(extractor, images: torch.Tensor) -> tuple[float, np.ndarray]:
    extractor(images[: min(4, len(images))])  # warm-up: allocator, oneDNN kernels, PIL
    start = time.perf_counter()
    feats = extractor(images)
    return time.perf_counter() - start, feats


def main() -> None:
    args = parse_args()
    if args.ci:
        args.n_images = min(args.n_images, 16)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    try:
        weights, weights_kind = find_inception_weights(args.weights), "local"
    except InceptionWeightsNotFound:
        weights = save_random_inception_weights(Path(tmp.name) / "random_inception.pth", seed=0)
        weights_kind = "random (speed only: no Inception weights found locally)"

    images = images_32(args.n_images)
    load_before = os.getloadavg()
    rows = {}
    for name, cls in (("torch-fidelity", TorchFidelityInception), ("clean-fid", CleanFIDInception)):
        ex = cls(weights, batch_size=args.batch_size)
        seconds, feats = time_path(ex, images)
        rows[name] = {
            "metric": ex.metric,
            "feature_extractor": ex.id,
            "images": len(images),
            "seconds": seconds,
            "images_per_s": len(images) / seconds,
            "seconds_per_1000_images": 1000 * seconds / len(images),
        }
        print(f"{name:15s} {len(images):5d} images of 32x32 in {seconds:7.2f} s = {len(images) / seconds:6.2f} images/s")

    fd_timing = {}
    ref = feature_stats(feats, "bench")
    start = time.perf_counter()
    frechet_distance_from_samples(feats, ref.mu, ref.sigma)
    fd_timing["sample_route_seconds"] = time.perf_counter() - start
    if not args.ci:  # one 2048 x 2048 sqrtm is the slow step (docs/performance.md)
        start = time.perf_counter()
        frechet_distance(ref.mu, ref.sigma, ref.mu, ref.sigma)
        fd_timing["sqrtm_2048_seconds"] = time.perf_counter() - start
    for key, value in fd_timing.items():
        print(f"frechet distance, {key}: {value:.2f}")

    ratio = rows["torch-fidelity"]["images_per_s"] / rows["clean-fid"]["images_per_s"]
    print(f"torch-fidelity / clean-fid speed ratio: {ratio:.2f}")
    result = {
        "benchmark": "fid_feature_extraction",
        "resolution": 32,
        "batch_size": args.batch_size,
        "ci": args.ci,
        "weights": weights_kind,
        "paths": rows,
        "speed_ratio_torch_fidelity_over_clean_fid": ratio,
        "frechet_distance": fd_timing,
        "machine": machine_info(load_before),
    }
    write_report(args.out, result)
    tmp.cleanup()


if __name__ == "__main__":
    main()
