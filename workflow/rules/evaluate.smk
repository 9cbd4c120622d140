# Evaluation stage: likelihood (NELBO at every T, ODE NLL) per model; samples per (model,
# sampler) at every step count (cached: several feature spaces read the same samples);
# Frechet distances per (model, sampler) against the dataset's cached reference stats.


rule evaluate_likelihood:
    input:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/model.pt",
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/likelihood.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        seed=r"\d+",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_likelihood/{{dataset}}_{{variant}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate_likelihood/{{dataset}}_{{variant}}_seed{{seed}}.log",
    conda:
        "../../environment.yml"
    threads: lambda wc: res(wc.dataset, "evaluate", "threads", 1)
    resources:
        mem_mb=lambda wc: res(wc.dataset, "evaluate", "mem_mb", 4000),
        runtime=lambda wc: res(wc.dataset, "evaluate", "runtime", 60),
        gpu=lambda wc: res(wc.dataset, "evaluate", "gpu", 0),
    shell:
        "{params.ndm} evaluate-likelihood --config {params.config} --model {input} --out {output} "
        "--threads {threads} --no-progress > {log} 2>&1"


rule sample_grid:
    input:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/model.pt",
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/samples/{{sampler}}/manifest.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        out_dir=lambda wc: f"{model_dir(wc.dataset, wc.variant, wc.seed)}/samples/{wc.sampler}",
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        seed=r"\d+",
        sampler="ancestral|ddim|ode-euler|ode-heun|ode-adaptive|sde-em",
    benchmark:
        f"{RESULTS}/benchmarks/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}.tsv"
    log:
        f"{RESULTS}/logs/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}.log",
    conda:
        "../../environment.yml"
    threads: lambda wc: res(wc.dataset, "sample", "threads", 1)
    resources:
        mem_mb=lambda wc: res(wc.dataset, "sample", "mem_mb", 4000),
        runtime=lambda wc: res(wc.dataset, "sample", "runtime", 60),
        gpu=lambda wc: res(wc.dataset, "sample", "gpu", 0),
    shell:
        "{params.ndm} sample-grid --config {params.config} --model {input} --sampler {wildcards.sampler} "
        "--out-dir {params.out_dir} --threads {threads} --no-progress > {log} 2>&1"


rule evaluate_samples:
    input:
        unpack(_fd_inputs),
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/fid/{{sampler}}.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        args=_fd_args,
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        seed=r"\d+",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_samples/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate_samples/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=lambda wc: res(wc.dataset, "small", "mem_mb", 4000),
        runtime=lambda wc: res(wc.dataset, "small", "runtime", 60),
        gpu=lambda wc: res(wc.dataset, "small", "gpu", 0),
    shell:
        "{params.ndm} evaluate-samples --config {params.config} --dataset {wildcards.dataset} "
        "--manifest {input.manifest} "
        "{params.args} --threads {threads} --out {output} > {log} 2>&1"
