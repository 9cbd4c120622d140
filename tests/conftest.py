"""Shared pytest setup.

`slurm_fixtures` provides the session-scoped `slurm_cluster` fixture (a real one-node
SLURM cluster on 127.0.0.1, started and stopped by the tests; see docs/slurm.md).
"""

import os

import torch

pytest_plugins = ["slurm_fixtures"]

# Two cores are shared by everything on the CI machine: oversubscribed BLAS threads make
# small networks 10x slower, so tests use what they are given (default: 1 per process).
torch.set_num_threads(int(os.environ.get("NDM_TEST_THREADS", "1")))
