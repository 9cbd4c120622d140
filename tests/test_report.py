"""The report stage: published numbers, tables, figures and the few-step answer.

A session fixture runs the real pipeline pieces (ndm.pipeline.train.train, the ndm.pipeline.evaluate jobs,
`ndm prepare-data`) on tiny models of toy2d and digits into a temporary results directory,
with seed 1 run for toy2d only: toy2d rows then have a standard error across seeds,
digits rows are partial (1 of 2 seeds) with missing files listed. Everything is compiled
through `ndm report`, the command the DAG's rule runs.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ndm.report import compile_report, report_outputs
from ndm.report.collect import collect
from ndm.report.fewstep import BETTER, ONE_SEED, SE_PAIRED, SE_WITHIN, TIE, WORSE, describe, family_verdicts, interval, verdict
from ndm.report.published import data_names, load_published
from ndm.report.tables import likelihood_table

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "configs" / "published.csv"
PAPER_YAML = REPO / "configs" / "paper.yaml"

# The (dataset, variant, metric) combinations the NDM, VDM and DDPM papers report, with values
# (docs/protocol.md, Published numbers). published.csv must have each as a primary, published row.
PAPER_VALUES = {
    ("cifar10", "ndm", "nelbo_bpd"): 2.70,
    ("imagenet32", "ndm", "nelbo_bpd"): 3.55,
    ("imagenet64", "ndm", "nelbo_bpd"): 3.35,
    ("imagenet32", "ndm", "fid"): 17.02,
    ("cifar10", "vdm", "nelbo_bpd"): 2.65,
    ("imagenet32", "vdm", "nelbo_bpd"): 3.72,
    ("imagenet64", "vdm", "nelbo_bpd"): 3.40,
    ("cifar10", "ddpm", "nelbo_bpd"): 3.70,
    ("cifar10", "ddpm", "fid"): 13.51,
}
PAPER_DATASETS = ("mnist", "cifar10", "imagenet32", "imagenet64")
PAPER_VARIANTS = ("ddpm", "vdm", "ndm")  # the models the papers report

VARIANTS = ["ddpm", "vdm", "ndm"]
SAMPLERS = ["ancestral", "ddim"]
SAMPLE_STEPS = [2, 4]
NELBO_STEPS = [4, 8]

TINY_CONFIG = {
    "experiment": "report-test",
    "tracking_uri": None,
    "seeds": [0, 1],
    "variants": VARIANTS,
    "defaults": {
        "train": {"steps": 6, "batch_size": 32, "lr": 3.0e-3, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 100, "time_sampling": "gamma"},
        "eval": {
            "n_examples": 16,
            "nelbo_time_samples": 2,
            "nelbo_steps": NELBO_STEPS,
            "nelbo_step_samples": 2,
            "ode": {"n_examples": 0},
            "samplers": SAMPLERS,
            "sample_steps": SAMPLE_STEPS,
            "n_samples": 32,
            "batch_size": 64,
            "paper_setting": {"sampler": "ancestral", "steps": 4},
        },
    },
    "datasets": {
        "toy2d": {
            "data": {"name": "toy2d", "options": {"n_train": 256, "n_test": 64}},
            "model": {"network": {"kind": "mlp", "hidden": 16, "depth": 1}},
            "eval": {"fid": {"features": ["data"]}},
        },
        "digits": {
            "data": {"name": "digits"},
            "model": {"network": {"kind": "unet", "channels": 4, "channel_mult": [1], "num_res_blocks": 1, "attn_resolutions": [], "fourier_features": []}},
            "eval": {"fid": {"features": ["classifier"], "classifier_steps": 10}},
        },
    },
}
RUNS = [("toy2d", v, s) for v in VARIANTS for s in (0, 1)] + [("digits", v, 0) for v in VARIANTS]


def _build_results(root: Path, config_path: Path) -> None:
    """Train and evaluate every run of RUNS with the real jobs, as the DAG's rules would."""
    from ndm.cli.main import main as ndm_main
    from ndm.pipeline.config import resolve_run_config
    from ndm.pipeline.evaluate import evaluate_likelihood, evaluate_samples, feature_classifier, reference_stats, sample_grid
    from ndm.pipeline.train import train

    config = TINY_CONFIG
    for d in config["datasets"]:
        assert ndm_main(["prepare-data", "--config", str(config_path), "--dataset", d, "--out", str(root / d / "data.json")]) == 0
    refs = {"toy2d": {"data": root / "toy2d" / "ref_data.npz"}, "digits": {"classifier": root / "digits" / "ref_classifier.npz"}}
    feature_classifier(config, "digits", root / "digits" / "classifier.pt")
    reference_stats(config, "toy2d", "data", refs["toy2d"]["data"])
    reference_stats(config, "digits", "classifier", refs["digits"]["classifier"], root / "digits" / "classifier.pt")
    for d, v, s in RUNS:
        out = root / d / v / f"seed{s}"
        train(resolve_run_config(config, d, v, s), out, progress=False)
        evaluate_likelihood(out / "model.pt", config, out / "likelihood.json", progress=False)
        clf = root / "digits" / "classifier.pt" if d == "digits" else None
        for sampler in SAMPLERS:
            files = sample_grid(out / "model.pt", config, sampler, out / "samples" / sampler, progress=False)
            evaluate_samples(config, d, files, refs[d], out / "fid" / f"{sampler}.json", clf, n_bootstrap=5)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """results/ of RUNS and the report compiled from it by `ndm report`."""
    from ndm.cli.main import main as ndm_main

    base = tmp_path_factory.mktemp("report")
    config_path = base / "config.yaml"
    config_path.write_text(yaml.safe_dump(TINY_CONFIG))
    results, out = base / "results", base / "reports"
    _build_results(results, config_path)
    assert ndm_main(["report", "--config", str(config_path), "--results", str(results), "--out", str(out)]) == 0
    return {"config": TINY_CONFIG, "results": results, "out": out, "config_path": config_path}


