"""pytest fixture ``slurm_cluster``: a real one-node SLURM cluster on 127.0.0.1 for the session.

Register it once in tests/conftest.py (see docs/slurm.md). The fixture installs Debian's
slurmctld, slurmd and munge if they are missing, starts them through tools/slurm_local.py and
stops them after the session. It skips only when SLURM cannot be installed or started here (not
root, no apt-get, apt-get failing); set NDM_REQUIRE_SLURM=1 (CI) to turn that skip into a failure,
so a broken CI machine cannot pass by skipping.

Several pytest sessions on one machine share the cluster through leases: the last one to finish
stops it, and a cluster started by hand (``python tools/slurm_local.py start``) is left running.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_slurm_local() -> ModuleType:
    """Import tools/slurm_local.py by path (tools/ is a script folder, not a package)."""
    name = "ndm_tools_slurm_local"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / "slurm_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


def _unavailable(reason: str) -> NoReturn:
    """Skip, or fail where the environment demands a cluster (NDM_REQUIRE_SLURM=1)."""
    if os.environ.get("NDM_REQUIRE_SLURM", "") not in ("", "0"):
        pytest.fail(f"NDM_REQUIRE_SLURM is set but SLURM is unavailable: {reason}")
    pytest.skip(f"no local SLURM cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[object]:
    """The running cluster's ClusterConfig (node_name, partition, cpus, fake_gpus, ...)."""
    sl = load_slurm_local()
    blocker = sl.install_blocker()
    if blocker is None and os.geteuid() != 0:
        blocker = "starting SLURM daemons needs root"
    if blocker is not None:
        _unavailable(blocker)
    holder = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        cfg, _started = sl.acquire(holder)
    except sl.SlurmUnavailable as e:
        _unavailable(str(e))
    try:
        yield cfg
    finally:
        sl.release(holder, cfg.state_dir)
