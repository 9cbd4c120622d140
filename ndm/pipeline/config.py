"""Typed run configuration, which runs a config asks for, its range checks, and a strict
dict -> dataclass parser.

A pipeline config (configs/*.yaml) holds one section per dataset; `resolve_run_config`
turns (config, dataset, variant, seed) into a RunConfig, the single object a train or
evaluate job reads. Unknown keys and wrong types fail with the full key path, the
allowed keys and the file, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ndm.model.specs import VARIANTS, ModelConfig, NetworkConfig, base_variant, model_name_problem
from ndm.pipeline.errors import ConfigError, unknown_name  # noqa: F401 - re-exported
from ndm.pipeline.provenance import config_hash
from ndm.names import DATASETS, FEATURE_SPACES, SAMPLERS, TIME_GRIDS, SampleJobs, sampler_problem, split_sampler

# Options with a closed set of values: the Literal type lists them once; the parser rejects any
# other value, naming the allowed ones (the model's own: ndm/model/specs.py).
LrSchedule = Literal["constant", "cosine"]  # after the warm-up; cosine to 0 at train.steps
Loss = Literal["continuous", "discrete"]
TimeSampling = Literal["uniform", "gamma"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]
OdeMethod = Literal["heun", "dopri5"]
Divergence = Literal["auto", "exact", "hutchinson"]
IfWeightsMissing = Literal["fail", "skip"]
EnergyReference = Literal["draws", "exact"]
CompressionOrder = Literal["auto", "posterior", "bitswap"]


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None  # where mnist, cifar10, imagenet* live on disk
    download: bool = False  # allow torchvision to download mnist/cifar10 into root
    options: dict[str, Any] = field(default_factory=dict)  # loader options (n_train, dim, ...)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    lr_schedule: LrSchedule = "constant"
    weight_decay: float = 0.0
    # AdamW's second-moment decay: VDM's 0.99 (google-research/vdm configs); DDPM's Adam used
    # TensorFlow's default 0.999. (AdamW with weight_decay 0 is Adam.)
    adam_beta2: float = 0.99
    # Random horizontal flips of training images (DDPM's CIFAR-10 augmentation); the flip
    # draws come from the data generator, so a resumed run flips the same images.
    random_flip: bool = False
    # F's parameters form their own optimiser group with learning rate lr * transform_lr_scale
    # (the same warm-up and schedule); 1 = one learning rate for everything.
    transform_lr_scale: float = 1.0
    ema_decay: float = 0.999
    grad_clip: float | None = None  # max global grad norm; None = off
    loss: Loss = "continuous"
    # Continuous-time loss: "uniform" = antithetic t ~ U(0,1) (VDM); "gamma" = antithetic and
    # uniform in gamma with weight (gamma_1 - gamma_0) / gamma'(t) (same expectation, less variance).
    time_sampling: TimeSampling = "uniform"
    loss_steps: int = 1000  # T of the discrete-time loss
    checkpoint_every: int = 500
    log_every: int = 50
    # The convergence curve (ndm.pipeline.train_curve): the EMA model's test NELBO every
    # eval_every steps (a multiple of log_every; 0 = off) on the first eval_examples test
    # examples, eval_time_samples times each, the same times and noise at every point.
    eval_every: int = 0
    eval_examples: int = 256
    eval_time_samples: int = 8
    device: Device = "auto"
    precision: Precision = "fp32"  # bf16: autocast on GPU
    compile: bool = False  # torch.compile the networks
    channels_last: bool = False
    num_threads: int | None = None  # torch CPU threads; None = torch's default


@dataclass
class OdeConfig:
    """NLL through the probability-flow ODE."""

    n_examples: int = 64  # test examples (the ODE is the expensive estimator); 0 = skip
    method: OdeMethod = "heun"  # heun: fixed steps; dopri5: adaptive
    steps: int = 100  # heun steps
    rtol: float = 1e-5
    atol: float = 1e-5
    divergence: Divergence = "auto"  # auto: exact when D <= 64
    probes: int = 1  # Hutchinson probes per example


@dataclass
class InceptionSubset:
    """Fewer images for the Inception spaces (inception, clean) than for the others: on a CPU
    an Inception forward costs about 0.1 s per image (docs/fid.md), so the default run scores
    a subset there. None / false: everything, as for the other spaces (the paper config)."""

    samples: int | None = None  # the first N samples of each scored file
    reference: int | None = None  # the first N training examples for the reference stats
    paper_setting_only: bool = False  # only the files of eval.paper_setting's (sampler, steps)


@dataclass
class FidConfig:
    """Which feature spaces the Frechet distances use; see docs/fid.md."""

    # classifier: a small classifier trained in the DAG (FD, labelled as such);
    # inception / clean: Inception FID via torch-fidelity / clean-fid (needs local weights);
    # data: the exact Frechet distance in data space (vectors only).
    features: list[str] = field(default_factory=lambda: ["classifier"])
    inception_weights: str | None = None
    classifier_steps: int = 400
    n_reference: int | None = None  # reference examples (train split); None = all
    # Without local Inception weights: fail (the reference_stats job stops, naming the places
    # searched) or skip (the inception/clean distances are recorded as skipped with that reason).
    if_weights_missing: IfWeightsMissing = "fail"
    inception_subset: InceptionSubset = field(default_factory=InceptionSubset)
    # The energy space's data terms (docs/fid.md): "draws" scores against 4 fresh exact draws of
    # 4 n points (any data with a generator); "exact" computes them in closed form from the data's
    # law (toy2d: ndm/metrics/energy_exact.py), so the only error left is the samples' own.
    energy_reference: EnergyReference = "draws"


@dataclass
class PaperSetting:
    """The sampler and step count of a dataset's headline FID (the papers' sampling setting)."""

    sampler: str = "ancestral"
    steps: int = 1000


@dataclass
class CompressionConfig:
    """Bits-back coding of the test split (docs/compression.md); off while steps is empty."""

    steps: list[int] = field(default_factory=list)  # T of each coded file
    n_examples: int = 0  # first n test examples; 0 = the whole test split
    batch_size: int = 64  # examples coded together (the first batch's pops need the initial bits)
    order: CompressionOrder = "auto"  # ndm/codec/chain.py
    bins_per_std: float = 16.0  # latent grid: the smaller std of a level over this


@dataclass
class EvalConfig:
    n_examples: int = 512  # test examples for the NELBO estimates
    nelbo_time_samples: int = 16  # continuous NELBO: stratified times per example
    nelbo_steps: list[int] = field(default_factory=lambda: [10, 100, 1000])  # discrete T
    nelbo_step_samples: int = 16  # discrete NELBO: sampled steps per example
    ode: OdeConfig = field(default_factory=OdeConfig)
    samplers: list[str] = field(default_factory=lambda: ["ancestral", "ddim", "ode-heun"])
    sample_steps: list[int] = field(default_factory=lambda: [5, 10, 25, 100])
    # Skip a step count whose x_hat evaluations per sample (a Heun step costs two) exceed this:
    # the study's NFE range ends at 20, where Heun's 20 steps (NFE 40) would only add cost.
    # None: every step count. The paper setting is always sampled.
    max_sample_nfe: int | None = None
    # Grid of the fixed-step samplers: uniform-t | uniform-logsnr | edm (ndm/estimators/time_grids.py).
    time_grid: str = "uniform-t"
    n_samples: int = 256
    batch_size: int = 256
    # bf16: x_hat under autocast in the NELBO and in sampling, as train.precision; gamma, F and
    # the NELBO's terms stay fp32 (ndm/model/diffusion.py `x_hat`).
    precision: Precision = "fp32"
    fid: FidConfig = field(default_factory=FidConfig)
    paper_setting: PaperSetting = field(default_factory=PaperSetting)
    # per_sampler: one sampling job per (model, sampler), parallel on a cluster; per_model: one
    # job samples every sampler and scores the samples (on a CPU, where a job's start-up,
    # mostly imports, rivals the sampling of a small model: docs/performance.md).
    sample_jobs: SampleJobs = "per_sampler"
    # K > 1 splits every sampling job into K shard jobs (each n_samples / K samples, its own
    # noise stream from (seed, steps, shard)); the evaluate_samples job merges them before the
    # Frechet distances (ndm/pipeline/shards.py, docs/slurm.md). 1 = one job, as before.
    sample_shards: int = 1
    compression: CompressionConfig = field(default_factory=CompressionConfig)


def resolve_eval_config(config: dict, dataset: str) -> EvalConfig:
    """The evaluation settings of one dataset (defaults.eval, then datasets.<name>.eval)."""
    datasets = config.get("datasets") or {}
    if dataset not in datasets:
        raise ConfigError(f"dataset {dataset!r} is not in the config's datasets: {sorted(datasets)}")
    section = _merge((config.get("defaults") or {}).get("eval") or {}, (datasets[dataset] or {}).get("eval") or {})
    where = f"datasets.{dataset}.eval"
    ev = from_dict(EvalConfig, section, where)
    checks = [
        (ev.n_examples >= 2, f"{where}.n_examples must be >= 2 (a standard error needs two), got {ev.n_examples}"),
        (ev.nelbo_time_samples >= 1, f"{where}.nelbo_time_samples must be >= 1"),
        (all(s >= 1 for s in ev.nelbo_steps), f"{where}.nelbo_steps must all be >= 1, got {ev.nelbo_steps}"),
        (all(s >= 1 for s in ev.sample_steps), f"{where}.sample_steps must all be >= 1, got {ev.sample_steps}"),
        (ev.n_samples >= 2, f"{where}.n_samples must be >= 2, got {ev.n_samples}"),
        (ev.max_sample_nfe is None or ev.max_sample_nfe >= 1, f"{where}.max_sample_nfe must be >= 1 or null (every step count), got {ev.max_sample_nfe}"),
        (ev.ode.steps >= 1, f"{where}.ode.steps must be >= 1, got {ev.ode.steps}"),
        (ev.paper_setting.steps >= 1, f"{where}.paper_setting.steps must be >= 1"),
        (1 <= ev.sample_shards <= min(ev.n_samples, 1024), f"{where}.sample_shards must be between 1 and min(n_samples, 1024) (distinct noise streams, ndm/pipeline/shards.py), got {ev.sample_shards}"),
        (all(n is None or n >= 2 for n in (ev.fid.inception_subset.samples, ev.fid.inception_subset.reference)),
         f"{where}.fid.inception_subset.samples and .reference must be >= 2 (a covariance needs two) or null"),
        (all(s >= 1 for s in ev.compression.steps), f"{where}.compression.steps must all be >= 1, got {ev.compression.steps}"),
        (ev.compression.n_examples >= 0, f"{where}.compression.n_examples must be >= 0 (0 = whole test split)"),
        (ev.compression.batch_size >= 1, f"{where}.compression.batch_size must be >= 1"),
        (ev.compression.bins_per_std > 0, f"{where}.compression.bins_per_std must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for key, name in [("samplers", s) for s in ev.samplers] + [("paper_setting.sampler", ev.paper_setting.sampler)]:
        if (problem := sampler_problem(name)) is not None:
            base = split_sampler(name)[0]
            raise ConfigError(f"{where}.{key}: {unknown_name('sampler', base, SAMPLERS) if base not in SAMPLERS else problem}")
    if ev.time_grid not in TIME_GRIDS:
        raise ConfigError(f"{where}.time_grid: {unknown_name('time grid', ev.time_grid, TIME_GRIDS)}")
    for name in ev.fid.features:
        if name not in FEATURE_SPACES:
            raise ConfigError(f"{where}.fid.features: {unknown_name('feature space', name, FEATURE_SPACES)}")
    return ev


@dataclass
class RunConfig:
    """What one train job needs: data, model (with its variant), training, seed."""

    dataset: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    seed: int = 0
    # The model's name when it is a tagged copy of its variant ("ddpm@params"); None = the
    # variant's own name. Results, runs and checkpoints are filed under model_name.
    name: str | None = None

    @property
    def model_name(self) -> str:
        return self.name or self.model.variant

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        d = self.to_dict()
        for path, default in HASH_OMIT_AT_DEFAULT.items():
            *parents, key = path
            node = d
            for name in parents:
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(key, default) == default:
                node.pop(key, None)
        return config_hash(d)


# Options added after results existed are left out of the hash while at their defaults, so
# that adding an option does not invalidate (retrain) every finished run.
HASH_OMIT_AT_DEFAULT: dict[tuple[str, ...], Any] = {
    ("name",): None,
    ("model", "transform_time"): "jvp",
    ("model", "transform_rank"): 4,
    ("model", "transform_gauge"): "none",
    ("model", "transform_reference"): "zero",
    ("model", "transform_init"): "zero",
    ("train", "transform_lr_scale"): 1.0,
    ("model", "network", "patch_size"): 1,
    ("train", "eval_every"): 0,
    ("train", "lr_schedule"): "constant",
    ("train", "eval_examples"): 256,
    ("train", "eval_time_samples"): 8,
    ("model", "transform_network", "patch_size"): 1,
}


# ----------------------------------------------------------------- which runs a config asks for


def dataset_seeds(config: dict, dataset: str) -> list[int]:
    """The training seeds of one dataset: its own `datasets.<name>.seeds`, else the global
    `seeds` (else [0]). One cheap dataset can then run several seeds while the others run one;
    the workflow, the report and `ndm plan` enumerate (dataset, variant, seed) runs through this."""
    section = (config.get("datasets") or {}).get(dataset) or {}
    own = section.get("seeds") if isinstance(section, dict) else None
    return [int(s) for s in (own if own is not None else config.get("seeds") or [0])]


def run_seeds(config: dict, dataset: str, variant: str) -> list[int]:
    """The seeds one model of a dataset trains: every seed of the dataset, or only its first
    when the dataset lists `multi_seed_variants` and the model (its full name, "ndm@gauge") is
    not in that list. The listed models then pair across seeds for the report's verdicts and
    the others cost one run each (the default's toy2d: docs/performance.md).
    `seed_counts: {vdm: 3}` gives a model its first n seeds: the study's primary models run 8
    seeds for power while a secondary baseline runs 3. `variants: [...]` (a subset of the
    top-level list) gives the models the dataset runs at all; the others run no seed."""
    seeds = dataset_seeds(config, dataset)
    section = (config.get("datasets") or {}).get(dataset) or {}
    section = section if isinstance(section, dict) else {}
    only = section.get("variants")
    if only is not None and variant not in only:
        return []  # `variants: [vdm]`: this dataset runs only those models (configs/reproduce.yaml)
    counts = section.get("seed_counts") or {}
    if variant in counts:
        return seeds[: int(counts[variant])]
    multi = section.get("multi_seed_variants")
    return seeds if multi is None or variant in multi else seeds[:1]


# ----------------------------------------------------------------- range checks


# A decimal number in any of Python's spellings. YAML 1.1 (PyYAML, and so Snakemake's
# --configfile) wants a dot and a signed exponent, so it reads 1e-4 and 1e-05 (how Python prints
# 0.00001, and how a float reaches a SLURM job's --config) as strings; a float field takes them.
DECIMAL_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def check_literals(obj: Any, where: str) -> None:
    """Every Literal field of a config dataclass (and of those inside it) holds one of its values:
    the parser checks a config's text, this a config built in code (tests, scripts)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            check_literals(value, f"{where}.{f.name}")
        elif typing.get_origin(tp) is Literal and not _type_ok(value, tp):
            raise ConfigError(_wrong_value(f"{where}.{f.name}", value, tp))


def validate_values(run: Any, where: str) -> None:
    """The closed sets (check_literals) and the range checks that a type cannot express."""
    check_literals(run.train, f"{where}.train")
    check_literals(run.model, f"{where}.model")
    t, m = run.train, run.model
    checks = [
        (t.steps >= 1, f"{where}.train.steps must be >= 1, got {t.steps}"),
        (t.batch_size >= 1, f"{where}.train.batch_size must be >= 1, got {t.batch_size}"),
        (t.lr > 0, f"{where}.train.lr must be > 0, got {t.lr}"),
        (0 < t.adam_beta2 < 1, f"{where}.train.adam_beta2 must be in (0, 1), got {t.adam_beta2}"),
        (0 <= t.ema_decay < 1, f"{where}.train.ema_decay must be in [0, 1), got {t.ema_decay}"),
        (t.loss_steps >= 1, f"{where}.train.loss_steps must be >= 1, got {t.loss_steps}"),
        (t.checkpoint_every >= 1, f"{where}.train.checkpoint_every must be >= 1"),
        (t.eval_every >= 0 and (t.eval_every == 0 or t.eval_every % max(t.log_every, 1) == 0),
         f"{where}.train.eval_every must be 0 (off) or a multiple of train.log_every ({t.log_every}), got {t.eval_every}"),
        (t.eval_examples >= 2 and t.eval_time_samples >= 1, f"{where}.train.eval_examples must be >= 2 and eval_time_samples >= 1"),
        (t.grad_clip is None or t.grad_clip > 0, f"{where}.train.grad_clip must be > 0 or null"),
        (m.variant in VARIANTS, f"{where}.model.variant: {unknown_name('variant', m.variant, VARIANTS)}"),
        (run.data.name in DATASETS, f"{where}.data.name: {unknown_name('dataset', run.data.name, DATASETS)}"),
        *[
            (net.patch_size >= 1 and (net.patch_size == 1 or net.kind == "unet"),
             f"{where}.model.{name}.patch_size must be >= 1, and 1 for an mlp, got {net.patch_size} ({net.kind})")
            for name, net in (("network", m.network), ("transform_network", m.transform_network)) if net is not None
        ],
        (m.transform_rank >= 1, f"{where}.model.transform_rank must be >= 1, got {m.transform_rank}"),
        (t.transform_lr_scale > 0, f"{where}.train.transform_lr_scale must be > 0, got {t.transform_lr_scale}"),
        (m.transform_reference == "zero" or m.transform_gauge == "reference",
         f"{where}.model.transform_reference: {m.transform_reference} sets x_ref of the reference gauge: add model.transform_gauge: reference (or drop transform_reference)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if m.parameterization == "eps" and VARIANTS[m.variant].transform != "identity":
        raise ConfigError(
            f"{where}.model.parameterization: 'eps' needs F = identity but variant {m.variant!r} has "
            f"F = {VARIANTS[m.variant].transform}; use 'v' or 'x'"
        )


# ----------------------------------------------------------------- parsing


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return isinstance(value, str) and value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a plain dict, strictly: every key must be a field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(unknown_key(where, unknown[0], fields))
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}"
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(tp) or (inner and value is not None):
            kwargs[name] = from_dict(tp if dataclasses.is_dataclass(tp) else inner[0], value, key)
            continue
        if isinstance(value, str) and _type_ok(0.5, tp) and not _type_ok(value, tp) and DECIMAL_NUMBER.fullmatch(value):
            value = float(value)  # "1e-4" from a YAML 1.1 reader (DECIMAL_NUMBER's comment)
        if not _type_ok(value, tp):
            raise ConfigError(_wrong_value(key, value, tp))
        kwargs[name] = float(value) if tp is float else value
    return cls(**kwargs)


def unknown_key(where: str, key: str, allowed: typing.Iterable[str]) -> str:
    """'unknown key <where>.<key>; did you mean <closest>? allowed keys under <where>: ...'."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    prefix = f"{where}." if where else ""
    return f"unknown key {prefix}{key}; {hint}allowed keys under {where or 'the top level'}: {allowed}"


def _wrong_value(key: str, value: Any, tp: Any) -> str:
    """The error of a value that does not fit its field: the allowed values of a closed set
    (with the closest, for a typo), else the expected type."""
    options = [a for a in ([tp] if typing.get_origin(tp) is Literal else typing.get_args(tp)) if typing.get_origin(a) is Literal]
    if options:
        allowed = [v for o in options for v in typing.get_args(o)]
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key} must be one of {allowed}, got {value!r}{hint}"
    return f"{key} = {value!r} has the wrong type; expected {_type_name(tp)}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: override wins, nested mappings merge."""
    out = dict(base)
    for k, v in (override or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict:
    """A config file: YAML, or JSON for .json (config.resolved.json: PyYAML reads json's 1e-05 as a string)."""
    if not (path := Path(path)).exists():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        data = (json.load(f) if path.suffix == ".json" else yaml.safe_load(f)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def model_name_error(name: Any) -> str | None:
    """Why `name` is not a model name, in the user's terms (an unknown variant gets the closest
    valid one); None when it is one."""
    problem = model_name_problem(name)
    if problem is None:
        return None
    base = base_variant(name) if isinstance(name, str) else name
    return unknown_name("variant", base, VARIANTS) if base not in VARIANTS else problem


def resolve_run_config(config: dict, dataset: str, variant: str, seed: int) -> RunConfig:
    """The RunConfig of one (dataset, variant, seed) job from a pipeline config.

    Layering: `defaults` section, then the dataset's section, then the dataset's
    `variant_overrides[variant]` (e.g. a bigger F network for ndm on one dataset). A tagged
    model name "ddpm@params" builds variant ddpm with variant_overrides["ddpm"] and then
    variant_overrides["ddpm@params"] (docs/architecture.md, "Model names").
    """
    datasets = config.get("datasets") or {}
    if dataset not in datasets:
        raise ConfigError(f"dataset {dataset!r} is not in the config's datasets: {sorted(datasets)}")
    base = base_variant(variant)
    if model_name_error(variant) is not None:
        raise ConfigError(f"variants: {model_name_error(variant)}")
    section = _merge(config.get("defaults") or {}, datasets[dataset] or {})
    for key in ("seeds", "multi_seed_variants", "seed_counts", "variants", "published_networks"):  # which runs exist (run_seeds), not how one trains
        section.pop(key, None)
    all_overrides = section.pop("variant_overrides", None) or {}
    for name, override in all_overrides.items():
        if model_name_error(name) is not None:
            raise ConfigError(f"datasets.{dataset}.variant_overrides: {model_name_error(name)}")
        if isinstance(override, dict) and "seeds" in override:
            # Every variant of a dataset runs the same seeds, so that comparisons pair by seed.
            raise ConfigError(f"datasets.{dataset}.variant_overrides.{name}.seeds: seeds are set per dataset (datasets.{dataset}.seeds), not per variant")
    # A tagged model ("ddpm@params") takes its variant's overrides, then its own.
    section = _merge(section, all_overrides.get(base) or {})
    if variant != base:
        section = _merge(section, all_overrides.get(variant) or {})
    where = f"datasets.{dataset}"
    for ignored in ("eval", "resources", "samplers", "fid"):
        section.pop(ignored, None)  # read by the evaluate jobs and the workflow
    unknown = sorted(set(section) - {"data", "model", "train"})
    if unknown:
        raise ConfigError(unknown_key(where, unknown[0], ["data", "model", "train", "eval", "resources", "seeds", "multi_seed_variants", "seed_counts", "variants", "published_networks", "variant_overrides"]))
    model_dict = dict(section.get("model") or {})
    model_dict["variant"] = base
    for name in ("network", "transform_network"):
        net = model_dict.get(name)
        if isinstance(net, dict) and net.get("kind") == "vdm" and {"channel_mult", "attn_resolutions"} & set(net):
            raise ConfigError(
                f"{where}.model.{name}: kind vdm is VDM's ResNet at one resolution with attention in the middle only; "
                f"drop channel_mult and attn_resolutions (set channels and num_res_blocks), or use kind unet"
            )
    # A data section without a name loads the dataset its section is named after.
    data_dict = section.get("data") or {}
    data_dict = {"name": dataset, **data_dict} if isinstance(data_dict, dict) else data_dict
    run = RunConfig(
        dataset=dataset,
        data=from_dict(DataConfig, data_dict, f"{where}.data"),
        model=from_dict(ModelConfig, model_dict, f"{where}.model"),
        train=from_dict(TrainConfig, section.get("train"), f"{where}.train"),
        seed=int(seed),
        name=variant if variant != base else None,
    )
    validate_values(run, where)
    return run


def run_config_from_dict(d: dict) -> RunConfig:
    """Inverse of RunConfig.to_dict (for checkpoints and result files)."""
    return RunConfig(
        dataset=d["dataset"],
        data=from_dict(DataConfig, d["data"], "data"),
        model=from_dict(ModelConfig, d["model"], "model"),
        train=from_dict(TrainConfig, d["train"], "train"),
        seed=int(d["seed"]),
        name=d.get("name"),
    )


__all__ = [
    "ConfigError", "DataConfig", "TrainConfig", "RunConfig", "ModelConfig", "NetworkConfig", "EvalConfig", "OdeConfig",
    "FidConfig", "config_hash", "dataset_seeds", "from_dict", "load_yaml", "resolve_run_config", "resolve_eval_config",
    "run_config_from_dict",
]  # fmt: skip
