"""Structured logging: JSON lines for journald and log shippers, coloured lines on a terminal.

Every line a device worker writes carries `device=<terminal name>` through structlog's
contextvars (see `bind_device`). Secrets are scrubbed in one processor, twice over: by key
name (anything that looks like a password or key) and by value (every secret the config
holds is registered at start-up, so it is masked even inside free text such as an error
message that echoes a URL).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any, TextIO

import structlog

REDACTED = "***"
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|comm_?key|credential)", re.IGNORECASE)
_secret_values: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact string wherever it appears in a log line from now on."""
    # Very short values would mask innocent text (a comm key "1" would blank every digit 1).
    if value and len(value) >= 3:
        _secret_values.add(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secret_values:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and registered secret values."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key) and event_dict[key] not in (None, ""):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _stringify(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Turn exceptions and other objects into text before redaction looks at them."""
    for key, value in event_dict.items():
        if isinstance(value, BaseException):
            event_dict[key] = f"{type(value).__name__}: {value}"
        elif isinstance(value, bytes):
            event_dict[key] = value.hex()
    return event_dict


def configure_logging(level: str = "info", *, stream: TextIO | None = None, json: bool | None = None) -> None:
    """Set up structlog (and the stdlib loggers of our libraries) for the whole process."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    numeric = logging.getLevelName(level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=True, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _stringify,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Library loggers (paho, apscheduler, pyzk) go through the same redaction and renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _stringify,
                redact_secrets,
                renderer,
            ],
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


_UNBOUND = object()


class _DeviceBinding:
    """`structlog.contextvars.bound_contextvars(device=name)`, step for step (bind; on the way
    out unbind, then bind again what was bound before), in one small object: every worker
    holds its binding for its whole life, and the generator-based one kept two generators,
    their frames, two context managers and a copy of the context, about 775 bytes a terminal
    (issue 18)."""

    __slots__ = ("_name", "_saved")

    def __init__(self, name: str) -> None:
        self._name = name
        self._saved: Any = _UNBOUND

    def __enter__(self) -> None:
        self._saved = structlog.contextvars.get_contextvars().get("device", _UNBOUND)
        structlog.contextvars.bind_contextvars(device=self._name)

    def __exit__(self, *_: object) -> None:
        structlog.contextvars.unbind_contextvars("device")
        if self._saved is not _UNBOUND:
            structlog.contextvars.bind_contextvars(device=self._saved)
        self._saved = _UNBOUND


def bind_device(name: str) -> AbstractContextManager[None]:
    """Every log line inside this block (in this task) carries `device=name`."""
    return _DeviceBinding(name)
