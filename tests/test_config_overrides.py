"""--config overrides and config errors at DAG build, with real Snakemake dry runs (issue 19).

`--config` merges over the embedded default when no --configfile is given and over the named
file when one is; names are checked against ndm.names; errors say what is wrong.
"""

from __future__ import annotations

import os
import json
from pathlib import Path

import pytest
import yaml
from test_pipeline import REPO, snakemake, workdir_copy

from ndm import names
from ndm.pipeline.config import ConfigError, dataset_seeds, resolve_run_config
from ndm.pipeline.config_check import check_pipeline_config, typed_overrides

DEFAULT = yaml.safe_load((REPO / "configs/default.yaml").read_text())
SMOKE = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def job_counts(out: str) -> dict[str, int]:
    """The job-count table of a dry run (rule -> count)."""
    rows = [line.split() for line in out.splitlines()]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}


def dry_run(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    work = workdir_copy(tmp_path / "w")
    proc = snakemake(["-n", "all", *args], cwd=work, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr, work


# ------------------------------------------------------------- overrides, real dry runs


def test_override_on_default_plans_the_trimmed_dag(tmp_path):
    """One --config key changes the default; every other key stays (no 'experiment is required')."""
    rc, out, work = dry_run(tmp_path, "--config", "variants=[ddpm,ndm]")
    assert rc == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["train"] == 2 * sum(len(dataset_seeds(DEFAULT, d)) for d in DEFAULT["datasets"])
    assert counts["sample_grid"] == 2 * sum(len(dataset_seeds(DEFAULT, d)) for d in DEFAULT["datasets"])
    resolved = json.loads((work / DEFAULT["results"] / "config.resolved.json").read_text())
    assert resolved["variants"] == ["ddpm", "ndm"]
    assert resolved["experiment"] == DEFAULT["experiment"] and sorted(resolved["datasets"]) == sorted(DEFAULT["datasets"])


def test_override_merges_over_a_named_configfile(tmp_path):
    """--configfile smoke.yaml plus --config: smoke's datasets and results, the overridden seeds
    (given as a list, which Snakemake hands over as strings) and variants."""
    rc, out, work = dry_run(tmp_path, "--configfile", "configs/smoke.yaml", "--config", "variants=[ddpm]", "seeds=[0,1]")
    assert rc == 0, out[-3000:]
    assert job_counts(out)["train"] == len(SMOKE["datasets"]) * 1 * 2
    resolved = json.loads((work / SMOKE["results"] / "config.resolved.json").read_text())
    assert resolved["seeds"] == [0, 1] and resolved["variants"] == ["ddpm"]
    assert resolved["experiment"] == SMOKE["experiment"]
    assert sorted(resolved["datasets"]) == sorted(SMOKE["datasets"])  # not merged into the default's
    assert f"{SMOKE['results']}/digits/ddpm/seed1/model.pt" in out


def test_dataset_seeds_add_runs_to_that_dataset_only(tmp_path):
    """datasets.toy2d.seeds: [0, 1] over the global [0]: toy2d trains seeds 0 and 1, digits only 0."""
    work = workdir_copy(tmp_path / "w")
    config = {**SMOKE, "seeds": [0], "variants": ["ddpm", "ndm"]}
    config["datasets"] = {**SMOKE["datasets"], "toy2d": {**SMOKE["datasets"]["toy2d"], "seeds": [0, 1]}}
    (work / "configs/per_dataset_seeds.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(["-n", "all", "--configfile", "configs/per_dataset_seeds.yaml"], cwd=work, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    outputs = [f.strip() for line in out.splitlines() if line.strip().startswith("output:") for f in line.split(":", 1)[1].split(",")]
    trained = {f for f in outputs if f.endswith("/model.pt")}  # the train jobs' outputs
    runs = f"{SMOKE['results']}/{{}}/{{}}/seed{{}}/model.pt"
    assert trained == {runs.format("toy2d", v, s) for v in ("ddpm", "ndm") for s in (0, 1)} | {runs.format("digits", v, 0) for v in ("ddpm", "ndm")}
    assert job_counts(out)["train"] == 6 and job_counts(out)["evaluate_likelihood"] == 6


def test_multi_seed_variants_run_the_other_seeds_alone(tmp_path):
    """datasets.toy2d.multi_seed_variants: [ndm, vdm]: on toy2d's seeds [0, 1], ndm trains both
    (vdm is not in `variants`: nothing), ddpm seed 0 only; the report expects the same runs."""
    from ndm.report.collect import collect

    work = workdir_copy(tmp_path / "w")
    config = {**SMOKE, "seeds": [0], "variants": ["ddpm", "ndm"]}
    config["datasets"] = {**SMOKE["datasets"], "toy2d": {**SMOKE["datasets"]["toy2d"], "seeds": [0, 1], "multi_seed_variants": ["ndm", "vdm"]}}
    (work / "configs/multi_seed.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(["-n", "all", "--configfile", "configs/multi_seed.yaml"], cwd=work, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    outputs = [f.strip() for line in out.splitlines() if line.strip().startswith("output:") for f in line.split(":", 1)[1].split(",")]
    runs = f"{SMOKE['results']}/{{}}/{{}}/seed{{}}/model.pt"
    expected = {runs.format("toy2d", "ndm", 1)} | {runs.format(d, v, 0) for d in ("toy2d", "digits") for v in ("ddpm", "ndm")}
    assert {f for f in outputs if f.endswith("/model.pt")} == expected
    assert job_counts(out)["train"] == 5 and job_counts(out)["evaluate_likelihood"] == 5
    res = collect(config, work / SMOKE["results"])
    assert sorted(res.expected_runs) == sorted(("toy2d" if "toy2d" in f else "digits", f.split("/")[-3], int(f.split("/")[-2][4:])) for f in expected)
    assert res.seeds_expected("toy2d", "ddpm") == 1 and res.seeds_expected("toy2d", "ndm") == 2


@pytest.mark.parametrize("listed, needle", [("ndm", "must be a list of model names"), (["ndn"], "ndm")])
def test_multi_seed_variants_are_checked(listed, needle):
    from ndm.pipeline.config import ConfigError
    from ndm.pipeline.config_check import check_pipeline_config

    config = {**SMOKE, "datasets": {**SMOKE["datasets"], "toy2d": {**SMOKE["datasets"]["toy2d"], "multi_seed_variants": listed}}}
    with pytest.raises(ConfigError, match=f"datasets.toy2d.multi_seed_variants.*{needle}"):
        check_pipeline_config(config, SCHEMA)


def test_nested_override_changes_one_dataset_only(tmp_path):
    rc, out, work = dry_run(tmp_path, "--config", "datasets={digits: {train: {steps: 50}}}")
    assert rc == 0, out[-3000:]
    resolved = json.loads((work / DEFAULT["results"] / "config.resolved.json").read_text())
    assert resolved["datasets"]["digits"]["train"] == {"steps": 50}  # an int, as in a config file
    assert resolved["datasets"]["digits"]["model"] == DEFAULT["datasets"]["digits"]["model"]
    assert resolved["datasets"]["toy2d"]["train"] == DEFAULT["datasets"]["toy2d"]["train"]


# ------------------------------------------------------------- errors at DAG build


BAD_OVERRIDES = [
    ("unknown dataset", "datasets={digits: {data: {name: digitz}}}", ["datasets.digits.data.name", "'digitz'", "did you mean 'digits'", *names.DATASETS]),
    ("negative seed", "seeds=[-1]", ["seeds: -1 is negative", "integer >= 0"]),
    ("non-integer seed", "seeds=[0,one]", ["seeds: 'one' is not an integer"]),
    ("unknown top-level key", "sedes=[0]", ["unknown key sedes", "did you mean 'seeds'"]),
    ("unknown variant", "variants=[ddpm,ndmm]", ["'ndmm'", "did you mean 'ndm'", *names.VARIANTS]),
    ("unknown sampler", "defaults={eval: {samplers: [ancestrl]}}", ["'ancestrl'", "did you mean 'ancestral'", *names.SAMPLERS]),
    ("unknown feature space", "datasets={toy2d: {eval: {fid: {features: [dta]}}}}", ["'dta'", "did you mean 'data'", *names.FEATURE_SPACES]),
    ("unknown time grid", "defaults={eval: {time_grid: uniform-snr}}", ["'uniform-snr'", "did you mean 'uniform-logsnr'", *names.TIME_GRIDS]),
    ("unknown nested key", "datasets={digits: {resources: {train: {threadz: 2}}}}", ["resources.train.threadz", "did you mean 'threads'"]),
    ("negative dataset seed", "datasets={toy2d: {seeds: [0,-1]}}", ["datasets.toy2d.seeds: -1 is negative", "integer >= 0"]),
]


@pytest.mark.parametrize("name,override,needles", BAD_OVERRIDES, ids=[b[0] for b in BAD_OVERRIDES])
def test_wrong_override_fails_at_dag_build_in_user_terms(tmp_path, name, override, needles):
    rc, out, work = dry_run(tmp_path, "--config", override)
    assert rc != 0
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    assert "is not of type" not in out and "Additional properties" not in out  # not the schema's words
    assert not (work / DEFAULT["results"] / "digits").exists()  # no job ran


# ------------------------------------------------------------- the pieces, without Snakemake


def test_typed_overrides_reads_strings_as_yaml_scalars():
    # What Snakemake's --config parser hands over (values inside lists and mappings are strings).
    raw = {"seeds": ["-1", "2"], "tracking_uri": "null", "data_root": "/data/2024-01-01",
           "defaults": {"train": {"steps": "50", "lr": "0.001", "compile": "true"}}, "experiment": "yes", "retries": 2}  # fmt: skip
    assert typed_overrides(raw) == {
        "seeds": [-1, 2],
        "tracking_uri": None,
        "data_root": "/data/2024-01-01",
        "defaults": {"train": {"steps": 50, "lr": 0.001, "compile": True}},
        "experiment": "yes",  # YAML 1.1's yes is a string here
        "retries": 2,
    }


@pytest.mark.parametrize("text, value", [("1e-05", 1e-05), ("2E3", 2000.0), ("-1.5e+2", -150.0), (".5", 0.5), ("7", 7)])
def test_typed_overrides_reads_every_float_spelling(text, value):
    # PyYAML reads 1e-05 (Python's repr of 0.00001, what a SLURM job's --config carries) as a string.
    (typed,) = typed_overrides({"lrs": [text]})["lrs"]
    assert typed == value and type(typed) is type(value)


@pytest.mark.parametrize("text", ["1e", "e5", "1.2.3", "2024-01-01", "nan", "1_e5"])
def test_typed_overrides_leaves_non_numbers_as_strings(text):
    assert typed_overrides({"x": [text]})["x"] == [text]


def test_check_pipeline_config_accepts_the_shipped_configs():
    for name in ("default", "smoke", "paper"):
        check_pipeline_config(yaml.safe_load((REPO / f"configs/{name}.yaml").read_text()), SCHEMA)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"seeds": [0, 0]}, "seeds: 0 appears more than once"),
        ({"seeds": 3}, "seeds must be a non-empty list"),
        ({"seeds": [True]}, "seeds: True is not an integer"),
        ({"variants": ["ddpm", "ddpm"]}, "'ddpm' appears more than once"),
        ({"experiment": None, "datasets": {}}, "datasets must be a non-empty mapping"),
    ],
)
def test_check_pipeline_config_names_the_problem(change, needle):
    config = {**DEFAULT, **change}
    with pytest.raises(ConfigError, match=needle):
        check_pipeline_config(config, SCHEMA)


