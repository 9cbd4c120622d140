#!/usr/bin/env bash
# The GPU check in one command (docs/performance.md, GPU check): every variant at the CIFAR-10
# shape of configs/paper.yaml, fp32 and bf16, trained, sampled and evaluated; images/s, the
# ratio to DDPM and the fraction of the GPU's bf16 peak; 2-process DDP when two GPUs exist.
# --config reproduce: configs/reproduce.yaml's CIFAR-10 rows (VDM, DDPM, NDM networks) in bf16.
# About 8 minutes on one H100-class GPU at the defaults. Arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash tools/setup.sh
exec .venv/bin/python benchmarks/gpu_check.py "$@"
