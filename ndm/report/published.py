"""The papers' published numbers (configs/published.csv) and how our rows find theirs.

A row of published.csv names a dataset by its data name (mnist, cifar10, imagenet32, ...),
one of our variants, a metric (nelbo_bpd: a bits/dim bound; fid: Inception FID; bbans_bpd: the
lossless rate of a bits-back coder, the compression table's comparison), the quantity the paper's
number is (NELBO, NLL, FID, rate or unknown) and why we read it so, the value
(empty where the paper's number was not entered), the time discretisation T of the bound
(empty: continuous time), a status (published | not_entered), and primary (the row our
variant is compared with; other rows are context, e.g. DDPM's L_simple model).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

PUBLISHED_COLUMNS = ["dataset", "variant", "metric", "quantity", "quantity_reason", "value", "bound", "steps_T", "status", "primary", "source", "table", "note"]
STATUSES = ("published", "not_entered")
METRICS = ("nelbo_bpd", "fid", "bbans_bpd")
# What a published number is (issue 29): a variational bound (NELBO), a likelihood (NLL, e.g. by
# the probability-flow ODE), an FID, a coder's rate, or unknown (quantity_reason says why).
QUANTITIES = {"nelbo_bpd": ("NELBO", "NLL", "unknown"), "fid": ("FID",), "bbans_bpd": ("rate",)}
# Our Frechet metrics that are the papers' FID (Inception features); fd_* never are.
FID_COMPARABLE = ("fid_inception_tf", "fid_clean")

_REPO_ROOT = Path(__file__).resolve().parents[2]


class PublishedError(ValueError):
    """published.csv does not have the expected form (the message names the row)."""


def default_published_path(config: dict | None = None) -> Path | None:
    """config['published'] (relative to the working directory or the repo), else configs/published.csv."""
    name = (config or {}).get("published") or "configs/published.csv"
    for candidate in (Path(name), _REPO_ROOT / name):
        if candidate.exists():
            return candidate
    return None


def _as_bool(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def load_published(path: str | Path) -> pd.DataFrame:
    """Parse and check published.csv; raise PublishedError naming the offending row."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise PublishedError(f"{path}: missing columns {missing}; expected {PUBLISHED_COLUMNS}")
    df = df[PUBLISHED_COLUMNS].copy()
    for i, row in df.iterrows():
        where = f"{path}: row {i + 2} ({row['dataset']}, {row['variant']}, {row['metric']})"
        if row["status"] not in STATUSES:
            raise PublishedError(f"{where}: status must be one of {STATUSES}, got {row['status']!r}")
        if row["metric"] not in METRICS:
            raise PublishedError(f"{where}: metric must be one of {METRICS}, got {row['metric']!r}")
        if row["status"] == "published" and row["value"].strip() == "":
            raise PublishedError(f"{where}: status published needs a value")
        if row["status"] != "published" and row["value"].strip() != "":
            raise PublishedError(f"{where}: a value needs status published")
        if row["metric"] in QUANTITIES and row["quantity"] not in QUANTITIES[row["metric"]]:
            raise PublishedError(f"{where}: quantity of a {row['metric']} row must be one of {QUANTITIES[row['metric']]}, got {row['quantity']!r}")
        if not row["quantity_reason"].strip():
            raise PublishedError(f"{where}: quantity_reason must say why the number is {row['quantity'] or 'that quantity'} (or why it is unknown)")
        if not row["source"].strip():
            raise PublishedError(f"{where}: every row needs its source")
    df["value"] = pd.to_numeric(df["value"].replace("", None), errors="raise").astype(float)
    df["steps_T"] = pd.to_numeric(df["steps_T"].replace("", None), errors="raise").astype(float)
    df["primary"] = df["primary"].map(_as_bool)
    dup = df[df["primary"]].duplicated(["dataset", "variant", "metric"], keep=False)
    if dup.any():
        rows = df[df["primary"]][dup][["dataset", "variant", "metric"]].values.tolist()
        raise PublishedError(f"{path}: more than one primary row for {rows}")
    return df


def data_names(config: dict) -> dict[str, str]:
    """Config dataset key -> data name (what published.csv uses); the key when no data.name."""
    out = {}
    for key, section in (config.get("datasets") or {}).items():
        data = (section or {}).get("data") or {}
        out[key] = str(data.get("name") or key)
    return out


def lookup(published: pd.DataFrame | None, data_name: str, variant: str, metric: str) -> dict | None:
    """The primary published row for (data name, variant, metric) that has a value, as a dict."""
    if published is None or published.empty:
        return None
    hit = published[
        (published["dataset"] == data_name)
        & (published["variant"] == variant)
        & (published["metric"] == metric)
        & published["primary"]
        & (published["status"] == "published")
    ]
    if hit.empty:
        return None
    row = hit.iloc[0].to_dict()
    row["steps_T"] = math.inf if pd.isna(row["steps_T"]) else float(row["steps_T"])
    return row


def cite(row: dict | None) -> str:
    """'source, table' for a table's source column ('' when no row)."""
    if not row:
        return ""
    short = str(row["source"]).split(":")[0]
    return f"{short}, {row['table']}" if row.get("table") else short
