"""The pipeline's compression result: code the test split at each T, decode it, compare with the NELBO.

compression.json holds, per T, the net bits/dim of the file (its whole size over N * D), the
steady rate (the bits the batches after the first add, without the initial bits and header),
the overhead (their difference), the model's exact T-step NELBO on the same examples, and the
coding speed in images per second (docs/compression.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ndm.codec.codec import CodecSettings, compress_to_file, decompress_file
from ndm.model.diffusion import data_to_levels


def code_split(model, levels: torch.Tensor, settings: CodecSettings, path: Path, progress: bool = False) -> dict[str, Any]:
    """Compress, decompress and check one file; the summary with timings and speeds."""
    t0 = time.perf_counter()
    summary = compress_to_file(model, levels, settings, path, progress)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decompress_file(model, path, progress)
    t_dec = time.perf_counter() - t0
    if not torch.equal(decoded.cpu(), levels.cpu()):  # decode() checks the data hash; this is the direct check
        raise RuntimeError(f"{path}: decoded data differ from the input")
    n = levels.shape[0]
    return {**summary, "encode_s": round(t_enc, 3), "decode_s": round(t_dec, 3), "encode_images_per_s": n / t_enc, "decode_images_per_s": n / t_dec, "roundtrip_exact": True}


def evaluate_compression(model_path: str | Path, config: dict, out_path: str | Path, *, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    from ndm.estimators.likelihood import discrete_nelbo
    from ndm.pipeline.config import ConfigError, resolve_eval_config
    from ndm.pipeline.evaluate import load_split
    from ndm.pipeline.results import write_result_json
    from ndm.pipeline.train import load_trained_model

    model, run = load_trained_model(model_path, device=device)
    ev = resolve_eval_config(config, run.dataset)
    cc = ev.compression
    if not cc.steps:
        raise ConfigError(f"datasets.{run.dataset}.eval.compression.steps is empty: compression is off for this dataset")
    x, ds = load_split(run, "test", cc.n_examples or None)
    if ds.levels is None:
        raise ConfigError(f"dataset {run.dataset!r} is continuous: lossless coding needs discrete data (levels)")
    x = x.to(device)
    levels = data_to_levels(x, ds.levels)
    out_dir = Path(out_path).parent
    out: dict[str, Any] = {
        "dataset": run.dataset,
        "variant": run.model_name,
        "seed": run.seed,
        "config_hash": run.hash(),
        "model": str(model_path),
        "n_examples": int(x.shape[0]),
        "dims": model.dims,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps": {},
    }
    for T in cc.steps:
        settings = CodecSettings(steps=T, order=cc.order, bins_per_std=cc.bins_per_std, batch_size=cc.batch_size, seed=run.seed)
        res = code_split(model, levels, settings, out_dir / f"compressed_T{T}.ndmbb", progress)
        gen = torch.Generator(device=device).manual_seed(run.seed + 202)
        nelbo = discrete_nelbo(model, x, T, n_step_samples=None, generator=gen, batch_size=ev.batch_size * 8)
        res["nelbo_bpd"] = nelbo.bpd
        res["nelbo_bpd_stderr"] = nelbo.bpd_stderr
        out["steps"][str(T)] = res
    write_result_json(out_path, out)
    return out
