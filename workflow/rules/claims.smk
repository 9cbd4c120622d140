# Claims stage: the papers' exact claims checked on the Gaussian oracle (`ndm claims`:
# seconds on one core, no trained model, no data). The report compiles tables/claims.* from
# its claims.json (docs/reports.md).

CLAIMS_JSON = f"{RESULTS}/claims.json"


rule claims:
    output:
        CLAIMS_JSON,
    params:
        ndm=NDM,
    log:
        f"{RESULTS}/logs/claims.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{params.ndm} claims --out {output} > {log} 2>&1"
