"""The drain reads ahead: the next read runs while the messages of the one before are still being
published, so reading and publishing overlap instead of taking turns. Against a real mosquitto
behind a relay that the test holds still (no PUBACK comes back) and a real SQLite buffer."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from punchgate.sync.forwarder import Forwarder
from punchgate.sync.forwarder_drain import Drain
from tests.support.broker import Broker, Gate
from tests.support.factories import make_punches
from tests.support.waiting import wait_for_async
from tests.sync.helpers import make_settings, open_store, running


async def test_the_next_read_runs_while_the_previous_reads_messages_wait_for_their_puback(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    original = Drain._read_messages

    def counted(self: Drain, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        nonlocal reads
        reads += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Drain, "_read_messages", counted)
    gate = Gate(broker.host, broker.port)
    await gate.open()
    # Messages of 5 punches, one in flight at a time, long enough to wait for a PUBACK.
    settings = make_settings(tmp_path, gate.port, batch_size=5, publish_timeout=60.0)
    store = open_store(settings)
    forwarder = Forwarder(settings, store, version="1.0", max_in_flight=1)
    try:
        async with running(forwarder):
            assert await wait_for_async(lambda: forwarder.connected, timeout=20)
            assert await wait_for_async(lambda: reads >= 1, timeout=20)  # the first read: nothing pending
            gate.freeze()  # connected, but no PUBACK comes back now
            before = reads
            store.add_punches(make_punches("door-1", 20))  # one read: 4 messages, the first in flight
            forwarder.notify_new_punches()
            # The read after those four runs although three of them wait for the window.
            assert await wait_for_async(lambda: reads >= before + 2, timeout=20), f"{reads - before} reads"
            assert store.pending_count() == 20
            gate.thaw()
            assert await wait_for_async(lambda: store.pending_count() == 0, timeout=30)
    finally:
        await gate.close()
        store.close()
