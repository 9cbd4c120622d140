"""Sharded sampling (eval.sample_shards: K): which samples a shard draws, and the merge.

A (model, sampler) sample set of n_samples is split into K shard jobs. Shard k draws
n_k = n // K (+1 for the first n mod K shards) samples with its own noise generator, seeded
from (seed, steps, shard), so a shard's samples depend on nothing but those three and K, and a
rerun of one shard redraws exactly its samples. Shard 0's stream is the unsharded one (K = 1
keeps today's files bit for bit). Files: samples/<sampler>/shard<k>/steps<N>.npz and a
shard manifest.json beside them.

The merge (the evaluate_samples job) concatenates the shards in shard order per step count
into samples/<sampler>/steps<N>.npz with a manifest.json, the same layout an unsharded job
writes, so the Frechet distances, the report and the sample figures read one file per step
count and never see the shards: the merged FD is the FD of the concatenated samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ndm.pipeline.results import atomic_write, write_result_json

# Shard k's seed is the unsharded seed plus k * SHARD_STRIDE, modulo 2^32: torch's CPU generator
# (mt19937) keeps only the low 32 bits of a seed (a stride of 2^40 gave two shards the same
# samples). The unsharded seeds (seed * 100_003 + steps) stay below 2^22 for seeds <= 41 and
# step counts <= 10^4, so for those and K <= 1024 shards no two (seed, steps, shard) share a seed.
SHARD_STRIDE = 2**22


def shard_size(n: int, shard: int, shards: int) -> int:
    """Samples of shard `shard` of `shards` (sizes differ by at most one, sum to n)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return n // shards + (1 if shard < n % shards else 0)


def noise_seed(seed: int, steps: int, shard: int = 0) -> int:
    """The noise generator's seed of one (run seed, step count, shard)."""
    return (seed * 100_003 + steps + shard * SHARD_STRIDE) % 2**32 if shard else seed * 100_003 + steps


def _step_count(path: str | Path) -> int:
    return int(Path(path).stem.replace("steps", ""))


def merge_shards(shard_manifests: list[str | Path], out_dir: str | Path) -> list[Path]:
    """Concatenate the shards of one (model, sampler) into out_dir/steps<N>.npz + manifest.json.

    Per step count: samples in shard order; nfe, nfe_F and flops_per_sample averaged over
    samples (equal across shards for the fixed-step samplers, measured for ode-adaptive);
    seconds summed (the sampling compute of the whole set). The manifest lists the shards.
    """
    manifests = [json.loads(Path(m).read_text()) for m in shard_manifests]
    if not manifests:
        raise ValueError("merge_shards: no shard manifests")
    shard_ids = [m.get("shard", 0) for m in manifests]
    if sorted(shard_ids) != list(range(len(manifests))):
        raise ValueError(f"merge_shards: expected shards 0..{len(manifests) - 1}, got {shard_ids}")
    by_steps: dict[int, list[Path]] = {}
    for m in sorted(manifests, key=lambda m: m.get("shard", 0)):
        for f in m["files"]:
            by_steps.setdefault(_step_count(f), []).append(Path(f))
    if any(len(files) != len(manifests) for files in by_steps.values()):
        raise ValueError(f"merge_shards: the shards hold different step counts: { {s: len(f) for s, f in by_steps.items()} }")
    out_dir = Path(out_dir)
    written: list[Path] = []
    records: list[dict[str, Any]] = []
    for steps in sorted(by_steps):
        parts = []
        for f in by_steps[steps]:
            with np.load(f) as z:
                parts.append({k: z[k] for k in z.files})
        n = np.array([len(p["samples"]) for p in parts], dtype=np.float64)
        arrays = dict(parts[0])
        arrays["samples"] = np.concatenate([p["samples"] for p in parts])
        for key in ("nfe", "nfe_F", "flops_per_sample"):
            if key in arrays:
                arrays[key] = float(np.dot(n, [float(p[key]) for p in parts]) / n.sum())
        arrays["seconds"] = float(sum(float(p["seconds"]) for p in parts))
        arrays["shards"] = len(parts)
        path = out_dir / f"steps{steps}.npz"
        atomic_write(path, lambda fh, a=arrays: np.savez(fh, **a))
        written.append(path)
        rec = {k: (arrays[k].item() if isinstance(arrays[k], np.ndarray) else arrays[k]) for k in ("steps", "nfe", "nfe_F", "seconds") if k in arrays}
        if "flops_per_sample" in arrays:
            rec["flops_per_sample"] = arrays["flops_per_sample"]
        records.append({"file": str(path), "time_grid": str(arrays.get("time_grid", "uniform-t")), **rec, "n_samples": int(n.sum())})
    first = manifests[0]
    identity = {k: first[k] for k in ("dataset", "variant", "seed", "config_hash", "sampler", "time_grid") if k in first}
    write_result_json(
        out_dir / "manifest.json",
        {**identity, "n_samples": int(sum(m["n_samples"] for m in manifests)), "shards": [str(p) for p in shard_manifests],
         "files": [str(p) for p in written], "records": records},
    )
    return written
