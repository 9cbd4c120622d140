"""Bits-back coding speed: images per second for encode and decode (ndm/codec, docs/compression.md).

For digits (1x8x8, configs/default.yaml's network, real test images) and the variants ddpm, vdm
(order "bitswap") and ndm (order "posterior"), at each T it compresses n images to a file, decodes
them back (checked exact) and reports encode and decode images/s, the network evaluations per
image (T per direction) and the file's net bits/dim. Fresh models (zero last layers randomised,
bench_train.randomize_zero_layers): the speed hardly depends on the weights, the rate does (an
untrained model's rate is meaningless, so it is recorded only as a sanity value).

    python benchmarks/bench_compress.py            # 297 images (the whole test split), T = 10, 100
    python benchmarks/bench_compress.py --ci       # 8 images, T = 2, ddpm and ndm
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import machine_info, write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SHAPES, model_config, randomize_zero_layers  # noqa: E402

from ndm.codec import CodecSettings, compress_to_file, decompress_file  # noqa: E402
from ndm.model.variants import build_model  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true", help="tiny: 8 images, T = 2, ddpm and ndm")
    p.add_argument("--variants", default=None, help="comma-separated (default ddpm,vdm,ndm; --ci ddpm,ndm)")
    p.add_argument("--steps", default=None, help="comma-separated T (default 10,100; --ci 2)")
    p.add_argument("--n", type=int, default=None, help="test images (default 297 = all; --ci 8)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/benchmarks/bench_compress[_ci].json)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    variants = (args.variants or ("ddpm,ndm" if args.ci else "ddpm,vdm,ndm")).split(",")
    steps = [int(t) for t in (args.steps or ("2" if args.ci else "10,100")).split(",")]
    n = args.n or (8 if args.ci else 297)
    out_path = args.out or Path(f"results/benchmarks/bench_compress{'_ci' if args.ci else ''}.json")

    from ndm.pipeline.data import load_dataset

    ds = load_dataset("digits", seed=0)
    levels = ds.test[:n].long()
    _, _, shape, k, _ = SHAPES["digits"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            cfg, _ = model_config("digits", variant, "default", args.ci)
            torch.manual_seed(0)
            model = build_model(cfg, shape, k).eval()
            randomize_zero_layers(model)
            for T in steps:
                path = Path(tmp) / f"{variant}_T{T}.ndmbb"
                t0 = time.perf_counter()
                summary = compress_to_file(model, levels, CodecSettings(steps=T, batch_size=args.batch_size), path)
                t_enc = time.perf_counter() - t0
                t0 = time.perf_counter()
                decoded = decompress_file(model, path)
                t_dec = time.perf_counter() - t0
                exact = bool(torch.equal(decoded, levels))
                row = {
                    "shape": "digits",
                    "variant": variant,
                    "order": summary["settings"]["order"],
                    "T": T,
                    "n_images": n,
                    "encode_images_per_s": n / t_enc,
                    "decode_images_per_s": n / t_dec,
                    "nfe_per_image": T,
                    "net_bpd_untrained": summary["net_bpd"],
                    "roundtrip_exact": exact,
                }
                rows.append(row)
                print(f"{variant:5s} T={T:4d} {row['order']:9s} encode {row['encode_images_per_s']:8.1f} img/s  decode {row['decode_images_per_s']:8.1f} img/s  exact {exact}")
                if not exact:
                    raise SystemExit(f"{variant} T={T}: the decoded images differ from the input")
    write_report(out_path, {"benchmark": "compress", "ci": args.ci, "batch_size": args.batch_size, "rows": rows, "machine": machine_info(load_before)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
