# Compression stage: bits-back coding of the test split with each trained model, for the
# datasets whose eval.compression.steps is non-empty (docs/compression.md). One job per
# (dataset, variant, seed): it codes the split at every T, decodes it back (exact, checked),
# and writes compression.json (net bits/dim, steady rate, the T-step NELBO, images/s) with
# the coded files beside it. all_results (common.smk) asks for it where enabled.

rule evaluate_compression:
    input:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/model.pt",
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/compression.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        seed=r"\d+",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_compression/{{dataset}}_{{variant}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate_compression/{{dataset}}_{{variant}}_seed{{seed}}.log",
    conda:
        "../../environment.yml"
    # One thread: a file decodes only with the thread count that wrote it.
    threads: 1
    resources:
        **stage_resources("evaluate", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} evaluate-compression --config {params.config} --model {input} --out {output} "
        "--threads 1 --device cpu --no-progress > {log} 2>&1"
