# ndm-bench: train every variant on every dataset, evaluate NELBO, ODE NLL and FID at
# several step counts, track runs in MLflow, and compile the papers' tables into reports/.
#
#   snakemake --cores all all                      embedded default (configs/default.yaml)
#   snakemake --cores all all --configfile configs/smoke.yaml
#   snakemake --profile profiles/slurm all         paper scale on SLURM (configs/paper.yaml)

from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded default unless --configfile names another config (a named one replaces it
# instead of being merged into it, so its datasets and variants are exactly its own).
if not config:

    configfile: "configs/default.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


# Jobs import `ndm` from this repository when they run in a --sdm conda environment.
# (Snakemake formats the prefix again per job, hence the doubled braces.)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/tracking.smk"


onstart:
    # One process creates the MLflow store before parallel jobs touch it (DESIGN.md 8).
    shell(f"{NDM} tracking-init --config {CONFIG_PATH}")


localrules:
    sync_tracking,


rule all:
    input:
        REPORT_OUTPUTS,
        TRACKING_OUTPUTS,
    default_target: True
