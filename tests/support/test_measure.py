"""Percentiles by nearest rank, and a process's figures from /proc."""

from __future__ import annotations

import os

import pytest

from tests.support.measure import cpu_seconds, peak_rss_mb, percentile


@pytest.mark.parametrize(("q", "expected"), [(50, 50.0), (99, 99.0), (100, 100.0), (0, 1.0)])
def test_percentile_is_an_observed_value_by_nearest_rank(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_figures_of_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert 1 < peak_rss_mb(os.getpid()) < 10_000
