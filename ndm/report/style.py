"""Shared look of every figure: one colour and marker per variant, labels, saving.

Matplotlib is imported lazily and always with the Agg backend (report jobs run headless).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ndm.model.specs import VARIANTS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One fixed colour per variant, in the order variants.VARIANTS lists them, so a variant
# has the same colour in every figure of every report (colour-blind safe "colorblind" palette
# plus two distinct extras for the 7th and 8th variant).
_PALETTE = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#56b4e9", "#7570b3"]
VARIANT_ORDER: list[str] = list(VARIANTS)
VARIANT_COLORS: dict[str, str] = {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(VARIANT_ORDER)}
VARIANT_MARKERS: dict[str, str] = dict(zip(VARIANT_ORDER, ["o", "s", "v", "D", "^", "P", "X", "*"]))
SAMPLER_DASHES: dict[str, tuple] = {
    "ancestral": (None, None),
    "ddim": (5, 2),
    "ode-heun": (2, 2),
    "ode-euler": (6, 2, 1, 2),
    "ode-adaptive": (1, 1),
    "sde-em": (8, 3),
}

# Metric names as the result files carry them -> axis labels. A classifier FD is never "FID".
METRIC_LABELS: dict[str, str] = {
    "fd_classifier": "FD in classifier features (not FID)",
    "fd_data": "Frechet distance in data space",
    "fid_inception_tf": "FID (Inception, torch-fidelity)",
    "fid_clean": "FID (Inception, clean-fid)",
}


def variant_color(variant: str) -> str:
    return VARIANT_COLORS.get(variant, "#333333")


def variant_marker(variant: str) -> str:
    return VARIANT_MARKERS.get(variant, "o")


def sort_variants(variants: list[str]) -> list[str]:
    """Variants in the canonical order (unknown names last, alphabetically)."""
    known = [v for v in VARIANT_ORDER if v in variants]
    return known + sorted(v for v in variants if v not in VARIANT_ORDER)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def pyplot():
    """matplotlib.pyplot on the Agg backend with the report's seaborn theme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    return plt


def save_figure(fig: Figure, path: Path) -> list[Path]:
    """Write path (PNG) and the same figure as PDF beside it; close the figure."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    pdf = path.with_suffix(".pdf")
    fig.savefig(pdf, bbox_inches="tight")
    plt.close(fig)
    return [path, pdf]


def message_figure(path: Path, title: str, lines: list[str]) -> list[Path]:
    """A figure that says why there is nothing to plot (a partial run), instead of no file."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 2.2))
    ax.set_axis_off()
    ax.set_title(title, loc="left", fontweight="bold")
    ax.text(0.0, 0.85, "\n".join(lines), ha="left", va="top", fontsize=10, transform=ax.transAxes, wrap=True)
    return save_figure(fig, path)
