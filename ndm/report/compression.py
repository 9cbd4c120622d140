"""The compression table: net bits/dim of the bits-back files beside the model's T-step NELBO.

Reads results/<dataset>/<variant>/seed<k>/compression.json (ndm evaluate-compression) and
averages over seeds per (dataset, variant, T). Published bits-back rates are shown only from
rows of configs/published.csv with metric `bbans_bpd`, status `published`, primary `true` and
the same T (none are verified yet, so the column stays empty rather than guessed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ndm.report.table_format import Table, fmt_num

COLUMNS = ["dataset", "variant", "T", "seeds", "n_examples", "net_bpd", "steady_bpd", "overhead_bpd", "nelbo_bpd", "steady_minus_nelbo_pct", "encode_images_per_s", "decode_images_per_s", "published_bpd"]


def _rows(results: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(results).glob("*/*/seed*/compression.json")):
        doc = json.loads(path.read_text())
        for T, r in (doc.get("steps") or {}).items():
            steady = r.get("steady_bpd")
            rows.append(
                {
                    "dataset": doc["dataset"],
                    "variant": doc["variant"],
                    "T": int(T),
                    "seed": doc.get("seed"),
                    "n_examples": doc.get("n_examples"),
                    "net_bpd": r["net_bpd"],
                    "steady_bpd": steady,
                    "overhead_bpd": r.get("overhead_bpd"),
                    "nelbo_bpd": r["nelbo_bpd"],
                    "encode_images_per_s": r.get("encode_images_per_s"),
                    "decode_images_per_s": r.get("decode_images_per_s"),
                }
            )
    return rows


def _published(pub: pd.DataFrame | None, dataset: str, variant: str, T: int) -> float | None:
    if pub is None or pub.empty or "metric" not in pub:
        return None
    sel = pub[(pub["metric"] == "bbans_bpd") & (pub["dataset"] == dataset) & (pub["variant"] == variant)]
    if "status" in sel:
        sel = sel[sel["status"] == "published"]
    if "primary" in sel:
        sel = sel[sel["primary"].astype(str).str.lower() == "true"]
    if "steps_T" in sel:
        sel = sel[pd.to_numeric(sel["steps_T"], errors="coerce") == T]
    return float(sel["value"].iloc[0]) if len(sel) else None


def compression_table(results: str | Path, pub: pd.DataFrame | None = None) -> Table:
    rows = _rows(Path(results))
    if rows:
        df = pd.DataFrame(rows)
        data = (
            df.groupby(["dataset", "variant", "T"], as_index=False)
            .agg(
                seeds=("seed", "nunique"),
                n_examples=("n_examples", "first"),
                net_bpd=("net_bpd", "mean"),
                steady_bpd=("steady_bpd", "mean"),
                overhead_bpd=("overhead_bpd", "mean"),
                nelbo_bpd=("nelbo_bpd", "mean"),
                encode_images_per_s=("encode_images_per_s", "mean"),
                decode_images_per_s=("decode_images_per_s", "mean"),
            )
        )
        data["steady_minus_nelbo_pct"] = 100.0 * (data["steady_bpd"] - data["nelbo_bpd"]) / data["nelbo_bpd"]
        data["published_bpd"] = [_published(pub, d, v, t) for d, v, t in zip(data["dataset"], data["variant"], data["T"])]
        data = data[COLUMNS]
    else:
        data = pd.DataFrame(columns=COLUMNS)
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "variant": data["variant"],
            "T": data["T"],
            "net bpd (file)": [fmt_num(x) for x in data["net_bpd"]],
            "steady bpd": [fmt_num(x) for x in data["steady_bpd"]],
            "NELBO_T bpd": [fmt_num(x) for x in data["nelbo_bpd"]],
            "steady - NELBO (%)": [fmt_num(x) for x in data["steady_minus_nelbo_pct"]],
            "overhead bpd": [fmt_num(x) for x in data["overhead_bpd"]],
            "encode img/s": [fmt_num(x) for x in data["encode_images_per_s"]],
            "decode img/s": [fmt_num(x) for x in data["decode_images_per_s"]],
            "published bpd": [fmt_num(x) if x is not None and x == x else "" for x in data["published_bpd"]],
        }
    )
    notes = [
        "net bpd: the whole file (header, initial bits, payload) over examples x dims; steady bpd: the bits "
        "the batches after the first add per dim (the rate without the one-off initial bits and header); "
        "overhead = net - steady (docs/compression.md).",
        "NELBO_T: the model's exact T-step NELBO (all T steps) on the same examples. Where p(z_s | z_t) misses "
        "the data by many standard deviations (few steps), the codec's windowed tails cost less than the "
        "Gaussian's, so steady can be below the NELBO.",
        "Files decode only on the platform and software that wrote them (same device, threads, torch).",
    ]
    return Table("compression", data, display, "Bits-back compression: net bits/dim vs the T-step NELBO", notes)
