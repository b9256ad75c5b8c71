"""When central delivery's figures go out again in the retained gateway state (sync/confirmations.py).

Kept apart from the confirmations because it is a rule about a status message, not about
delivery: the pending and unconfirmed counts and the oldest unconfirmed age change with every
confirmation, and republishing `{base}/state` for each would flood a retained topic that
monitoring reads. So it goes out at most every STATE_MIN_SECONDS, and then only on a new count,
the oldest age moving by STATE_AGE_BAND or appearing/disappearing, or STATE_REFRESH_SECONDS after
the last one (its `as_of` stays fresh).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from punchgate.sync.contract import gateway_online

STATE_MIN_SECONDS = 5.0
STATE_AGE_BAND = 60.0
STATE_REFRESH_SECONDS = 600.0


class StateThrottle:
    """The last figures sent, and whether new ones are worth a message (module docstring)."""

    def __init__(self) -> None:
        self._sent: tuple[float, dict[str, Any]] | None = None

    def message(self, figures: dict[str, Any], *, version: str, started_at: dt.datetime) -> bytes | None:
        """The retained `{base}/state` with `figures` when they changed enough; None otherwise."""
        now = time.monotonic()
        if self._sent is not None and not self._changed_enough(figures, now):
            return None
        self._sent = (now, figures)
        shown = dict(figures)
        if shown["oldest_unconfirmed_age_seconds"] is not None:
            shown["oldest_unconfirmed_age_seconds"] = round(shown["oldest_unconfirmed_age_seconds"], 1)
        return gateway_online(version=version, started_at=started_at, as_of=dt.datetime.now(dt.UTC), **shown)

    def _changed_enough(self, figures: dict[str, Any], now: float) -> bool:
        assert self._sent is not None
        since, sent = self._sent
        if now - since < STATE_MIN_SECONDS:
            return False
        age, old_age = figures["oldest_unconfirmed_age_seconds"], sent["oldest_unconfirmed_age_seconds"]
        moved = (age is None) != (old_age is None) or (
            age is not None and old_age is not None and abs(age - old_age) >= STATE_AGE_BAND
        )
        counts = ("pending", "unconfirmed")
        return moved or any(figures[k] != sent[k] for k in counts) or now - since >= STATE_REFRESH_SECONDS
