# Deferred tracking (config `tracking_mode: deferred`, the embedded default): every job writes
# its MLflow journal only, and this one job pushes all of them into the store once every
# train and evaluate job is done. A job then skips MLflow's import and store start-up, a large
# share of what a small CPU job costs beyond its compute, and one process pushes every journal
# (docs/tracking.md has the numbers). `ndm tracking-sync` is idempotent, so a rerun after new results pushes only
# what changed. With `tracking_mode: live` (paper config, SLURM) jobs log as they run and
# this rule is not part of `all`.

from ndm.pipeline.tracking_jobs import tracking_mode

TRACKING_DEFERRED = tracking_mode(config) == "deferred"
TRACKING_OUTPUTS = [f"{RESULTS}/tracking_sync.json"] if TRACKING_DEFERRED else []


rule sync_tracking:
    input:
        all_results(),
    output:
        f"{RESULTS}/tracking_sync.json",
    params:
        ndm=NDM,
        # results/<dataset>/<variant>/seed<k>/train_summary.json -> results/ (as in rule report)
        results=lambda wc, input: str(Path(input[0]).parents[3]),
    log:
        f"{RESULTS}/logs/sync_tracking.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{params.ndm} tracking-sync --under {params.results} --summary {output} > {log} 2>&1"
