"""Hostile-peer tests: the long fuzz runs (`@pytest.mark.long`) only run when asked for.

A run selects them with a marker expression that names them (`-m long`, as `./dev test-long`
does); any other run, `./dev test` included, skips them, so the default suite keeps only the
short slices.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "long" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long run: select it with -m long (./dev test-long)")
    for item in items:
        if item.get_closest_marker("long") is not None and HERE in item.path.parents:
            item.add_marker(skip)
