#!/usr/bin/env bash
# Set up, then run what F learns (docs/protocol.md, "What F learns"): the positive control
# (configs/f_control.yaml: toy2d and digits scaled so that z_1's marginal is far from N(0, I))
# and the sweep on digits at the study's budget (configs/f_sweep.yaml), then the expected gain of
# the optimal linear F per dataset (ndm f-gain) and the f_learning table
# (reports/f_learning/tables/f_learning.{csv,md,tex}) from the result files.
# About 75 min on 2 cores (2026-12-07; most of it the U-Net F's one seed and the sweep's 30 MLP-F models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
for config in configs/f_control.yaml configs/f_sweep.yaml; do
    bash tools/unlock_stale.sh --cores all all --configfile "$config"
    .venv/bin/snakemake --cores all all --configfile "$config" "$@"
    .venv/bin/python -m ndm f-gain --config "$config"
done
.venv/bin/python -m ndm f-learning --config configs/f_control.yaml configs/f_sweep.yaml --out reports/f_learning
