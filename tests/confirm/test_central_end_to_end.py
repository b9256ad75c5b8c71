"""Central delivery end to end: a real mosquitto, the real daemon in `central` mode reading an
emulated ZK terminal, and a consumer that confirms what it received (tests/confirm/confirmer.py).

A punch the broker acknowledged stays pending until a confirmation names it; without one it is
sent again, `confirmation_delayed` is raised once and cleared once, and the retained gateway
state, /metrics and /api/devices show the unconfirmed punches. Confirmations work by id and by
batch, junk is counted, and a gateway killed with punches unconfirmed sends them again after
its restart, so they are confirmed in the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.mosquitto import free_port
from punchgate.sync.contract import day_digest
from tests.confirm.confirmer import Confirmer
from tests.health.rig import http_get
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.schemas import validate
from tests.support.zk import expected_ids

CENTRAL = {
    "delivery": "central",
    "resend_after": 2,
    "max_unconfirmed_age": 3,
    "batch_size": 50,
    "digest_interval": 1,
}


def buffer_marks(path: Path) -> dict[str, tuple[float | None, float | None]]:
    """id -> (sent_at, delivered_at) of every punch in the gateway's buffer."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        return {i: (s, d) for i, s, d in db.execute("SELECT id, sent_at, delivered_at FROM punches")}


