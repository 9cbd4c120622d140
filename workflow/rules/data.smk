# Data stage: load each dataset once (fails early, clearly), train the feature classifier
# of fd_classifier, and cache reference statistics per feature space. Shared by every
# model of the dataset, so each is computed once.


rule prepare_data:
    output:
        f"{RESULTS}/{{dataset}}/data.json",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=lambda wc: res(wc.dataset, "small", "mem_mb", 2000),
        runtime=lambda wc: res(wc.dataset, "small", "runtime", 30),
    shell:
        "ndm prepare-data --config {CONFIG_PATH} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule feature_classifier:
    input:
        f"{RESULTS}/{{dataset}}/data.json",
    output:
        f"{RESULTS}/{{dataset}}/classifier.pt",
    params:
        eval_hash=lambda wc: eval_hash(wc.dataset),
    log:
        f"{RESULTS}/logs/feature_classifier/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=lambda wc: res(wc.dataset, "small", "mem_mb", 2000),
        runtime=lambda wc: res(wc.dataset, "small", "runtime", 30),
    shell:
        "ndm train-classifier --config {CONFIG_PATH} --dataset {wildcards.dataset} --threads {threads} "
        "--out {output} > {log} 2>&1"


def _stats_inputs(wc):
    inputs = [f"{RESULTS}/{wc.dataset}/data.json"]
    if wc.feature == "classifier":
        inputs.append(f"{RESULTS}/{wc.dataset}/classifier.pt")
    return inputs


rule reference_stats:
    input:
        _stats_inputs,
    output:
        f"{RESULTS}/{{dataset}}/ref_{{feature}}.npz",
    params:
        classifier=lambda wc: f"--classifier {RESULTS}/{wc.dataset}/classifier.pt" if wc.feature == "classifier" else "",
    wildcard_constraints:
        feature="classifier|inception|clean|data",
    log:
        f"{RESULTS}/logs/reference_stats/{{dataset}}_{{feature}}.log",
    threads: 1
    resources:
        mem_mb=lambda wc: res(wc.dataset, "small", "mem_mb", 4000),
        runtime=lambda wc: res(wc.dataset, "small", "runtime", 60),
        gpu=lambda wc: res(wc.dataset, "small", "gpu", 0),
    shell:
        "ndm fid-stats --config {CONFIG_PATH} --dataset {wildcards.dataset} --feature {wildcards.feature} "
        "{params.classifier} --threads {threads} --out {output} > {log} 2>&1"
