#!/usr/bin/env bash
# Set up, then run the embedded default (configs/default.yaml) on all local cores:
# tables and figures land in reports/, everything else in results/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# A previous run killed hard (kill -9, crash) leaves a stale lock: remove it, saying so (a
# lock of a Snakemake still running here stops this script instead). docs/reliability.md.
bash tools/unlock_stale.sh --cores all all "$@"
exec .venv/bin/snakemake --cores all all "$@"
