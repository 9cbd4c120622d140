"""`ndm compress`, `ndm decompress` and `ndm evaluate-compression`: bits-back coding with a
trained model (docs/compression.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ndm.cli.registry import command, required_args


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.pt of a training job (the same file must decode)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads; decode with the same number as encode")
    p.add_argument("--device", default="cpu", help="cpu | cuda; decode on the same device as encode")
    p.add_argument("--no-progress", action="store_true")


def _setup(args: argparse.Namespace):
    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from ndm.pipeline.train import load_trained_model

    return load_trained_model(args.model, device=args.device)


def _compress_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--out", required=True, help="the compressed file")
    p.add_argument("--steps", type=int, required=True, help="T: discrete steps of the bits-back chain")
    p.add_argument("--n-examples", type=int, default=0, help="first n test examples (0 = the whole test split)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--order", default="auto", choices=["auto", "posterior", "bitswap"])
    p.add_argument("--bins-per-std", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the initial bits")


@command("compress", "losslessly code the test split of a model's dataset by bits-back coding with ANS")(_compress_args)
def cmd_compress(args: argparse.Namespace) -> int:
    from ndm.codec import CodecError, CodecSettings, compress_to_file
    from ndm.model.diffusion import data_to_levels
    from ndm.pipeline.evaluate import load_split

    model, run = _setup(args)
    x, ds = load_split(run, "test", args.n_examples or None)
    if ds.levels is None:
        raise SystemExit(f"compress: dataset {run.dataset!r} is continuous; lossless coding needs discrete data")
    settings = CodecSettings(steps=args.steps, order=args.order, bins_per_std=args.bins_per_std, batch_size=args.batch_size, seed=args.seed)
    try:
        summary = compress_to_file(model, data_to_levels(x.to(args.device), ds.levels), settings, args.out, progress=not args.no_progress)
    except (CodecError, ValueError) as exc:
        raise SystemExit(f"compress: {exc}") from None
    print(json.dumps(summary))
    return 0


def _decompress_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("--in", dest="inp", required=True, help="a file written by `ndm compress`")
    p.add_argument("--out", required=True, help=".npy of the decoded level indices (N, *event_shape), uint8 or int16")


@command("decompress", "decode a file of `ndm compress` with the model that wrote it (checked bit for bit)")(_decompress_args)
def cmd_decompress(args: argparse.Namespace) -> int:
    import numpy as np

    from ndm.codec import CodecError, decompress_file

    model, _ = _setup(args)
    try:
        levels = decompress_file(model, args.inp, progress=not args.no_progress)
    except CodecError as exc:
        raise SystemExit(f"decompress: {exc}") from None
    arr = levels.numpy().astype(np.uint8 if model.levels <= 256 else np.int16)
    np.save(Path(args.out), arr)
    print(json.dumps({"n_examples": int(arr.shape[0]), "out": args.out}))
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    required_args(p, config="pipeline config YAML (eval.compression)", out="compression.json (the coded files are written beside it)")


@command("evaluate-compression", "code the test split at each eval.compression.steps T; rate, NELBO and speed")(_evaluate_args)
def cmd_evaluate_compression(args: argparse.Namespace) -> int:
    from ndm.codec.evaluate import evaluate_compression
    from ndm.pipeline.config import load_yaml

    _setup(args)
    out = evaluate_compression(args.model, load_yaml(args.config), args.out, device=args.device, progress=not args.no_progress)
    print(json.dumps({T: {k: r[k] for k in ("net_bpd", "steady_bpd", "nelbo_bpd")} for T, r in out["steps"].items()}))
    return 0
