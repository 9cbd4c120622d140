# Evaluation stage: likelihood (NELBO at every T, ODE NLL) per model; samples per (model,
# sampler) at every step count (cached: several feature spaces read the same samples);
# Frechet distances per (model, sampler) against the dataset's cached reference stats, in the
# sampling job itself with eval.sample_jobs: per_model (unsharded), else in one
# evaluate_samples job per model. Three static rules; the granularity of sampling (per sampler
# or per model, sharded or not) is the wildcard `job` (ndm/pipeline/sample_jobs.py), and what a
# job reads and runs comes from input functions and params (common.smk).


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
        **stage_resources("evaluate", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} evaluate-likelihood --config {params.config} --model {input} --out {output} "
        "--threads {threads} --no-progress > {log} 2>&1"


# One job per sampling job of a model (wildcard `job`: a sampler, `all-samplers`, either with
# `.shard<k>`). It writes samples/<sampler>[/shard<k>]/ per sampler (an unsharded per_model job
# also fid/<sampler>.json) and, last, its index jobs/sample-<job>.json listing them.
rule sample_grid:
    input:
        unpack(sample_job_inputs),
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/jobs/sample-{{job}}.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        args=sample_job_args,
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        seed=r"\d+",
        job=r"[^/]+",
    benchmark:
        f"{RESULTS}/benchmarks/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{job}}.tsv"
    log:
        f"{RESULTS}/logs/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{job}}.log",
    conda:
        "../../environment.yml"
    threads: lambda wc: res(wc.dataset, "sample", "threads", 1)
    resources:
        **stage_resources("sample", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} sample-grid --config {params.config} --model {input.model} {params.args} "
        "--index {output} --threads {threads} --no-progress > {log} 2>&1"


# One job per model scores every sampler's samples where the sampling jobs have not (the
# feature networks and reference stats load once; per-(model, sampler) jobs spent most of
# their time starting up); sharded, it first merges each sampler's shards into
# samples/<sampler>/, the layout of an unsharded job. It writes fid/<sampler>.json per sampler
# and, last, its index jobs/score.json.
rule evaluate_samples:
    input:
        unpack(score_inputs),
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/jobs/score.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        args=score_args,
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        seed=r"\d+",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_samples/{{dataset}}_{{variant}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate_samples/{{dataset}}_{{variant}}_seed{{seed}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        **stage_resources("small", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} evaluate-samples --config {params.config} {params.args} "
        "--index {output} --threads {threads} > {log} 2>&1"
