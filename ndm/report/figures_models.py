"""Figures of what the models are and what they sample: schedules gamma(t), the transformation
F(x, t), and sample grids per sampler and step count.

Read from result files only: the evaluate_likelihood job writes each model's gamma(t) and a
snapshot of its F into likelihood.json (ndm.pipeline.evaluate.model_view), prepare_data the
toy test points into data.json; the report loads no model. Like ndm.report.figures, each
function takes a path and draws a figure that says what is missing instead of failing when
its inputs are absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ndm.model.specs import get_variant, model_name_problem
from ndm.report.collect import Results, read_json
from ndm.report.figures import facet_axes, figure_header
from ndm.report.style import (
    message_figure,
    pyplot,
    save_figure,
    variant_color,
)

SAMPLE_TILE = 4  # samples per cell: SAMPLE_TILE x SAMPLE_TILE images
# 2-inch cells at 60 dpi: 120 px for a 4 x 4 tile of 16 px patches (67 px), nearly twice the
# native size, and a grid of 8 variants x 4 step counts stays under 300 KB; the transformation
# figures (images, or 1500 coloured points per panel) use it too.
SAMPLE_DPI = 60


def _view(res: Results, d: str, v: str, s: int) -> dict | None:
    return read_json(res.run_dir(d, v, s) / "likelihood.json")


def _schedule_name(config: dict, d: str, v: str, s: int) -> str:
    from ndm.pipeline.config import resolve_run_config

    run = resolve_run_config(config, d, v, s)
    return run.model.schedule or get_variant(v).schedule


def schedules_figure(res: Results, config: dict, path: Path) -> list[Path]:
    """gamma(t) = -log SNR(t): learned schedules (vdm, ndm-vdm; each seed) over the fixed ones,
    as the evaluation job recorded them (likelihood.json "schedule")."""
    plt = pyplot()
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
            for s in res.seeds_of(d, v)[:1]:
                try:
                    name = _schedule_name(config, d, v, s)
                except Exception:  # noqa: BLE001 - a broken config section must not stop the report
                    continue
                curve = (_view(res, d, v, s) or {}).get("schedule")
                if name in drawn or name == "learned" or curve is None:
                    continue
                drawn.add(name)
                (line,) = ax.plot(curve["t"], curve["gamma"], color="0.3", linestyle=fixed_styles.get(name, "-"), linewidth=1.5, zorder=4)
                handles.setdefault(f"fixed: {name}", line)
        for v in learned_variants:
            for s in res.seeds_of(d, v):
                curve = (_view(res, d, v, s) or {}).get("schedule")
                if curve is None:
                    missing.append(str(res.run_dir(d, v, s) / "likelihood.json"))
                    continue
                g = curve["gamma"]
                (line,) = ax.plot(curve["t"], g, color=variant_color(v), linewidth=2.2, alpha=0.9)
                ax.annotate(f"{g[0]:.1f}", (0.0, g[0]), textcoords="offset points", xytext=(4, -10), color=variant_color(v), fontsize=8)
                ax.annotate(f"{g[-1]:.1f}", (1.0, g[-1]), textcoords="offset points", xytext=(-22, 5), color=variant_color(v), fontsize=8)
                handles.setdefault(f"learned: {v}", line)
        ax.set_xlabel("time t")
        ax.set_ylabel("γ(t) = −log SNR(t)")
        ax.set_title(d)
    if not learned_variants:
        fig.text(0.5, -0.02, "No variant with a learned schedule (vdm, ndm-vdm) in this config: fixed schedules only.", ha="center", color="grey")
    if missing:
        fig.text(0.5, -0.07, f"missing: {len(missing)} schedule record(s), e.g. {missing[0]}", ha="center", color="firebrick", fontsize=8)
    figure_header(fig, "Noise schedules γ(t): learned (colour, one line per seed) and fixed (grey)", list(handles.values()), list(handles.keys()), ncol=4)
    return save_figure(fig, path)


def transform_variants(variants: list[str]) -> list[str]:
    """Variants whose F is not the identity (learned: ndm, ndm-vdm, ndm-latent; fixed: ndm-blur)."""
    return [v for v in variants if model_name_problem(v) is None and get_variant(v).transform != "identity"]


def _first_snapshot(res: Results, d: str, v: str) -> tuple[int, dict] | None:
    for s in res.seeds_of(d, v):
        snap = (_view(res, d, v, s) or {}).get("transform_snapshot")
        if snap:
            return s, {k: np.asarray(val, dtype=np.float64) if k != "t" else list(val) for k, val in snap.items()}
    return None


def transforms_figure(res: Results, dataset: str, path: Path) -> list[Path]:
    """F(x, t) at the snapshot's times: for images a row F(x_i, t) per example, then the
    input-dependent part r(x_1, t) = F(x_1, t) - x_1 - c(t) with a colour scale per column, then
    the offset c(t) (its own scale); for toy points a scatter of F(x, t) per t."""
    variants = transform_variants(res.variants)
    if not variants:
        return message_figure(path, f"{dataset}: transformation F(x, t)", ["No variant with a non-identity F (ndm, ndm-vdm, ndm-latent, ndm-blur) in this config."])
    loaded = {v: snap for v in variants if (snap := _first_snapshot(res, dataset, v)) is not None}
    if not loaded:
        return message_figure(path, f"{dataset}: transformation F(x, t)", [f"No transform snapshot yet (likelihood.json) for {', '.join(variants)}."])
    first = next(iter(loaded.values()))[1]
    if first["x"].ndim == 4:
        return _transform_images(loaded, dataset, path)
    return _transform_points(loaded, dataset, path)


def _to_display(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in model space [-1, 1] -> (H, W, C) or (H, W) in [0, 1], clipped."""
    a = np.clip((img + 1.0) / 2.0, 0.0, 1.0)
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _channel_mean(a: np.ndarray) -> np.ndarray:
    return a.mean(0) if a.shape[0] > 1 else a[0]


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def _transform_images(loaded: dict, dataset: str, path: Path) -> list[Path]:
    """Per variant: a row F(x_i, t) per example, a row r(x_1, t) (diverging colours, one scale
    per column: its max |r|), a row c(t) (one scale per column)."""
    plt = pyplot()
    n = min(snap["x"].shape[0] for _, snap in loaded.values())
    if len(loaded) > 2:
        n = min(n, 2)
    per_variant = n + 2
    times = next(iter(loaded.values()))[1]["t"]
    n_rows = per_variant * len(loaded)
    fig, axes = plt.subplots(n_rows, len(times), figsize=(1.7 * len(times) + 1.6, 1.75 * n_rows + 1.0), squeeze=False)
    for vi, (v, (seed, snap)) in enumerate(loaded.items()):
        x, f, c = snap["x"], snap["F"], snap["offset"]  # (N, C, H, W), (T, N, C, H, W), (T, C, H, W)
        for i in range(per_variant):
            row = vi * per_variant + i
            for j, t in enumerate(times):
                ax = axes[row][j]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if i < n:
                    img = f[j][i]
                    ax.imshow(_to_display(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.set_xlabel(f"[{img.min():.2f}, {img.max():.2f}]", fontsize=7)
                    label = f"{v}\nF(x{i + 1}, t)"
                else:
                    part = (f[j][0] - x[0] - c[j]) if i == n else c[j]
                    img = _channel_mean(part)
                    scale = max(float(np.abs(img).max()), 1e-12)
                    ax.imshow(img, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
                    ax.set_xlabel(f"±{scale:.2g}, rms {_rms(part):.2g}", fontsize=7)
                    label = f"{v}\nr(x1, t) = F − x1 − c" if i == n else f"{v}\noffset c(t)"
                if row == 0:
                    ax.set_title(f"t = {t:g}")
                if j == 0:
                    ax.set_ylabel(label, color=variant_color(v), fontweight="bold", rotation=0, ha="right", va="center", labelpad=10, fontsize=9)
    figure_header(
        fig,
        f"{dataset}: transformation F(x, t) on test images (images clipped to [-1, 1], value range below)\n"
        "input-dependent part r and offset c (the mean of F − x over 128 test examples), each column on its own colour scale (±max, below)",
        [],
    )
    return save_figure(fig, path, dpi=SAMPLE_DPI)


def _transform_points(loaded: dict, dataset: str, path: Path) -> list[Path]:
    """Per variant: scatter of F(x, t) at each t; a point keeps its colour (the angle of x).
    The titles give the offset's rms and the input-dependent part's rms separately."""
    plt = pyplot()
    times = next(iter(loaded.values()))[1]["t"]
    fig, axes = plt.subplots(len(loaded), len(times), figsize=(3.0 * len(times), 3.6 * len(loaded) + 0.9), squeeze=False, sharex="row", sharey="row")
    for vi, (v, (seed, snap)) in enumerate(loaded.items()):
        xn, outs, offsets = snap["x"], snap["F"], snap["offset"]
        colour = np.arctan2(xn[:, 1], xn[:, 0])
        lim = max(float(np.abs(o).max()) for o in outs) * 1.05
        for j, t in enumerate(times):
            ax = axes[vi][j]
            fj = outs[j]
            ax.scatter(fj[:, 0], fj[:, 1], c=colour, cmap="hsv", s=4, alpha=0.85, linewidths=0, rasterized=True)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            r = fj - xn - offsets[j]
            ax.set_title(f"{v}, t = {t:g}\noffset rms {_rms(offsets[j]):.2g}, input-dep. rms {_rms(r):.2g}", color=variant_color(v), fontsize=9)
            ax.set_xlabel("F(x, t)₁")
            if j == 0:
                ax.set_ylabel("F(x, t)₂")
    n_points = next(iter(loaded.values()))[1]["x"].shape[0]
    figure_header(fig, f"{dataset}: learned transformation F(x, t) of {n_points} test points (colour: angle of x, to follow each point)", [])
    return save_figure(fig, path, dpi=SAMPLE_DPI)


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



def _reference_points(res: Results, dataset: str) -> np.ndarray | None:
    """The toy test points that prepare_data wrote into data.json (vector data only)."""
    points = (res.data_info.get(dataset) or {}).get("test_points")
    return np.asarray(points, dtype=np.float64) if points else None


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
    fig, axes = plt.subplots(len(variants), len(steps), figsize=(2.0 * len(steps) + 0.8, 2.0 * len(variants) + 0.6), squeeze=False)
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
                        ref = _reference_points(res, dataset)
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
    return save_figure(fig, path, dpi=SAMPLE_DPI)



def _steps_of(file: str) -> int:
    stem = Path(file).stem
    return int(stem.replace("steps", "")) if stem.startswith("steps") else 0
