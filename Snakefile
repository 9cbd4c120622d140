# ndm-bench: train every variant on every dataset, evaluate NELBO, ODE NLL and FID at
# several step counts, track runs in MLflow, and compile the papers' tables into reports/.
#
#   snakemake --cores all all                      embedded default (configs/default.yaml)
#   snakemake --cores all all --configfile configs/smoke.yaml
#   snakemake --profile profiles/slurm all         paper scale on SLURM (configs/paper.yaml)
#   snakemake -n all --config 'variants=[ddpm,ndm]'  --config merges over the config in use

from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, update_config, validate

from ndm.pipeline.config import ConfigError, load_yaml
from ndm.pipeline.config_check import check_pipeline_config, typed_overrides

min_version("9.0")


# The embedded default unless --configfile names another config (a named one replaces it
# instead of being merged into it, so its datasets and variants are exactly its own).
# Either way Snakemake merges the --config overrides over it.
if not workflow.config_settings.configfiles:

    configfile: "configs/default.yaml"


# --config leaves values inside a list or mapping as strings (seeds=[0,1] arrives as
# ['0', '1']): merge them again as YAML reads them in a config file.
update_config(config, typed_overrides(workflow.config_settings.config))

# Keys, seeds and variant names in the user's terms first (closest valid key, negative seed),
# then the schema's structure and types.
CONFIG_SCHEMA = "workflow/schemas/config.schema.yaml"
try:
    check_pipeline_config(config, load_yaml(Path(workflow.basedir) / CONFIG_SCHEMA))
except ConfigError as exc:
    raise WorkflowError(f"config error: {exc}") from None
validate(config, CONFIG_SCHEMA)


# Jobs import `ndm` from this repository when they run in a --sdm conda environment.
# (Snakemake formats the prefix again per job, hence the doubled braces.)
shell.prefix(f"set -euo pipefail; export PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/tracking.smk"


onstart:
    # One process creates the MLflow store before parallel jobs touch it (docs/tracking.md).
    shell(f"{NDM} tracking-init --config {CONFIG_PATH}")


localrules:
    sync_tracking,


rule all:
    input:
        REPORT_OUTPUTS,
        TRACKING_OUTPUTS,
    default_target: True
