"""Figures drawn from trained models and their samples: learned schedules gamma(t), the learned
transformation F(x, t), and sample grids per sampler and step count.

Like ndm.report.figures, each function takes a path, writes PNG and PDF, and draws a figure
that says what is missing instead of failing when its inputs are absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ndm.model.specs import get_variant, model_name_problem
from ndm.report.collect import Results
from ndm.report.figures import facet_axes, figure_header
from ndm.report.style import (
    message_figure,
    pyplot,
    save_figure,
    variant_color,
)

T_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)



IMAGE_EXAMPLES = 3



SAMPLE_TILE = 4  # samples per cell: SAMPLE_TILE x SAMPLE_TILE images



TOY_POINTS = 1500



def _fixed_schedule(config: dict, dataset: str, variant: str, seed: int):
    from ndm.pipeline.config import resolve_run_config
    from ndm.model.schedules import build_schedule

    run = resolve_run_config(config, dataset, variant, seed)
    name = run.model.schedule or get_variant(variant).schedule
    return name, build_schedule(name, gamma_min=run.model.gamma_min, gamma_max=run.model.gamma_max, flow_eps=run.model.flow_eps)



def _gamma_curve(schedule, t: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return schedule.values(torch.as_tensor(t, dtype=torch.float64)).gamma.double().numpy()



def schedules_figure(res: Results, config: dict, path: Path) -> list[Path]:
    """gamma(t) = -log SNR(t): learned schedules (vdm, ndm-vdm; each seed) over the fixed ones."""
    import torch

    from ndm.pipeline.train import load_trained_model

    plt = pyplot()
    t = np.linspace(0.0, 1.0, 201)
    fig, axes = facet_axes(plt, 1, max(1, len(res.datasets)), w=4.8, h=3.8)
    learned_variants = [v for v in res.variants if model_name_problem(v) is None and get_variant(v).schedule == "learned"]
    fixed_styles = {"linear": ":", "ddpm": "-.", "flow": (0, (5, 1.5)), "cosine": (0, (1, 1))}
    missing: list[str] = []
    handles: dict[str, Any] = {}
    for ax, d in zip(axes[0], res.datasets):
        drawn: set[str] = set()
        for v in res.variants:
            if v in learned_variants or model_name_problem(v) is not None:
                continue
            try:
                name, sched = _fixed_schedule(config, d, v, res.seeds_of(d)[0])
            except Exception:  # noqa: BLE001 - a broken config section must not stop the report
                continue
            if name in drawn or name == "learned":
                continue
            drawn.add(name)
            (line,) = ax.plot(t, _gamma_curve(sched, t), color="0.3", linestyle=fixed_styles.get(name, "-"), linewidth=1.5, zorder=4)
            handles.setdefault(f"fixed: {name}", line)
        for v in learned_variants:
            for s in res.seeds_of(d, v):
                model_path = res.run_dir(d, v, s) / "model.pt"
                if not model_path.exists():
                    missing.append(str(model_path))
                    continue
                try:
                    model, _ = load_trained_model(model_path)
                except Exception as exc:  # noqa: BLE001
                    missing.append(f"{model_path} ({type(exc).__name__})")
                    continue
                with torch.no_grad():
                    g = model.schedule.values(torch.as_tensor(t, dtype=torch.float32)).gamma.double().numpy()
                (line,) = ax.plot(t, g, color=variant_color(v), linewidth=2.2, alpha=0.9)
                ax.annotate(f"{g[0]:.1f}", (0.0, g[0]), textcoords="offset points", xytext=(4, -10), color=variant_color(v), fontsize=8)
                ax.annotate(f"{g[-1]:.1f}", (1.0, g[-1]), textcoords="offset points", xytext=(-22, 5), color=variant_color(v), fontsize=8)
                handles.setdefault(f"learned: {v}", line)
        ax.set_xlabel("time t")
        ax.set_ylabel("γ(t) = −log SNR(t)")
        ax.set_title(d)
    if not learned_variants:
        fig.text(0.5, -0.02, "No variant with a learned schedule (vdm, ndm-vdm) in this config: fixed schedules only.", ha="center", color="grey")
    if missing:
        fig.text(0.5, -0.07, f"missing: {len(missing)} model file(s), e.g. {missing[0]}", ha="center", color="firebrick", fontsize=8)
    figure_header(fig, "Noise schedules γ(t): learned (colour, one line per seed) and fixed (grey)", list(handles.values()), list(handles.keys()), ncol=4)
    return save_figure(fig, path)



def transform_variants(variants: list[str]) -> list[str]:
    """Variants whose F is not the identity (learned: ndm, ndm-vdm, ndm-latent; fixed: ndm-blur)."""
    return [v for v in variants if model_name_problem(v) is None and get_variant(v).transform != "identity"]



def _first_model(res: Results, d: str, v: str):
    from ndm.pipeline.train import load_trained_model

    for s in res.seeds_of(d, v):
        p = res.run_dir(d, v, s) / "model.pt"
        if p.exists():
            try:
                return load_trained_model(p)
            except Exception:  # noqa: BLE001
                continue
    return None



def _apply_F(model, x, t_value: float) -> np.ndarray:
    import torch

    with torch.no_grad():
        t = torch.full((x.shape[0],), float(t_value), dtype=x.dtype)
        return model.transform(x, t).numpy()



def transforms_figure(res: Results, dataset: str, path: Path) -> list[Path]:
    """F(x, t) at t in T_GRID for a few test images (rows) or many toy points (scatter)."""
    from ndm.pipeline.evaluate import load_split

    variants = transform_variants(res.variants)
    if not variants:
        return message_figure(path, f"{dataset}: transformation F(x, t)", ["No variant with a non-identity F (ndm, ndm-vdm, ndm-latent, ndm-blur) in this config."])
    loaded = {v: m for v in variants if (m := _first_model(res, dataset, v)) is not None}
    if not loaded:
        return message_figure(path, f"{dataset}: transformation F(x, t)", [f"No model.pt yet for {', '.join(variants)}."])
    _, run = next(iter(loaded.values()))
    try:
        n = (IMAGE_EXAMPLES if len(loaded) <= 2 else 2) if len(run_event(loaded)) == 3 else TOY_POINTS
        x, _ = load_split(run, "test", n)
    except Exception as exc:  # noqa: BLE001 - data not available where the report runs
        return message_figure(path, f"{dataset}: transformation F(x, t)", [f"Could not load the test split: {type(exc).__name__}: {exc}"])
    if x.dim() == 4:
        return _transform_images(loaded, x, dataset, path)
    return _transform_points(loaded, x, dataset, path)



def run_event(loaded: dict) -> tuple[int, ...]:
    model, _ = next(iter(loaded.values()))
    return tuple(model.event_shape)



def _to_display(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in model space [-1, 1] -> (H, W, C) or (H, W) in [0, 1], clipped."""
    a = np.clip((img + 1.0) / 2.0, 0.0, 1.0)
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))



