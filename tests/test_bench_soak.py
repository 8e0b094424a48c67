"""The soak benchmark's arithmetic: the baseline is the step after warm-up, growth a least-squares slope."""

import pytest

from botlab.bench.soak import slope, summarise


def test_slope_is_growth_per_step():
    assert slope([(1, 10.0), (2, 12.0), (3, 14.0)]) == pytest.approx(2.0)
    assert slope([(5, 3.0)]) == 0.0


def test_summary_takes_the_baseline_after_warm_up():
    table = {s: {"process/rss_mb": 1000.0 + (500 if s == 1 else 10 * s), "process/open_fds": 40.0} for s in range(1, 6)}
    summary = summarise(table, warmup=2)
    rss = summary["process/rss_mb"]
    assert summary["baseline_step"] == 2 and rss["baseline"] == 1020.0 and rss["last"] == 1050.0
    assert rss["ratio"] == pytest.approx(1050 / 1020) and rss["slope_per_step"] == pytest.approx(10.0)
    assert summary["process/open_fds"]["slope_per_step"] == 0.0
    assert summary["process/threads"]["ratio"] is None  # not measured: no ratio rather than a made-up one
