#!/usr/bin/env bash
# Set up, then run the few-step study (configs/study.yaml) on all local cores and record its
# measured wall time: reports in reports/study/, everything else in results/study/.
# About 129 min on 2 cores (second edition, measured 2026-12-07: reports/study/README.md); each run's
# measured time goes to results/study/wall_time.json and reports/study/README.md ("Run time").
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/unlock_stale.sh --cores all all --configfile configs/study.yaml "$@"
started="$(date -u +%FT%TZ)"
t0=$(date +%s)
.venv/bin/snakemake --cores all all --configfile configs/study.yaml "$@"
t1=$(date +%s)
# A run that found everything done (seconds) says nothing about the study's cost: keep the
# time of the run that did the work.
if [ $((t1 - t0)) -ge 60 ]; then
    .venv/bin/python - "$started" "$((t1 - t0))" <<'PY'
import json, os, socket, sys, time
from pathlib import Path

record = {"started": sys.argv[1], "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": int(sys.argv[2]),
          "cores": os.cpu_count(), "host": socket.gethostname(), "command": "bash tools/run_study.sh"}
Path("results/study/wall_time.json").write_text(json.dumps(record, indent=2) + "\n")
print(f"study wall time: {record['wall_s'] / 60:.1f} min")
PY
    # The report job ran before the time was known: compile it again with the time in README.md.
    .venv/bin/python -m ndm report --config configs/study.yaml --results results/study --out reports/study
fi
