"""The numbers README.md states about what F learned come from committed tables.

Each check finds the sentence in README.md and the value in the table it cites, formatted as the
README prints it, so an edited table or a stale sentence fails here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
STUDY_GAUGE = REPO / "reports/study/tables/gauge.csv"


def _paragraph(start: str) -> str:
    i = README.index(start)
    return README[i : README.index("\n\n", i)]


def test_study_ndm_offset_not_map_numbers_come_from_gauge_csv():
    text = " ".join(_paragraph("**What the committed study's NDM learned").split())
    g = pd.read_csv(STUDY_GAUGE)
    ndm = g[(g["variant"] == "ndm") & (g["gauge"] == "none")].set_index(["dataset", "t"])
    digits = ndm.loc["digits"]
    assert f"{digits['input_rms'].min():.3f}-{digits['input_rms'].max():.3f} rms" in text
    assert f"offsets up to {digits['offset_rms'].max():.1f}" in text
    toy = ndm.loc["toy2d"]["input_rms"]
    assert toy.max() < 3e-4 and "about 1e-4" in text  # 7e-5 to 2.7e-4
