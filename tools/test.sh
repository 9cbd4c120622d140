#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests against closed forms, the smoke DAG with
# real Snakemake and MLflow, and the smoke DAG through SLURM on a one-node cluster that the
# tests start (as root; they install Debian's slurmctld/slurmd/munge if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -q -ra --durations=20 "$@"
