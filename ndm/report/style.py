"""Shared look of every figure: one colour and marker per variant, labels, saving.

Matplotlib is imported lazily and always with the Agg backend (report jobs run headless).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ndm.atomic import atomic_write
from ndm.model.specs import VARIANTS, base_variant

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One fixed colour and marker per variant, in the order variants.VARIANTS lists them, so a
# variant looks the same in every figure of every report: the colour-blind safe "colorblind"
# palette for the first eight, then distinct hues spaced by the golden angle (`palette`), so a
# ninth variant never takes an earlier one's colour or marker.
_BASE_COLORS = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#56b4e9", "#7570b3"]
_MARKERS = ["o", "s", "v", "D", "^", "P", "X", "*", "<", ">", "H", "8", "p", "h", "d"]


def palette(n: int) -> list[str]:
    """n distinct colours: the base palette, then hues at golden-angle steps (fixed lightness)."""
    import colorsys

    colors = list(_BASE_COLORS[:n])
    for i in range(len(colors), n):
        r, g, b = colorsys.hls_to_rgb((0.11 + 0.6180339887 * i) % 1.0, 0.42, 0.7)
        colors.append("#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b))))
    return colors


def markers(n: int) -> list[str]:
    """n markers; past the list's end they repeat, and the colour (always distinct) tells them apart."""
    return [_MARKERS[i % len(_MARKERS)] for i in range(n)]


VARIANT_ORDER: list[str] = list(VARIANTS)
VARIANT_COLORS: dict[str, str] = dict(zip(VARIANT_ORDER, palette(len(VARIANT_ORDER))))
VARIANT_MARKERS: dict[str, str] = dict(zip(VARIANT_ORDER, markers(len(VARIANT_ORDER))))

# Metric names as the result files carry them -> axis labels. A classifier FD is never "FID".
METRIC_LABELS: dict[str, str] = {
    "fd_classifier": "FD in classifier features (not FID)",
    "fd_data": "Frechet distance in data space",
    "ed_data": "energy distance to exact samples",
    "offsupport_mass": "mass off the data's support",
    "fid_inception_tf": "FID (Inception, torch-fidelity)",
    "fid_clean": "FID (Inception, clean-fid)",
    "kid_classifier": "KID in classifier features (unbiased)",
    "kid_inception": "KID (Inception, unbiased)",
    "kid_clean": "KID (Inception, clean-fid, unbiased)",
}


def _shade(hex_color: str, factor: float) -> str:
    """Darker (factor < 1: towards black) or lighter (factor > 1: towards white)."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    if factor <= 1:
        return "#{:02x}{:02x}{:02x}".format(*(int(c * factor) for c in (r, g, b)))
    w = 1 - 1 / factor
    return "#{:02x}{:02x}{:02x}".format(*(int(c + (255 - c) * w) for c in (r, g, b)))


# Several tagged copies of one variant (ndm@gauge, ndm@compute) share its hue: each tag gets its
# own shade and marker so that they stay apart in every figure; an unknown tag gets the next one.
TAG_SHADES = {"params": 0.55, "gauge": 0.4, "compute": 1.9}
TAG_MARKERS = {"params": "d", "gauge": "p", "compute": "h"}  # none of the first 8 variants' markers
_EXTRA_SHADES = (0.7, 1.5, 0.3, 2.5)
_EXTRA_MARKERS = ("8", "<", ">", "H")


def _tag(variant: str) -> str:
    return variant.split("@", 1)[1] if "@" in variant else ""


def variant_color(variant: str) -> str:
    """The variant's colour; a tagged copy (a model name with @tag) a shade of its variant's, one per tag."""
    if variant in VARIANT_COLORS:
        return VARIANT_COLORS[variant]
    base, tag = base_variant(variant), _tag(variant)
    factor = TAG_SHADES.get(tag, _EXTRA_SHADES[sum(map(ord, tag)) % len(_EXTRA_SHADES)])
    return _shade(VARIANT_COLORS[base], factor) if base in VARIANT_COLORS else "#333333"


def variant_marker(variant: str) -> str:
    if variant in VARIANT_MARKERS:
        return VARIANT_MARKERS[variant]
    tag = _tag(variant)
    if tag:
        return TAG_MARKERS.get(tag, _EXTRA_MARKERS[sum(map(ord, tag)) % len(_EXTRA_MARKERS)])
    return "o"


def sort_variants(variants: list[str]) -> list[str]:
    """Variants in the canonical order, each variant's tagged copies right after it (unknown
    names last, alphabetically)."""
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(variants, key=lambda v: (rank.get(base_variant(v), len(rank)), base_variant(v), v != base_variant(v), v))


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


# PNG with no software version or date in its metadata: an unchanged figure is byte-identical
# across runs and machines, so a rerun adds nothing to a clone (docs/architecture.md, Reports).
PNG_METADATA = {"Software": None}
DPI = 110


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> list[Path]:
    """Write the figure as one PNG at `path`: 256 adaptive colours (median cut, no dithering: a
    third of the size of full colour for these plots and sample grids, and deterministic), no
    metadata; close the figure."""
    import io

    from PIL import Image

    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    atomic_write(path, lambda f: image.save(f, format="PNG", optimize=True))
    return [path]


def message_figure(path: Path, title: str, lines: list[str]) -> list[Path]:
    """A figure that says why there is nothing to plot (a partial run), instead of no file."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 2.2))
    ax.set_axis_off()
    ax.set_title(title, loc="left", fontweight="bold")
    ax.text(0.0, 0.85, "\n".join(lines), ha="left", va="top", fontsize=10, transform=ax.transAxes, wrap=True)
    return save_figure(fig, path)