def _csv(tiny: dict, name: str) -> pd.DataFrame:
    return pd.read_csv(tiny["out"] / "tables" / f"{name}.csv")


# --------------------------------------------------------------- published.csv


def test_published_csv_parses_and_has_the_papers_values() -> None:
    pub = load_published(PUBLISHED)
    primary = pub[pub["primary"] & (pub["status"] == "published")]
    for (dataset, variant, metric), value in PAPER_VALUES.items():
        rows = primary[(primary["dataset"] == dataset) & (primary["variant"] == variant) & (primary["metric"] == metric)]
        assert len(rows) == 1, (dataset, variant, metric)
        assert rows["value"].iloc[0] == pytest.approx(value)
        assert rows["source"].iloc[0].strip() and rows["table"].iloc[0].strip()
    # Every entered number says where it is from; nothing is entered without a source.
    assert pub["source"].str.len().gt(10).all()
    assert pub[pub["status"] == "not_entered"]["value"].isna().all()


def _paper_rows() -> set[tuple[str, str, str]]:
    """(data name, variant, nelbo_bpd) of every paper-config row; the papers' datasets until paper.yaml exists."""
    if PAPER_YAML.exists():
        paper = yaml.safe_load(PAPER_YAML.read_text())
        names = data_names(paper)
        return {(names[d], v, "nelbo_bpd") for d in paper["datasets"] for v in paper["variants"] if v in PAPER_VARIANTS}
    return {(d, v, "nelbo_bpd") for d in PAPER_DATASETS for v in PAPER_VARIANTS}


def test_published_csv_covers_every_paper_config_row() -> None:
    pub = load_published(PUBLISHED)
    have = set(map(tuple, pub[pub["primary"]][["dataset", "variant", "metric"]].values.tolist()))
    missing = sorted(_paper_rows() - have)
    assert not missing, f"configs/published.csv has no row (published or not_entered) for {missing}"


def test_every_published_number_says_what_it_is(tmp_path: Path) -> None:
    """Issue 29: each row is marked NELBO, NLL, FID, rate or unknown, with the reason; the
    VDM and DDPM bits/dim are variational bounds; a row without its quantity is refused."""
    from ndm.report.published import PublishedError

    pub = load_published(PUBLISHED)
    assert pub["quantity_reason"].str.len().gt(10).all()
    bounds = pub[(pub["metric"] == "nelbo_bpd") & (pub["status"] == "published")]
    assert set(bounds[bounds["variant"].isin(["vdm", "ddpm"])]["quantity"]) == {"NELBO"}
    assert set(pub[pub["metric"] == "fid"]["quantity"]) == {"FID"}
    assert set(pub[pub["status"] == "not_entered"]["quantity"]) == {"unknown"}
    bad = tmp_path / "published.csv"
    frame = pd.read_csv(PUBLISHED, dtype=str, keep_default_na=False)
    frame.loc[0, "quantity"] = "bpd"
    frame.to_csv(bad, index=False)
    with pytest.raises(PublishedError, match="quantity of a nelbo_bpd row must be one of"):
        load_published(bad)


