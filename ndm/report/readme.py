"""reports/README.md: one page that links every table and figure and answers the few-step question."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ndm.report.outputs import csv_extension
from ndm.report.roles import roles
from ndm.pipeline.results import atomic_write_text
from ndm.report.collect import Results

MAX_LISTED = 40

TABLE_SENTENCES = {
    "likelihood": "NELBO and ODE NLL in bits/dim per dataset and variant, beside the published bounds (the NDM paper's main table).",
    "bpd_vs_T": "the discrete-time NELBO at each number of steps T and the continuous-time limit (VDM's bits/dim versus T).",
    "fid": "the Frechet distance of each variant at the paper's sampling setting (eval.paper_setting), with the published FID where the feature space matches.",
    "few_step": "Frechet distances (and the T-step NELBO) versus NFE for every variant and sampler: the few-step study.",
    "few_step_best": "Per variant and NFE, the sampler with the lowest Frechet distance (each model sampled with its best solver).",
    "few_step_comparison": "NDM minus DDPM / VDM at each NFE, paired by seed, with its interval at the row's Holm level, the seeds behind it and a verdict (3 seeds needed; borderline: p_holm in [0.05, 0.20)).",
    "primary_endpoint": "the pre-registered primary endpoints (docs/protocol.md): ndm against each baseline on the few-step lower envelope and the test NELBO, with the difference and TOST intervals at the row's Holm level, the margin, the minimum detectable effects and the verdict.",
    "per_seed": "every per-seed number (sample metrics per sampler, grid and step count; test likelihoods) behind the report's means and verdicts; the rows are in the CSV.",
    "likelihood_pairs": "every paired test-likelihood comparison the README states (NDM against each baseline, ndm@compute against DDPM, ndm@gauge against NDM, the ODE NLL), with its interval at the row's Holm level, p and Holm-adjusted p over the dataset's comparisons, and the verdict.",
    "gauge_comparison": "F in the reference gauge (ndm@gauge) minus the paper's F (ndm) at each NFE and for the T-step NELBO, paired by seed (empty when the config has no gauge-fixed copy).",
    "convergence": "each variant's final test NELBO (from the curve logged every train.eval_every steps) and what the last quarter of training still gained: whether the models compared have converged.",
    "matched_compute": "every variant's test NELBO at the same training FLOPs and the same training seconds (the cheapest full run's budget), read off its curve.",
    "gauge": "the input-independent offset of every learned F against its input-dependent part at t = 0.25 ... 1 (an offset the NELBO cannot see; it makes the ODE stiff).",
    "estimator_std": "the standard deviation of the NELBO estimator per time-sampling scheme (uniform, antithetic, importance in γ) for every trained model: VDM's variance point on real data.",
    "compression": "lossless rates of the bits-back ANS codec (`ndm compress`) beside the model's T-step NELBO: the steady rate, the net file rate and their difference, the one-off initial bits (docs/compression.md).",
    "claims": "the papers' exact claims (VDM's schedule invariance, variance not value, T-step convergence; Luo's equivalent parameterisations; NDM's F = identity case) checked on the Gaussian oracle, each with its measured figure, tolerance and pass/fail.",
}


def figure_sentences(datasets: list[str], samplers: dict[str, list[str]]) -> dict[str, str]:
    out = {
        "bpd_vs_T": "NELBO versus the number of steps T per dataset; dashed lines are the continuous-time NELBO, stars the published values.",
        "schedules": "the learned noise schedules γ(t) of vdm and ndm-vdm (one line per seed) over the fixed schedules of the other variants.",
        "training_curves": "training loss (bits/dim) versus step per dataset and variant.",
        "convergence": "the EMA model's test NELBO during training, versus steps and versus training FLOPs, mean over seeds with a standard-error band (empty without train.eval_every).",
    }
    for d in datasets:
        out[f"fid_vs_nfe_{d}"] = (f"{d}: each sample metric (a row) of every variant's lower envelope (the best sampler and grid with NFE <= N) "
                                  "against the NFE budget and against network GFLOPs per sample (x̂ and F, where NDM's cost of F shows), "
                                  "the data floor as a grey band, the highlighted models in colour and the others muted.")
        out[f"transforms_{d}"] = f"the transformation F(x, t) at t = 0, 0.25, 0.5, 0.75, 1 of the variants with a non-identity F, on {d} test data."
        out[f"gauge_{d}"] = f"the learned F's input-independent offset c(t) versus its input-dependent part (rms of F(x, t) − x and of dF/dt) over t, on {d} test data."
        for s in samplers.get(d, []):
            out[f"samples_{d}_{s}"] = f"{d} samples of every variant with the {s} sampler at each step count."
    return out


def run_time_lines(results: Path) -> list[str]:
    """The run's measured wall time (wall_time.json, written by the command that ran the DAG)
    and the job-seconds per rule from Snakemake's benchmark files."""
    import json

    lines = []
    wall = results / "wall_time.json"
    if wall.exists():
        try:
            w = json.loads(wall.read_text())
            lines.append(f"Measured wall time of the whole DAG: {w['wall_s'] / 60:.1f} min ({w['wall_s']:.0f} s, {w.get('cores', '?')} cores, {w.get('started', '')} to {w.get('ended', '')}, {w.get('host', '')}).")
            if w.get("note"):
                lines.append(str(w["note"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    per_rule: dict[str, list[float]] = {}
    for tsv in sorted((results / "benchmarks").glob("*/*.tsv")):
        try:
            last = tsv.read_text().strip().splitlines()[-1].split("\t")
            per_rule.setdefault(tsv.parent.name, []).append(float(last[0]))
        except (OSError, ValueError, IndexError):
            continue
    if per_rule:
        total = sum(sum(v) for v in per_rule.values())
        parts = ", ".join(f"{rule} {sum(v):.0f} s ({len(v)} jobs)" for rule, v in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])))
        lines.append(f"Job seconds by rule (Snakemake benchmarks, {total:.0f} s in all): {parts}.")
    return (["## Run time", "", *lines, ""]) if lines else []


