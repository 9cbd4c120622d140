# Report stage: results JSON -> pandas tables (CSV, Markdown, LaTeX) and seaborn figures
# in reports/, with the published numbers beside ours. `ndm report` also runs by hand on
# partial results (missing rows are marked, missing files listed in its README.md).
#
# The rule's outputs are every file ndm.report writes for this config (report_outputs);
# its inputs every file it reads: the result JSON of each run (all_results, common.smk;
# first, so params.results can be derived from input[0]; likelihood.json also holds each
# model's schedule, F snapshot and gauge split), the sample manifests of the sample grids,
# each dataset's data.json (levels of the images, toy test points) and configs/published.csv;
# last, the claims on the Gaussian oracle (claims.smk). Never a model.pt: the report
# recompiles from result files alone.

rule report:
    input:
        report_inputs(),
        CLAIMS_JSON,
    output:
        REPORT_OUTPUTS,
    params:
        ndm=NDM,
        config=CONFIG_PATH,
        # results/<dataset>/<variant>/seed<k>/train_summary.json -> results/
        results=lambda wc, input: str(Path(input[0]).parents[3]),
        reports=lambda wc, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{params.ndm} report --config {params.config} --results {params.results} --out {params.reports} > {log} 2>&1"