def test_published_csv_rejects_a_value_without_status(tmp_path: Path) -> None:
    from ndm.report.published import PublishedError

    bad = tmp_path / "published.csv"
    text = PUBLISHED.read_text().splitlines()
    header, row = text[0], text[1].replace(",published,", ",not_entered,", 1)
    bad.write_text(header + "\n" + row + "\n")
    with pytest.raises(PublishedError, match="needs status published"):
        load_published(bad)


def test_published_values_join_by_data_name() -> None:
    """A dataset key with data.name cifar10 gets VDM's 2.65 and the difference to it."""
    config = {"seeds": [0], "variants": ["vdm", "flow"], "datasets": {"c10": {"data": {"name": "cifar10"}}}}
    res = collect(config, "/nonexistent")
    res.likelihood = pd.DataFrame(
        [{"dataset": "c10", "variant": "vdm", "seed": 0, "estimator": "nelbo", "T": math.inf, "bpd": 2.75, "stderr": 0.01, "n_examples": 10, "nfe": 1, "units": "bits/dim (discrete data)"}]
    )
    table = likelihood_table(res, config, load_published(PUBLISHED), data_names(config)).data.set_index("variant")
    assert table.loc["vdm", "published_bpd"] == pytest.approx(2.65) and math.isinf(table.loc["vdm", "published_T"])
    assert table.loc["vdm", "diff_vs_published"] == pytest.approx(0.10)
    assert table.loc["vdm", "se_source"] == "within-run" and table.loc["vdm", "nelbo_se"] == pytest.approx(0.01)
    assert math.isnan(table.loc["flow", "published_bpd"]) and table.loc["flow", "status"] == "missing"


def test_ddpm_is_compared_at_its_published_T() -> None:
    """DDPM's <= 3.70 is a T = 1000 bound: compared with our T = 1000 NELBO when there is one."""
    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"cifar10": None}}
    res = collect(config, "/nonexistent")
    base = {"dataset": "cifar10", "variant": "ddpm", "seed": 0, "estimator": "nelbo", "stderr": 0.01, "n_examples": 10, "nfe": 1, "units": "bits/dim (discrete data)"}
    res.likelihood = pd.DataFrame([{**base, "T": math.inf, "bpd": 3.60}, {**base, "T": 1000.0, "bpd": 3.80}])
    pub = load_published(PUBLISHED)
    row = likelihood_table(res, config, pub, data_names(config)).data.iloc[0]
    assert row["published_bpd"] == pytest.approx(3.70) and row["published_T"] == 1000
    assert row["diff_vs_published"] == pytest.approx(0.10)
    from ndm.report.tables import bpd_vs_T_table

    t = bpd_vs_T_table(res, pub, data_names(config)).data.set_index("T")
    assert t.loc[1000.0, "published_bpd"] == pytest.approx(3.70) and math.isnan(t.loc[math.inf, "published_bpd"])


def test_collect_expects_each_dataset_its_own_seeds(tmp_path: Path) -> None:
    """datasets.toy2d.seeds: [0, 1] over the global [0]: toy2d expects two seeds, digits one; a
    digits seed1 directory is ignored, not read, and digits' seed 1 is never missing."""
    from ndm.report.readme import _seeds_text

    config = {"seeds": [0], "variants": ["ddpm"], "datasets": {"digits": None, "patches": None, "toy2d": {"seeds": [0, 1]}}}
    nelbo = {"nelbo_continuous": {"bpd": 1.0, "bpd_stderr": 0.1, "n_examples": 10}, "units": "bits/dim"}
    for d, s in [("digits", 0), ("digits", 1), ("patches", 0), ("toy2d", 0), ("toy2d", 1)]:
        run = tmp_path / d / "ddpm" / f"seed{s}"
        run.mkdir(parents=True)
        (run / "train_summary.json").write_text(json.dumps({"steps": 10}))
        (run / "likelihood.json").write_text(json.dumps(nelbo))
    res = collect(config, tmp_path)
    assert res.expected_runs == [("digits", "ddpm", 0), ("patches", "ddpm", 0), ("toy2d", "ddpm", 0), ("toy2d", "ddpm", 1)]
    assert res.seeds == [0, 1] and res.seeds_of("digits") == [0] and res.seeds_of("toy2d") == [0, 1]
    assert sorted(zip(res.train["dataset"], res.train["seed"])) == [("digits", 0), ("patches", 0), ("toy2d", 0), ("toy2d", 1)]
    assert res.ignored == [str(tmp_path / "digits" / "ddpm" / "seed1")]
    assert not [m for m in res.missing if "seed1" in m and "toy2d" not in m]
    assert str(tmp_path / "toy2d" / "ddpm" / "seed1" / "metrics.jsonl") in res.missing
    status = likelihood_table(res, config, load_published(PUBLISHED), data_names(config)).data.set_index("dataset")["status"]
    assert status.to_dict() == {"digits": "complete", "patches": "complete", "toy2d": "complete"}
    assert _seeds_text(res) == "0 (digits, patches); 0, 1 (toy2d)"
    assert _seeds_text(collect({**config, "datasets": {"digits": None}}, tmp_path)) == "0"


