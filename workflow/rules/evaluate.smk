# Evaluation stage: likelihood (NELBO at every T, ODE NLL) per model; samples per (model,
# sampler) at every step count (cached: several feature spaces read the same samples);
# Frechet distances per (model, sampler) against the dataset's cached reference stats, in the
# sampling job itself with eval.sample_jobs: per_model (unsharded), else in one
# evaluate_samples job per model.


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


# Samples per (model, sampler) at every step count; a dataset with eval.sample_jobs: per_model
# gets one job per model for all its samplers instead (declared per dataset, below).
# eval.sample_shards: K > 1 splits each of these jobs into K shard jobs (shard<k>/ directories,
# ndm/pipeline/shards.py): per (model, sampler), or per model with per_model (each shard job
# then draws its share of every sampler). evaluate_samples merges the shards.
PER_SAMPLER_DATASETS = [d for d in DATASETS if eval_cfg(d).sample_jobs == "per_sampler" and shards(d) == 1] or ["(none)"]
SHARDED_DATASETS = [d for d in DATASETS if eval_cfg(d).sample_jobs == "per_sampler" and shards(d) > 1] or ["(none)"]


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
        dataset="|".join(PER_SAMPLER_DATASETS),
        seed=r"\d+",
        sampler="|".join(re.escape(s) for s in SAMPLERS),
    benchmark:
        f"{RESULTS}/benchmarks/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}.tsv"
    log:
        f"{RESULTS}/logs/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}.log",
    conda:
        "../../environment.yml"
    threads: lambda wc: res(wc.dataset, "sample", "threads", 1)
    resources:
        **stage_resources("sample", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} sample-grid --config {params.config} --model {input} --sampler {wildcards.sampler} "
        "--out-dir {params.out_dir} --threads {threads} --no-progress > {log} 2>&1"


# Shard k of K of a (model, sampler) sample set (eval.sample_shards > 1, per_sampler).
rule sample_shard:
    input:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/model.pt",
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}/samples/{{sampler}}/shard{{shard}}/manifest.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        out_dir=lambda wc: f"{model_dir(wc.dataset, wc.variant, wc.seed)}/samples/{wc.sampler}/shard{wc.shard}",
        shards=lambda wc: shards(wc.dataset),
        eval_hash=lambda wc: eval_hash(wc.dataset),
    wildcard_constraints:
        dataset="|".join(SHARDED_DATASETS),
        seed=r"\d+",
        shard=r"\d+",
        sampler="|".join(re.escape(s) for s in SAMPLERS),
    benchmark:
        f"{RESULTS}/benchmarks/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}_shard{{shard}}.tsv"
    log:
        f"{RESULTS}/logs/sample_grid/{{dataset}}_{{variant}}_seed{{seed}}_{{sampler}}_shard{{shard}}.log",
    conda:
        "../../environment.yml"
    threads: lambda wc: res(wc.dataset, "sample", "threads", 1)
    resources:
        **stage_resources("sample", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} sample-grid --config {params.config} --model {input} --sampler {wildcards.sampler} "
        "--out-dir {params.out_dir} --shard {wildcards.shard} --shards {params.shards} "
        "--threads {threads} --no-progress > {log} 2>&1"


