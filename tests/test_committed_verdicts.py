"""Every committed comparison row prints the interval its verdict uses: an interval that excludes
0 only beside better / worse, one that includes 0 beside every other verdict (rows with fewer than
3 seeds are not judged and print their trend's interval) (docs/protocol.md,
Comparisons and verdicts). Reads the committed CSVs of the reports that follow those rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# Every committed report (all compiled under the current rules).
REPORTS = ["reports", "reports/study", "reports/study/toy2d", "reports/f_learning", "reports/f_learning/control", "reports/f_learning/sweep"]
JUDGED = ("ndm better", "ndm worse", "F lowers the NELBO", "F raises the NELBO")


def _rows() -> list[tuple[str, pd.Series]]:
    out = []
    for report in REPORTS:
        for csv in sorted((REPO / report / "tables").glob("*.csv")):
            frame = pd.read_csv(csv)
            if not {"ci_low", "ci_high", "verdict"} <= set(frame.columns):
                continue
            out += [(f"{csv.relative_to(REPO)}:{i}", r) for i, r in frame.iterrows() if pd.notna(r["ci_low"]) and pd.notna(r["verdict"])]
    return out


ROWS = _rows()


def test_there_are_committed_rows_to_check():
    assert len(ROWS) > 100 and any(str(r["verdict"]).startswith(JUDGED) for _, r in ROWS)


def test_every_interval_agrees_with_its_verdict():
    wrong = []
    for where, row in ROWS:
        if "not judged" in str(row["verdict"]):  # one or two seeds: a trend with its interval, no verdict either way
            continue
        excludes = row["ci_low"] > 0 or row["ci_high"] < 0
        if excludes != str(row["verdict"]).startswith(JUDGED):
            wrong.append((where, row["ci_low"], row["ci_high"], row["verdict"]))
    assert not wrong, f"{len(wrong)} rows, e.g. {wrong[:3]}"
