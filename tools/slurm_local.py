#!/usr/bin/env python3
"""A real single-node SLURM cluster on 127.0.0.1, for tests and for trying the SLURM profile.

Why this exists: the workflow's SLURM path (snakemake-executor-plugin-slurm, sbatch, squeue,
srun inside jobs) can only be tested against real SLURM daemons. Debian ships slurmctld,
slurmd and munge; on one machine they form a one-node cluster in about a second. This module
installs them if missing, writes the configuration, starts and stops the daemons, and restores
whatever it changed.

Use it as a module (``acquire``/``release`` for shared use, ``start``/``stop`` directly) or as a
command line::

    python tools/slurm_local.py install|start|stop|status

Everything it creates lives under one state directory (default /var/lib/ndm-slurm-local,
override with NDM_SLURM_DIR), except /etc/slurm/slurm.conf and /etc/slurm/gres.conf, which
``srun`` inside jobs needs at the default path. Existing files there are backed up and put back
by ``stop``. Daemons it did not start are never stopped; a munged that is already running is
reused. Tested with Debian 12's SLURM 22.05.8 and munge 0.5.15.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MARKER = "# written by ndm-bench tools/slurm_local.py"
PACKAGES = ("slurmctld", "slurmd", "munge", "slurm-client")
BINARIES = ("slurmctld", "slurmd", "munged", "munge", "unmunge",
            "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
DEFAULT_STATE_DIR = Path(os.environ.get("NDM_SLURM_DIR", "/var/lib/ndm-slurm-local"))
CONF_DIR = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")
MUNGE_PIDFILE = MUNGE_RUN_DIR / "munged.pid"
READY_STATES = ("idle", "mixed", "allocated", "completing")
BAD_STATES = ("inval", "drain", "drained", "draining", "down", "fail")
# Jobs stay visible to squeue for MinJobAge seconds after they end. The slurm executor plugin
# polls squeue (there is no slurmdbd here, so sacct never sees jobs end) and needs
# MinJobAge >= 3 x its first status-check interval (default 40 s).
MIN_JOB_AGE_S = 300


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started on this machine (not root, no apt-get, ...)."""


