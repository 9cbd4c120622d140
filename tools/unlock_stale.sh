#!/usr/bin/env bash
# Remove a stale Snakemake lock of this working directory, and only a stale one.
#
#   bash tools/unlock_stale.sh [SNAKEMAKE ARGS...]     (e.g. --profile slurm all)
#
# A Snakemake killed by a node crash, kill -9 or a lost login session leaves its locks in
# .snakemake/locks/, and the next run stops with "LockException: Directory cannot be locked".
# The lock is stale when no Snakemake process runs in this directory: then this script runs
# `snakemake --unlock ARGS` and says so. While one runs, it leaves the lock alone (two
# Snakemakes writing the same outputs would corrupt them) and exits 1 naming the process.
# Linux only (/proc); elsewhere it prints the command to run by hand (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
here="$(pwd -P)"
SNAKEMAKE="${SNAKEMAKE:-.venv/bin/snakemake}"
[ -x "$SNAKEMAKE" ] || SNAKEMAKE=snakemake

if [ -z "$(ls -A .snakemake/locks 2>/dev/null)" ]; then
    exit 0  # no lock
fi
if [ ! -d /proc/self ]; then
    echo "unlock_stale: .snakemake/locks/ holds a lock; if no Snakemake runs here, remove it with: $SNAKEMAKE --unlock $*" >&2
    exit 1
fi
live=""
for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    [ "$pid" = "$$" ] && continue
    cwd="$(readlink "$proc/cwd" 2>/dev/null || true)"
    [ "$cwd" = "$here" ] || continue
    cmd="$(tr '\0' ' ' < "$proc/cmdline" 2>/dev/null || true)"
    case "$cmd" in
        *unlock_stale*) ;;
        *snakemake*) live="$live $pid" ;;
    esac
done
if [ -n "$live" ]; then
    echo "unlock_stale: Snakemake is running in $here (pid$live); its lock is not stale, leaving it" >&2
    exit 1
fi
echo "unlock_stale: stale Snakemake lock in $here/.snakemake/locks (no Snakemake process runs here): running $SNAKEMAKE --unlock $*" >&2
"$SNAKEMAKE" --unlock "$@"