# --------------------------------------------------------------------- tables


def test_every_output_is_written(tiny: dict) -> None:
    for rel in report_outputs(tiny["config"]):
        p = tiny["out"] / rel
        assert p.exists() and p.stat().st_size > 0, rel


def test_likelihood_table(tiny: dict) -> None:
    t = _csv(tiny, "likelihood")
    for col in ("dataset", "variant", "status", "seeds", "nelbo_bpd", "nelbo_se", "se_source", "nll_ode_bpd", "published_bpd", "diff_vs_published", "published_source"):
        assert col in t.columns
    assert len(t) == len(VARIANTS) * 2
    toy = t[t["dataset"] == "toy2d"].set_index("variant")
    # Two seeds: the mean and the standard error across seeds, recomputed from the result files.
    for v in VARIANTS:
        bpd = [json.loads((tiny["results"] / "toy2d" / v / f"seed{s}" / "likelihood.json").read_text())["nelbo_continuous"]["bpd"] for s in (0, 1)]
        assert toy.loc[v, "nelbo_bpd"] == pytest.approx(np.mean(bpd))
        assert toy.loc[v, "nelbo_se"] == pytest.approx(np.std(bpd, ddof=1) / math.sqrt(2))
        assert toy.loc[v, "se_source"] == "seeds" and toy.loc[v, "status"] == "complete"
    digits = t[t["dataset"] == "digits"].set_index("variant")
    one = json.loads((tiny["results"] / "digits" / "ndm" / "seed0" / "likelihood.json").read_text())["nelbo_continuous"]
    assert digits.loc["ndm", "nelbo_se"] == pytest.approx(one["bpd_stderr"])
    assert (digits["se_source"] == "within-run").all()
    assert (digits["status"] == "partial (1 of 2 seeds)").all()
    assert digits["nll_ode_note"].str.startswith("skipped").all()


def test_bpd_vs_T_table(tiny: dict) -> None:
    t = _csv(tiny, "bpd_vs_T")
    assert {"dataset", "variant", "time", "T", "bpd", "se", "se_source", "seeds", "excess_over_continuous", "published_bpd"} <= set(t.columns)
    for (d, v), g in t.groupby(["dataset", "variant"]):
        assert sorted(g["T"].tolist()) == [*map(float, NELBO_STEPS), math.inf], (d, v)
        assert g[g["time"] == "continuous"]["excess_over_continuous"].iloc[0] == pytest.approx(0.0)


def test_means_recompute_from_the_per_seed_table(tiny: dict) -> None:
    from per_seed_check import check_means_from_per_seed

    assert check_means_from_per_seed(tiny["out"] / "tables") > 10