def _with_toy2d_seeds(seeds) -> dict:
    return {**DEFAULT, "datasets": {**DEFAULT["datasets"], "toy2d": {**DEFAULT["datasets"]["toy2d"], "seeds": seeds}}}


@pytest.mark.parametrize(
    "seeds,needle",
    [
        ([], "datasets.toy2d.seeds must be a non-empty list of integers >= 0"),
        (1, "datasets.toy2d.seeds must be a non-empty list of integers >= 0"),
        ([0, -2], "datasets.toy2d.seeds: -2 is negative"),
        ([0, "one"], "datasets.toy2d.seeds: 'one' is not an integer"),
        ([True], "datasets.toy2d.seeds: True is not an integer"),
        ([1, 0, 1], "datasets.toy2d.seeds: 1 appears more than once"),
    ],
)
def test_dataset_seeds_are_checked_like_the_global_list(seeds, needle):
    with pytest.raises(ConfigError, match=needle):
        check_pipeline_config(_with_toy2d_seeds(seeds), SCHEMA)


def test_dataset_seeds_key_is_accepted_and_replaces_the_global_list():
    config = {**_with_toy2d_seeds([0, 1]), "seeds": [3]}
    check_pipeline_config(config, SCHEMA)  # a known key at dataset level, not a typo
    assert dataset_seeds(config, "toy2d") == [0, 1]
    assert dataset_seeds(config, "digits") == [3]  # no own list: the global one
    assert dataset_seeds({"datasets": {"toy2d": None}}, "toy2d") == [0]  # neither: seed 0
    # The dataset's seeds choose runs, not how one trains: the run config ignores the key.
    run = resolve_run_config(config, "toy2d", "ndm", 1)
    assert run.seed == 1 and run.to_dict() == resolve_run_config(DEFAULT, "toy2d", "ndm", 1).to_dict()


