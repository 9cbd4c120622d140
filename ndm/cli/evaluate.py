"""`ndm` commands of the data and evaluation stages (each one a Snakemake rule)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ndm.cli.registry import command, recorder, required_args, tracking_args
from ndm.names import FEATURE_SPACES


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline config YAML")


def _threads(args: argparse.Namespace) -> None:
    """Use exactly the cores the scheduler gave this job (oversubscribed threads on a shared CPU are many times slower: docs/performance.md)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _common(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (the rule's threads)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-progress", action="store_true")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# ------------------------------------------------------------ prepare-data


def _prepare_args(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="JSON summary of the loaded dataset")


TEST_POINTS = 1500  # toy test points in data.json


@command("prepare-data", "load a dataset once (fails early with a clear error) and record its summary")(_prepare_args)
def cmd_prepare(args: argparse.Namespace) -> int:
    import hashlib

    from ndm.pipeline.config import load_yaml, resolve_run_config
    from ndm.pipeline.data import load_dataset
    from ndm.pipeline.evaluate import histogram_baseline_bpd
    from ndm.pipeline.results import write_result_json

    config = load_yaml(args.config)
    run = resolve_run_config(config, args.dataset, "ddpm", 0)
    ds = load_dataset(run.data.name, root=run.data.root, download=run.data.download, seed=0, **run.data.options)
    digest = hashlib.sha256(ds.train.contiguous().numpy().tobytes() + ds.test.contiguous().numpy().tobytes()).hexdigest()[:16]
    summary = {
        "dataset": args.dataset,
        "name": run.data.name,
        "n_train": int(ds.train.shape[0]),
        "n_test": int(ds.test.shape[0]),
        "event_shape": list(ds.event_shape),
        "levels": ds.levels,
        "dtype": str(ds.train.dtype),
        "sha256_16": digest,
        "info": json.loads(json.dumps(dict(ds.info), default=str)),
    }
    if ds.levels is not None:
        summary["histogram_baseline_bpd"] = histogram_baseline_bpd(ds.train, ds.test, ds.levels)
    if len(ds.event_shape) == 1:  # the sample figures draw toy samples over these (the report loads no data)
        summary["test_points"] = [[float(f"{v:.6g}") for v in row] for row in ds.test[:TEST_POINTS].tolist()]
    write_result_json(args.out, summary)
    print(json.dumps({k: summary.get(k) for k in ("dataset", "n_train", "n_test", "event_shape", "levels", "histogram_baseline_bpd")}))
    return 0


# --------------------------------------------------------- classifier/stats


def _classifier_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="classifier.pt (a .json summary is written beside it)")


@command("train-classifier", "train the dataset's feature classifier for fd_classifier")(_classifier_args)
def cmd_classifier(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.pipeline.evaluate import feature_classifier

    _threads(args)
    info = feature_classifier(load_yaml(args.config), args.dataset, args.out, args.seed)
    print(json.dumps(info))
    return 0


def _stats_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--feature", required=True, choices=FEATURE_SPACES)
    p.add_argument("--classifier", default=None, help="classifier.pt (feature 'classifier')")
    p.add_argument("--out", required=True, help="reference statistics .npz")


@command("fid-stats", "reference statistics of a dataset in one feature space (cached per dataset)")(_stats_args)
def cmd_stats(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.pipeline.evaluate import reference_stats

    _threads(args)
    info = reference_stats(load_yaml(args.config), args.dataset, args.feature, args.out, args.classifier)
    print(json.dumps(info))
    return 0


# ------------------------------------------------------------- likelihood


def _likelihood_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--model", required=True, help="model.pt of a training job")
    p.add_argument("--out", required=True, help="likelihood.json")
    tracking_args(p)


@command("evaluate-likelihood", "NELBO (continuous, each T) and ODE NLL of a trained model on the test split")(_likelihood_args)
def cmd_likelihood(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.pipeline.evaluate import evaluate_likelihood

    _threads(args)
    config = load_yaml(args.config)
    out = evaluate_likelihood(args.model, config, args.out, device=_device(args.device), progress=not args.no_progress)
    _log_result(args, config, out, "evaluate-likelihood", _likelihood_metrics(out))
    print(json.dumps({"nelbo_bpd": out["nelbo_continuous"]["bpd"], "ode_nll_bpd": out["ode_nll"].get("bpd")}))
    return 0


def _likelihood_metrics(out: dict) -> dict[str, float]:
    m = {"nelbo_bpd": out["nelbo_continuous"]["bpd"], "nelbo_bpd_stderr": out["nelbo_continuous"]["bpd_stderr"]}
    for t, e in out["nelbo_discrete"].items():
        m[f"nelbo_T{t}_bpd"] = e["bpd"]
    if "bpd" in out["ode_nll"]:
        m["ode_nll_bpd"] = out["ode_nll"]["bpd"]
        m["ode_nll_bpd_stderr"] = out["ode_nll"]["bpd_stderr"]
        m["ode_nll_nfe"] = out["ode_nll"].get("nfe", float("nan"))
    return m


# ---------------------------------------------------------------- samples


def _score_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    """What scoring samples needs: the dataset, its reference stats and feature networks."""
    p.add_argument("--dataset", required=required)
    p.add_argument("--ref", nargs="+", required=required, help="FEATURE=PATH reference statistics")
    p.add_argument("--classifier", default=None)
    p.add_argument("--bootstrap", type=int, default=10, help="bootstrap resamples for the standard error")
    tracking_args(p)


def _grid_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--sampler", required=True, nargs="+", help="one or more samplers (eval.sample_jobs: per_model)")
    p.add_argument("--out-dir", required=True, nargs="+", help="directory for steps<N>.npz files, one per --sampler")
    p.add_argument("--shard", type=int, default=0, help="draw shard k of --shards (eval.sample_shards; ndm/pipeline/shards.py)")
    p.add_argument("--shards", type=int, default=1, help="number of shards the sample set is split into (1: the whole set)")
    p.add_argument(
        "--fid-out",
        nargs="+",
        default=None,
        help="one fid JSON per --sampler: also compute the Frechet distances in this job, as `ndm evaluate-samples` "
        "would (needs --dataset and --ref; not with --shards > 1)",
    )
    _index_arg(p)
    _score_args(p, required=False)


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", default=None, help="write, last, a JSON listing the manifests and fid files this job wrote (the workflow's declared output)")


def _write_index(path: str | None, manifests: list, fid: list[str] | None) -> None:
    if path is not None:
        from ndm.pipeline.results import write_result_json

        write_result_json(path, {"manifests": [str(m) for m in manifests], "fid": list(fid or [])})


@command("sample-grid", "samples of a model with one or more samplers at every configured step count")(_grid_args)
def cmd_grid(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.pipeline.evaluate import sample_grid

    _threads(args)
    if len(args.sampler) != len(args.out_dir):
        raise SystemExit(f"sample-grid: {len(args.sampler)} sampler(s) but {len(args.out_dir)} --out-dir(s); give one --out-dir per --sampler")
    if args.fid_out is not None:
        if len(args.fid_out) != len(args.sampler) or not args.dataset or not args.ref:
            raise SystemExit("sample-grid: --fid-out needs one path per --sampler, --dataset and --ref FEATURE=PATH")
        if args.shards > 1:
            raise SystemExit("sample-grid: --fid-out scores a whole sample set; with --shards > 1 score the merged shards with `ndm evaluate-samples`")
    config = load_yaml(args.config)
    sets = []
    for sampler, out_dir in zip(args.sampler, args.out_dir):
        files = sample_grid(args.model, config, sampler, out_dir, device=_device(args.device), progress=not args.no_progress,
                            shard=args.shard, shards=args.shards)
        sets.append(files)
        print(json.dumps([str(f) for f in files]))
    if args.fid_out is not None:
        # In the sampling job: one job per model instead of two (a job's start-up is a third of
        # a small CPU job; docs/performance.md).
        _score(args, config, sets, args.fid_out)
    _write_index(args.index, [Path(d) / "manifest.json" for d in args.out_dir], args.fid_out)
    return 0


def _fd_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--samples", nargs="+", help="steps<N>.npz files of one (model, sampler)")
    group.add_argument(
        "--manifest",
        nargs="+",
        help="manifest.json files written by `ndm sample-grid`, one per sampler; with --out in the same order",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=1,
        help="K > 1: --manifest gives K shard manifests per --out (sampler-major, shard order); each group is merged "
        "into the sampler directory (the shard directory's parent) before the distances",
    )
    p.add_argument("--out", nargs="+", required=True, help="one JSON per --manifest (or one for --samples)")
    _index_arg(p)
    _score_args(p, required=True)


@command("evaluate-samples", "Frechet distances (per feature space) of sample files against reference stats")(_fd_args)
def cmd_fd(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml

    _threads(args)
    config = load_yaml(args.config)
    if args.shards > 1 and args.manifest:
        from ndm.pipeline.shards import merge_shards

        groups = [args.manifest[i : i + args.shards] for i in range(0, len(args.manifest), args.shards)]
        if len(args.manifest) != args.shards * len(args.out):
            raise SystemExit(f"evaluate-samples: {len(args.manifest)} shard manifest(s) for {len(args.out)} --out path(s) and --shards {args.shards}")
        sets = [merge_shards(g, Path(g[0]).parent.parent) for g in groups]
    else:
        sets = [args.samples] if args.samples else [json.loads(Path(m).read_text())["files"] for m in args.manifest]
    if len(sets) != len(args.out):
        raise SystemExit(f"evaluate-samples: {len(sets)} sample set(s) but {len(args.out)} --out path(s); give one --out per --manifest")
    _score(args, config, sets, args.out)
    merged = [Path(g[0]).parent.parent / "manifest.json" for g in groups] if args.shards > 1 and args.manifest else list(args.manifest or [])
    _write_index(args.index, merged, args.out)
    return 0


def _score(args: argparse.Namespace, config: dict, sets: list, outs: list[str]) -> None:
    """Frechet distances of each sample set, each to its own JSON and its own MLflow run.

    Several sets of one model in one job (one per sampler): the feature networks and reference
    stats load once, and the pipeline runs one job per model instead of one per (model, sampler).
    """
    from ndm.pipeline.evaluate import evaluate_samples, sample_feature_extractors

    refs = dict(item.split("=", 1) for item in args.ref)
    extractors = sample_feature_extractors(config, args.dataset, refs, args.classifier)
    for files, out_path in zip(sets, outs):
        out = evaluate_samples(config, args.dataset, files, refs, out_path, args.classifier, args.bootstrap, extractors=extractors)
        metrics = {}
        for r in out["results"]:
            for name, m in r["metrics"].items():
                metrics[f"{name}_steps{r['steps']}"] = m["value"]
        _log_result(args, config, out, f"evaluate-samples/{out.get('sampler', '')}", metrics, out_path)
        print(json.dumps({"out": out_path, **{k: round(v, 4) for k, v in metrics.items()}}))


# ----------------------------------------------------------------- helpers


def _log_result(args: argparse.Namespace, config: dict, out: dict, kind: str, metrics: dict[str, float], out_path: str | None = None) -> None:
    """One MLflow run per evaluation result (never fatal: the JSON file is the record)."""
    if getattr(args, "no_tracking", False) or "variant" not in out:
        return
    from ndm.pipeline.config import resolve_run_config

    out_path = Path(out_path or args.out)
    run = resolve_run_config(config, out["dataset"], out["variant"], int(out.get("seed", 0)))
    journal = out_path.with_suffix(".mlflow_journal.jsonl")
    with recorder(args, config, run, kind, journal) as rec:
        if rec is not None:
            rec.log_metrics(metrics)
            rec.log_artifact(out_path)


# ------------------------------------------------------------------- report


def _report_args(p: argparse.ArgumentParser) -> None:
    required_args(p, config="pipeline config YAML", out="reports directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", help="the results directory of the config")
    source.add_argument("--from-tables", help="a report's tables/ directory: recompute every mean, interval and verdict table from its per-seed tables alone (results/ not needed)")


@command("report", "compile tables and figures from whatever results exist")(_report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from ndm.pipeline.config import load_yaml
    from ndm.report import compile_report

    summary = compile_report(load_yaml(args.config), args.results, args.out, from_tables=args.from_tables)
    print(json.dumps(summary))
    return 0
