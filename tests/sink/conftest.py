"""Fixtures for the sink tests: one PostgreSQL server for the session (each test gets its own
database), and sink processes that are always stopped at teardown."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import postgres
from tests.support.broker import Broker
from tests.support.sink import SinkProcess


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.Postgres]:
    if not postgres.available():
        pytest.fail("PostgreSQL is not installed (./dev setup installs Debian's postgresql package)")
    server = postgres.Postgres().start()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(postgres_server: postgres.Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server, named after the test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:60]
    return postgres_server.create_database(name)


@pytest.fixture
def sink_factory(broker: Broker, tmp_path: Path) -> Iterator[Callable[..., SinkProcess]]:
    """`sink_factory(db, client_id="sink-1", **options)`: a sink process (not started) on the
    `broker` fixture; every one is killed at teardown if still running."""
    made: list[SinkProcess] = []

    def make(db: str, client_id: str = "sink-1", **options: Any) -> SinkProcess:
        sink = SinkProcess(
            broker_port=broker.port, db=db, client_id=client_id, log=tmp_path / f"{client_id}.log", **options
        )
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.kill()