def _seeds_text(res: Results) -> str:
    """'0, 1', or per dataset when their seeds differ: '0 (digits, patches); 0, 1 (toy2d)'."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for d in res.datasets:
        seeds = res.seeds_of(d)
        multi = [v for v in res.variants if res.seeds_of(d, v) == seeds]
        # datasets.<name>.multi_seed_variants / seed_counts: the other models ran fewer seeds
        fewer = {v: res.seeds_of(d, v) for v in res.variants if v not in multi}
        others = "; ".join(f"{v} seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))}" for v, ss in fewer.items())
        name = d if len(seeds) < 2 or not fewer else f"{d}: {', '.join(multi)}; {others}"
        groups.setdefault(tuple(seeds), []).append(name)
    if len(groups) <= 1 and all(":" not in n for names in groups.values() for n in names):
        return ", ".join(map(str, res.seeds))
    return "; ".join(f"{', '.join(map(str, seeds))} ({', '.join(names)})" for seeds, names in groups.items())


def _run_summary(res: Results) -> tuple[int, int]:
    done = 0
    for d, v, s in res.expected_runs:
        if (res.run_dir(d, v, s) / "likelihood.json").exists() or (res.run_dir(d, v, s) / "train_summary.json").exists():
            done += 1
    return done, len(res.expected_runs)


def _scale_line(res: Results, d: str) -> str:
    t = res.train[res.train["dataset"] == d] if not res.train.empty else res.train
    if t.empty:
        return ""
    p = t["n_params"].dropna()
    s = t["steps"].dropna()
    if p.empty or s.empty:
        return ""
    return (
        f"Scale: {int(p.min()):,}–{int(p.max()):,} parameters per model, {int(s.max()):,} training steps "
        "(the papers train networks of tens of millions of parameters for hundreds of thousands of steps)."
    )


def _list(items: list[str]) -> list[str]:
    lines = [f"- `{x}`" for x in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"- ... and {len(items) - MAX_LISTED} more")
    return lines


def _claims_lines(claims: pd.DataFrame | None) -> list[str]:
    """One line on the papers' exact claims (tables/claims), naming any that fail."""
    lines = ["## Claims checked", ""]
    if claims is None or claims.empty:
        return lines + ["Not computed: results/<config>/claims.json is missing (`ndm claims`).", ""]
    passed = claims["passed"].astype(bool)
    line = f"{int(passed.sum())} of {len(claims)} of the papers' exact claims hold on the Gaussian oracle within their tolerances ([tables/claims.md](tables/claims.md))"
    failed = claims.loc[~passed, "id"].tolist()
    return lines + [line + (f"; failing: {', '.join(failed)}." if failed else "."), ""]


def _summary_lines(res: Results, summary: dict[str, list[str]]) -> list[str]:
    """The answer first: three sentences per dataset (ndm.report.summary), the details below."""
    if not summary:
        return []
    lines = [
        "## The answer",
        "",
        "Differences are NDM − baseline (lower is better) with their interval [in brackets] at the row's Holm level, paired by training seed; "
        "with one seed the interval is within-run noise, which leaves out training variance, and nothing is called better.",
        "",
    ]
    for d in res.datasets:
        if d in summary:
            lines += [f"**{d}**", ""] + [f"- {sentence}" for sentence in summary[d]] + [""]
    return lines


