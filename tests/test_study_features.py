"""The study's features (commit "Study config, tagged models, test-NELBO curves, FLOPs per
sample"): tagged model names, the test-NELBO curve logged during training, the cosine learning
rate and network FLOPs counted on the real computation.

The curve is checked against a recomputation from the saved EMA weights; the FLOPs against
closed forms and against counting the real sampling run; the names through resolve_run_config
and a real Snakemake dry run. The report's study tables are in test_study_report.py.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from test_config_overrides import SCHEMA, dry_run

from ndm.estimators.eval_mode import eval_mode
from ndm.estimators.flops import count_flops, sampling_flops, training_flops_per_step
from ndm.estimators.likelihood import continuous_nelbo
from ndm.estimators.sampling import SamplerSettings, sample
from ndm.model.networks import NetworkConfig
from ndm.model.specs import base_variant, get_variant, model_name_problem
from ndm.model.variants import ModelConfig, build_model
from ndm.pipeline.config import (
    ConfigError,
    RunConfig,
    resolve_run_config,
    run_config_from_dict,
)
from ndm.pipeline.config_check import check_pipeline_config
from ndm.pipeline.evaluate import load_split
from ndm.pipeline.provenance import config_hash
from ndm.pipeline.train import (
    CHECKPOINT,
    METRICS,
    MODEL,
    load_trained_model,
    load_training_data,
    lr_at,
    train,
)
from ndm.pipeline.train_curve import CURVE_SEED_OFFSET
from ndm.report.style import VARIANT_COLORS, sort_variants, variant_color, variant_marker

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())

# ------------------------------------------------------------------ tagged model names

TAGGED = {
    "datasets": {
        "toy2d": {
            "data": {"name": "toy2d", "options": {"n_train": 200, "n_test": 50}},
            "model": {"network": {"kind": "mlp", "hidden": 16, "depth": 2}},
            "train": {"lr": 1e-2, "steps": 30},
            "variant_overrides": {
                # applied in this order for ddpm@params: the variant's, then the tag's
                "ddpm@params": {"train": {"lr": 5e-4}, "model": {"network": {"hidden": 64}}},
                "ddpm": {"train": {"lr": 1e-3, "steps": 7}},
            },
        }
    }
}


def test_model_name_helpers() -> None:
    assert base_variant("ddpm@params") == "ddpm" and base_variant("ndm") == "ndm"
    assert get_variant("ddpm@params") == get_variant("ddpm")
    assert model_name_problem("ddpm@params") is None and model_name_problem("ndm-vdm@a-1") is None
    assert "unknown variant 'ddpn'" in model_name_problem("ddpn@x")
    for bad in ("ddpm@Bad", "ddpm@", "ddpm@-x", "ddpm@a b"):
        assert "lower-case letters" in model_name_problem(bad), bad


def test_tagged_name_takes_the_variants_overrides_then_its_own() -> None:
    tagged = resolve_run_config(TAGGED, "toy2d", "ddpm@params", 3)
    plain = resolve_run_config(TAGGED, "toy2d", "ddpm", 3)
    assert tagged.model.variant == "ddpm" and tagged.model_name == "ddpm@params" and tagged.name == "ddpm@params"
    assert tagged.train.lr == 5e-4  # the tag's override is applied last
    assert tagged.train.steps == 7  # the variant's override reaches the tagged copy
    assert tagged.model.network.hidden == 64 and tagged.model.network.depth == 2
    assert plain.name is None and plain.model_name == "ddpm" and plain.train.lr == 1e-3 and plain.model.network.hidden == 16
    assert tagged.hash() != plain.hash()
    other = resolve_run_config(TAGGED, "toy2d", "vdm", 3)  # no override: the dataset section
    assert other.train.lr == 1e-2 and other.train.steps == 30


def test_round_trip_keeps_the_name() -> None:
    tagged = resolve_run_config(TAGGED, "toy2d", "ddpm@params", 1)
    back = run_config_from_dict(json.loads(json.dumps(tagged.to_dict())))
    assert back == tagged and back.model_name == "ddpm@params" and back.hash() == tagged.hash()
    old = tagged.to_dict()
    del old["name"]  # a model.pt written before names existed
    assert run_config_from_dict(old).name is None


def test_untagged_hash_is_unchanged_by_the_name_field() -> None:
    """The hash of an untagged run is the formula of the commit before names: sha256 of the
    dict without `name` (and without the options at their defaults that it did not have)."""
    for dataset, variant in (("digits", "ndm"), ("toy2d", "ddpm")):
        run = resolve_run_config(SMOKE, dataset, variant, 0)
        d = run.to_dict()
        assert d.pop("name") is None
        for key, default in (("eval_every", 0), ("lr_schedule", "constant"), ("eval_examples", 256), ("eval_time_samples", 8), ("transform_lr_scale", 1.0)):
            assert d["train"].pop(key) == default
        for key, default in (("transform_time", "jvp"), ("transform_rank", 4), ("transform_gauge", "none"), ("transform_reference", "zero"), ("transform_init", "zero")):
            if d["model"].get(key) == default:
                del d["model"][key]
        for net in ("network", "transform_network"):
            if isinstance(d["model"].get(net), dict) and d["model"][net].get("patch_size") == 1:
                del d["model"][net]["patch_size"]
        assert run.hash() == config_hash(d)


@pytest.mark.parametrize("name,needle", [("ddpn@x", "did you mean 'ddpm'"), ("ddpm@Bad Tag", "lower-case letters")])
def test_bad_model_name_fails_at_resolve_and_check(name: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle if "'" not in needle else None) as err:
        resolve_run_config(TAGGED, "toy2d", name, 0)
    assert needle in str(err.value)
    cfg = {**copy.deepcopy(SMOKE), "variants": ["ddpm", name]}
    with pytest.raises(ConfigError) as err:
        check_pipeline_config(cfg, SCHEMA)
    assert needle in str(err.value)
    bad_override = copy.deepcopy(TAGGED)
    bad_override["datasets"]["toy2d"]["variant_overrides"][name] = {"train": {"lr": 1e-3}}
    with pytest.raises(ConfigError) as err:
        resolve_run_config(bad_override, "toy2d", "ddpm", 0)
    assert "variant_overrides" in str(err.value) and needle in str(err.value)


def test_bad_tag_fails_the_dry_run(tmp_path: Path) -> None:
    rc, out, work = dry_run(tmp_path, "--configfile", "configs/smoke.yaml", "--config", "variants=[ddpm,ddpm@Bad]")
    assert rc != 0 and "ddpm@Bad" in out and "lower-case letters" in out, out[-3000:]
    assert not (work / SMOKE["results"] / "digits").exists()


def test_tagged_copies_sort_after_their_variant_in_a_darker_shade() -> None:
    names = ["ndm@gauge", "vdm", "ddpm@params", "ndm", "ddpm", "zzz", "vdm@params"]
    order = sort_variants(names)
    assert order.index("ddpm@params") == order.index("ddpm") + 1
    assert order.index("ndm@gauge") == order.index("ndm") + 1
    assert order.index("vdm@params") == order.index("vdm") + 1 and order[-1] == "zzz"
    base, tag = VARIANT_COLORS["ddpm"], variant_color("ddpm@params")
    rgb = lambda c: [int(c[i : i + 2], 16) for i in (1, 3, 5)]
    for b, t in zip(rgb(base), rgb(tag)):
        assert t <= b and abs(t - 0.55 * b) <= 1, (base, tag)  # each channel scaled by about 0.55
    assert tag != base and variant_color("ddpm") == base
    # two tagged copies of one variant differ in colour and marker, and from the variant itself
    copies = ["ndm", "ndm@gauge", "ndm@compute", "ndm@other"]
    assert len({variant_color(v) for v in copies}) == 4 and len({variant_marker(v) for v in copies}) == 4


# ------------------------------------------------------------------ learning-rate schedule


def test_cosine_lr_schedule() -> None:
    run = resolve_run_config(SMOKE, "toy2d", "ddpm", 0)
    tc = run.train
    tc.lr, tc.warmup_steps, tc.steps, tc.lr_schedule = 1e-3, 10, 110, "cosine"
    assert lr_at(0, run) == pytest.approx(1e-4) and lr_at(9, run) == pytest.approx(1e-3)  # warm-up end
    assert lr_at(10, run) == pytest.approx(1e-3)
    assert lr_at(60, run) == pytest.approx(5e-4)  # halfway through the cosine
    assert lr_at(110, run) == pytest.approx(0.0, abs=1e-12) and lr_at(109, run) < 1e-6
    tc.lr_schedule = "constant"
    assert lr_at(60, run) == lr_at(109, run) == 1e-3


# ------------------------------------------------------------------ FLOPs


def test_count_flops_of_a_linear_layer_and_the_rng() -> None:
    layer = torch.nn.Linear(7, 5)
    x = torch.randn(3, 7)
    assert count_flops(lambda: layer(x)) == 2 * 3 * 7 * 5
    torch.manual_seed(123)
    before = torch.get_rng_state()
    count_flops(lambda: layer(torch.randn(3, 7)))  # draws inside the count
    assert torch.equal(torch.get_rng_state(), before)
    after = torch.rand(4)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(4))


def _small(variant: str):
    return build_model(ModelConfig(variant=variant, network=NetworkConfig(kind="mlp", hidden=8, depth=1)), (4,), None).eval()


@pytest.mark.parametrize("variant", ["ddpm", "ndm"])
def test_sampling_flops_extrapolate_exactly(variant: str) -> None:
    model = _small(variant)
    cache: dict = {}
    for s in ("ancestral", "ddim", "ode-heun", "dpmpp-2m", "edm-heun"):
        with torch.no_grad():
            real = count_flops(lambda s=s: sample(model, 1, SamplerSettings(s, 6), generator=torch.Generator().manual_seed(0)))
        assert sampling_flops(model, s, 6, cache=cache) == real > 0, s
    per_eval = (cache[("ode-heun", 3)] - cache[("ode-heun", 2)]) / 2
    assert sampling_flops(model, "ode-adaptive", None, nfe=17.0, cache=cache) == 17.0 * per_eval
    box: dict = {}  # the real adaptive solve: its counted NFE times one drift evaluation
    with torch.no_grad():
        real = count_flops(lambda: box.setdefault("r", sample(model, 1, SamplerSettings("ode-adaptive"), generator=torch.Generator().manual_seed(0))))
    assert real == sampling_flops(model, "ode-adaptive", None, nfe=box["r"].nfe, cache=cache) > 0
    with pytest.raises(ValueError):
        sampling_flops(model, "ode-adaptive", None)


def test_training_flops_scale_with_batch_size() -> None:
    model = _small("ndm")
    x = torch.randn(32, 4)
    f8, f64 = (training_flops_per_step(model, x, b, None, "uniform") for b in (8, 64))
    assert f8 > 0 and f64 == 8 * f8
    forward = count_flops(lambda: model.training_loss(x[:8], None, "uniform"))
    assert f8 == 3 * forward


# ------------------------------------------------------------------ the test-NELBO curve

CURVE_TRAIN = {"steps": 20, "log_every": 5, "checkpoint_every": 10, "eval_examples": 64, "eval_time_samples": 4, "num_threads": 1}


def _curve_run(eval_every: int) -> RunConfig:
    cfg = copy.deepcopy(SMOKE)
    cfg["defaults"]["train"].update(CURVE_TRAIN, eval_every=eval_every)
    return resolve_run_config(cfg, "digits", "ddpm", 0)


def _lines(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (out / METRICS).read_text().splitlines())}


@pytest.fixture(scope="module")
def curve_runs(tmp_path_factory) -> dict[str, Path]:
    """off: eval_every 0; on: eval_every 10; resumed: eval_every 10, paused at step 10 (its
    checkpoint kept as ckpt10.pt, its train_seconds set to 1e6 to see that the count goes on)."""
    base = tmp_path_factory.mktemp("curve")
    outs = {k: base / k for k in ("off", "on", "resumed")}
    train(_curve_run(0), outs["off"], progress=False)
    train(_curve_run(10), outs["on"], progress=False)
    train(_curve_run(10), outs["resumed"], progress=False, stop_after=10)
    shutil.copy(outs["resumed"] / CHECKPOINT, base / "ckpt10.pt")
    lines = (outs["resumed"] / METRICS).read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["step"] == 10
    lines[-1] = json.dumps({**last, "train_seconds": 1e6})
    (outs["resumed"] / METRICS).write_text("\n".join(lines) + "\n")
    train(_curve_run(10), outs["resumed"], progress=False)
    outs["ckpt10"] = base / "ckpt10.pt"
    return outs


def test_curve_does_not_change_the_training(curve_runs) -> None:
    off = torch.load(curve_runs["off"] / MODEL, map_location="cpu", weights_only=False)
    on = torch.load(curve_runs["on"] / MODEL, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        assert off[key].keys() == on[key].keys()
        for name in off[key]:
            assert torch.equal(off[key][name], on[key][name]), (key, name)
    assert all("test_nelbo_bpd" not in r for r in _lines(curve_runs["off"]).values())


def _nelbo(model, run: RunConfig) -> float:
    x, _ = load_split(run, "test", run.train.eval_examples)
    gen = torch.Generator().manual_seed(run.seed + CURVE_SEED_OFFSET)
    with eval_mode(model):
        return continuous_nelbo(model, x, run.train.eval_time_samples, importance=True, generator=gen).bpd


def test_curve_points_are_the_ema_models_test_nelbo(curve_runs) -> None:
    run = _curve_run(10)
    lines = _lines(curve_runs["on"])
    assert sorted(lines) == [5, 10, 15, 20]
    assert [s for s, r in lines.items() if "test_nelbo_bpd" in r] == [10, 20]
    model, saved = load_trained_model(curve_runs["on"] / MODEL)
    assert saved == run
    assert lines[20]["test_nelbo_bpd"] == pytest.approx(_nelbo(model, run), abs=1e-6)
    # step 10: the EMA weights of the paused run's checkpoint (the same training, bit for bit)
    ckpt = torch.load(curve_runs["ckpt10"], map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["ema"])
    assert lines[10]["test_nelbo_bpd"] == pytest.approx(_nelbo(model, run), abs=1e-6)
    assert lines[10]["test_nelbo_bpd"] != lines[20]["test_nelbo_bpd"]
    assert all(r["test_nelbo_se"] > 0 for r in lines.values() if "test_nelbo_se" in r)


def test_curve_carries_training_seconds_and_flops(curve_runs) -> None:
    run = _curve_run(10)
    lines = _lines(curve_runs["on"])
    seconds = [lines[s]["train_seconds"] for s in sorted(lines)]
    assert seconds[0] > 0 and all(b > a for a, b in itertools.pairwise(seconds))
    model, _ = load_trained_model(curve_runs["on"] / MODEL)
    x_train = load_training_data(run)[0]
    tc = run.train
    per_step = training_flops_per_step(model, x_train, tc.batch_size, None if tc.loss == "continuous" else tc.loss_steps, tc.time_sampling)
    assert per_step > 0
    for step, r in lines.items():
        assert r["train_flops"] == pytest.approx(step * per_step, rel=1e-12)


def test_resumed_curve_continues_the_seconds_and_matches(curve_runs) -> None:
    on, resumed = _lines(curve_runs["on"]), _lines(curve_runs["resumed"])
    assert sorted(resumed) == sorted(on)
    assert resumed[10]["train_seconds"] == 1e6
    assert resumed[15]["train_seconds"] > 1e6 and resumed[20]["train_seconds"] > resumed[15]["train_seconds"]
    for step in (10, 20):
        assert resumed[step]["test_nelbo_bpd"] == on[step]["test_nelbo_bpd"]
        assert resumed[step]["train_flops"] == on[step]["train_flops"]


def test_train_seconds_leave_the_evaluation_out(monkeypatch, tmp_path: Path) -> None:
    """A curve point that takes 100 s (a controlled clock) adds nothing to train_seconds: the
    study's tables compare training seconds, "evaluation excluded" (ndm.report.study)."""
    import types

    from tqdm import tqdm

    import ndm.pipeline.train as train_module
    from ndm.pipeline.train import MetricsLog, train_step
    from ndm.pipeline.train_curve import TestCurve
    from ndm.pipeline.train_state import build_state

    clock = [0.0]
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(time=lambda: clock[0]))

    class SlowCurve(TestCurve):
        def evaluate(self, model):
            clock[0] += 100.0
            return super().evaluate(model)

    run = _curve_run(5)
    x_train, shape, levels, _ = load_training_data(run)
    state = build_state(run, shape, levels, torch.device("cpu"), torch.Generator().manual_seed(0))
    curve = TestCurve.for_run(run, torch.device("cpu"))
    log = MetricsLog(tmp_path / METRICS, None, tqdm(disable=True), 0, x_train[:8], SlowCurve(curve.x_test, 1, curve.seed), 2.0)
    seconds = []
    for _ in range(2):
        for _ in range(5):
            state.add_to_interval(train_step(state, x_train, run))
        clock[0] += 5.0  # five training steps take 5 s
        log.append(state, run)
        seconds.append(_lines(tmp_path)[state.step]["train_seconds"])
    assert seconds == [5.0, 10.0]
    assert _lines(tmp_path)[10]["train_flops"] == 20.0 and "test_nelbo_bpd" in _lines(tmp_path)[10]


def test_eval_every_must_be_a_multiple_of_log_every() -> None:
    cfg = copy.deepcopy(SMOKE)
    cfg["defaults"]["train"].update(log_every=10, eval_every=15)
    with pytest.raises(ConfigError, match="multiple of train.log_every"):
        resolve_run_config(cfg, "toy2d", "ddpm", 0)
    cfg["defaults"]["train"]["eval_every"] = 30
    assert resolve_run_config(cfg, "toy2d", "ddpm", 0).train.eval_every == 30
