#!/usr/bin/env bash
# Set up, then run the embedded default (configs/default.yaml) on all local cores:
# tables and figures land in reports/, everything else in results/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/snakemake --cores all all "$@"