def metrics(port: int) -> dict[str, float]:
    """Every sample of a /metrics scrape, by name plus its labels' values."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name + "".join(f":{v}" for v in sample.labels.values())] = sample.value
    return out


@pytest.fixture
def confirmer(broker: Broker) -> Iterator[Confirmer]:
    running = Confirmer(broker.host, broker.port).start()
    yield running
    running.stop()


async def test_punches_are_delivered_only_when_central_confirms(
    gateway_factory: Callable[..., GatewayProcess], confirmer: Confirmer, tmp_path: Path
) -> None:
    buffer = tmp_path / "buffer.db"
    emulator = ZkEmulator(serial_number="SN-CENTRAL", transports=("tcp",))
    emulator.generate_log(records=120, days=2, users=10, seed=5)
    emulator.add_user("42")
    await emulator.start()
    http_port = free_port()
    confirmer.confirming = False
    gateway = gateway_factory(
        [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=3)],
        http_port=http_port,
        mqtt=CENTRAL,
    )
    try:
        gateway.start()
        first = set(expected_ids(emulator))

        def all_sent_none_delivered() -> bool:
            marks = buffer_marks(buffer)
            return set(marks) == first and all(s is not None and d is None for s, d in marks.values())

        # The broker took them all; nobody confirmed: sent, unconfirmed, still pending.
        await gateway.wait_until_async(
            all_sent_none_delivered, timeout=60, message="all sent, none delivered"
        )
        await gateway.wait_until_async(
            lambda: min(confirmer.seen[i] for i in first) >= 2, timeout=30, message="every punch sent again"
        )
        await gateway.wait_until_async(
            lambda: metrics(http_port).get("punchgate_gateway_fault_active:confirmation_delayed") == 1.0,
            timeout=30,
            message="confirmation_delayed raised",
        )
        await gateway.wait_until_async(
            lambda: confirmer.last_state().get("unconfirmed") == len(first), timeout=30, message="the state"
        )
        state = confirmer.last_state()
        assert (
            state["delivery"] == "central" and state["pending"] == len(first) and state["state"] == "online"
        )
        assert state["oldest_unconfirmed_age_seconds"] > 0
        _status, body = http_get(f"http://127.0.0.1:{http_port}/api/devices")
        assert json.loads(body)["gateway"]["unconfirmed"] == len(first)
        before = metrics(http_port)
        assert before["punchgate_buffer_unconfirmed_punches"] == len(first)
        assert before["punchgate_confirmations_resent_total"] >= len(first)

        # Junk and strangers' ids are counted and change nothing.
        confirmer.publish_raw("gw-test", b"{not json")
        confirmer.publish_raw(
            "gw-test", json.dumps({"schema": "punchgate.confirm", "version": 1, "ids": ["e" * 32]}).encode()
        )
        await gateway.wait_until_async(
            lambda: metrics(http_port).get("punchgate_confirmations_unknown_ids_total") == 1.0,
            timeout=20,
            message="the unknown id counted",
        )
        assert metrics(http_port)["punchgate_confirmations_malformed_total"] == 1.0
        assert [e["payload"] for e in gateway.events("confirmation_malformed")] == ["{not json"]
        assert all(d is None for _s, d in buffer_marks(buffer).values())

        # Central confirms from now on (the re-sends bring every punch back to it).
        confirmer.confirming = True
        await gateway.wait_until_async(
            lambda: all(d is not None for _s, d in buffer_marks(buffer).values()),
            timeout=60,
            message="every punch confirmed",
        )
        await gateway.wait_until_async(
            lambda: metrics(http_port).get("punchgate_gateway_fault_active:confirmation_delayed") == 0.0,
            timeout=20,
            message="confirmation_delayed cleared",
        )
        await gateway.wait_until_async(
            lambda: confirmer.last_state().get("unconfirmed") == 0, timeout=30, message="the state at 0"
        )
        raised = [e for e in gateway.events("fault_raised") if e["code"] == "confirmation_delayed"]
        cleared = [e for e in gateway.events("fault_cleared") if e["code"] == "confirmation_delayed"]
        assert len(raised) == len(cleared) == 1

        # A crash with punches sent and unconfirmed: after the restart they go out again.
        confirmer.confirming = False
        start = dt.datetime.now().replace(microsecond=0)
        for n in range(20):
            emulator.add_punch("42", when=start + dt.timedelta(seconds=n), state=n % 2, verify=1)
        everything = set(expected_ids(emulator))
        await gateway.wait_until_async(
            lambda: (
                set(buffer_marks(buffer)) == everything
                and all(buffer_marks(buffer)[i][0] is not None for i in everything - first)
            ),
            timeout=60,
            message="the new punches sent",
        )
        gateway.kill()
        assert sum(1 for _s, d in buffer_marks(buffer).values() if d is None) == 20
        old_batch = confirmer.held["gw-test"][-1]
        # Confirmed by batch now: the restarted gateway knows the batches it sends again, not the
        # ones it sent before the crash.
        confirmer.confirming = True
        confirmer.by_batch = True
        gateway.start()
        await gateway.wait_until_async(
            lambda: all(d is not None for _s, d in buffer_marks(buffer).values()),
            timeout=60,
            message="the punches of before the crash confirmed after it",
        )
        stale = {"device": "door-1", "seq": old_batch["seq"], "count": len(old_batch["records"])}
        confirmer.publish_raw(
            "gw-test", json.dumps({"schema": "punchgate.confirm", "version": 1, "batches": [stale]}).encode()
        )
        await gateway.wait_until_async(
            lambda: metrics(http_port).get("punchgate_confirmations_unknown_batches_total") == 1.0,
            timeout=20,
            message="the batch sent before the crash: unknown to the restarted gateway",
        )
        assert metrics(http_port)["punchgate_buffer_unconfirmed_punches"] == 0.0

        # The digests name every punch the gateway holds, per terminal-local day.
        by_day: dict[str, list[str]] = {}
        for record, record_id in zip(emulator.records, expected_ids(emulator), strict=True):
            assert record.timestamp is not None
            by_day.setdefault(record.timestamp.date().isoformat(), []).append(record_id)
        wanted = [{"day": d, "count": len(i), "digest": day_digest(i)} for d, i in sorted(by_day.items())]
        await gateway.wait_until_async(
            lambda: confirmer.digests.get("door-1", {}).get("days") == wanted,
            timeout=30,
            message=lambda: f"digests {confirmer.digests.get('door-1')} to be {wanted}",
        )
        validate("strict/device-digests", confirmer.digests["door-1"])
        for state in confirmer.states:
            validate("strict/gateway-state", state)
        assert confirmer.seen_ids() == everything
        assert gateway.stop() == 0
    finally:
        await emulator.stop()
