"""Log repeated identical events at a bounded rate, with a count of the ones left out.

    limited = RateLimitedLog(structlog.get_logger(__name__), interval=60)
    limited.warning("http_bad_request", key="BadStatusLine", remote="127.0.0.1")

The first event of a key (by default the event name) is logged at once. Further events of the
same key within `interval` seconds are only counted; the next line for that key, or a summary
line at the end of the window, carries `suppressed=N`. So a flood costs at most about two lines
per key and window, however fast it comes, and nobody loses the count.

Keys should be chosen by the caller from a small vocabulary (event name plus an exception
class, say), never from what a client sent: at most `max_keys` keys are remembered, the oldest
forgotten first. Safe to call from any thread; the end-of-window summary is scheduled on the
running event loop when there is one (otherwise it comes with the next event, or `flush()`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_INTERVAL = 60.0  # seconds
DEFAULT_MAX_KEYS = 256


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    level: str = "warning"
    event: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    summary_scheduled: bool = False


class RateLimitedLog:
    """A wrapper around a structlog logger (anything with `.warning(event, **kw)`, `.error`, ...)."""

    def __init__(
        self,
        logger: Any,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self.interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()
        self.total: dict[str, int] = {}  # every event per key since start, logged or not

    def warning(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log("warning", event, key=key, **fields)

    def error(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log("error", event, key=key, **fields)

    def info(self, event: str, *, key: str | None = None, **fields: Any) -> bool:
        return self.log("info", event, key=key, **fields)

    def log(self, level: str, event: str, *, key: str | None = None, **fields: Any) -> bool:
        """Log now, or count for later; True when a line was written."""
        key = key or event
        now = self._clock()
        with self._lock:
            self.total[key] = self.total.get(key, 0) + 1
            window = self._windows.get(key)
            if window is not None and now - window.started < self.interval:
                window.suppressed += 1
                window.level, window.event, window.fields = level, event, fields
                schedule = not window.summary_scheduled
                window.summary_scheduled = True
                suppressed = -1
            else:
                suppressed = window.suppressed if window is not None else 0
                self._windows[key] = _Window(started=now)
                self._windows.move_to_end(key)
                while len(self._windows) > self._max_keys:
                    self._windows.popitem(last=False)
                schedule = False
        if suppressed < 0:
            if schedule:
                self._schedule_summary(key)
            return False
        if suppressed:
            fields = {**fields, "suppressed": suppressed}
        getattr(self._logger, level)(event, **fields)
        return True

    def flush(self) -> None:
        """Write the summary line of every key with events not yet reported."""
        with self._lock:
            keys = [k for k, w in self._windows.items() if w.suppressed]
        for key in keys:
            self._summary(key)

    def _schedule_summary(self, key: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop thread: the next event or flush() reports the count
        with self._lock:
            window = self._windows.get(key)
            delay = self.interval - (self._clock() - window.started) if window else 0.0
        loop.call_later(max(0.0, delay), self._summary, key)

    def _summary(self, key: str) -> None:
        with self._lock:
            window = self._windows.get(key)
            if window is None or not window.suppressed:
                return
            level, event, count = window.level, window.event, window.suppressed
            # No traceback on a summary: it is written outside the exception it counts.
            fields = {k: v for k, v in window.fields.items() if k not in ("exc_info", "stack_info")}
            # The summary opens a new window: an event right after it is counted, not logged.
            self._windows[key] = _Window(started=self._clock())
        getattr(self._logger, level)(event, **fields, suppressed=count, summary=True)