for _d in DATASETS:
    if eval_cfg(_d).sample_jobs != "per_model":
        continue
    # Sharded per_model: shard<k> of every sampler in one job (the wildcard `shard`); the
    # evaluate_samples job below merges and scores the shards. Unsharded: the job also scores
    # its samples (fid/<sampler>.json), so a model costs one evaluation job here, not two
    # (a job's start-up is a third of a small CPU job, docs/performance.md).
    # The shell text is evaluated when a job runs, after this loop has ended, so what differs
    # per dataset reaches it through params (bound here with _d=_d), never through _d itself.
    _sharded = shards(_d) > 1
    _sd = f"{os.sep}shard{{shard}}" if _sharded else ""

    rule:
        name:
            f"sample_grid_{_d}"
        input:
            model=f"{RESULTS}/{_d}/{{variant}}/seed{{seed}}/model.pt",
            refs=[] if _sharded else [f"{RESULTS}/{_d}/ref_{f}.npz" for f in features(_d)],
            classifier=[f"{RESULTS}/{_d}/classifier.pt"] if "classifier" in features(_d) and not _sharded else [],
        output:
            manifests=[f"{RESULTS}/{_d}/{{variant}}/seed{{seed}}/samples/{s}{_sd}/manifest.json" for s in samplers(_d)],
            fid=[] if _sharded else [f"{RESULTS}/{_d}/{{variant}}/seed{{seed}}/fid/{s}.json" for s in samplers(_d)],
        params:
            config=CONFIG_PATH,
            ndm=NDM,
            samplers=" ".join(samplers(_d)),
            out_dirs=lambda wc, _d=_d, _sd=_sd: " ".join(f"{model_dir(_d, wc.variant, wc.seed)}/samples/{s}{_sd.replace('{shard}', str(getattr(wc, 'shard', '')))}" for s in samplers(_d)),
            eval_hash=lambda wc, _d=_d: eval_hash(_d),
            extra=lambda wc, _d=_d: per_model_sample_args(_d, wc),
        wildcard_constraints:
            seed=r"\d+",
            shard=r"\d+",
        benchmark:
            f"{RESULTS}/benchmarks/sample_grid/{_d}_{{variant}}_seed{{seed}}{_sd.replace(os.sep, '_')}.tsv"
        log:
            f"{RESULTS}/logs/sample_grid/{_d}_{{variant}}_seed{{seed}}{_sd.replace(os.sep, '_')}.log",
        conda:
            "../../environment.yml"
        threads: lambda wc, _d=_d: res(_d, "sample", "threads", 1)
        resources:
            **stage_resources("sample", mem_mb=4000, runtime=60, dataset=_d),
        shell:
            "{params.ndm} sample-grid --config {params.config} --model {input.model} --sampler {params.samplers} "
            "--out-dir {params.out_dirs} {params.extra} --threads {threads} --no-progress > {log} 2>&1"


# One job per model scores every sampler's samples (the feature networks and reference stats
# load once; per-(model, sampler) jobs spent most of their time starting up), where the
# sampling job has not scored them already. The outputs are
# one fid/<sampler>.json per sampler of the dataset, so the rule is declared per dataset.
for _d in DATASETS:
    if eval_cfg(_d).sample_jobs == "per_model" and shards(_d) == 1:
        continue  # scored in its sample_grid job (above)
    # Sharded (K > 1): the job also merges the shards into the sampler directories; its --out
    # names the fid files only. Per-dataset values reach the shell through params: its text
    # is evaluated when a job runs, after this loop.

    rule:
        name:
            f"evaluate_samples_{_d}"
        input:
            manifests=[m for s in samplers(_d) for m in sample_manifests(_d, "{variant}/seed{seed}", s)],
            refs=[f"{RESULTS}/{_d}/ref_{f}.npz" for f in features(_d)],
            classifier=[f"{RESULTS}/{_d}/classifier.pt"] if "classifier" in features(_d) else [],
        output:
            # fid/<sampler>.json; sharded, then also the merged samples/<sampler>/manifest.json
            # (+ steps<N>.npz), the layout of an unsharded job, for the report and the figures.
            evaluate_samples_outputs(_d),
        params:
            config=CONFIG_PATH,
            ndm=NDM,
            dataset=_d,
            args=lambda wc, _d=_d: evaluate_samples_args(_d),
            # the fid outputs from the wildcards, not from `output` (untracked by the params trigger)
            fid_out=lambda wc, _d=_d: " ".join(f"{model_dir(_d, wc.variant, wc.seed)}/fid/{s}.json" for s in samplers(_d)),
            eval_hash=lambda wc, _d=_d: eval_hash(_d),
        wildcard_constraints:
            seed=r"\d+",
        benchmark:
            f"{RESULTS}/benchmarks/evaluate_samples/{_d}_{{variant}}_seed{{seed}}.tsv"
        log:
            f"{RESULTS}/logs/evaluate_samples/{_d}_{{variant}}_seed{{seed}}.log",
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            **stage_resources("small", mem_mb=4000, runtime=60, dataset=_d),
        shell:
            "{params.ndm} evaluate-samples --config {params.config} --dataset {params.dataset} "
            "--manifest {input.manifests} --out {params.fid_out} "
            "{params.args} --threads {threads} > {log} 2>&1"
