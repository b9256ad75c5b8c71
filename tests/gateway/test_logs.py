"""Logging: JSON lines off a TTY, device names through contextvars, secrets never printed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from punchgate.gateway.logs import bind_device, configure_logging, register_secret


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_when_not_a_tty(captured: io.StringIO) -> None:
    structlog.get_logger("t").info("hello", count=3)
    (line,) = lines(captured)
    assert line["event"] == "hello" and line["count"] == 3 and line["level"] == "info"
    assert "timestamp" in line


def test_worker_lines_carry_the_device_name(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    with bind_device("gate-north"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(captured)
    assert inside["device"] == "gate-north"
    assert "device" not in outside


def test_secrets_are_redacted_by_key_and_by_value(captured: io.StringIO) -> None:
    register_secret("s3cr3t-pass")
    register_secret("987654")
    log = structlog.get_logger("t")
    log.info("connecting", password="s3cr3t-pass", comm_key=987654, url="mqtt://u:s3cr3t-pass@host")
    log.warning("auth failed", error="terminal refused key 987654", nested={"password": "x", "ok": 1})
    text = captured.getvalue()
    assert "s3cr3t-pass" not in text and "987654" not in text
    first, second = lines(captured)
    assert first["password"] == "***" and first["comm_key"] == "***"
    assert first["url"] == "mqtt://u:***@host"
    assert second["nested"] == {"password": "***", "ok": 1}


def test_stdlib_loggers_are_redacted_too(captured: io.StringIO) -> None:
    import logging

    register_secret("libsecret-xyz")
    logging.getLogger("paho.mqtt").warning("connect with libsecret-xyz")
    assert "libsecret-xyz" not in captured.getvalue()
    assert "connect with ***" in captured.getvalue()


def _device_seen() -> object:
    return structlog.contextvars.get_contextvars().get("device", "<none>")


@pytest.mark.parametrize("outer", [None, "outer-name"])
def test_bind_device_does_what_bound_contextvars_does(outer: str | None) -> None:
    """The binding is a small object now (it lives as long as its worker, issue 18); step for
    step it is structlog's `bound_contextvars(device=...)`: nested, after an error, and with
    other keys left alone."""
    for binding in (bind_device, lambda name: structlog.contextvars.bound_contextvars(device=name)):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(site="s1")
        if outer is not None:
            structlog.contextvars.bind_contextvars(device=outer)
        seen = []
        with binding("a"):
            seen.append(_device_seen())
            with pytest.raises(ValueError), binding("b"):
                seen.append(_device_seen())
                raise ValueError
            seen.append(_device_seen())
        seen.append(_device_seen())
        seen.append(structlog.contextvars.get_contextvars().get("site"))
        assert seen == ["a", "b", "a", outer or "<none>", "s1"], binding
    structlog.contextvars.clear_contextvars()


def test_a_held_binding_is_small() -> None:
    import tracemalloc

    structlog.contextvars.clear_contextvars()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [bind_device(f"t{n}") for n in range(100)]
        for binding in held:
            binding.__enter__()
        per_binding = (tracemalloc.get_traced_memory()[0] - before) / 100
        for binding in reversed(held):
            binding.__exit__(None, None, None)
    finally:
        tracemalloc.stop()
    assert per_binding < 300, per_binding  # the generator-based binding held about 775 bytes
    assert "device" not in structlog.contextvars.get_contextvars()