def test_report_from_the_per_seed_tables_alone_is_identical(tiny: dict, tmp_path: Path) -> None:
    """`ndm report --from-tables`: with results/ gone, every table computed from per-seed numbers
    comes out byte-identical from the committed per-seed tables; a tables directory without them
    is refused, naming what is missing."""
    from ndm.cli.main import main as ndm_main
    from ndm.report.compile import FROM_TABLES
    from ndm.report.outputs import csv_extension

    tables = tmp_path / "committed" / "tables"
    shutil.copytree(tiny["out"] / "tables", tables)
    assert ndm_main(["report", "--config", str(tiny["config_path"]), "--from-tables", str(tables), "--out", str(tmp_path / "again")]) == 0
    for name in FROM_TABLES:
        for ext in (csv_extension(name), "md", "tex"):
            assert (tmp_path / "again" / "tables" / f"{name}.{ext}").read_bytes() == (tiny["out"] / "tables" / f"{name}.{ext}").read_bytes(), (name, ext)
    (tables / "per_seed_meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="per_seed_meta.json"):
        compile_report(tiny["config"], None, tmp_path / "x", from_tables=tables)


def test_fid_table_names_the_feature_space(tiny: dict) -> None:
    t = _csv(tiny, "fid")
    assert {"dataset", "variant", "metric", "sampler", "steps", "nfe", "value", "se", "se_source", "published_fid", "comparable", "diff_vs_published"} <= set(t.columns)
    assert set(t[t["dataset"] == "digits"]["metric"]) == {"fd_classifier", "kid_classifier"}
    assert set(t[t["dataset"] == "toy2d"]["metric"]) == {"fd_data"}
    assert (t["sampler"] == "ancestral").all() and (t["steps"] == 4).all()
    assert not t["comparable"].any()
    md = (tiny["out"] / "tables" / "fid.md").read_text()
    assert "not FID" in md or "neither is FID" in md


def test_few_step_tables(tiny: dict) -> None:
    t = _csv(tiny, "few_step")
    assert {"dataset", "sampler", "metric", "steps", "nfe", "nfe_F", "variant", "value", "se", "se_source", "seeds", "n_samples", "nelbo_T_bpd"} <= set(t.columns)
    # digits: FD and KID in the classifier's features; toy2d: data-space FD
    assert len(t) == (2 + 1) * len(SAMPLERS) * len(SAMPLE_STEPS) * len(VARIANTS)
    assert set(t[t["dataset"] == "digits"]["metric"]) == {"fd_classifier", "kid_classifier"}
    anc = t[t["sampler"] == "ancestral"]
    assert (anc["nfe"] == anc["steps"]).all()
    assert (t[t["variant"] == "ndm"]["nfe_F"] > 0).all() and (t[t["variant"] == "ddpm"]["nfe_F"] == 0).all()
    # The T-step NELBO appears exactly where T = steps on the ancestral sampler (T = 4 here).
    has = t.dropna(subset=["nelbo_T_bpd"])
    assert set(zip(has["sampler"], has["steps"])) == {("ancestral", 4)}
    c = _csv(tiny, "few_step_comparison")
    assert {"dataset", "baseline", "sampler", "metric", "nfe", "diff", "diff_se", "n_seeds", "se_source", "ci_low", "ci_high", "z", "verdict"} <= set(c.columns)
    assert set(c["baseline"]) == {"ddpm", "vdm"}
    assert c["diff"].to_numpy() == pytest.approx((c["ndm"] - c["baseline_value"]).to_numpy())
    # verdicts judge the NFEs of one comparison together (Holm); a family verdict implies the row's own
    for _, fam in c.groupby(["dataset", "baseline", "sampler", "metric"]):
        p, p_holm, verdicts = family_verdicts(fam["diff"].tolist(), fam["diff_se"].tolist(), fam["n_seeds"].tolist())
        assert fam["verdict"].tolist() == verdicts and fam["p_holm"].to_numpy() == pytest.approx(p_holm, nan_ok=True)
        assert all(v == verdict(d, s, n) for d, s, n, v in zip(fam["diff"], fam["diff_se"], fam["n_seeds"], verdicts) if v != TIE)
    # digits has one seed of ndm: the within-run error, never a verdict; toy2d pairs its two seeds.
    one = c[c["dataset"] == "digits"]
    assert (one["n_seeds"] == 1).all() and (one["se_source"] == SE_WITHIN).all() and (one["verdict"] == ONE_SEED).all()
    assert one["diff_se"].to_numpy() == pytest.approx(np.hypot(one["ndm_se"], one["baseline_se"]).to_numpy())
    two = c[(c["dataset"] == "toy2d") & (c["sampler"] == "ancestral") & (c["metric"] == "fd_data")]
    assert (two["n_seeds"] == 2).all() and (two["se_source"] == SE_PAIRED).all()
    fd = collect(tiny["config"], tiny["results"]).fd
    fd = fd[(fd["dataset"] == "toy2d") & (fd["sampler"] == "ancestral")].set_index(["variant", "steps", "seed"])["value"]
    for r in two.itertuples():
        d = [fd[("ndm", r.steps, s)] - fd[(r.baseline, r.steps, s)] for s in (0, 1)]
        assert r.diff == pytest.approx(np.mean(d)) and r.diff_se == pytest.approx(abs(d[0] - d[1]) / 2)


def test_tables_have_markdown_and_latex(tiny: dict) -> None:
    for name in ("likelihood", "bpd_vs_T", "fid", "few_step", "few_step_comparison"):
        md = (tiny["out"] / "tables" / f"{name}.md").read_text()
        tex = (tiny["out"] / "tables" / f"{name}.tex").read_text()
        assert md.startswith("# ") and "|" in md and "±" in md
        assert "\\begin{tabular}" in tex and "\\caption" in tex and "±" not in tex


# -------------------------------------------------------------------- figures


def _assert_real_image(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        w, h = im.size
        arr = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert w >= 250 and h >= 200, (path.name, w, h)
    assert arr.std() > 5.0, f"{path.name} is (nearly) one flat colour"
    assert len(np.unique(arr.reshape(-1, 3)[::7], axis=0)) > 20, f"{path.name} has almost no distinct colours"


def test_figures_are_real_images(tiny: dict) -> None:
    pngs = [tiny["out"] / rel for rel in report_outputs(tiny["config"]) if rel.endswith(".png")]
    assert len(pngs) >= 4 + 2 + 2 * len(SAMPLERS)
    for p in pngs:
        _assert_real_image(p)
        assert not p.with_suffix(".pdf").exists()  # one format per figure


def test_sample_grid_rescales_digit_levels() -> None:
    from ndm.report.figures_models import tile_images

    samples = np.full((4, 1, 8, 8), 16, dtype=np.uint8)  # the top level of K = 17
    tile = tile_images(samples, levels=17, n=2)
    assert tile.max() == pytest.approx(1.0) and tile.shape == (17, 17)


# ---------------------------------------------------------------------- README


def test_readme_links_everything_and_answers_the_few_step_question(tiny: dict) -> None:
    readme = (tiny["out"] / "README.md").read_text()
    for rel in report_outputs(tiny["config"]):
        if rel.endswith((".md", ".png")) and rel != "README.md":
            assert f"({rel})" in readme, rel
    assert "## The few-step question" in readme
    for d in ("toy2d", "digits"):
        assert f"**{d}.**" in readme
    assert "vs ddpm, ancestral, fd_classifier:" in readme and "vs vdm, ddim, fd_data:" in readme
    assert "PARTIAL" in readme and "digits/ndm/seed1/likelihood.json" in readme


def test_describe_states_where_the_advantage_disappears() -> None:
    def rows(diffs: list[float], se: float = 1.0) -> pd.DataFrame:
        nfe = [5, 10, 25, 100][: len(diffs)]
        ci = [interval(d, se, 10) for d in diffs]
        return pd.DataFrame({"nfe": nfe, "diff": diffs, "diff_se": se, "ci_low": [lo for lo, _ in ci], "ci_high": [hi for _, hi in ci], "verdict": [verdict(d, se, 10) for d in diffs]})

    assert [verdict(-3, 1, 10), verdict(3, 1, 10), verdict(1.5, 1, 10)] == [BETTER, WORSE, TIE]
    assert describe(rows([-5, -4, -3]), "ddpm").startswith("NDM better than DDPM at every NFE tested (5, 10, 25)")
    s = describe(rows([-5, -1, 4]), "vdm")
    assert "NDM better than VDM at NFE <= 5" in s and "reverses at NFE = 25 (VDM better by 4.000 (95% CI 1.738 to 6.262))" in s
    s = describe(rows([3, 0.5, -4, -6]), "ddpm")
    assert "NDM better than DDPM at NFE >= 25" in s and "no significant difference at NFE = 10" in s and "reverses (DDPM better) at NFE = 5" in s
    assert describe(rows([0.5, -0.5]), "ddpm").startswith("no advantage at any NFE")


# ------------------------------------------------------------------ robustness


def test_report_from_nothing_writes_every_output(tmp_path: Path) -> None:
    summary = compile_report(TINY_CONFIG, tmp_path / "no_results", tmp_path / "out")
    for rel in report_outputs(TINY_CONFIG):
        assert (tmp_path / "out" / rel).exists(), rel
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "PARTIAL" in readme and "Not answered yet" in readme
    assert summary["missing_files"] > 0 and summary["figure_errors"] == []
    _assert_real_image(tmp_path / "out" / "figures" / "fid_vs_nfe_digits.png")


def test_report_survives_corrupt_and_missing_files(tiny: dict, tmp_path: Path) -> None:
    config = {**tiny["config"], "datasets": {"toy2d": tiny["config"]["datasets"]["toy2d"]}}
    results = tmp_path / "results"
    shutil.copytree(tiny["results"] / "toy2d", results / "toy2d", ignore=shutil.ignore_patterns("checkpoint.pt"))
    (results / "toy2d" / "vdm" / "seed1" / "likelihood.json").write_text("{ torn")
    (results / "toy2d" / "vdm" / "seed0" / "metrics.jsonl").unlink()
    shutil.rmtree(results / "toy2d" / "ndm" / "seed0" / "samples")
    summary = compile_report(config, results, tmp_path / "out")
    assert summary["unreadable_files"] == 1 and summary["figure_errors"] == []
    t = pd.read_csv(tmp_path / "out" / "tables" / "likelihood.csv").set_index(["dataset", "variant"])
    assert t.loc[("toy2d", "vdm"), "status"] == "partial (1 of 2 seeds)"
    assert t.loc[("toy2d", "vdm"), "se_source"] == "within-run"
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "could not be read" in readme and "toy2d/vdm/seed1/likelihood.json" in readme
    assert "toy2d/vdm/seed0/metrics.jsonl" in readme and "toy2d/ndm/seed0/samples/ancestral/manifest.json" in readme
    for rel in report_outputs(config):
        assert (tmp_path / "out" / rel).exists(), rel


def test_nfe_axis_gives_one_tick_to_values_within_25_percent():
    """ndm-latent's NFE is steps + 1 (its decoder needs x_hat at t = 0): 25 and 26 share a tick."""
    from ndm.report.figures import _log_axis
    from ndm.report.style import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    _log_axis(ax, "x", np.array([5, 6, 10, 11, 25, 26, 100, 101, 100]))
    assert list(ax.xaxis.get_major_locator().tick_values(1, 200)) == [5, 10, 25, 100]
    plt.close(fig)


def _constructed_few() -> pd.DataFrame:
    """A few-step frame built by hand: two variants, three samplers reaching NFE 4 and 8 at
    different step counts (heun-type samplers spend two evaluations per step)."""
    rows = []
    values = {  # (variant, sampler) -> value at NFE 4, NFE 8
        ("ddpm", "ddim"): (50.0, 30.0),
        ("ddpm", "dpmpp-2m"): (20.0, 12.0),
        ("ddpm", "edm-heun"): (40.0, 10.0),
        ("ndm", "ddim"): (45.0, 25.0),
        ("ndm", "dpmpp-2m"): (25.0, 9.0),
        ("ndm", "edm-heun"): (30.0, math.nan),
    }
    for (variant, sampler), vals in values.items():
        per_step = 2 if sampler == "edm-heun" else 1
        for nfe, value in zip((4, 8), vals):
            rows.append({"dataset": "digits", "variant": variant, "sampler": sampler, "metric": "fd_classifier", "steps": nfe // per_step, "nfe": float(nfe), "nfe_F": 0.0, "value": value, "se": 1.0})
    return pd.DataFrame(rows)


def test_best_sampler_per_variant_and_nfe() -> None:
    from ndm.report.fewstep import BEST, best_sampler_rows, best_sampler_table, comparison_table

    few = _constructed_few()
    best = best_sampler_rows(few).set_index(["variant", "nfe"])
    assert best.loc[("ddpm", 4.0), "best_sampler"] == "dpmpp-2m" and best.loc[("ddpm", 4.0), "value"] == 20.0
    assert best.loc[("ddpm", 8.0), "best_sampler"] == "edm-heun" and best.loc[("ddpm", 8.0), "steps"] == 8
    assert best.loc[("ndm", 8.0), "best_sampler"] == "dpmpp-2m"  # a missing value never wins
    assert set(best["sampler"]) == {BEST}
    table = best_sampler_table(few, ["ddpm", "ndm"])
    assert list(table.display.columns) == ["dataset", "metric", "NFE", "ddpm", "ndm"]
    assert table.display.iloc[1]["ddpm"].endswith("(edm-heun)")
    comp = comparison_table(few, pd.DataFrame()).data
    at_best = comp[(comp["sampler"] == BEST) & (comp["baseline"] == "ddpm")].set_index("nfe")
    assert at_best.loc[4.0, "diff"] == pytest.approx(25.0 - 20.0) and at_best.loc[8.0, "diff"] == pytest.approx(9.0 - 10.0)
    # per-sampler rows are still there, matched by step count
    assert set(comp["sampler"]) == {"ddim", "dpmpp-2m", "edm-heun", BEST}


def test_fid_vs_nfe_has_a_best_sampler_panel(tmp_path: Path) -> None:
    from ndm.report.figures import fid_vs_nfe_figure

    written = fid_vs_nfe_figure(_constructed_few(), tmp_path / "fid_vs_nfe.png")
    _assert_real_image(tmp_path / "fid_vs_nfe.png")
    assert written == [tmp_path / "fid_vs_nfe.png"]


def test_number_format_keeps_small_values_and_magnitude_intervals() -> None:
    from ndm.report.fewstep_answer import _by
    from ndm.report.table_format import fmt_diff, fmt_num

    assert fmt_num(0.00042) == "0.00042" and fmt_diff(-3.1e-5) == "-3.1e-05" and fmt_num(0.0) == "0.000"
    assert fmt_num(2.5) == "2.500" and fmt_num(123.45) == "123.5"
    # a judged difference: the interval of its magnitude, in increasing order
    assert _by(pd.Series({"diff": -128.2, "ci_low": -136.9, "ci_high": -119.6})) == "128.2 (95% CI 119.6 to 136.9)"
    # an interval across zero keeps the signed difference's interval, labelled
    assert _by(pd.Series({"diff": 1.0, "ci_low": -0.5, "ci_high": 2.5})) == "1.000 (95% CI of NDM − base [-0.500, +2.500])"


def test_report_roles_come_from_the_config(tiny: dict, tmp_path: Path) -> None:
    """`report:` names the model and its baselines: a report about ndm-vdm against vdm holds
    only that comparison; a misspelt role fails the config check with the name and the fix."""
    from ndm.pipeline.config import ConfigError
    from ndm.pipeline.report_config import ReportConfig, resolve_report_config

    assert resolve_report_config({}) == ReportConfig()
    with pytest.raises(ConfigError, match="unknown variant 'ndn'"):
        resolve_report_config({"report": {"model": "ndn"}})
    with pytest.raises(ConfigError, match="unknown sampler 'ode-hen'"):
        resolve_report_config({"report": {"ode_sampler": "ode-hen"}})
    config = {**tiny["config"], "report": {"model": "ndm", "baselines": ["vdm"]}}
    compile_report(config, tiny["results"], tmp_path / "out")
    comp = pd.read_csv(tmp_path / "out" / "tables" / "few_step_comparison.csv")
    assert set(comp["baseline"]) == {"vdm"}
    default = pd.read_csv(tiny["out"] / "tables" / "few_step_comparison.csv")
    assert {"ddpm", "vdm"} <= set(default["baseline"])


def test_compiling_twice_gives_byte_identical_small_files(tiny: dict, tmp_path: Path) -> None:
    """Deterministic reports (no dates or versions in figure metadata), one PNG per figure, no
    file over 500 KB (docs/architecture.md, Reports)."""
    compile_report(tiny["config"], tiny["results"], tmp_path / "first")
    compile_report(tiny["config"], tiny["results"], tmp_path / "again")
    first = {p.relative_to(tmp_path / "first"): p.read_bytes() for p in sorted((tmp_path / "first").rglob("*")) if p.is_file()}
    second = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in sorted((tmp_path / "again").rglob("*")) if p.is_file()}
    assert first.keys() == second.keys()
    differ = [str(k) for k in first if first[k] != second[k]]
    assert not differ, f"files that differ between two compilations of the same results: {differ}"
    assert not [k for k in first if k.suffix == ".pdf"]
    big = {str(k): len(v) for k, v in first.items() if len(v) > 500_000}
    assert not big, f"files over 500 KB: {big}"
    png = next(v for k, v in first.items() if k.suffix == ".png")
    assert b"Software" not in png and b"Matplotlib" not in png


def test_every_table_is_listed_once_and_described() -> None:
    """outputs.TABLES is the one list of tables: compile_report builds exactly these (it checks),
    and the README describes each."""
    from ndm.report.outputs import TABLES
    from ndm.report.readme import TABLE_SENTENCES

    assert len(TABLES) == len(set(TABLES))
    assert set(TABLE_SENTENCES) == set(TABLES)
