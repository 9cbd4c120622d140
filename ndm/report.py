"""Results JSON -> pandas tables and seaborn figures (reports/).

`collect` reads whatever result files exist under results/, so a partial run gives
partial tables; rows whose files are missing are listed in the README as missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(results: str | Path) -> dict[str, pd.DataFrame]:
    """Tidy frames: train, likelihood (one row per estimator), fid (one row per file x metric)."""
    results = Path(results)
    train_rows, lik_rows, fid_rows = [], [], []
    for summary in sorted(results.glob("*/*/seed*/train_summary.json")):
        s = _read(summary)
        if s:
            train_rows.append({k: s.get(k) for k in ("dataset", "variant", "seed", "steps", "wall_s", "steps_per_s", "n_params", "n_params_x_hat", "n_params_F", "final_loss_bpd")})
    for path in sorted(results.glob("*/*/seed*/likelihood.json")):
        r = _read(path)
        if not r:
            continue
        base = {"dataset": r["dataset"], "variant": r["variant"], "seed": r["seed"], "units": r.get("units")}
        c = r["nelbo_continuous"]
        lik_rows.append({**base, "estimator": "NELBO (continuous)", "T": math.inf, "bpd": c["bpd"], "stderr": c["bpd_stderr"], "nfe": c.get("nfe")})
        for t, e in r["nelbo_discrete"].items():
            lik_rows.append({**base, "estimator": f"NELBO (T={t})", "T": int(t), "bpd": e["bpd"], "stderr": e["bpd_stderr"], "nfe": e.get("nfe")})
        o = r.get("ode_nll") or {}
        if "bpd" in o:
            lik_rows.append({**base, "estimator": "NLL (ODE)", "T": math.nan, "bpd": o["bpd"], "stderr": o["bpd_stderr"], "nfe": o.get("nfe")})
    for path in sorted(results.glob("*/*/seed*/fid/*.json")):
        r = _read(path)
        if not r:
            continue
        for entry in r["results"]:
            for metric, m in entry["metrics"].items():
                fid_rows.append({"dataset": r["dataset"], "variant": r["variant"], "seed": int(entry["seed"]), "sampler": r["sampler"], "steps": int(entry["steps"]), "nfe": float(entry["nfe"]), "nfe_F": float(entry["nfe_F"]), "metric": metric, "value": m["value"], "stderr": m.get("stderr"), "n_samples": m["n_samples"]})
    return {"train": pd.DataFrame(train_rows), "likelihood": pd.DataFrame(lik_rows), "fid": pd.DataFrame(fid_rows)}


def mean_se(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean over seeds with the standard error across seeds (NaN with one seed)."""
    g = df.groupby(keys, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["se"] = out["std"] / out["count"].pow(0.5)
    return out.drop(columns="std").rename(columns={"count": "seeds"})


def write_table(df: pd.DataFrame, out_dir: Path, name: str, caption: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.md").write_text(f"{caption}\n\n" + df.to_markdown(index=False, floatfmt=".4g") + "\n")
    (out_dir / f"{name}.tex").write_text(df.to_latex(index=False, float_format="%.4g", caption=caption, label=f"tab:{name}"))


def likelihood_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    lik = frames["likelihood"]
    if lik.empty:
        return pd.DataFrame(columns=["dataset", "variant", "estimator", "bpd", "se", "seeds"])
    keep = lik[lik["estimator"].isin(["NELBO (continuous)", "NLL (ODE)"])]
    t = mean_se(keep, ["dataset", "variant", "estimator"], "bpd")
    return t.rename(columns={"mean": "bpd"})


def few_step_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    fid = frames["fid"]
    if fid.empty:
        return pd.DataFrame(columns=["dataset", "metric", "sampler", "steps", "nfe", "variant", "value", "se", "seeds"])
    t = mean_se(fid, ["dataset", "metric", "sampler", "steps", "variant"], "value")
    nfe = fid.groupby(["dataset", "sampler", "steps", "variant"])["nfe"].mean().reset_index()
    t = t.merge(nfe, on=["dataset", "sampler", "steps", "variant"])
    return t.rename(columns={"mean": "value"})[["dataset", "metric", "sampler", "steps", "nfe", "variant", "value", "se", "seeds"]]


def fid_vs_nfe_figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    path.parent.mkdir(parents=True, exist_ok=True)
    if table.empty:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.text(0.5, 0.5, "no sample results yet", ha="center", va="center")
        ax.set_axis_off()
    else:
        combos = table[["dataset", "metric"]].drop_duplicates().values.tolist()
        fig, axes = plt.subplots(1, len(combos), figsize=(5 * len(combos), 4), squeeze=False)
        for ax, (dataset, metric) in zip(axes[0], combos):
            sub = table[(table.dataset == dataset) & (table.metric == metric)]
            sns.lineplot(data=sub, x="nfe", y="value", hue="variant", style="sampler", markers=True, dashes=True, ax=ax)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("NFE (x_hat network evaluations)")
            ax.set_ylabel(metric)
            ax.set_title(dataset)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def compile_report(config: dict, results: str | Path, out: str | Path) -> dict[str, Any]:
    """Write tables and figures under out/ and out/README.md; return a summary."""
    out = Path(out)
    frames = collect(results)
    tables = out / "tables"
    lik = likelihood_table(frames)
    few = few_step_table(frames)
    write_table(lik, tables, "likelihood", "Likelihood in bits/dim (mean and standard error over seeds)")
    write_table(few, tables, "few_step", "Frechet distances versus NFE per variant and sampler")
    fid_vs_nfe_figure(few, out / "figures" / "fid_vs_nfe.png")
    expected = [(d, v, s) for d in config["datasets"] for v in config["variants"] for s in config["seeds"]]
    have = set(map(tuple, frames["likelihood"][["dataset", "variant", "seed"]].drop_duplicates().values.tolist())) if not frames["likelihood"].empty else set()
    missing = [e for e in expected if e not in have]
    lines = [
        "# ndm-bench report",
        "",
        f"Results from `{results}`; {len(expected) - len(missing)} of {len(expected)} (dataset, variant, seed) runs evaluated.",
        "",
        "- [tables/likelihood.md](tables/likelihood.md): NELBO and ODE NLL in bits/dim per dataset and variant.",
        "- [tables/few_step.md](tables/few_step.md): Frechet distances versus NFE per variant and sampler.",
        "- [figures/fid_vs_nfe.png](figures/fid_vs_nfe.png): the same as a figure (log axes).",
    ]
    if missing:
        lines += ["", "Missing (partial run):", *[f"- {d}/{v}/seed{s}" for d, v, s in missing]]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return {"rows_likelihood": len(lik), "rows_few_step": len(few), "missing": len(missing)}
