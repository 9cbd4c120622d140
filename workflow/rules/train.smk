# Training stage: one job per (dataset, variant, seed). Jobs checkpoint and resume: a rerun
# of a preempted or failed job (exit 75 after SIGTERM/SIGUSR1) continues from checkpoint.pt,
# which Snakemake leaves in place because it is not a declared output.
#
# Data-parallel training (docs/slurm.md, "Data-parallel training"): with resources.train.gpu
# N > 1 (one process per GPU) or resources.train.tasks N > 1 (CPU processes), the job runs
# `torchrun --standalone --nproc_per_node N -m ndm train ...` inside its one allocation: the
# SLURM plugin turns `gpu: N` into --gpus=N (the rule must not set the plugin's `tasks`, which
# on a GPU job means --ntasks-per-gpu). `trap '' USR1`: torchrun's agent would die of SLURM's
# SIGUSR1; ignoring it there leaves the workers, which install their own handler, to checkpoint.


rule train:
    input:
        f"{RESULTS}/{{dataset}}/data.json",
    output:
        model=f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/model.pt",
        summary=f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/train_summary.json",
    params:
        config=CONFIG_PATH,
        launch=lambda wc: train_launcher(wc.dataset),
        # torch threads per process: the job's threads shared by its processes
        threads=lambda wc, threads: max(1, threads // train_processes(wc.dataset)),
        out=lambda wc: model_dir(wc.dataset, wc.variant, wc.seed),
        config_hash=lambda wc: run_hash(wc.dataset, wc.variant, wc.seed),
    wildcard_constraints:
        seed=r"\d+",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}_{{variant}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/train/{{dataset}}_{{variant}}_seed{{seed}}.log",
    retries: config.get("retries", 1)
    conda:
        "../../environment.yml"
    threads: lambda wc: res(wc.dataset, "train", "threads", 1)
    resources:
        **stage_resources("train", mem_mb=4000, runtime=60),
        # On SLURM: SIGUSR1 ahead of the time limit (ndm train checkpoints and exits 75, the
        # rule's retries resume it in the same allocation); a requeued job appends to its log.
        slurm_extra=lambda wc: f"--signal=USR1@{signal_lead_seconds(wc.dataset)} --open-mode=append",
    shell:
        # exec: the signal reaches ndm without a shell dying first; >>: a resumed attempt
        # keeps the log of the preempted one.
        "{params.launch} train --config {params.config} --dataset {wildcards.dataset} --variant {wildcards.variant} "
        "--seed {wildcards.seed} --out {params.out} --threads {params.threads} --no-progress >> {log} 2>&1"
