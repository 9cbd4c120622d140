"""How a table is held and written: the Table record, number formatting, CSV/Markdown/LaTeX files.

Every table in the report is a `Table`: a numeric frame (the CSV, for machines) and a
formatted frame (Markdown and LaTeX, for people), with a caption and notes.
"""

from __future__ import annotations

import gzip

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ndm.report.outputs import csv_extension

from ndm.pipeline.results import atomic_write, atomic_write_text

@dataclass
class Table:
    """A table's numeric frame (CSV), its formatted frame (Markdown/LaTeX) and its caption."""

    name: str
    data: pd.DataFrame
    display: pd.DataFrame
    caption: str
    notes: list[str]



def fmt_num(x: float | None) -> str:
    """A number with precision that suits its size ('' for NaN/None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    a = abs(float(x))
    if a >= 100:
        return f"{x:.1f}"
    if a >= 10:
        return f"{x:.2f}"
    if 0 < a < 0.01:  # two significant digits, not "0.000" (a toy2d FD gap of 2e-4 is a number)
        return f"{x:.2g}"
    return f"{x:.3f}"



def fmt_pm(mean: float | None, se: float | None) -> str:
    """'mean ± se' ('mean' alone without se, '' without mean)."""
    m = fmt_num(mean)
    if not m:
        return ""
    s = fmt_num(se)
    return f"{m} ± {s}" if s else m



def fmt_diff(x: float | None) -> str:
    s = fmt_num(x)
    return s if not s or s.startswith("-") else f"+{s}"



def write_table(table: Table, out_dir: Path) -> list[Path]:
    """tables/<name>.csv (numeric), .md and .tex (formatted, with caption and notes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md, tex = (out_dir / f"{table.name}.{ext}" for ext in (csv_extension(table.name), "md", "tex"))
    if csv.suffix == ".gz":  # gzip without a timestamp: the same bytes on every compile
        payload = gzip.compress(table.data.to_csv(index=False).encode(), mtime=0)
        atomic_write(csv, lambda f: f.write(payload))
    else:
        atomic_write_text(csv, table.data.to_csv(index=False))
    display = _drop_empty_columns(table.display)
    body = display.to_markdown(index=False) if not display.empty else "_No results yet for this table._"
    notes = "\n".join(f"- {n}" for n in table.notes)
    atomic_write_text(md, f"# {table.caption}\n\n{body}\n\n{notes}\n")
    atomic_write_text(tex, _latex(table))
    return [csv, md, tex]



def _drop_empty_columns(display: pd.DataFrame) -> pd.DataFrame:
    """The formatted table without columns that are empty in every row (e.g. no published values)."""
    if display.empty:
        return display
    keep = [c for c in display.columns if display[c].astype(str).str.strip().ne("").any()]
    return display[keep]



_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}



_TEX_SYMBOLS = {"±": r"$\pm$", "∞": r"$\infty$", "≤": r"$\leq$", "−": "-", "x̂": r"$\hat{x}$"}



def tex_escape(text: object) -> str:
    """A cell as LaTeX: special characters escaped, the report's symbols in math mode."""
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))
    for sym, tex in _TEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out



def _latex(table: Table) -> str:
    """A booktabs table with caption and label (written directly: no jinja2 needed)."""
    display = _drop_empty_columns(table.display)
    if display.empty:
        return f"% {table.caption}: no results yet\n"
    lines = [
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{tex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        r"\begin{tabular}{" + "l" * len(display.columns) + "}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in display.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in display.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