# --------------------------------------------------------------------------------------------
# Configuration (pure functions)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """Everything that determines slurm.conf and gres.conf for the one-node cluster."""

    state_dir: Path
    node_name: str
    cpus: int
    real_memory_mb: int
    partition: str = "debug"
    fake_gpus: int = 2
    min_job_age_s: int = MIN_JOB_AGE_S
    cluster_name: str = "ndmlocal"

    @property
    def gpu_dir(self) -> Path:
        return self.state_dir / "dev"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def gpu_files(self) -> list[Path]:
        return [self.gpu_dir / f"fakegpu{i}" for i in range(self.fake_gpus)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state_dir": str(self.state_dir)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterConfig:
        return cls(**{**d, "state_dir": Path(str(d["state_dir"]))})


def render_slurm_conf(cfg: ClusterConfig) -> str:
    """slurm.conf for one node on 127.0.0.1, no accounting, no cgroups.

    proctrack/linuxproc and task/none avoid cgroups (unavailable in most containers);
    NoInAddrAny/NoCtldInAddrAny make the daemons bind to the node's address (127.0.0.1)
    instead of all interfaces; config_overrides keeps the node usable even when the machine
    reports a slightly different topology than configured.
    """
    s = cfg.state_dir
    gres = f" Gres=gpu:{cfg.fake_gpus}" if cfg.fake_gpus > 0 else ""
    def_mem = max(1, cfg.real_memory_mb // max(1, cfg.cpus))
    lines = [
        MARKER,
        f"ClusterName={cfg.cluster_name}",
        f"SlurmctldHost={cfg.node_name}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
        f"StateSaveLocation={s / 'state'}",
        f"SlurmdSpoolDir={s / 'spool'}",
        f"SlurmctldPidFile={s / 'slurmctld.pid'}",
        f"SlurmdPidFile={s / 'slurmd.pid'}",
        f"SlurmctldLogFile={cfg.log_dir / 'slurmctld.log'}",
        f"SlurmdLogFile={cfg.log_dir / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SlurmdParameters=config_overrides",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        # start jobs at submit time (the default batch_sched_delay=3 holds them ~3 s)
        "SchedulerParameters=batch_sched_delay=0",
        f"MinJobAge={cfg.min_job_age_s}",
        "ReturnToService=2",
        "SlurmdTimeout=300",
        "InactiveLimit=0",
        "KillWait=5",
        "GresTypes=gpu",
        f"NodeName={cfg.node_name} NodeAddr=127.0.0.1 CPUs={cfg.cpus} "
        f"RealMemory={cfg.real_memory_mb}{gres} State=UNKNOWN",
        f"PartitionName={cfg.partition} Nodes={cfg.node_name} Default=YES "
        f"MaxTime=INFINITE DefMemPerCPU={def_mem} State=UP",
    ]
    return "\n".join(lines) + "\n"


def render_gres_conf(cfg: ClusterConfig) -> str:
    """gres.conf declaring ``fake_gpus`` GPUs backed by device files in the state directory.

    SLURM requires File= for gpu GRES (a Count-only gpu is reported as 0 and the node drains),
    so the files are character devices with /dev/null's numbers (or plain files where mknod is
    not allowed; slurmd then logs an error but accepts them). Jobs get ``--gpus=N`` satisfied
    and CUDA_VISIBLE_DEVICES set; no real GPU is behind it.
    """
    lines = [MARKER, "AutoDetect=off"]
    if cfg.fake_gpus > 0:
        last = cfg.fake_gpus - 1
        files = cfg.gpu_dir / (f"fakegpu[0-{last}]" if last > 0 else "fakegpu0")
        lines.append(f"NodeName={cfg.node_name} Name=gpu File={files}")
    return "\n".join(lines) + "\n"


def parse_slurmd_c(text: str) -> dict[str, int]:
    """Integer fields of ``slurmd -C`` output, e.g. {"CPUs": 2, "RealMemory": 24105}."""
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", text)}


def parse_node_state(sinfo_out: str) -> str:
    """First node state reported by ``sinfo -h -N -o %T`` (lower case, '*' and '~' flags cut)."""
    for line in sinfo_out.splitlines():
        line = line.strip().lower()
        if line:
            return line.rstrip("*~#!%$@^-+")
    return ""


def detect_config(state_dir: Path = DEFAULT_STATE_DIR,
                  fake_gpus: int | None = None) -> ClusterConfig:
    """The machine's short hostname, usable CPUs and memory (MiB) as a ClusterConfig."""
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    mem_mb = _meminfo_total_mb()
    if shutil.which("slurmd"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True,
                                 timeout=20).stdout
            mem_mb = min(mem_mb, parse_slurmd_c(out).get("RealMemory", mem_mb))
    if fake_gpus is None:
        fake_gpus = int(os.environ.get("NDM_SLURM_FAKE_GPUS", "2"))
    return ClusterConfig(state_dir=state_dir, node_name=node, cpus=cpus,
                         real_memory_mb=mem_mb, fake_gpus=fake_gpus)


def _meminfo_total_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal missing from /proc/meminfo")


# --------------------------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------------------------


def missing_binaries() -> list[str]:
    """SLURM/munge programs not on PATH (sbin included)."""
    return [b for b in BINARIES if _which(b) is None]


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin"
    return shutil.which(name, path=path)


def install_blocker() -> str | None:
    """Why the Debian packages cannot be installed here, or None if they can (or are)."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return "SLURM is not installed and installing it needs root (apt-get)"
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is not available (not Debian/Ubuntu)"
    return None


def install(quiet: bool = True) -> None:
    """Install Debian's slurmctld, slurmd, munge and slurm-client if any program is missing.

    Non-interactive (CI has no stdin). Raises SlurmUnavailable with apt's output on failure.
    """
    if not missing_binaries():
        return
    blocker = install_blocker()
    if blocker:
        raise SlurmUnavailable(blocker)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=quiet, text=True)
        if r.returncode != 0:
            tail = ((r.stdout or "") + (r.stderr or ""))[-2000:]
            raise SlurmUnavailable(f"{' '.join(cmd)} failed (exit {r.returncode}): {tail}")
    still = missing_binaries()
    if still:
        raise SlurmUnavailable(f"installed {PACKAGES} but still missing: {still}")


def slurm_version() -> str:
    """E.g. 'slurm-wlm 22.05.8', or '' when SLURM is absent.

    ``slurmd -V`` rather than ``sinfo --version``: sinfo needs a slurm.conf even to print it.
    """
    exe = _which("slurmd")
    if exe is None:
        return ""
    r = subprocess.run([exe, "-V"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return r.stdout.strip()


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------


def _pid_alive(pid: int | None, comm: str | None = None) -> bool:
    """True if pid runs (and is not a zombie), and its /proc comm equals ``comm`` if given."""
    if not pid or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return False
    if comm is not None:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/comm").read_text().strip() == comm
        return False
    return True


def _pids_named(comm: str) -> list[int]:
    """Live processes whose /proc comm is exactly ``comm``."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and _pid_alive(int(p.name), comm):
            out.append(int(p.name))
    return out


def _read_pid(path: Path) -> int | None:
    """The pid in a pid file; None if absent, empty (being written) or garbled."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_pid_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(_pid_alive(p) for p in pids)


def _terminate(pids: list[int], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; only for pids this tool recorded."""
    for p in pids:
        if _pid_alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
    if not _wait_gone(pids, timeout_s):
        for p in pids:
            if _pid_alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        _wait_gone(pids, 5.0)


def _run(cmd: list[str], timeout_s: float = 30.0,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command with no stdin and captured output (daemons must not hold our pipes)."""
    exe = _which(cmd[0]) or cmd[0]
    r = subprocess.run([exe, *cmd[1:]], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout_s)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}): {r.stdout}{r.stderr}")
    return r


def _spawn_daemon(cmd: list[str], log: Path, user: str | None = None) -> None:
    """Start a self-daemonising program detached from our session, stdout/err to ``log``."""
    exe = _which(cmd[0]) or cmd[0]
    full = [exe, *cmd[1:]]
    if user is not None:
        full = ["runuser", "-u", user, "--", *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        r = subprocess.run(full, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                           start_new_session=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} exited {r.returncode}; see {log}:\n{_tail(log)}")


def _tail(path: Path, n: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


# --------------------------------------------------------------------------------------------
# Munge
# --------------------------------------------------------------------------------------------


def munge_works() -> bool:
    """True if a munged answers on the default socket (encode + decode round trip)."""
    if _which("munge") is None:
        return False
    try:
        enc = subprocess.run([_which("munge") or "munge", "-n"], capture_output=True, timeout=10,
                             stdin=subprocess.DEVNULL)
        if enc.returncode != 0:
            return False
        dec = subprocess.run([_which("unmunge") or "unmunge"], input=enc.stdout,
                             capture_output=True, timeout=10)
        return dec.returncode == 0
    except subprocess.SubprocessError:
        return False


def _ensure_munge_key() -> None:
    """Create /etc/munge/munge.key (1 KiB random, owned by munge, mode 0400) if absent."""
    if MUNGE_KEY.exists():
        return
    MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
    MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chmod(MUNGE_KEY, 0o400)
    with contextlib.suppress(KeyError):
        shutil.chown(MUNGE_KEY, "munge", "munge")


def _start_munged(log: Path) -> int:
    """Start munged as user munge (root if no such user); return its pid."""
    _ensure_munge_key()
    user: str | None = "munge"
    try:
        import pwd
        pwd.getpwnam("munge")
    except KeyError:
        user = None
    MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(MUNGE_RUN_DIR, user, user)
    os.chmod(MUNGE_RUN_DIR, 0o755)
    cmd = ["munged"] if user else ["munged", "--force"]
    _spawn_daemon(cmd, log, user=user)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if munge_works():
            pid = _read_pid(MUNGE_PIDFILE)
            if pid is None:
                pids = _pids_named("munged")
                pid = pids[0] if pids else None
            if pid is None:
                raise RuntimeError("munged answers but its pid is unknown")
            return pid
        time.sleep(0.1)
    raise RuntimeError(f"munged did not come up; see {log}:\n{_tail(log)}")


# --------------------------------------------------------------------------------------------
# State file and locking
# --------------------------------------------------------------------------------------------


@dataclass
class ClusterState:
    """What this tool started and changed, so that ``stop`` undoes exactly that."""

    config: dict[str, Any] = field(default_factory=dict)
    slurmctld_pid: int | None = None
    slurmd_pid: int | None = None
    munged_pid: int | None = None  # None: munged was already running and is not ours
    conf_backups: dict[str, str | None] = field(default_factory=dict)  # /etc path -> backup or None
    leases: dict[str, int] = field(default_factory=dict)  # holder -> pid (0: no owner process)
    version: str = ""


def _state_path(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def _load_state(state_dir: Path) -> ClusterState | None:
    p = _state_path(state_dir)
    if not p.exists():
        return None
    data = json.loads(p.read_text())
    return ClusterState(**data)


def _save_state(state_dir: Path, st: ClusterState) -> None:
    p = _state_path(state_dir)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(st), indent=2, default=str))
    os.replace(tmp, p)


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise start/stop between processes (several pytest sessions may share the machine)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Start / stop
# --------------------------------------------------------------------------------------------


def _write_conf(path: Path, text: str, backups: dict[str, str | None], state_dir: Path) -> None:
    """Write ``text`` to ``path``, backing up a pre-existing file that is not ours (once)."""
    key = str(path)
    if key not in backups:
        if path.exists() and MARKER not in path.read_text(errors="replace"):
            bdir = state_dir / "backup"
            bdir.mkdir(parents=True, exist_ok=True)
            dest = bdir / path.name
            shutil.copy2(path, dest)
            backups[key] = str(dest)
        else:
            backups[key] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(errors="replace") != text:
        tmp = path.with_name(path.name + ".ndm-tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _restore_confs(backups: dict[str, str | None]) -> None:
    for target, backup in backups.items():
        t = Path(target)
        if backup is not None and Path(backup).exists():
            shutil.copy2(backup, t)
            Path(backup).unlink()
        elif t.exists() and MARKER in t.read_text(errors="replace"):
            t.unlink()


def _make_gpu_files(cfg: ClusterConfig) -> None:
    """Fake GPU device files: char devices 1:3 (like /dev/null), plain files if mknod fails."""
    cfg.gpu_dir.mkdir(parents=True, exist_ok=True)
    for f in cfg.gpu_files():
        if f.exists():
            continue
        try:
            os.mknod(f, 0o666 | 0o020000, os.makedev(1, 3))  # S_IFCHR
        except OSError:
            f.touch()


def node_state(node: str, timeout_s: float = 10.0) -> str:
    """The node's state as sinfo reports it ('idle', 'mixed', 'inval', ...), '' if unknown."""
    try:
        r = _run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], timeout_s=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return ""
    return parse_node_state(r.stdout) if r.returncode == 0 else ""


def _node_reason(node: str) -> str:
    with contextlib.suppress(Exception):
        out = _run(["scontrol", "show", "node", node], check=False).stdout
        m = re.search(r"Reason=(.*)", out)
        return m.group(1).strip() if m else out.strip()
    return ""


def wait_until_ready(cfg: ClusterConfig, timeout_s: float = 60.0) -> str:
    """Poll sinfo until the node accepts jobs; fail fast if SLURM marks it invalid or drained."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = node_state(cfg.node_name, timeout_s=5.0)
        if state in READY_STATES:
            return state
        if state in BAD_STATES:
            raise RuntimeError(
                f"node {cfg.node_name} is {state}: {_node_reason(cfg.node_name)}\n"
                f"slurmd log:\n{_tail(cfg.log_dir / 'slurmd.log')}")
        time.sleep(0.1)
    raise RuntimeError(
        f"node {cfg.node_name} not ready after {timeout_s:.0f} s (state {state!r})\n"
        f"slurmctld log:\n{_tail(cfg.log_dir / 'slurmctld.log')}\n"
        f"slurmd log:\n{_tail(cfg.log_dir / 'slurmd.log')}")


def _running(st: ClusterState | None) -> bool:
    return bool(st and _pid_alive(st.slurmctld_pid, "slurmctld")
                and _pid_alive(st.slurmd_pid, "slurmd"))


def _our_daemons(state_dir: Path, st: ClusterState | None) -> list[int]:
    """Live slurmctld/slurmd pids that this tool started: recorded in the state file, or in the
    pid files of our state directory (a start that died before recording them)."""
    out = []
    for comm in ("slurmctld", "slurmd"):
        recorded = getattr(st, f"{comm}_pid") if st else None
        for pid in (recorded, _read_pid(state_dir / f"{comm}.pid")):
            if pid is not None and _pid_alive(pid, comm):
                out.append(pid)
                break
    return out


def _check_no_foreign_daemons(state_dir: Path, st: ClusterState | None) -> None:
    ours = set(_our_daemons(state_dir, st))
    foreign = [p for name in ("slurmctld", "slurmd") for p in _pids_named(name) if p not in ours]
    if foreign:
        raise RuntimeError(
            f"SLURM daemons not started by this tool are running (pids {foreign}); "
            "refusing to replace them. Stop them or use that cluster directly.")


def start(cfg: ClusterConfig | None = None, timeout_s: float = 60.0) -> ClusterConfig:
    """Start the cluster (idempotent: returns at once if it is already up) and wait until ready.

    Installs the packages first if needed. Returns the config in use.
    """
    cfg = cfg or detect_config()
    with _locked(cfg.state_dir):
        return _start_locked(cfg, timeout_s)


def _start_locked(cfg: ClusterConfig, timeout_s: float) -> ClusterConfig:
    st = _load_state(cfg.state_dir)
    if _running(st) and st is not None:
        running_cfg = ClusterConfig.from_dict(st.config)
        wait_until_ready(running_cfg, timeout_s)
        return running_cfg
    if os.geteuid() != 0:
        raise SlurmUnavailable("starting SLURM daemons needs root")
    install()
    _check_no_foreign_daemons(cfg.state_dir, st)
    # whatever a previous start or session left behind (orphan daemons, stale state) goes first
    _stop_locked(cfg.state_dir, st or ClusterState())
    st = ClusterState(config=cfg.to_dict())
    # Fresh controller state every start: no stale jobs or drained nodes from earlier runs.
    for sub in ("state", "spool"):
        shutil.rmtree(cfg.state_dir / sub, ignore_errors=True)
        (cfg.state_dir / sub).mkdir(parents=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    for log in cfg.log_dir.glob("*.log"):
        log.unlink()
    _make_gpu_files(cfg)
    try:
        _write_conf(CONF_DIR / "slurm.conf", render_slurm_conf(cfg), st.conf_backups, cfg.state_dir)
        _write_conf(CONF_DIR / "gres.conf", render_gres_conf(cfg), st.conf_backups, cfg.state_dir)
        _save_state(cfg.state_dir, st)
        if not munge_works():
            st.munged_pid = _start_munged(cfg.log_dir / "munged.out")
            _save_state(cfg.state_dir, st)
        _spawn_daemon(["slurmctld"], cfg.log_dir / "slurmctld.out")
        st.slurmctld_pid = _wait_pidfile(cfg.state_dir / "slurmctld.pid", "slurmctld")
        _save_state(cfg.state_dir, st)
        _spawn_daemon(["slurmd"], cfg.log_dir / "slurmd.out")
        st.slurmd_pid = _wait_pidfile(cfg.state_dir / "slurmd.pid", "slurmd")
        st.version = slurm_version()
        _save_state(cfg.state_dir, st)
        wait_until_ready(cfg, timeout_s)
    except BaseException:
        _stop_locked(cfg.state_dir, st)
        raise
    return cfg


def _wait_pidfile(path: Path, comm: str, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = _read_pid(path)
        if _pid_alive(pid, comm):
            return pid  # type: ignore[return-value]
        time.sleep(0.05)
    raise RuntimeError(f"{comm} did not write a live pid to {path}")


def stop(state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    """Stop every daemon this tool started, cancel leftover jobs, restore /etc/slurm.

    Returns False if nothing was running. Ignores leases (it is the forceful stop).
    """
    with _locked(state_dir):
        st = _load_state(state_dir)
        if st is None and not _our_daemons(state_dir, None):
            return False
        _stop_locked(state_dir, st or ClusterState())
        return True


def _stop_locked(state_dir: Path, st: ClusterState) -> None:
    daemons = _our_daemons(state_dir, st)
    if daemons:
        graceful = (CONF_DIR / "slurm.conf").exists()  # the client commands need it
        if graceful:
            with contextlib.suppress(Exception):
                jobs = _run(["squeue", "-h", "-o", "%i"], timeout_s=10, check=False).stdout.split()
                if jobs:
                    _run(["scancel", *jobs], timeout_s=10, check=False)
            with contextlib.suppress(Exception):
                _run(["scontrol", "shutdown"], timeout_s=15, check=False)
        if not _wait_gone(daemons, 15.0 if graceful else 0.0):
            _terminate(daemons)
        # a slurmstepd that outlived scancel belongs to our (only) cluster
        _terminate(_pids_named("slurmstepd"), 5.0)
    if st.munged_pid and _pid_alive(st.munged_pid, "munged"):
        _terminate([st.munged_pid])
    _restore_confs(st.conf_backups)
    for sub in ("state", "spool", "dev", "backup"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    for name in ("slurmctld.pid", "slurmd.pid", "cluster.json"):
        (state_dir / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Shared use: leases
# --------------------------------------------------------------------------------------------


def acquire(holder: str, cfg: ClusterConfig | None = None, timeout_s: float = 60.0,
            pid: int | None = None) -> tuple[ClusterConfig, bool]:
    """Start the cluster if needed and record ``holder`` as a user of it.

    Returns (config, started) where started says whether this call started the daemons. Several
    processes (e.g. two pytest sessions) can hold the cluster; the last ``release`` stops it.
    ``pid`` is the holder's process (default: this one); 0 means a holder without a process
    (the command line), which only ``stop`` removes.
    """
    cfg = cfg or detect_config()
    with _locked(cfg.state_dir):
        was_running = _running(_load_state(cfg.state_dir))
        cfg = _start_locked(cfg, timeout_s)
        st = _load_state(cfg.state_dir)
        assert st is not None
        st.leases[holder] = os.getpid() if pid is None else pid
        _save_state(cfg.state_dir, st)
        return cfg, not was_running


def release(holder: str, state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    """Drop ``holder``'s lease; stop the cluster when no live holder remains. True if stopped."""
    with _locked(state_dir):
        st = _load_state(state_dir)
        if st is None:
            return False
        st.leases.pop(holder, None)
        st.leases = {h: p for h, p in st.leases.items() if p == 0 or _pid_alive(p)}
        if st.leases:
            _save_state(state_dir, st)
            return False
        _stop_locked(state_dir, st)
        return True


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, object]:
    """A JSON-able summary: installed, running, node state, pids, leases, version."""
    st = _load_state(state_dir)
    info: dict[str, object] = {
        "installed": not missing_binaries(),
        "version": slurm_version(),
        "running": _running(st),
        "state_dir": str(state_dir),
    }
    if st is not None:
        info.update(pids={"slurmctld": st.slurmctld_pid, "slurmd": st.slurmd_pid,
                          "munged": st.munged_pid},
                    leases=st.leases, node=st.config.get("node_name"),
                    partition=st.config.get("partition"), fake_gpus=st.config.get("fake_gpus"))
        if info["running"]:
            info["node_state"] = node_state(str(st.config.get("node_name")))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["install", "start", "stop", "status"])
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    ap.add_argument("--fake-gpus", type=int, default=None,
                    help="GPUs to declare (fake device files); default 2 or NDM_SLURM_FAKE_GPUS")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    try:
        if a.action == "install":
            install(quiet=False)
            print(slurm_version())
        elif a.action == "start":
            t0 = time.monotonic()
            cfg, started = acquire("cli", detect_config(a.state_dir, a.fake_gpus), a.timeout, pid=0)
            print(f"{'started' if started else 'already running'}: node {cfg.node_name} "
                  f"({cfg.cpus} CPUs, {cfg.real_memory_mb} MiB, {cfg.fake_gpus} fake GPUs), "
                  f"partition {cfg.partition}, {slurm_version()}, {time.monotonic() - t0:.1f} s")
        elif a.action == "stop":
            print("stopped" if stop(a.state_dir) else "not running")
        else:
            print(json.dumps(status(a.state_dir), indent=2))
    except SlurmUnavailable as e:
        print(f"SLURM unavailable: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
