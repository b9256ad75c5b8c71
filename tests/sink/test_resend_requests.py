"""The sink asks a gateway for `punches.resend` of a day its digest check finds punches missing.

End to end with real parts: mosquitto, the daemon in central delivery reading an emulated ZK
terminal, and a sink process on a SQLite file. Punches confirmed and then lost at central (rows
deleted while the sink was away, as a restored backup would) are never re-sent by the gateway on
its own; the sink's first check after its start finds the gap, publishes one request for that
terminal and day, the missing punches arrive, and the day matches again. The rate limit is held
by a unit test with a clock of its own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from punchgate.sync.command_contract import parse_request
from punchgate.sync.sink.reconcile import DayCheck
from punchgate.sync.sink.resend import ResendRequests
from punchgate.sync.sink.settings import SinkSettings
from punchgate.sync.sink.stats import SinkStats
from tests.sink.test_sink_end_to_end import (
    CENTRAL,
    emulator_with,
    sink_check,
    sink_metric,
    unconfirmed_in,
)
from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.sink import SinkProcess
from tests.support.subscriber import Subscriber
from tests.support.zk import expected_ids


def stored_ids(db: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM punches")}


async def test_a_day_missing_at_central_is_asked_for_and_arrives(
    gateway_factory: Callable[..., GatewayProcess],
    sink_factory: Callable[..., SinkProcess],
    subscriber_factory: Callable[..., Subscriber],
    broker: Broker,
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "central.db")
    emulator = emulator_with("SN-RESEND", 120, seed=5)
    await emulator.start()
    first = sink_factory(db).start()  # the default grace: nothing is asked for while punches arrive
    gateway = gateway_factory(
        [zk_terminal("door-1", emulator, poll_interval=1, live=False, timeout=5)], mqtt=CENTRAL
    )
    answers = subscriber_factory(broker.host, broker.port, "punchgate/gw-test/commands/response")
    try:
        await gateway.wait_until_async(first.connected, timeout=30, message=first.output)
        gateway.start()
        everything = set(expected_ids(emulator))
        await gateway.wait_until_async(
            lambda: stored_ids(db) == everything and unconfirmed_in(tmp_path / "buffer.db") == 0,
            timeout=60,
            message="every punch stored and confirmed",
        )
        await gateway.wait_until_async(
            lambda: sink_check(db).returncode == 0, timeout=30, message=lambda: sink_check(db).stdout
        )
        assert first.stop() == 0

        # Three punches of one day are lost at central while the sink is away.
        with contextlib.closing(sqlite3.connect(db)) as conn:
            day = conn.execute("SELECT local_day FROM punches GROUP BY local_day LIMIT 1").fetchone()[0]
            lost = [r[0] for r in conn.execute("SELECT id FROM punches WHERE local_day = ? LIMIT 3", (day,))]
            conn.executemany("DELETE FROM punches WHERE id = ?", [(i,) for i in lost])
            conn.commit()
        assert sink_check(db).returncode == 1

        # The sink that comes back asks at once (a short grace; its own group, so nothing it is
        # sent goes to the first one's session).
        sink = sink_factory(db, "sink-2", group="recheck", mismatch_grace="1", check_interval="0.5").start()
        await gateway.wait_until_async(
            lambda: everything <= stored_ids(db), timeout=60, message=lambda: sink.output()[-3000:]
        )
        await gateway.wait_until_async(
            lambda: sink_check(db).returncode == 0, timeout=30, message=lambda: sink_check(db).stdout
        )
        requested = sink.events("sink_resend_requested")
        assert [(e["gateway"], e["device"], e["day"], e["status"]) for e in requested] == [
            ("gw-test", "door-1", day, "missing")
        ]
        assert requested[0]["central_count"] == requested[0]["gateway_count"] - 3
        assert sink_metric(sink, "punchgate_sink_resend_requests_total") == 1

        # The gateway ran it: one final answer for the terminal, the day's delivered punches queued again.
        def final_answer() -> dict[str, object] | None:
            for message in list(answers.messages):
                body = json.loads(message.payload)
                if body["id"] == requested[0]["id"] and body["status"] not in ("accepted", "running"):
                    return dict(body)
            return None

        await gateway.wait_until_async(lambda: final_answer() is not None, timeout=30, message="no answer")
        answer = final_answer()
        assert answer is not None and answer["status"] == "ok", answer
        assert answer["terminal"] == "door-1"
        assert isinstance(answer["result"], dict) and answer["result"]["requeued"] >= 3
    finally:
        await emulator.stop()


def test_one_request_per_day_within_the_interval() -> None:
    published: list[tuple[str, str]] = []
    now = [1000.0]
    settings = SinkSettings(client_id="sink-1", resend_interval=60)
    stats = SinkStats()
    requests = ResendRequests(settings, stats, lambda t, p: published.append((t, p)), clock=lambda: now[0])
    gap = DayCheck("site-a", "door-1", "2026-11-28", 10, 7, "missing")
    other = DayCheck("site-a", "door-2", "2026-11-28", 5, 5, "differs")
    matching = DayCheck("site-a", "door-3", "2026-11-28", 5, 5, "match")
    extra = DayCheck("site-a", "door-4", "2026-11-28", 5, 6, "extra")

    assert requests.ask([gap, other, matching, extra]) == 2
    assert [topic for topic, _ in published] == ["punchgate/site-a/commands/request"] * 2
    first = parse_request(published[0][1])
    assert first.command == "punches.resend" and first.terminals == ["door-1"]
    assert first.requester == "sink-1"
    assert first.args.model_dump(mode="json", by_alias=True)["day"] == "2026-11-28"

    now[0] += 59
    assert requests.ask([gap, other]) == 0
    assert stats.resend_requests == 2 and stats.resend_requests_limited == 2

    now[0] += 1
    assert requests.ask([gap]) == 1
    again = parse_request(published[-1][1])
    assert again.id != first.id  # a repeated id would be answered from the gateway's store, not run
    assert stats.resend_requests == 3

    off = ResendRequests(SinkSettings(resend=False), SinkStats(), lambda t, p: published.append((t, p)))
    assert off.ask([gap]) == 0
