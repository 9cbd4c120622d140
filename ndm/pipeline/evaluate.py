"""Evaluation jobs: each reads explicit inputs and writes one result file with provenance.

    evaluate_likelihood   model.pt -> likelihood.json (NELBO continuous and at each T, ODE NLL, estimator std)
    sample_grid           model.pt -> samples/<sampler>/steps<N>.npz for every step count
    evaluate_samples      samples + reference stats -> fid/<sampler>.json (Frechet distances)
    reference_stats       dataset (+ classifier) -> ref_<feature>.npz, computed once per dataset
    feature_classifier    dataset -> classifier.pt (the feature space of fd_classifier)

Every number carries its sample count and standard error; every file carries the seed,
the config hash and the provenance (git commit, package versions, device).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ndm.names import sampler_spec, split_sampler
from ndm.pipeline.config import EvalConfig, RunConfig, resolve_eval_config
from ndm.pipeline.data import load_split  # noqa: F401 - also imported from here by the codec and the report
from ndm.model.diffusion import DiffusionModel, bits_per_dim
from ndm.pipeline.results import atomic_write, write_result_json
from ndm.pipeline.train import load_trained_model

# Units of the likelihood numbers: bits/dim of discrete data (an upper bound on the
# discrete NLL) or of a continuous density (can be negative) for continuous data.
UNITS_DISCRETE = "bits/dim (discrete data)"
UNITS_CONTINUOUS = "bits/dim of a continuous density"




def _run_identity(run: RunConfig) -> dict[str, Any]:
    return {"dataset": run.dataset, "variant": run.model_name, "seed": run.seed, "config_hash": run.hash()}


def histogram_baseline_bpd(train: Tensor, test: Tensor, levels: int, smoothing: float = 0.5) -> float:
    """Test NLL in bits/dim of independent per-pixel categoricals fitted on the training split.

    The simplest likelihood baseline for discrete images: a model that ignores every
    dependency between pixels. A diffusion model that has learned anything beats it.
    Additive smoothing keeps levels unseen in training at a finite cost.
    """
    counts = torch.stack([(train == k).sum(0) for k in range(levels)]).double() + smoothing  # (K, *event)
    log_p = torch.log(counts / counts.sum(0))
    idx = test.long().unsqueeze(0)  # (1, N, *event)
    nll = -log_p.unsqueeze(1).expand(-1, test.shape[0], *([-1] * (test.dim() - 1))).gather(0, idx).squeeze(0)
    dims = int(math.prod(test.shape[1:]))
    return float(bits_per_dim(nll.flatten(1).sum(1).mean(), dims))


# ------------------------------------------------------------- likelihood


def evaluate_likelihood(
    model_path: str | Path, config: dict, out_path: str | Path, *, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """NELBO (continuous time and each discrete T) and ODE NLL on the test split."""
    from ndm.estimators.likelihood import continuous_nelbo, discrete_nelbo

    model, run = load_trained_model(model_path, device=device)
    ev = resolve_eval_config(config, run.dataset)
    model.use_precision(ev.precision)
    x, ds = load_split(run, "test", ev.n_examples)
    x = x.to(device)
    gen = torch.Generator(device=device).manual_seed(run.seed + 101)
    out: dict[str, Any] = {
        **_run_identity(run),
        "model": str(model_path),
        "units": UNITS_DISCRETE if ds.levels is not None else UNITS_CONTINUOUS,
        "split": "test",
        "n_examples": int(x.shape[0]),
    }
    steps = [("continuous", None)] + [(f"T{T}", T) for T in ev.nelbo_steps] + [("ode", None)]
    bar = _bar(len(steps), f"likelihood {run.dataset}/{run.model_name}", progress)
    t0 = time.time()
    est = continuous_nelbo(model, x, ev.nelbo_time_samples, generator=gen, batch_size=ev.batch_size * 8)
    out["nelbo_continuous"] = {**est.summary(), "time_samples": ev.nelbo_time_samples, "seconds": round(time.time() - t0, 3)}
    t0 = time.time()
    gen_std = torch.Generator(device=device).manual_seed(run.seed + 202)  # its own stream: the other estimates keep theirs
    out["estimator_std"] = {**estimator_std(model, x, gen_std, batch_size=ev.batch_size * 8), "seconds": round(time.time() - t0, 3)}
    bar.update(1)
    out["nelbo_discrete"] = {}
    for _, n_steps in steps[1:-1]:
        t0 = time.time()
        est = discrete_nelbo(model, x, n_steps, n_step_samples=ev.nelbo_step_samples, generator=gen, batch_size=ev.batch_size * 8)
        out["nelbo_discrete"][str(n_steps)] = {**est.summary(), "T": n_steps, "step_samples": min(ev.nelbo_step_samples, n_steps), "seconds": round(time.time() - t0, 3)}
        bar.update(1)
    out["ode_nll"] = _ode_nll(model, x[: ev.ode.n_examples], ev, gen)
    out.update(model_view(model, run, x))
    bar.update(1)
    bar.close()
    write_result_json(out_path, out)
    return out


def model_view(model: DiffusionModel, run: RunConfig, x: Tensor) -> dict[str, Any]:
    """What the report draws of a model, so that it reads result files only: the schedule
    gamma(t); for a non-identity F a snapshot of F(x, t) (a few test images or many toy points)
    and, for a learned F, its offset / input-dependent split (ndm.estimators.gauge)."""
    from ndm.estimators.gauge import SNAPSHOT_IMAGES, SNAPSHOT_POINTS, SPLIT_EXAMPLES, schedule_curve, transform_record, transform_snapshot

    view: dict[str, Any] = {"schedule": schedule_curve(model)}
    if model.transform.is_identity or x.shape[0] < 2:
        return view
    # The split over SPLIT_EXAMPLES test examples even where the likelihood uses fewer (patches: 32).
    split = x[:SPLIT_EXAMPLES] if x.shape[0] >= SPLIT_EXAMPLES else load_split(run, "test", SPLIT_EXAMPLES)[0].to(x.device, x.dtype)
    if x.dim() > 2:
        show = x[:SNAPSHOT_IMAGES]
    else:
        show = x if x.shape[0] >= SNAPSHOT_POINTS else load_split(run, "test", SNAPSHOT_POINTS)[0].to(x.device, x.dtype)
    view["transform_snapshot"] = transform_snapshot(model, show, split)
    if model.transform.learned:
        view["transform"] = transform_record(model, split)
    return view


# The continuous NELBO estimator's spread per time sampling (VDM's variance point, on real data):
# name -> (draw_times sampling, stratified across an example's times).
ESTIMATOR_STD_SCHEMES = {"uniform": ("uniform", False), "antithetic": ("uniform", True), "importance_gamma": ("gamma", True)}
ESTIMATOR_STD_TIMES = 2  # times per estimate: few, as in training, where the schemes differ most


@torch.no_grad()
def estimator_std(model: DiffusionModel, x: Tensor, gen: torch.Generator, k: int = ESTIMATOR_STD_TIMES, batch_size: int = 4096) -> dict[str, Any]:
    """Std (bits/dim) of the diffusion-term estimate with k times per example, per time sampling.

    uniform: k independent uniform times; antithetic: k stratified times (u + j / k) mod 1;
    importance_gamma: k stratified times uniform in gamma, weighted (the estimator's default).
    The std is within example (x fixed): two independent estimates a, b per example give
    Var = mean (a - b)^2 / 2, so the spread of the data does not mask that of the times.
    The reconstruction and prior terms do not depend on the times and are left out.
    """
    from ndm.model.time_sampling import draw_times

    n = x.shape[0]
    x_rep = x.repeat_interleave(k, dim=0)
    std: dict[str, float] = {}
    for name, (sampling, stratified) in ESTIMATOR_STD_SCHEMES.items():
        est = []
        for _ in range(2):
            rows, cols = (n, k) if stratified else (n * k, 1)
            t, w = draw_times(model.schedule, rows, cols, sampling, generator=gen, device=x.device, dtype=x.dtype)
            eps = torch.randn(x_rep.shape, generator=gen, device=x.device, dtype=x.dtype)
            parts = zip(x_rep.split(batch_size), t.split(batch_size), eps.split(batch_size), w.split(batch_size))
            est.append(torch.cat([model.diffusion_loss(xb, tb, eb)[0] * wb for xb, tb, eb, wb in parts]).view(n, k).mean(1))
        var = ((est[0] - est[1]) ** 2 / 2).mean().item()
        std[name] = float(bits_per_dim(math.sqrt(var), model.dims))
    return {"std_bpd": std, "time_samples": k, "n_examples": n, "part": "diffusion term, within example"}


def _ode_nll(model: DiffusionModel, x: Tensor, ev: EvalConfig, gen: torch.Generator) -> dict[str, Any]:
    """ODE NLL with the configured solver; a clear 'skipped' record where it is undefined."""
    from ndm.estimators import likelihood

    if ev.ode.n_examples == 0:
        return {"skipped": "disabled in the config (eval.ode.n_examples: 0)"}
    if not model.transform.identity_at_zero:
        return {"skipped": "F(x, 0) != x for this variant: the ODE gives the density of z_0 = alpha_0 F(x, 0), not of x"}
    t0 = time.time()
    divergence = ev.ode.divergence
    if divergence == "auto":
        divergence = "exact" if model.dims <= 64 else "hutchinson"
    solver = likelihood.OdeSolver(
        method=ev.ode.method, steps=ev.ode.steps, rtol=ev.ode.rtol, atol=ev.ode.atol, divergence=divergence, probes=ev.ode.probes
    )
    est = likelihood.ode_nll(model, x, solver, generator=gen)
    return {**est.summary(), "method": ev.ode.method, "steps": ev.ode.steps if ev.ode.method == "heun" else None, "divergence": divergence, "seconds": round(time.time() - t0, 3)}


# ---------------------------------------------------------------- samples


def sample_steps_for(ev: EvalConfig, sampler: str) -> list[int]:
    """The step counts a sampler runs at: the grid (without those over eval.max_sample_nfe
    x_hat evaluations), plus the paper setting for its sampler."""
    per_step = sampler_spec(sampler).x_hat_per_step
    steps = {n for n in ev.sample_steps if ev.max_sample_nfe is None or n * per_step <= ev.max_sample_nfe}
    if sampler == ev.paper_setting.sampler:
        steps.add(ev.paper_setting.steps)
    return sorted(steps) if sampler_spec(sampler).fixed_step else [0]


def sample_grid(
    model_path: str | Path,
    config: dict,
    sampler: str,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    progress: bool = True,
    shard: int = 0,
    shards: int = 1,
) -> list[Path]:
    """Samples of one model with one sampler at every configured step count.

    shard/shards: this job draws shard `shard` of `shards` (eval.sample_shards): its share of
    n_samples from its own noise stream (ndm/pipeline/shards.py); merged before the FD.

    Files: out_dir/steps<N>.npz with `samples` (uint8 levels for discrete data, float32
    otherwise), nfe, nfe_F, flops_per_sample (ndm.estimators.flops), seconds, time_grid (eval.time_grid). The noise generator is
    seeded per (seed, steps), so a step count's samples do not depend on which other step
    counts were run. An adaptive sampler has no step count; its file is steps0.npz (NFE measured).
    """
    from ndm.estimators.flops import sampling_flops
    from ndm.estimators.sampling import SamplerSettings, sample
    from ndm.pipeline.shards import noise_seed, shard_size

    model, run = load_trained_model(model_path, device=device)
    ev = resolve_eval_config(config, run.dataset)
    model.use_precision(ev.precision)
    n_samples = shard_size(ev.n_samples, shard, shards)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    records: list[dict[str, Any]] = []
    flops_cache: dict = {}
    fixed = sampler_spec(sampler).fixed_step
    base, own_grid = split_sampler(sampler)  # "edm-heun@edm": edm-heun on the edm grid
    time_grid = own_grid or ev.time_grid
    for steps in sample_steps_for(ev, sampler):
        twin = _identical_grid_twin(model, base, own_grid, ev.time_grid, steps, out_dir, run.seed, n_samples, shards) if fixed else None
        if twin is not None:
            # The same grid to the last bit, the same noise (seeded per (seed, steps, shard)) and the
            # same sampler: the samples would be the same bits, so they are copied, not recomputed.
            path = out_dir / f"steps{steps}.npz"
            with np.load(twin) as z:
                arrays = {k: z[k] for k in z.files}
            arrays.update(sampler=sampler, time_grid=time_grid, seconds=0.0, reused_from=str(twin))
            atomic_write(path, lambda f: np.savez(f, **arrays))
            written.append(path)
            records.append({"file": str(path), "steps": steps, "time_grid": time_grid, "nfe": float(arrays["nfe"]), "nfe_F": float(arrays["nfe_F"]),
                            "flops_per_sample": float(arrays["flops_per_sample"]), "seconds": 0.0, "reused_from": str(twin)})  # fmt: skip
            continue
        gen = torch.Generator(device=device).manual_seed(noise_seed(run.seed, steps, shard))
        settings = SamplerSettings(base, steps if fixed else None, time_grid=time_grid, rtol=ev.ode.rtol, atol=ev.ode.atol)
        res = sample(model, n_samples, settings, generator=gen, batch_size=ev.batch_size, device=device, progress=progress)
        samples = res.levels if res.levels is not None else res.x.float()
        if not torch.isfinite(res.x).all():
            raise RuntimeError(f"{sampler} at {steps} steps produced non-finite samples for {model_path}")
        # Network FLOPs per sample (x_hat and F, JVPs included): the few-step figure's compute axis.
        flops = sampling_flops(model, base, steps if fixed else None, nfe=res.nfe, device=device, cache=flops_cache)
        path = out_dir / f"steps{steps}.npz"
        arrays = dict(
            samples=samples.cpu().numpy(),
            nfe=res.nfe,
            nfe_F=res.nfe_F,
            flops_per_sample=flops,
            seconds=res.seconds,
            sampler=sampler,
            steps=steps,
            seed=run.seed,
            dataset=run.dataset,
            variant=run.model_name,
            time_grid=time_grid,
        )
        atomic_write(path, lambda f: np.savez(f, **arrays))
        written.append(path)
        records.append({"file": str(path), "steps": steps, "time_grid": time_grid, "nfe": res.nfe, "nfe_F": res.nfe_F, "flops_per_sample": flops, "seconds": round(res.seconds, 3)})
    # The manifest is the job's declared output, written last: its presence means every file is there.
    write_result_json(out_dir / "manifest.json", {**_run_identity(run), "sampler": sampler, "time_grid": time_grid, "n_samples": n_samples, **({"shard": shard, "shards": shards} if shards > 1 else {}), "files": [str(p) for p in written], "records": records})
    return written


def _identical_grid_twin(model, base: str, own_grid: str | None, default_grid: str, steps: int, out_dir: Path, seed: int, n: int, shards: int) -> Path | None:
    """The file of `base` on the default grid at `steps` (samples/<base>/steps<N>.npz beside this
    sampler's directory, written earlier in the same job) when this sampler's own grid is
    bit-identical to it: a schedule linear in gamma makes uniform-logsnr the uniform-t grid
    (vdm-fixed, ndm), so its samples would be the same bits. None otherwise."""
    from ndm.estimators.time_grids import make_time_grid

    if own_grid is None or own_grid == default_grid or shards != 1:
        return None
    twin = Path(out_dir).parent / base / f"steps{steps}.npz"
    if not twin.exists():
        return None
    if not torch.equal(make_time_grid(steps, own_grid, model.schedule), make_time_grid(steps, default_grid, model.schedule)):
        return None
    with np.load(twin) as z:
        same_run = int(z["seed"]) == seed and len(z["samples"]) == n and str(z["time_grid"]) == default_grid and int(z["steps"]) == steps
    return twin if same_run else None


# ------------------------------------------------------------- features


# The feature spaces of the Inception network (eval.fid.inception_subset applies to them).
INCEPTION_SPACES = ("inception", "clean")
# The space of the metrics against exact samples (ndm/metrics/distributional.py): no features,
# its reference file holds the floor, and its scores come from the dataset's generator.
ENERGY_SPACE = "energy"
# Fresh exact samples per reference draw, as a multiple of eval.n_samples.
ENERGY_REFERENCE_FACTOR = 4


def inception_subset_count(ev: EvalConfig, feature: str, key: str, default: int | None) -> int | None:
    """eval.fid.inception_subset.<key> (samples, reference) for an Inception space when set, else `default`."""
    count = getattr(ev.fid.inception_subset, key)
    return count if feature in INCEPTION_SPACES and count else default


def _with_exact_sampler(ds, dataset: str):
    if ds.exact_sampler is None:
        raise ValueError(
            f"feature space 'energy' needs data with a known generator (toy2d); {dataset} ({ds.name}) has none: "
            f"drop 'energy' from datasets.{dataset}.eval.fid.features"
        )
    return ds


def energy_reference(ds, ev: EvalConfig, out_path: str | Path, meta: dict) -> dict[str, Any]:
    """The energy space's reference file: the floor, what exact samples of the scored size get.
    draws: D^2 of n exact samples against m = 4 n fresh ones; exact: D^2 of n exact samples
    against the law itself (mean 0: the estimate is unbiased)."""
    n_samples = ev.n_samples
    if ev.fid.energy_reference == "exact":
        from ndm.metrics.energy_exact import energy_floor_to_law

        law_floor = energy_floor_to_law(_with_exact_law(ds, meta["dataset"]), n_samples)
        mean, std, m, repeats = law_floor.mean, law_floor.std, 0, law_floor.repeats
    else:
        from ndm.metrics.distributional import energy_floor

        floor = energy_floor(ds.exact_sampler, n_samples, ENERGY_REFERENCE_FACTOR * n_samples)
        mean, std, m, repeats = floor.mean, floor.std, floor.m, floor.repeats
    arrays = dict(kind="energy", estimator=ev.fid.energy_reference, floor_mean=mean, floor_std=std, n=n_samples, m=m, repeats=repeats,
                  meta=json.dumps(meta, sort_keys=True))  # fmt: skip
    atomic_write(out_path, lambda f: np.savez(f, **arrays))
    return {"feature": ENERGY_SPACE, "estimator": ev.fid.energy_reference, "floor_mean": mean, "floor_std": std, "n": n_samples, "m": m}


def _with_exact_law(ds, dataset: str):
    if ds.exact_law is None:
        raise ValueError(
            f"eval.fid.energy_reference: exact needs the data's law in closed form (toy2d has it); {dataset} ({ds.name}) has none: "
            f"use energy_reference: draws (fresh exact samples)"
        )
    return ds.exact_law


class EnergyScorer:
    """ed_data (the energy distance to the data's law, with its floor) and offsupport_mass of
    sample sets of one dataset. The reference file says how the data terms are computed: against
    fresh exact draws (made once per scorer) or in closed form from the law."""

    def __init__(self, ds, reference: str | Path, dataset: str):
        from ndm.metrics.distributional import exact_draws

        with np.load(reference, allow_pickle=False) as z:
            self.m = int(z["m"])
            self.estimator = str(z["estimator"]) if "estimator" in z.files else "draws"  # files written before the option: draws
            self.floor = {"floor_mean": float(z["floor_mean"]), "floor_std": float(z["floor_std"]), "floor_n": int(z["n"]), "floor_source": f"{int(z['repeats'])} exact draws"}
        self.ds, self.dataset = ds, dataset
        self.law = _with_exact_law(ds, dataset) if self.estimator == "exact" else None
        self.draws = exact_draws(ds.exact_sampler, self.m) if self.law is None else None

    def __call__(self, samples: Tensor) -> dict[str, dict[str, Any]]:
        from ndm.metrics.distributional import ENERGY_METRIC, OFFSUPPORT_METRIC, energy_to_exact

        x = samples.double().numpy().reshape(len(samples), -1)
        if self.law is not None:
            from ndm.metrics.energy_exact import energy_to_law

            value, se = energy_to_law(x, self.law)
            how = {"stderr_method": "samples (U-statistic, first order); data terms exact", "n_reference": 0, "feature_extractor": f"exact-law/{self.dataset}"}
        else:
            value, se = energy_to_exact(x, self.draws)
            how = {"stderr_method": f"samples (U-statistic, first order) and {len(self.draws.points)} fresh exact draws", "n_reference": self.draws.m,
                   "feature_extractor": f"exact-sampler/{self.dataset}"}  # fmt: skip
        out = {ENERGY_METRIC: {"metric": ENERGY_METRIC, "value": value, "stderr": se, "n_samples": len(x), **how, **self.floor}}
        if self.ds.offsupport is not None:
            p = self.ds.offsupport(x)
            out[OFFSUPPORT_METRIC] = {"metric": OFFSUPPORT_METRIC, "value": p, "stderr": math.sqrt(p * (1 - p) / len(x)), "stderr_method": "binomial",
                                      "n_samples": len(x), "feature_extractor": f"support/{self.dataset}", "floor_mean": 0.0}  # fmt: skip
        return out


def feature_extractor(name: str, run_or_dataset: str, ev: EvalConfig, classifier_path: str | Path | None):
    """The extractor object of a feature space (ids match those stored in reference stats)."""
    from ndm import metrics

    if name == "classifier":
        if classifier_path is None:
            raise ValueError("the classifier feature space needs the trained classifier (classifier.pt)")
        return metrics.ClassifierFeatures(metrics.load_classifier(classifier_path), run_or_dataset)
    if name == "inception":
        return metrics.TorchFidelityInception(ev.fid.inception_weights)
    if name == "clean":
        return metrics.CleanFIDInception(ev.fid.inception_weights)
    if name == "data":
        return metrics.DataSpaceFeatures()
    if name == ENERGY_SPACE:
        raise ValueError("feature space 'energy' has no feature network: its scores come from the dataset's generator (EnergyScorer)")
    raise ValueError(f"unknown feature space {name!r}")


def config_dataset(config: dict, dataset: str, seed: int = 0):
    """The data of a config's dataset (its data section; the variant does not matter), as the
    data-stage jobs load it."""
    from ndm.pipeline.config import resolve_run_config
    from ndm.pipeline.data import load_dataset

    run = resolve_run_config(config, dataset, "ddpm", seed)
    return load_dataset(run.data.name, root=run.data.root, download=False, seed=seed, **run.data.options)


def feature_classifier(config: dict, dataset: str, out_path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Train the dataset's feature classifier (the fd_classifier feature space) once."""
    from ndm import metrics

    ev = resolve_eval_config(config, dataset)
    ds = config_dataset(config, dataset, seed)
    t0 = time.time()
    clf = metrics.train_feature_classifier(ds, seed=seed, steps=ev.fid.classifier_steps)
    metrics.save_classifier(clf, out_path)
    acc = metrics.classifier_accuracy(clf, ds.test, ds.test_labels)
    info = {"dataset": dataset, "seed": seed, "steps": ev.fid.classifier_steps, "test_accuracy": acc, "n_classes": int(ds.train_labels.max()) + 1, "seconds": round(time.time() - t0, 2)}
    write_result_json(Path(out_path).with_suffix(".json"), info)
    return info


def reference_stats(
    config: dict, dataset: str, feature: str, out_path: str | Path, classifier_path: str | Path | None = None, seed: int = 0
) -> dict[str, Any]:
    """Reference statistics of the dataset's training split in one feature space.

    Continuous data with known moments (toy2d, gaussian) use the exact population
    moments in data space (n = None marks them exact).
    """
    from ndm import metrics

    ev = resolve_eval_config(config, dataset)
    ds = config_dataset(config, dataset, seed)
    meta = {"dataset": dataset, "split": "train", "feature": feature}
    if feature == ENERGY_SPACE:
        return energy_reference(_with_exact_sampler(ds, dataset), ev, out_path, meta)
    if feature == "data" and ds.moments is not None:
        stats = metrics.exact_reference_stats(ds.moments, meta)
        extractor = metrics.DataSpaceFeatures()
    else:
        try:
            extractor = feature_extractor(feature, dataset, ev, classifier_path)
        except metrics.InceptionWeightsNotFound as exc:
            if ev.fid.if_weights_missing != "skip":
                raise
            # Recorded, never faked: the file says why, and every distance in this space is skipped.
            metrics.save_skipped_stats(out_path, feature, str(exc), meta)
            return {"feature": feature, "skipped": str(exc)}
        n_ref = inception_subset_count(ev, feature, "reference", ev.fid.n_reference)
        ref = ds.train if n_ref is None else ds.train[:n_ref]
        from ndm.metrics.kid import KID_REFERENCE_MAX

        features = extractor(ref)
        stats = metrics.feature_stats(features, extractor.id, {**meta, "n": int(len(ref))})
        # The first reference features for the unbiased KID (ndm.metrics.kid) beside the FD.
        stats = dataclasses.replace(stats, features=np.asarray(features[:KID_REFERENCE_MAX], np.float32))
    n_floor = inception_subset_count(ev, feature, "samples", ev.n_samples)
    floor = data_floor(ds, extractor, stats, n_floor)
    stats = dataclasses.replace(stats, meta={**stats.meta, "floor": floor})
    metrics.save_stats(out_path, stats)
    return {"feature": feature, "extractor": stats.extractor, "n": stats.n, "dim": stats.dim, "floor": floor}


def data_floor(ds, extractor, reference, n: int, draws: int = 8) -> dict[str, Any]:
    """What data score against the reference at the sample size of a model: the Frechet distance
    of n exact samples (over `draws` draws: mean and sd) where the generator is known, else of the
    first n test examples (one value: "test vs train in the same features")."""
    from ndm import metrics

    def fd(x) -> float:
        return metrics.frechet_from_features(extractor(x), reference, extractor.metric).value

    if ds.exact_sampler is not None:
        values = [fd(ds.exact_sampler(n, torch.Generator().manual_seed(3_000_017 + k)).to(ds.train.dtype)) for k in range(draws)]
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "n": n, "source": f"{draws} exact draws"}
    n = min(n, len(ds.test))
    floor = {"mean": fd(ds.test[:n]), "std": None, "n": n, "source": "test split"}
    from ndm.metrics.kid import kid_with_stderr

    if reference.features is not None:  # the KID's floor: the test split against the same reference features
        kid, kid_se = kid_with_stderr(extractor(ds.test[:n]), reference.features)
        floor.update(kid_mean=kid, kid_se=kid_se)
    return floor


def evaluate_samples(
    config: dict,
    dataset: str,
    sample_files: list[str | Path],
    reference_files: dict[str, str | Path],
    out_path: str | Path,
    classifier_path: str | Path | None = None,
    n_bootstrap: int = 10,
    extractors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Frechet distances of each sample file against the reference stats of each feature space.

    extractors: from `sample_feature_extractors`, for a caller scoring several sample sets
    with networks loaded once; built here when not given.
    """
    from ndm import metrics
    from ndm.metrics.kid import kid_from_features, kid_metric

    if extractors is None:
        extractors = sample_feature_extractors(config, dataset, reference_files, classifier_path)
    skipped = {name: reason for name, path in reference_files.items() if (reason := metrics.skipped_reason(path))}
    refs = {name: metrics.load_stats(path) for name, path in reference_files.items() if name not in skipped and name != ENERGY_SPACE}
    exact = None
    if ENERGY_SPACE in reference_files:
        exact = EnergyScorer(_with_exact_sampler(config_dataset(config, dataset), dataset), reference_files[ENERGY_SPACE], dataset)
    ev = resolve_eval_config(config, dataset)
    subset = ev.fid.inception_subset
    results = []
    first = None
    for path in sorted(sample_files, key=lambda p: int(Path(p).stem.replace("steps", ""))):
        with np.load(path) as z:
            arr = z["samples"]
            rec = {k: z[k].item() for k in ("nfe", "nfe_F", "seconds", "steps", "seed")}
            if "flops_per_sample" in z.files:  # files sampled before FLOPs were counted lack it
                rec["flops_per_sample"] = z["flops_per_sample"].item()
            first = first or {k: str(z[k]) for k in ("sampler", "dataset", "variant")}
            # Files written before eval.time_grid existed were all sampled on the uniform-t grid.
            rec["time_grid"] = str(z["time_grid"]) if "time_grid" in z.files else "uniform-t"
            first.setdefault("time_grid", rec["time_grid"])
        samples = torch.from_numpy(arr)
        entry: dict[str, Any] = {**rec, "file": str(path), "n_samples": int(len(samples)), "metrics": {}}
        for name, extractor in extractors.items():
            scored = samples
            if name in INCEPTION_SPACES:
                paper = (first["sampler"], int(rec["steps"])) == (ev.paper_setting.sampler, ev.paper_setting.steps)
                if subset.paper_setting_only and not paper:
                    continue
                scored = samples if subset.samples is None else samples[: subset.samples]
            features = metrics.features_for(scored, refs[name], extractor)
            res = metrics.frechet_from_features(features, refs[name], extractor.metric, extractor=extractor.id, n_bootstrap=n_bootstrap, seed=int(rec["seed"]))
            floor = refs[name].meta.get("floor")  # reference files written before floors existed have none
            entry["metrics"][res.metric] = {**res.to_dict(), **({"floor_mean": floor["mean"], "floor_std": floor["std"], "floor_n": floor["n"], "floor_source": floor["source"]} if floor else {})}
            if refs[name].features is not None:  # the unbiased KID beside the FD (reference files since KID)
                kid = kid_from_features(features, refs[name].features, kid_metric(name), extractor.id)
                kid_floor = {"floor_mean": floor["kid_mean"], "floor_std": floor["kid_se"], "floor_n": floor["n"], "floor_source": floor["source"]} if floor and "kid_mean" in floor else {}
                entry["metrics"][kid.metric] = {**kid.to_dict(), **kid_floor}
        if exact is not None:
            entry["metrics"].update(exact(samples))
        results.append(entry)
    weights = {name: ex.provenance() for name, ex in extractors.items() if hasattr(ex, "provenance")}
    payload = {**(first or {}), "dataset": dataset, "results": results, **({"skipped": skipped} if skipped else {}),
               **({"feature_weights": weights} if weights else {})}
    write_result_json(out_path, payload)
    return payload


def sample_feature_extractors(
    config: dict, dataset: str, reference_files: dict[str, str | Path], classifier_path: str | Path | None = None
) -> dict[str, Any]:
    """The feature network of each feature space that has reference stats (name -> extractor);
    none for a space whose stats file records why it has none (metrics.save_skipped_stats)."""
    from ndm import metrics

    ev = resolve_eval_config(config, dataset)
    return {name: feature_extractor(name, dataset, ev, classifier_path) for name, path in reference_files.items()
            if name != ENERGY_SPACE and metrics.skipped_reason(path) is None}  # fmt: skip


# ------------------------------------------------------------------ misc


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return _NoBar()
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
