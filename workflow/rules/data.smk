# Data stage: load each dataset once (fails early, clearly), train the feature classifier
# of fd_classifier, and cache reference statistics per feature space. Shared by every
# model of the dataset, so each is computed once.


rule prepare_data:
    output:
        f"{RESULTS}/{{dataset}}/data.json",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{dataset}}.tsv"
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        **stage_resources("small", mem_mb=2000, runtime=30),
    shell:
        "{params.ndm} prepare-data --config {params.config} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule feature_classifier:
    input:
        f"{RESULTS}/{{dataset}}/data.json",
    output:
        f"{RESULTS}/{{dataset}}/classifier.pt",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        eval_hash=lambda wc: eval_hash(wc.dataset),
    benchmark:
        f"{RESULTS}/benchmarks/feature_classifier/{{dataset}}.tsv"
    log:
        f"{RESULTS}/logs/feature_classifier/{{dataset}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        **stage_resources("small", mem_mb=2000, runtime=30),
    shell:
        "{params.ndm} train-classifier --config {params.config} --dataset {wildcards.dataset} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule reference_stats:
    input:
        _stats_inputs,
    output:
        f"{RESULTS}/{{dataset}}/ref_{{feature}}.npz",
    params:
        config=CONFIG_PATH,
        ndm=NDM,
        classifier=lambda wc: f"--classifier {RESULTS}/{wc.dataset}/classifier.pt" if wc.feature == "classifier" else "",
    wildcard_constraints:
        feature="|".join(FEATURE_SPACES),
    benchmark:
        f"{RESULTS}/benchmarks/reference_stats/{{dataset}}_{{feature}}.tsv"
    log:
        f"{RESULTS}/logs/reference_stats/{{dataset}}_{{feature}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        **stage_resources("small", mem_mb=4000, runtime=60),
    shell:
        "{params.ndm} fid-stats --config {params.config} --dataset {wildcards.dataset} --feature {wildcards.feature} "
        "{params.classifier} --threads {threads} --out {output} > {log} 2>&1"
