"""The status as the console and `punchgate status` show it: root cause first, with what to do."""

from __future__ import annotations

import re
from pathlib import Path

from punchgate.gateway.console.health_view import (
    local_text,
    root_cause_first,
    short_duration,
    terminal_views,
    zone,
    zone_label,
)
from punchgate.gateway.faults import CATALOGUE, WHAT_TO_DO

ROOT = Path(__file__).resolve().parents[2]


def _documented() -> dict[str, str]:
    """code -> the "what to do" column of docs/health.md's fault catalogue, links as plain text."""
    rows = {}
    text = (ROOT / "docs" / "health.md").read_text()
    section = text[text.index("## Fault catalogue") : text.index("## Thresholds")]
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| (info|warning|error|critical) \| .* \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", match.group(3))
    return rows


def test_what_to_do_is_the_docs_column_word_for_word() -> None:
    documented = _documented()
    assert set(CATALOGUE) <= set(WHAT_TO_DO), sorted(set(CATALOGUE) - set(WHAT_TO_DO))
    assert set(documented) <= set(WHAT_TO_DO)
    for code, text in documented.items():
        assert WHAT_TO_DO[code] == text, code


def test_the_root_cause_comes_first() -> None:
    faults = [
        {"code": "silent", "severity": "info", "detail": "", "since": "2026-01-01T08:00:00Z"},
        {"code": "clock_drift", "severity": "warning", "detail": "+90 s", "since": "2026-01-01T07:00:00Z"},
        {"code": "unreachable", "severity": "error", "detail": "refused", "since": "2026-01-01T09:00:00Z"},
    ]
    ordered = root_cause_first(faults)
    assert [f.code for f in ordered] == ["unreachable", "clock_drift", "silent"]
    assert ordered[0].what_to_do.startswith("check power") and ordered[0].summary
    gateway = root_cause_first(
        [
            {"code": "delivery_delayed", "severity": "warning", "detail": "", "since": None},
            {"code": "broker_unreachable", "severity": "error", "detail": "", "since": None},
        ]
    )
    assert [f.code for f in gateway] == ["broker_unreachable", "delivery_delayed"]


def test_times_are_shown_in_the_site_zone_with_the_zone_named() -> None:
    shanghai = zone("Asia/Shanghai")
    assert local_text("2026-11-30T11:35:53.253153Z", shanghai) == "2026-11-30 19:35:53"
    assert zone_label(shanghai) == "Asia/Shanghai (UTC+08:00)"
    assert local_text(None, shanghai) == ""
    assert zone("Not/AZone").key == "UTC"
    assert [short_duration(s) for s in (4, 125, 3 * 3600 + 300, 2 * 86400 + 7200)] == [
        "4 s",
        "2 min",
        "3 h 5 min",
        "2 d 2 h",
    ]


def test_terminals_are_listed_worst_first() -> None:
    status = {
        "devices": [
            {"device": "a", "state": "online", "faults": []},
            {"device": "b", "state": "offline", "faults": []},
            {"device": "c", "state": "degraded", "faults": []},
        ]
    }
    assert [v.name for v in terminal_views(status)] == ["b", "c", "a"]
    assert [v.name for v in terminal_views(status, worst_first=False)] == ["a", "b", "c"]
