"""Wall time of a whole pipeline run and its split by rule, from Snakemake's own records.

Reads the `benchmark:` TSV of every job under <results>/benchmarks/<rule>/*.tsv (Snakemake
measures each job's wall time `s`, `cpu_time` and `max_rss` in MiB) and the Snakemake log of
the run (.snakemake/log/*.snakemake.log: job start and finish times, `Elapsed time`), and
prints per rule: jobs, wall time (sum over jobs and the longest job), CPU time, max RSS; and in
total: the run's wall time from the log, the summed job time, and the parallel speed-up
(summed job wall time / run wall time). Rules without a benchmark TSV (report, all) get their
wall time from the log. Writes JSON under results/benchmarks/.

    python benchmarks/bench_pipeline.py                         # results/default, newest matching log
    python benchmarks/bench_pipeline.py --results results/smoke  # another config's results
    python benchmarks/bench_pipeline.py --log .snakemake/log/<timestamp>.snakemake.log
    python benchmarks/bench_pipeline.py --ci                     # a tiny synthetic run (tests the parsing)

Snakemake reruns only jobs whose outputs are missing or stale, so a log covers the jobs of that
invocation: time a complete run from a clean results directory (docs/performance.md). The TSVs
are rewritten by every run of a job, so they describe the latest run of each job.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from _common import write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?(?:rule|checkpoint|localcheckpoint) (\S+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished job(?:id)?:? (\d+)(?: \(Rule: (\S+)\))?\.?$")
ELAPSED = re.compile(r"^Elapsed time: (?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$")
DONE = re.compile(r"^(\d+) of (\d+) steps \((\d+)%\) done$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results/default"), help="the config's results directory")
    p.add_argument("--log", type=Path, default=None, help="the Snakemake log (default: the newest under --log-dir that names --results)")
    p.add_argument("--log-dir", type=Path, default=Path(".snakemake/log"))
    p.add_argument("--cores", type=int, default=None, help="cores of the run (default: read from the log)")
    p.add_argument("--ci", action="store_true", help="parse a small synthetic run (TSVs and a log written to a temporary directory)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/benchmarks/bench_pipeline[_<name>|_ci].json)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ inputs


def read_benchmarks(results: Path) -> dict[str, list[dict]]:
    """rule -> one record per job TSV: {job, s, cpu_time, max_rss (MiB), ...} (the TSV's last line)."""
    out: dict[str, list[dict]] = {}
    root = results / "benchmarks"
    if not root.is_dir():
        return out
    for tsv in sorted(root.glob("*/*.tsv")):
        with open(tsv, newline="") as f:
            lines = list(csv.DictReader(f, delimiter="\t"))
        if not lines:
            continue
        rec = {"job": tsv.stem}
        for key, value in lines[-1].items():  # repeat > 1 writes several lines: the last is the latest
            try:
                rec[key] = float(value)
            except (TypeError, ValueError):
                rec[key] = value
        out.setdefault(tsv.parent.name, []).append(rec)
    return out


def find_log(log_dir: Path, results: Path) -> Path | None:
    """The newest Snakemake log that ran jobs writing under `results` (and finished, if any did)."""
    if not log_dir.is_dir():
        return None
    needle = str(results).rstrip("/") + "/"
    candidates = []
    for log in sorted(log_dir.glob("*.snakemake.log")):
        text = log.read_text(errors="replace")
        if needle in text and ("localrule " in text or "\nrule " in text):
            candidates.append((("steps (100%) done" in text), log))
    if not candidates:
        return None
    complete = [log for ok, log in candidates if ok]
    return (complete or [log for _, log in candidates])[-1]


def parse_log(path: Path) -> dict:
    """Job start/finish times per jobid and rule, the run's start, end and elapsed time."""
    jobs: dict[str, dict] = {}
    now: datetime | None = None
    first: datetime | None = None
    pending_rule: str | None = None
    elapsed = None
    cores = None
    done = total = None
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.rstrip()
        m = STAMP.match(line)
        if m:
            now = datetime.strptime(re.sub(r" +", " ", m.group(1)), "%a %b %d %H:%M:%S %Y")
            first = first or now
            continue
        m = START.match(line)
        if m:
            pending_rule = m.group(1)
            continue
        m = JOBID.match(line)
        if m and pending_rule is not None:
            jobs[m.group(1)] = {"rule": pending_rule, "start": now, "end": None}
            pending_rule = None
            continue
        m = FINISHED.match(line)
        if m:
            job = jobs.setdefault(m.group(1), {"rule": m.group(2), "start": None, "end": None})
            job["end"] = now
            if m.group(2):
                job["rule"] = m.group(2)
            continue
        m = ELAPSED.match(line)
        if m:
            days, h, mi, s = m.groups()
            elapsed = int(days or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(s)
            continue
        m = DONE.match(line)
        if m:
            done, total = int(m.group(1)), int(m.group(2))
            continue
        if line.startswith("Provided cores:"):
            cores = int(line.split(":")[1])
        elif line.strip().startswith("Date:") and first is None:
            try:
                first = datetime.strptime(line.split("Date:")[1].strip(), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                pass
    last = max([j["end"] for j in jobs.values() if j["end"]] + ([now] if now else []), default=None)
    wall = elapsed if elapsed is not None else ((last - first).total_seconds() if first and last else None)
    return {"jobs": jobs, "start": first, "end": last, "wall_s": wall, "elapsed_line": elapsed is not None, "cores": cores, "steps_done": done, "steps_total": total}


# ---------------------------------------------------------------- summary


def summarize(bench: dict[str, list[dict]], log: dict | None, cores: int | None) -> dict:
    rules: dict[str, dict] = {}
    for rule, recs in bench.items():
        walls = [r.get("s", 0.0) or 0.0 for r in recs]
        cpus = [r.get("cpu_time") for r in recs if isinstance(r.get("cpu_time"), float)]
        rss = [r.get("max_rss") for r in recs if isinstance(r.get("max_rss"), float)]
        rules[rule] = {
            "jobs": len(recs),
            "wall_s": sum(walls),
            "longest_job_s": max(walls) if walls else 0.0,
            "longest_job": recs[walls.index(max(walls))]["job"] if walls else None,
            "cpu_s": sum(cpus) if cpus else None,
            "max_rss_mib": max(rss) if rss else None,
            "source": "benchmark tsv",
        }
    if log is not None:  # rules without a benchmark TSV (report, all): times from the log
        from_log: dict[str, list[float]] = {}
        for job in log["jobs"].values():
            # A job whose rule wrote a benchmark TSV is counted above (also a rule named
            # <family>_<something>, as per-dataset rules were before 2026-12-07).
            if not (job["rule"] and job["start"] and job["end"]):
                continue
            if job["rule"] not in rules and not any(job["rule"].startswith(f"{family}_") for family in bench):
                from_log.setdefault(job["rule"], []).append((job["end"] - job["start"]).total_seconds())
        for rule, walls in from_log.items():
            rules[rule] = {"jobs": len(walls), "wall_s": sum(walls), "longest_job_s": max(walls), "longest_job": None,
                           "cpu_s": None, "max_rss_mib": None, "source": "snakemake log (1 s resolution)"}
    job_wall = sum(r["wall_s"] for r in rules.values())
    cpu = [r["cpu_s"] for r in rules.values() if r["cpu_s"] is not None]
    wall = log["wall_s"] if log else None
    cores = cores or (log["cores"] if log else None)
    total = {
        "wall_s": wall,
        "sum_job_wall_s": job_wall,
        "sum_cpu_s": sum(cpu) if cpu else None,
        "max_rss_mib": max((r["max_rss_mib"] for r in rules.values() if r["max_rss_mib"] is not None), default=None),
        "jobs": sum(r["jobs"] for r in rules.values()),
        "cores": cores,
        "parallel_speedup": (job_wall / wall) if wall else None,
        "core_utilisation": (job_wall / (wall * cores)) if wall and cores else None,
    }
    for r in rules.values():
        r["share_of_job_time"] = r["wall_s"] / job_wall if job_wall else None
    return {"rules": dict(sorted(rules.items(), key=lambda kv: -kv[1]["wall_s"])), "total": total}


def _fmt(x, spec: str) -> str:
    if isinstance(x, (int, float)):
        return format(x, spec)
    width = re.match(r">(\d+)", spec)
    return "-".rjust(int(width.group(1))) if width else "-"


def print_summary(summary: dict, log_path: Path | None, results: Path) -> None:
    print(f"results: {results}   log: {log_path or '(none found)'}")
    print(f"{'rule':<22} {'jobs':>5} {'wall s':>9} {'share':>6} {'longest s':>10} {'cpu s':>9} {'max RSS MiB':>12}")
    for rule, r in summary["rules"].items():
        print(f"{rule:<22} {r['jobs']:>5} {r['wall_s']:>9.1f} {_fmt(100 * r['share_of_job_time'] if r['share_of_job_time'] is not None else None, '>5.1f')}% "
              f"{r['longest_job_s']:>10.1f} {_fmt(r['cpu_s'], '>9.1f')} {_fmt(r['max_rss_mib'], '>12.1f')}")
    t = summary["total"]
    print(f"{'total (jobs)':<22} {t['jobs']:>5} {t['sum_job_wall_s']:>9.1f} {'':>7} {'':>10} {_fmt(t['sum_cpu_s'], '>9.1f')} {_fmt(t['max_rss_mib'], '>12.1f')}")
    print(f"pipeline wall time: {_fmt(t['wall_s'], '.1f')} s on {t['cores'] or '?'} cores; summed job time / wall time = "
          f"{_fmt(t['parallel_speedup'], '.2f')} (core utilisation {_fmt(100 * t['core_utilisation'] if t['core_utilisation'] else None, '.0f')}%)")


# -------------------------------------------------------------- CI fixture


def write_synthetic_run(root: Path) -> tuple[Path, Path]:
    """Two rules' TSVs and a Snakemake-style log, as Snakemake 9 writes them."""
    results = root / "results" / "ci"
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rule, job, s, rss, cpu in [("train", "digits_ddpm_seed0", 12.5, 410.2, 11.9), ("train", "digits_ndm_seed0", 40.0, 620.0, 39.0),
                                   ("sample_grid", "digits_ddpm_seed0_ddim", 3.0, 300.0, 2.5)]:
        d = results / "benchmarks" / rule
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{job}.tsv").write_text(header + f"{s}\t0:00:{int(s):02d}\t{rss}\t900\t{rss}\t{rss}\t0\t1\t90\t{cpu}\n")
    log = root / "ci.snakemake.log"
    out = str(results) + "/"
    log.write_text(
        "Provided cores: 2\n"
        "[Mon Nov 23 10:00:00 2026]\nlocalrule train:\n    output: " + out + "digits/ddpm/seed0/model.pt\n    jobid: 1\n"
        "[Mon Nov 23 10:00:00 2026]\nlocalrule train:\n    output: " + out + "digits/ndm/seed0/model.pt\n    jobid: 2\n"
        "[Mon Nov 23 10:00:13 2026]\nFinished jobid: 1 (Rule: train)\n1 of 4 steps (25%) done\n"
        "[Mon Nov 23 10:00:13 2026]\nlocalrule sample_grid:\n    jobid: 3\n"
        "[Mon Nov 23 10:00:16 2026]\nFinished jobid: 3 (Rule: sample_grid)\n2 of 4 steps (50%) done\n"
        "[Mon Nov 23 10:00:40 2026]\nFinished jobid: 2 (Rule: train)\n3 of 4 steps (75%) done\n"
        "[Mon Nov 23 10:00:40 2026]\nlocalrule report:\n    jobid: 4\n"
        "[Mon Nov 23 10:00:42 2026]\nFinished jobid: 4 (Rule: report)\n4 of 4 steps (100%) done\n"
        "Complete log(s): " + str(log) + "\nElapsed time: 0:00:42.500000\n"
    )
    return results, log


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = None
    if args.ci:
        tmp = tempfile.TemporaryDirectory()
        args.results, args.log = write_synthetic_run(Path(tmp.name))
    bench = read_benchmarks(args.results)
    log_path = args.log or find_log(args.log_dir, args.results)
    log = parse_log(log_path) if log_path and log_path.exists() else None
    if not bench and log is None:
        print(f"no benchmark TSVs under {args.results}/benchmarks and no Snakemake log naming {args.results}; run the pipeline first "
              f"(e.g. snakemake --cores all all)", file=sys.stderr)
        return 1
    summary = summarize(bench, log, args.cores)
    print_summary(summary, log_path, args.results)
    name = "ci" if args.ci else args.results.name
    out_path = args.out or Path(f"results/benchmarks/bench_pipeline_{name}.json")
    report = {
        "benchmark": "pipeline",
        "ci": args.ci,
        "results": str(args.results),
        "log": str(log_path) if log_path else None,
        "run_start": log["start"].isoformat() if log and log["start"] else None,
        "run_end": log["end"].isoformat() if log and log["end"] else None,
        "steps_done": log["steps_done"] if log else None,
        "steps_total": log["steps_total"] if log else None,
        **summary,
    }
    write_report(out_path, report)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