def test_seeds_in_a_variant_override_are_refused():
    config = _with_toy2d_seeds([0, 1])
    config["datasets"]["toy2d"] = {**config["datasets"]["toy2d"], "variant_overrides": {"ndm": {"seeds": [0, 1, 2]}}}
    with pytest.raises(ConfigError, match=r"datasets.toy2d.variant_overrides.ndm.seeds: seeds are set per dataset"):
        resolve_run_config(config, "toy2d", "ndm", 0)


def test_missing_key_says_how_to_fix_it():
    config = {k: v for k, v in DEFAULT.items() if k != "experiment"}
    with pytest.raises(ConfigError, match="missing key 'experiment'.*--configfile"):
        check_pipeline_config(config, SCHEMA)


def test_threads_flag_limits_native_thread_pools(monkeypatch):
    """`ndm ... --threads N` holds OpenMP/OpenBLAS/MKL to N (set before numpy loads OpenBLAS)."""
    import subprocess
    import sys

    from ndm.cli.native_threads import limit_native_threads

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    limit_native_threads(["train", "--config", "c.json"])
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # no flag: left alone
    limit_native_threads(["train", "--threads=3"])
    assert os.environ["OMP_NUM_THREADS"] == "3"
    limit_native_threads(["sample-grid", "--threads", "1", "--out", "x"])
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    # and through the real entry point: numpy's OpenBLAS pool is one thread in a --threads 1 job
    code = ("import sys; sys.argv = ['ndm', 'x', '--threads', '1']; from ndm.cli.native_threads import limit_native_threads; "
            "limit_native_threads(sys.argv[1:]); import numpy, os; a = numpy.ones((400, 400)); a @ a; "
            "print(len(os.listdir(f'/proc/{os.getpid()}/task')))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, check=True)
    assert out.stdout.strip() == "1", out


def test_float_fields_read_yaml_1_1_exponent_strings(tmp_path):
    """PyYAML (and Snakemake's --configfile) reads `lr: 1e-4` as the string '1e-4'; a float field
    takes it as 1e-4, a string field keeps its text, and a non-number still fails naming the key."""
    text = "train: {lr: 1e-4}\neval: {ode: {rtol: 1e-05}}\n"
    section = yaml.safe_load(text)
    assert section["train"]["lr"] == "1e-4"  # the reader's behaviour this guards against
    config = {"datasets": {"toy2d": {**section, "data": {"name": "toy2d", "root": "1e5"}}}}
    run = resolve_run_config(config, "toy2d", "ddpm", 0)
    assert run.train.lr == 1e-4 and isinstance(run.train.lr, float) and run.data.root == "1e5"
    from ndm.pipeline.config import resolve_eval_config

    assert resolve_eval_config(config, "toy2d").ode.rtol == 1e-5
    config["datasets"]["toy2d"]["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match="train.lr = 'fast' has the wrong type"):
        resolve_run_config(config, "toy2d", "ddpm", 0)
    work = workdir_copy(tmp_path / "w")  # and through Snakemake's own reader, at DAG build
    (work / "configs/exp.yaml").write_text((REPO / "configs/smoke.yaml").read_text().replace("lr: 3.0e-3", "lr: 3e-3"))
    proc = snakemake(["-n", "all", "--configfile", "configs/exp.yaml"], cwd=work, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    """Each config under configs/ passes the workflow's checks (user-terms check, then the schema)
    and resolves a run config for every (dataset, model, seed) it trains: a typo in a config
    that only a long run would reach (configs/study.yaml: two hours) fails here in seconds."""
    from snakemake.utils import validate

    from ndm.pipeline.config import run_seeds

    config = yaml.safe_load((REPO / "configs" / name).read_text())
    check_pipeline_config(config, SCHEMA)
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    runs = [(d, v, s) for d in config["datasets"] for v in config["variants"] for s in run_seeds(config, d, v)]
    assert runs
    for d, v, s in runs:
        run = resolve_run_config(config, d, v, s)
        assert run.seed == s


def test_study_runs_eight_seeds_of_the_primary_trio():
    """configs/study.yaml, second edition: 8 seeds of ddpm, vdm-fixed and ndm on both datasets
    (datasets.<name>.seed_counts gives vdm its first 3), digits' ndm with the U-Net F of the F
    sweep (x_hat's U-Net) and toy2d's with an MLP F; a seed count outside 1..len(seeds) is refused."""
    from ndm.pipeline.config import run_seeds
    from ndm.pipeline.config_check import check_pipeline_config

    study = yaml.safe_load((REPO / "configs/study.yaml").read_text())
    for d in study["datasets"]:
        for v in ("ddpm", "vdm-fixed", "ndm"):
            assert run_seeds(study, d, v) == list(range(8)), (d, v)
        assert run_seeds(study, d, "vdm") == [0, 1, 2]
    digits = resolve_run_config(study, "digits", "ndm", 0)
    assert digits.model.transform_network.kind == "unet" and digits.model.network.kind == "unet"
    toy_f = resolve_run_config(study, "toy2d", "ndm", 0).model.transform_network
    assert toy_f is None or toy_f.kind == "mlp"  # None: the default F, an MLP
    check_pipeline_config(study, SCHEMA)
    bad = {**study, "datasets": {**study["datasets"], "toy2d": {**study["datasets"]["toy2d"], "seed_counts": {"vdm": 9}}}}
    with pytest.raises(ConfigError, match=r"datasets.toy2d.seed_counts.vdm must be a whole number from 1 to the dataset's 8 seeds"):
        check_pipeline_config(bad, SCHEMA)


def closed_str_fields(cls, where="") -> list[str]:
    """The fields typed plain `str` of a config dataclass and the dataclasses inside it."""
    import dataclasses
    import typing

    found = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        inner = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
        if inner:
            found += closed_str_fields(inner[0], f"{where}{f.name}.")
        elif tp is str:
            found.append(f"{where}{f.name}")
    return found


def test_closed_options_are_literal_types():
    """An option with a closed set of values is a Literal field (issue 27): its values listed once,
    checked by the parser with the allowed values named. The str fields left are open sets
    (names checked against the records in ndm/names.py, or free text)."""
    from ndm.model.specs import ModelConfig
    from ndm.pipeline.config import EvalConfig, TrainConfig

    open_sets = {"variant", "time_grid", "paper_setting.sampler"}  # records: VARIANTS, TIME_GRIDS, SAMPLERS
    left = set(closed_str_fields(ModelConfig) + closed_str_fields(TrainConfig) + closed_str_fields(EvalConfig))
    assert left == open_sets, sorted(left - open_sets)
    bad = {**DEFAULT, "defaults": {**DEFAULT["defaults"], "train": {**DEFAULT["defaults"]["train"], "lr_schedule": "cosin"}}}
    with pytest.raises(ConfigError, match=r"train.lr_schedule must be one of \['constant', 'cosine'\], got 'cosin'; did you mean 'cosine'\?"):
        resolve_run_config(bad, "digits", "ddpm", 0)
