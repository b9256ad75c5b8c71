"""Shared fixtures, built on tests/support: a real mosquitto broker on a free loopback port, a
reconciling subscriber, and the gateway daemon as a child process.

    def test_something(broker, subscriber): ...        # broker running; subscriber on '#'
    def test_custom(broker_factory): b = broker_factory(users={"u": "p"}); b.start()
    async def test_e2e(gateway_factory): gateway_factory([zk_terminal("t", emulator)]).start()

Every broker, subscriber and gateway is stopped (by pid) at teardown, also when the test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.config import write_config
from tests.support.gateway import GatewayProcess
from tests.support.subscriber import Subscriber

GATEWAY_ID = "gw-test"


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Build brokers (not started) with options: users=, tls=, persistent=, extra_config=, port=."""
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


@pytest.fixture
async def gateway_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., GatewayProcess]]:
    """`gateway_factory(terminals, **options)` writes a config and returns a (not started) daemon.

    The config: gateway id "gw-test" (or `gateway_id=`), the `broker` fixture's port (or `broker_port=`), the
    buffer at tmp_path/buffer.db, plus any `tests.support.config.write_config` option
    (http_port=, mqtt=, buffer=, sections=, top-level keys). `env=` adds environment variables.
    """
    processes: list[GatewayProcess] = []

    def make(
        terminals: Sequence[Mapping[str, Any]] = (),
        *,
        gateway_id: str = GATEWAY_ID,
        broker_port: int | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> GatewayProcess:
        if broker_port is None:
            broker_port = request.getfixturevalue("broker").port
        path = write_config(
            tmp_path / f"gateway{len(processes)}.toml",
            gateway_id=gateway_id,
            broker_port=broker_port,
            buffer_path=tmp_path / "buffer.db",
            terminals=terminals,
            **options,
        )
        process = GatewayProcess(path, env=env)
        processes.append(process)
        return process

    yield make
    for process in processes:
        # In a thread: emulators living on this event loop must answer the gateway's goodbye
        # (re-enable, disconnect) while it shuts down.
        await asyncio.to_thread(process.stop, timeout=20)
