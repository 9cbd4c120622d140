# Report stage: results JSON -> pandas tables (CSV, Markdown, LaTeX) and seaborn figures
# in reports/, with the published numbers beside ours. `ndm report` also runs by hand on
# partial results (missing rows are marked).


def all_results():
    files = []
    for d in DATASETS:
        for v in VARIANTS:
            for s in SEEDS:
                m = model_dir(d, v, s)
                files += [f"{m}/train_summary.json", f"{m}/likelihood.json"]
                files += [f"{m}/fid/{sampler}.json" for sampler in samplers(d)]
    return files


REPORT_OUTPUTS = [
    f"{REPORTS}/README.md",
    f"{REPORTS}/tables/likelihood.csv",
    f"{REPORTS}/tables/few_step.csv",
    f"{REPORTS}/figures/fid_vs_nfe.png",
]


rule report:
    input:
        all_results(),
    output:
        REPORT_OUTPUTS,
    log:
        f"{RESULTS}/logs/report.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "ndm report --config {CONFIG_PATH} --results {RESULTS} --out {REPORTS} > {log} 2>&1"
