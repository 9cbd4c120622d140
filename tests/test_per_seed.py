"""The committed study report's means are the means of its committed per-seed table (issue "The
study, second edition": every mean, interval and verdict can be recomputed from reports/)."""

from __future__ import annotations

from pathlib import Path

from per_seed_check import check_means_from_per_seed

REPO = Path(__file__).resolve().parents[1]


def test_study_means_recompute_from_the_committed_per_seed_table():
    assert check_means_from_per_seed(REPO / "reports/study/tables") > 500