def write_readme(
    out: Path,
    res: Results,
    tables: list[str],
    figures: list[str],
    samplers: dict[str, list[str]],
    answers: dict[str, list[str]],
    published_path: Path | None,
    published: pd.DataFrame | None,
    results_label: str,
    claims: pd.DataFrame | None = None,
    reviewer: list[str] | None = None,
    summary: dict[str, list[str]] | None = None,
) -> Path:
    done, total = _run_summary(res)
    partial = done < total or bool(res.missing)
    lines = [
        "# ndm-bench report",
        "",
        f"Results from `{results_label}`: {done} of {total} (dataset, variant, seed) runs have results"
        + (" — **PARTIAL**: missing files are listed at the end; tables keep their rows, marked `missing` or `partial`." if partial else "."),
        f"Datasets: {', '.join(res.datasets)}. Variants: {', '.join(res.variants)}. Seeds: {_seeds_text(res)}.",
        "Every number is a mean with its standard error: across seeds where there are several, else within the run.",
        "",
    ]
    lines += _summary_lines(res, summary or {})
    lines += [
        "## The few-step question",
        "",
        "At which number of function evaluations (NFE) does NDM's advantage over DDPM and VDM disappear or reverse?",
        "Computed from [tables/few_step_comparison.csv](tables/few_step_comparison.csv): diff = NDM − baseline (lower is better), "
        "paired by training seed, with an interval across seeds at the row's Holm level; NDM is called better or worse only when the comparison's NFEs, judged together "
        "(Holm, family-wise 5% per dataset, baseline, sampler and metric), leave that NFE significant. "
        "With one seed the interval [in brackets] is the within-run one, which ignores training variance, and no variant is called better. "
        "NFE counts x̂ evaluations; NDM also evaluates F at every step, whose cost depends on F's size (flops_per_sample in tables/few_step and the GFLOPs panels of figures/fid_vs_nfe_<dataset>).",
        "",
    ]
    if roles().model not in res.variants:
        lines.append("Not answered: the config has no `ndm` variant.")
    elif not answers:
        lines.append("Not answered yet: no dataset has sample or NELBO results for both `ndm` and a baseline (ddpm, vdm).")
    for d in res.datasets:
        if d not in answers:
            continue
        lines += [f"**{d}.** " + _scale_line(res, d), ""]
        lines += [f"- {a}" for a in answers[d]]
        lines.append("")
    lines += reviewer or []
    lines += run_time_lines(res.root)
    lines += _claims_lines(claims)
    lines += ["## Tables", "", "Each as CSV (numbers), Markdown and LaTeX (formatted) under `tables/`.", ""]
    for name in tables:
        lines.append(f"- [{name}](tables/{name}.md) ([csv](tables/{name}.{csv_extension(name)}), [tex](tables/{name}.tex)): {TABLE_SENTENCES.get(name, '')}")
    lines += ["", "## Figures", "", "PNG (PDF beside each) under `figures/`; a variant has the same colour in every figure.", ""]
    sentences = figure_sentences(res.datasets, samplers)
    for name in figures:
        lines.append(f"- [{name}.png](figures/{name}.png): {sentences.get(name, '')}")
    lines += ["", "## Published numbers", ""]
    if published is None:
        lines.append("No published.csv found: the tables have no published column values.")
    else:
        lines.append(f"From `{published_path}` (entered by hand from the papers; `primary` rows are compared, others are context):")
        lines.append("")
        for r in published[published["status"] == "published"].itertuples():
            bound = "≤ " if r.bound == "<=" else ""
            T = "" if (r.steps_T is None or math.isnan(r.steps_T)) else f", T = {int(r.steps_T)}"
            ctx = "" if r.primary else " (context)"
            lines.append(f"- {r.dataset} / {r.variant} / {r.metric}: {bound}{r.value:.2f}{T}{ctx} — {r.source.split(':')[0]}, {r.table}")
        empty = published[published["status"] != "published"]
        if not empty.empty:
            lines.append(f"- not entered (value not verified): {', '.join(f'{r.dataset}/{r.variant}' for r in empty.itertuples())}")
    if res.fd_skipped:
        lines += ["", "## Skipped metrics", ""]
        lines += [f"- {d}, {f} feature space: not computed. {why}" for (d, f), why in sorted(res.fd_skipped.items())]
    if res.missing or res.unreadable or res.ignored:
        lines += ["", "## Missing files", ""]
        if res.missing:
            lines += [f"{len(res.missing)} expected file(s) are absent:", ""] + _list(res.missing)
        if res.unreadable:
            lines += ["", f"{len(res.unreadable)} file(s) exist but could not be read:", ""] + _list(res.unreadable)
        if res.ignored:
            lines += ["", "Run directories not in this config (left out of the tables):", ""] + _list(res.ignored)
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
