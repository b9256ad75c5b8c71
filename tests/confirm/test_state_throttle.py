"""The retained gateway state's delivery figures go out again only when they changed enough
(sync/confirmations_state.py): pure logic, on a clock the test moves."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from punchgate.sync.confirmations_state import (
    STATE_AGE_BAND,
    STATE_MIN_SECONDS,
    STATE_REFRESH_SECONDS,
    StateThrottle,
)

STARTED = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)


def figures(pending: int = 10, unconfirmed: int = 5, age: float | None = 30.0) -> dict[str, Any]:
    return {
        "delivery": "central",
        "pending": pending,
        "unconfirmed": unconfirmed,
        "oldest_unconfirmed_age_seconds": age,
    }


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the module reads time.monotonic()
    return now


def sent(throttle: StateThrottle, shown: dict[str, Any]) -> bool:
    return throttle.message(shown, version="t", started_at=STARTED) is not None


def test_the_first_figures_go_out_with_the_age_rounded(clock: list[float]) -> None:
    message = StateThrottle().message(figures(age=30.04), version="t", started_at=STARTED)
    assert message is not None
    body = json.loads(message)
    assert (body["pending"], body["unconfirmed"], body["oldest_unconfirmed_age_seconds"]) == (10, 5, 30.0)


def test_changes_go_out_at_most_every_min_seconds_and_only_when_they_matter(clock: list[float]) -> None:
    throttle = StateThrottle()
    assert sent(throttle, figures())
    clock[0] += STATE_MIN_SECONDS - 0.1
    assert not sent(throttle, figures(pending=11))  # too soon, whatever changed
    clock[0] += 0.1
    assert not sent(throttle, figures(age=30.0 + STATE_AGE_BAND - 1))  # the age within its band
    assert sent(throttle, figures(pending=11))  # a new count
    clock[0] += STATE_MIN_SECONDS
    assert sent(throttle, figures(pending=11, age=30.0 + STATE_AGE_BAND))  # the age moved a band
    clock[0] += STATE_MIN_SECONDS
    assert sent(throttle, figures(pending=11, age=None))  # nothing unconfirmed any more
    clock[0] += STATE_MIN_SECONDS
    assert not sent(throttle, figures(pending=11, age=None))
    clock[0] += STATE_REFRESH_SECONDS
    assert sent(throttle, figures(pending=11, age=None))  # unchanged, refreshed
