"""Shared fixtures: a real mosquitto broker on a free loopback port and a reconciling subscriber.

    def test_something(broker, subscriber): ...        # broker running; subscriber on '#'
    def test_custom(broker_factory): b = broker_factory(users={"u": "p"}); b.start()

Every broker is stopped (by pid) at teardown, also when the test fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker
from tests.subscriber import Subscriber


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Build brokers (not started) with options: users=, tls=, extra_config=, port=."""
    brokers: list[Broker] = []

    def make(**options: Any) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    """A running anonymous broker; `broker.kill()` / `broker.start()` restart it on the same port."""
    running = broker_factory()
    running.start()
    return running


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    """Build and start subscribers: `subscriber_factory(host, port, topic_filter="#", ...)`."""
    subscribers: list[Subscriber] = []

    def make(host: str, port: int, topic_filter: str = "#", **options: Any) -> Subscriber:
        sub = Subscriber(host, port, topic_filter, **options)
        subscribers.append(sub)
        return sub.start()

    yield make
    for sub in subscribers:
        sub.stop()


@pytest.fixture
def subscriber(broker: Broker, subscriber_factory: Callable[..., Subscriber]) -> Subscriber:
    """A subscriber on '#' of the `broker` fixture, reconciling punch batches by id."""
    return subscriber_factory(broker.host, broker.port)
