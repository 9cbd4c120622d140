# Training stage: one job per (dataset, variant, seed). Jobs checkpoint and resume: a rerun
# of a preempted or failed job (exit 75 after SIGTERM/SIGUSR1) continues from checkpoint.pt,
# which Snakemake leaves in place because it is not a declared output.


rule train:
    input:
        f"{RESULTS}/{{dataset}}/data.json",
    output:
        model=f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/model.pt",
        summary=f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/train_summary.json",
    params:
        out=lambda wc: model_dir(wc.dataset, wc.variant, wc.seed),
        config_hash=lambda wc: run_hash(wc.dataset, wc.variant, wc.seed),
    wildcard_constraints:
        seed=r"\d+",
    log:
        f"{RESULTS}/logs/train/{{dataset}}_{{variant}}_seed{{seed}}.log",
    retries: config.get("retries", 1)
    threads: lambda wc: res(wc.dataset, "train", "threads", 1)
    resources:
        mem_mb=lambda wc: res(wc.dataset, "train", "mem_mb", 4000),
        runtime=lambda wc: res(wc.dataset, "train", "runtime", 60),
        gpu=lambda wc: res(wc.dataset, "train", "gpu", 0),
    shell:
        "ndm train --config {CONFIG_PATH} --dataset {wildcards.dataset} --variant {wildcards.variant} "
        "--seed {wildcards.seed} --out {params.out} --threads {threads} --no-progress > {log} 2>&1"