def _transform_images(loaded: dict, x, dataset: str, path: Path) -> list[Path]:
    """Per variant: a row F(x_i, t) per example, then a row F(x_1, t) - x_1 (diverging colours)."""
    plt = pyplot()
    n = x.shape[0]
    per_variant = n + 1
    n_rows = per_variant * len(loaded)
    fig, axes = plt.subplots(n_rows, len(T_GRID), figsize=(1.7 * len(T_GRID) + 1.4, 1.7 * n_rows + 1.0), squeeze=False)
    x_np = x.numpy()
    for vi, (v, (model, _)) in enumerate(loaded.items()):
        outs = {t: _apply_F(model, x, t) for t in T_GRID}
        delta = {t: outs[t][0] - x_np[0] for t in T_GRID}
        scale = max(max(float(np.abs(dd).max()) for dd in delta.values()), 1e-6)
        for i in range(per_variant):
            row = vi * per_variant + i
            for j, t in enumerate(T_GRID):
                ax = axes[row][j]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if i < n:
                    f = outs[t][i]
                    ax.imshow(_to_display(f), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.set_xlabel(f"[{f.min():.2f}, {f.max():.2f}]", fontsize=7)
                    label = f"{v}\nF(x{i + 1}, t)"
                else:
                    dd = delta[t]
                    img = dd.mean(0) if dd.shape[0] > 1 else dd[0]  # channel mean for RGB
                    ax.imshow(img, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
                    ax.set_xlabel(f"max |Δ| {np.abs(dd).max():.3f}", fontsize=7)
                    label = f"{v}\nF(x1, t) − x1\n(±{scale:.3f})"
                if row == 0:
                    ax.set_title(f"t = {t:g}")
                if j == 0:
                    ax.set_ylabel(label, color=variant_color(v), fontweight="bold", rotation=0, ha="right", va="center", labelpad=10, fontsize=9)
    figure_header(fig, f"{dataset}: learned transformation F(x, t) on test images\n(images clipped to [-1, 1], value range below; last row per variant: change from x, red > 0 > blue)", [])
    return save_figure(fig, path)



def _transform_points(loaded: dict, x, dataset: str, path: Path) -> list[Path]:
    """Per variant: scatter of F(x, t) at each t; a point keeps its colour (the angle of x)."""
    plt = pyplot()
    xn = x.numpy()
    colour = np.arctan2(xn[:, 1], xn[:, 0])
    fig, axes = plt.subplots(len(loaded), len(T_GRID), figsize=(3.0 * len(T_GRID), 3.5 * len(loaded) + 0.9), squeeze=False, sharex="row", sharey="row")
    for vi, (v, (model, _)) in enumerate(loaded.items()):
        outs = {t: _apply_F(model, x, t) for t in T_GRID}
        lim = max(float(np.abs(o).max()) for o in outs.values()) * 1.05
        for j, t in enumerate(T_GRID):
            ax = axes[vi][j]
            f = outs[t]
            ax.scatter(f[:, 0], f[:, 1], c=colour, cmap="hsv", s=4, alpha=0.85, linewidths=0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            moved = float(np.linalg.norm(f - xn, axis=1).mean())
            ax.set_title(f"{v}, t = {t:g}\nmean |F(x,t) − x| = {moved:.3f}", color=variant_color(v), fontsize=9)
            ax.set_xlabel("F(x, t)₁")
            if j == 0:
                ax.set_ylabel("F(x, t)₂")
    figure_header(fig, f"{dataset}: learned transformation F(x, t) of {len(xn)} test points (colour: angle of x, to follow each point)", [])
    return save_figure(fig, path)



def _manifest_records(res: Results, d: str, v: str, sampler: str) -> tuple[int, list[dict]] | None:
    for s in res.seeds_of(d, v):
        mpath = res.run_dir(d, v, s) / "samples" / sampler / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        records = manifest.get("records") or [{"file": f} for f in manifest.get("files", [])]
        return s, records
    return None



def _load_samples(res: Results, d: str, v: str, seed: int, sampler: str, record: dict) -> tuple[np.ndarray, dict] | None:
    """The samples of one step count (looked up beside the manifest, so a moved results dir works)."""
    name = Path(record["file"]).name
    path = res.run_dir(d, v, seed) / "samples" / sampler / name
    try:
        with np.load(path) as z:
            meta = {k: z[k].item() for k in ("steps", "nfe", "nfe_F") if k in z.files}
            return np.asarray(z["samples"]), meta
    except (OSError, ValueError, KeyError):
        return None



def tile_images(samples: np.ndarray, levels: int, n: int = SAMPLE_TILE) -> np.ndarray:
    """The first n*n uint8 level images (N, C, H, W) tiled into one (nH, nW[, C]) array in [0, 1]."""
    k = min(n * n, len(samples))
    imgs = samples[:k].astype(np.float64) / max(levels - 1, 1)  # levels K -> [0, 1] (K = 17 for digits)
    c, h, w = imgs.shape[1:]
    canvas = np.ones((n * (h + 1) - 1, n * (w + 1) - 1, c))
    for i in range(k):
        r, q = divmod(i, n)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = np.transpose(imgs[i], (1, 2, 0))
    return canvas[..., 0] if c == 1 else canvas



def _reference_points(res: Results, config: dict, d: str) -> np.ndarray | None:
    from ndm.pipeline.config import resolve_run_config
    from ndm.pipeline.data import load_dataset

    try:
        run = resolve_run_config(config, d, res.variants[0], res.seeds_of(d)[0])
        ds = load_dataset(run.data.name, root=run.data.root, download=False, seed=run.seed, **run.data.options)
        return ds.test[:TOY_POINTS].numpy()
    except Exception:  # noqa: BLE001
        return None



def samples_figure(res: Results, config: dict, dataset: str, sampler: str, path: Path) -> list[Path]:
    """Samples of each variant (rows) at each step count (columns) of one sampler."""
    variants = [v for v in res.variants if _manifest_records(res, dataset, v, sampler)]
    if not variants:
        return message_figure(path, f"{dataset}: samples ({sampler})", ["No samples yet (no samples/<sampler>/manifest.json)."])
    found = {v: _manifest_records(res, dataset, v, sampler) for v in variants}
    steps = sorted({int(r.get("steps", _steps_of(r["file"]))) for _, recs in found.values() for r in recs})
    levels = (res.data_info.get(dataset) or {}).get("levels")
    plt = pyplot()
    image = None
    fig, axes = plt.subplots(len(variants), len(steps), figsize=(2.6 * len(steps) + 0.8, 2.6 * len(variants) + 0.6), squeeze=False)
    ref = None
    for i, v in enumerate(variants):
        seed, recs = found[v]
        by_steps = {int(r.get("steps", _steps_of(r["file"]))): r for r in recs}
        for j, n_steps in enumerate(steps):
            ax = axes[i][j]
            ax.grid(False)
            loaded = _load_samples(res, dataset, v, seed, sampler, by_steps[n_steps]) if n_steps in by_steps else None
            if loaded is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                arr, meta = loaded
                image = arr.ndim == 4
                if image:
                    k = int(levels) if levels else (256 if arr.max() > 16 else 17)
                    ax.imshow(tile_images(arr, k), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:
                    if ref is None:
                        ref = _reference_points(res, config, dataset)
                    # Rasterised points and no tick labels: the 2-D grids (8 variants x 5 step
                    # counts x 2000 points) otherwise took most of the report's time, in the PDF's
                    # per-marker output and tick layout (the axes are the same in every cell).
                    if ref is not None:
                        ax.scatter(ref[:, 0], ref[:, 1], s=2, color="0.8", linewidths=0, rasterized=True)
                    ax.scatter(arr[:, 0], arr[:, 1], s=2, color=variant_color(v), linewidths=0, alpha=0.7, rasterized=True)
                    lim = 1.15 * float(np.abs(ref).max()) if ref is not None else None
                    if lim:
                        ax.set_xlim(-lim, lim)
                        ax.set_ylim(-lim, lim)
                    ax.set_aspect("equal")
                    ax.set_xticks([])
                    ax.set_yticks([])
                nfe = meta.get("nfe")
                label = "adaptive steps" if n_steps == 0 else f"{n_steps} steps"
                ax.set_title(label + (f" (NFE {nfe:g})" if nfe is not None else ""), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{v}\n(seed {seed})", color=variant_color(v), fontweight="bold", fontsize=11)
    what = f"first {SAMPLE_TILE * SAMPLE_TILE} samples per cell" if image else f"samples (colour) over test data (grey), both axes [-{lim:.2g}, {lim:.2g}]" if ref is not None and lim else "samples (colour) over test data (grey)"
    fig.suptitle(f"{dataset}: {sampler} sampler, {what}", fontweight="bold")
    fig.tight_layout()
    return save_figure(fig, path)



def _steps_of(file: str) -> int:
    stem = Path(file).stem
    return int(stem.replace("steps", "")) if stem.startswith("steps") else 0
