"""End to end: uploads over raw HTTP → the real daemon's [push] listener → its SQLite buffer →
mosquitto → a subscriber. Real sockets, a real broker, the daemon as its own process.

Also: the same punch pulled (an emulated ZK terminal) and pushed gets one id and is stored and
sent once; a gateway SIGKILLed mid-upload stores everything exactly once after the terminal's
retry; an unknown serial number is refused and announced with a gateway event. And the push
terminal emulator (drivers/zk_push/emulator) against the daemon: with dropped, repeated and
garbage posts and a gateway kill every punch arrives once; a factory reset is a log_reset.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from punchgate.drivers.base import RawPunch
from punchgate.drivers.zk import parsing as zk_parsing
from punchgate.drivers.zk import protocol as zk_protocol
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.drivers.zk_push import attlog as push_attlog
from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.drivers.zk_push.config import ZkPushTerminal
from punchgate.drivers.zk_push.emulator import PushRecord, ZkPushEmulator
from punchgate.gateway.mosquitto import free_port
from punchgate.gateway.normalize import normalize_punch, record_id
from punchgate.gateway.push_backend import normalized_punches
from punchgate.sync.faults import GatewayFault
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.reconcile import buffer_rows, held_ids, pending_count, staged_rows
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_until_async
from tests.support.zk import expected_ids
from tests.support.zk_push import push_expected_ids, push_record_id

SN = "CKJT203460012"
ZONE = "Europe/Berlin"


def push_terminal(name: str, serial: str, **options: Any) -> dict[str, Any]:
    return {"type": "zk-push", "name": name, "serial_number": serial, "timezone": ZONE, **options}


def attlog(punches: list[RawPunch]) -> bytes:
    return "".join(
        f"{p.user_id}\t{p.timestamp:%Y-%m-%d %H:%M:%S}\t{p.state}\t{p.verify}\t{p.work_code}\t0\t0\n"
        for p in punches
    ).encode()


def many_punches(count: int, *, start: dt.datetime = dt.datetime(2026, 2, 2, 6, 0)) -> list[RawPunch]:
    return [
        RawPunch(
            user_id=str(100 + i % 37),
            timestamp=start + dt.timedelta(seconds=17 * i),
            state=i % 2,
            verify=(1, 15, 2)[i % 3],
        )
        for i in range(count)
    ]


class Terminal:
    """The terminal's side of the protocol, as raw HTTP requests."""

    def __init__(self, session: aiohttp.ClientSession, port: int, serial: str = SN) -> None:
        self.session, self.port, self.serial = session, port, serial
        self.url = f"http://127.0.0.1:{port}/iclock"

    async def handshake(self) -> tuple[int, dict[str, str]]:
        params = {"SN": self.serial, "options": "all", "pushver": "2.4.1"}
        async with self.session.get(self.url + "/cdata", params=params) as response:
            text = await response.text()
        options = dict(line.split("=", 1) for line in text.splitlines()[1:] if "=" in line)
        return response.status, options

    async def upload(self, body: bytes, stamp: int) -> tuple[int, str]:
        params = {"SN": self.serial, "table": "ATTLOG", "Stamp": str(stamp)}
        async with self.session.post(self.url + "/cdata", params=params, data=body) as response:
            return response.status, await response.text()

    async def heartbeat(self, info: str | None = None) -> int:
        params = {"SN": self.serial, **({"INFO": info} if info else {})}
        async with self.session.get(self.url + "/getrequest", params=params) as response:
            return response.status


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def start_push_gateway(
    gateway_factory: Callable[..., GatewayProcess],
    terminals: list[dict[str, Any]],
    *,
    http_port: int | None = None,
    **push: Any,
) -> tuple[GatewayProcess, int]:
    """A gateway with a [push] listener on a free port, started; (the gateway, that port)."""
    port = free_port()
    gateway = gateway_factory(
        terminals, sections={"push": {"bind": "127.0.0.1", "port": port, **push}}, http_port=http_port
    )
    gateway.start()
    return gateway, port


def records(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [r for m in subscriber.on("/punches") for r in m.json()["records"]]


async def test_a_pushed_punch_reaches_the_subscriber_with_source_push(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
) -> None:
    http_port = free_port()
    gateway, port = start_push_gateway(gateway_factory, [push_terminal("door-1", SN)], http_port=http_port)
    terminal = Terminal(session, port)
    status, options = await terminal.handshake()
    assert status == 200 and options["ATTLOGStamp"] == "0" and options["TimeZone"] in ("1", "2")
    assert await terminal.heartbeat("Ver 8.0.4.7-20230615,2,0,3,192.168.1.201,10") == 200
    punches = many_punches(3)
    assert await terminal.upload(attlog(punches), stamp=3) == (200, "OK: 3")

    ids = {record_id(SN, p) for p in punches}
    assert not await subscriber.missing_after(ids, timeout=30)
    got = [r for r in records(subscriber) if r["id"] in ids]
    assert {r["source"] for r in got} == {"push"}
    assert {r["serial"] for r in got} == {SN}
    first = min(got, key=lambda r: r["local_time"])
    assert first["local_time"] == "2026-02-02T06:00:00" and first["utc_time"] == "2026-02-02T05:00:00Z"
    assert subscriber.reconciler.duplicates == 0

    # Same state topic as pulled terminals: online, with what the heartbeat's INFO said.
    def state() -> dict[str, Any] | None:
        states = subscriber.on("/devices/door-1/state")
        return states[-1].json() if states else None

    await wait_until_async(lambda: (state() or {}).get("state") == "online", timeout=20, message="online")
    current = state()
    assert current is not None and current["serial_number"] == SN and current["record_count"] == 3
    async with session.get(f"http://127.0.0.1:{http_port}/metrics") as response:
        metrics = await response.text()
    assert 'punchgate_push_requests_total{outcome="accepted"} 3.0' in metrics
    assert "punchgate_push_punches_received_total 3.0" in metrics
    assert 'punchgate_device_state{device="door-1",state="online"} 1.0' in metrics

    # The stamp outlives a restart: the terminal resumes where it was.
    assert gateway.stop() == 0
    gateway.start()
    status, options = await terminal.handshake()
    assert status == 200 and options["ATTLOGStamp"] == "3"


def test_the_same_punch_pulled_and_pushed_has_one_id() -> None:
    """normalize directly: a 40-byte record decoded the way the pull driver does, and an ATTLOG line."""
    when = dt.datetime(2026, 3, 29, 1, 30, 5)
    record = zk_protocol.AttendanceRecord(
        uid=12, user_id="1017", time_raw=zk_protocol.encode_time(when), timestamp=when, verify=15, state=1
    )
    wire = zk_protocol.encode_attendance(record, 40)
    pulled = zk_parsing.raw_punch_from_record(zk_protocol.decode_attendance(wire, 40))
    assert pulled.timestamp == when
    pushed = push_attlog.parse_attlog_line("1017\t2026-03-29 01:30:05\t1\t15\t0\t0\t0")
    zone = ZoneInfo(ZONE)
    now = dt.datetime(2026, 3, 30, tzinfo=dt.UTC)
    as_pulled = normalize_punch(
        pulled, device="door-pull", serial_number=SN, zone=zone, source="poll", historical=True, now=now
    )
    as_pushed = normalize_punch(
        pushed,
        device="door-push",
        serial_number=SN,
        zone=zone,
        source="push",
        historical=True,
        driver_type="zk-push",
        now=now,
    )
    assert as_pulled.id == as_pushed.id == record_id(SN, pushed)
    assert (as_pulled.utc_time, as_pulled.state_name, as_pulled.verify_name) == (
        as_pushed.utc_time,
        as_pushed.state_name,
        as_pushed.verify_name,
    )


def test_the_buffer_keeps_a_punch_pulled_and_pushed_once(tmp_path: Path) -> None:
    settings = BufferSettings.model_validate({"path": tmp_path / "buffer.db", "min_free_disk_mb": 0})
    store = Store.open(settings, gateway_id="gw")
    try:
        line = "1017\t2026-03-29 01:30:05\t1\t15\t0"
        raw = push_attlog.parse_attlog_line(line)
        zone = ZoneInfo(ZONE)
        common: dict[str, Any] = {"serial_number": SN, "zone": zone, "historical": True}
        pulled = normalize_punch(raw, device="door-pull", source="poll", **common)
        pushed = normalize_punch(raw, device="door-push", source="push", driver_type="zk-push", **common)
        assert store.add_punches([pulled]) == [pulled.id]
        assert store.add_punches([pushed]) == []
        assert store.punch_count() == 1
    finally:
        store.close()


async def test_a_terminal_pulled_and_pushed_delivers_each_punch_once(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    emulator = ZkEmulator(serial_number=SN, transports=("tcp",))
    emulator.generate_log(records=40, days=3, users=6, seed=11)
    await emulator.start()
    try:
        _gateway, port = start_push_gateway(
            gateway_factory,
            [
                zk_terminal("door-pull", emulator, poll_interval=3600, live=False, timezone=ZONE),
                push_terminal("door-push", SN),
            ],
        )
        ids = set(expected_ids(emulator))
        assert not await subscriber.missing_after(ids, timeout=60)
        # Now the terminal pushes its whole log too (its first upload after being set to ADMS).
        lines = [
            RawPunch(user_id=r.user_id, timestamp=r.timestamp, state=r.state, verify=r.verify)
            for r in emulator.records
            if r.timestamp is not None
        ]
        assert await Terminal(session, port).upload(attlog(lines), stamp=40) == (200, "OK: 40")
        assert buffer_rows(tmp_path / "buffer.db") == (40, 40)
        pushed_device = [r for m in subscriber.on("/devices/door-push/punches") for r in m.json()["records"]]
        assert pushed_device == []  # nothing new to send
        assert subscriber.reconciler.duplicates == 0
    finally:
        await emulator.stop()


@pytest.mark.parametrize("when", ["half_body_sent", "whole_body_sent", "after_commit"])
async def test_sigkill_mid_upload_then_retry_stores_everything_once(
    when: str,
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway, port = start_push_gateway(gateway_factory, [push_terminal("door-1", SN)])
    terminal = Terminal(session, port)
    assert (await terminal.handshake())[0] == 200
    earlier = many_punches(50, start=dt.datetime(2026, 1, 5, 7, 0))
    assert await terminal.upload(attlog(earlier), stamp=50) == (200, "OK: 50")
    punches = many_punches(5000)
    body = attlog(punches)

    # The upload the terminal never gets an answer to.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /iclock/cdata?SN={SN}&table=ATTLOG&Stamp=5050 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + (body[: len(body) // 2] if when == "half_body_sent" else body))
    await writer.drain()
    if when == "after_commit":
        await gateway.wait_until_async(
            lambda: len(held_ids(tmp_path / "buffer.db")) == 5050, timeout=30, message="the upload committed"
        )
    gateway.kill()
    writer.close()
    del reader

    # After the restart the terminal starts over: handshake, then the same upload again.
    gateway.start()
    status, options = await terminal.handshake()
    assert status == 200
    # The stamp never runs ahead of the buffer: the new one only once all 5000 are stored
    # (in the outbox or staged: answered backlog parts are moved in after the restart too).
    held = len(held_ids(tmp_path / "buffer.db"))
    if when == "half_body_sent":
        assert options["ATTLOGStamp"] == "50" and held == 50
    elif options["ATTLOGStamp"] == "5050":
        assert held == 5050
    else:
        assert options["ATTLOGStamp"] == "50"
    # It never had its OK, so it sends the same upload again.
    assert await terminal.upload(body, stamp=5050) == (200, "OK: 5000")
    assert len(held_ids(tmp_path / "buffer.db")) == 5050
    # Staged a second time, every punch is stored once when they are moved.
    await gateway.wait_until_async(
        lambda: staged_rows(tmp_path / "buffer.db") == 0, timeout=30, message="the staged punches moved"
    )
    assert buffer_rows(tmp_path / "buffer.db") == (5050, 5050)
    ids = {record_id(SN, p) for p in earlier + punches}
    assert not await subscriber.missing_after(ids, timeout=90)
    assert (await terminal.handshake())[1]["ATTLOGStamp"] == "5050"


async def test_backlog_parts_answered_but_not_moved_yet_reach_central_after_a_kill(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A backlog part is staged and answered at once, and moved into the outbox later
    (gateway/staged_mover.py). What was staged when the gateway died is moved at its next
    start: the file is left as a kill at that instant leaves it (staged rows, one of them a
    punch the outbox holds already), then the gateway starts on it."""
    gateway, port = start_push_gateway(gateway_factory, [push_terminal("door-1", SN)])
    terminal = Terminal(session, port)
    assert (await terminal.upload(attlog(many_punches(10)), stamp=10)) == (200, "OK: 10")
    stored = {record_id(SN, p) for p in many_punches(10)}
    assert not await subscriber.missing_after(stored, timeout=60)
    # The kill must come after the delivery mark, not just after the subscriber got them:
    # killed between the two, the gateway sends the ten again (at least once), and the
    # duplicates counted below would be those, not the staged parts' moves.
    await gateway.wait_until_async(
        lambda: pending_count(tmp_path / "buffer.db") == 0, timeout=30, message="the ten marked delivered"
    )
    gateway.kill()

    answered = many_punches(1200)[9:]  # the tenth punch is stored already
    push = PushTerminal.from_config(ZkPushTerminal.model_validate(push_terminal("door-1", SN)), ZONE)
    store = Store.open(
        BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
    )
    try:
        now = dt.datetime.now(dt.UTC)
        for start in range(0, len(answered), 500):
            part = normalized_punches(push, answered[start : start + 500], now)
            assert store.add_or_stage(part, stage=True) is None
        assert store.staged_count() == len(answered)
    finally:
        store.close()

    gateway.start()
    ids = {record_id(SN, p) for p in many_punches(1200)}
    assert not await subscriber.missing_after(ids, timeout=90)
    await gateway.wait_until_async(
        lambda: staged_rows(tmp_path / "buffer.db") == 0, timeout=30, message="the staged punches moved"
    )
    assert buffer_rows(tmp_path / "buffer.db") == (1200, 1200)
    assert subscriber.reconciler.duplicates == 0


async def test_a_backlog_answered_just_before_a_stop_is_forwarded_before_the_gateway_exits(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Parts staged while the terminal was still sending (moves held back) are moved and
    forwarded by the stop's last drain, not left for the next start."""
    gateway, port = start_push_gateway(gateway_factory, [push_terminal("door-1", SN)])
    terminal = Terminal(session, port)
    punches = many_punches(3000)
    for start in range(0, len(punches), 500):
        part = punches[start : start + 500]
        assert await terminal.upload(attlog(part), stamp=start + 500) == (200, "OK: 500")
    assert gateway.stop() == 0
    assert staged_rows(tmp_path / "buffer.db") == 0
    assert pending_count(tmp_path / "buffer.db") == 0
    assert not await subscriber.missing_after({record_id(SN, p) for p in punches}, timeout=30)


async def test_an_unknown_serial_is_refused_with_a_gateway_event(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gateway, port = start_push_gateway(gateway_factory, [push_terminal("door-1", SN)])
    stranger = Terminal(session, port, serial="STRANGER0042")
    for _ in range(3):
        status, text = await stranger.upload(attlog(many_punches(2)), stamp=2)
        assert status == 403 and "STRANGER0042 is not configured" in text

    def events() -> list[dict[str, Any]]:
        found = [m.json() for m in subscriber.messages if m.topic.endswith("/events")]
        return [e for e in found if e["code"] == GatewayFault.UNKNOWN_TERMINAL]

    await wait_until_async(lambda: events(), timeout=20, message="unknown_terminal event")
    (event,) = events()
    assert event["device"] == "" and event["event"] == "fault_raised" and event["severity"] == "warning"
    assert "STRANGER0042" in event["detail"] and "127.0.0.1" in event["detail"]
    assert buffer_rows(tmp_path / "buffer.db") == (0, 0)
    assert [e["serial"] for e in gateway.events("unknown_terminal")] == ["STRANGER0042"]


# --- with the push-terminal emulator -----------------------------------------------------------


def emulated_id(record: PushRecord) -> str:
    """The record id the gateway gives a punch of the emulated terminal (serial SN)."""
    return push_record_id(SN, record)


def emulated_ids(emulator: ZkPushEmulator) -> set[str]:
    return push_expected_ids(emulator)


def start_emulated_terminal(
    gateway_factory: Callable[..., GatewayProcess], **options: Any
) -> tuple[GatewayProcess, ZkPushEmulator]:
    """A started gateway with the push terminal door-1 (serial SN, GB18030 text), and the push
    emulator of that terminal pointed at it, retrying after half a second; not yet running."""
    gateway, port = start_push_gateway(gateway_factory, [push_terminal("door-1", SN, encoding="gb18030")])
    emulator = ZkPushEmulator(
        f"http://127.0.0.1:{port}",
        SN,
        timezone=ZONE,
        encoding="gb18030",
        delay=0.5,
        error_delay=0.5,
        **options,
    )
    return gateway, emulator


async def test_an_emulated_terminal_with_faults_delivers_every_punch_once(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    gateway, emulator = start_emulated_terminal(
        gateway_factory, records=1200, users=30, seed=7, chunk_size=200
    )
    emulator.set_fault("drop_mid_post", times=2)
    emulator.set_fault("duplicate_uploads", times=2)
    emulator.set_fault("garbage_lines", count=2, times=1)
    async with emulator:
        assert not await subscriber.missing_after(emulated_ids(emulator), timeout=120)
        # A punch as it happens: pushed in real time, forwarded as live.
        live = emulator.punch("7", state=1, verify=15)
        live_id = emulated_id(live)
        assert not await subscriber.missing_after({live_id}, timeout=30)
        (record,) = [r for r in records(subscriber) if r["id"] == live_id]
        assert record["source"] == "push" and record["historical"] is False

        # The gateway dies while the terminal keeps punching; after the restart it catches up.
        emulator.punch_rate = 0.0
        gateway.kill()
        for pin in ("8", "9", "10"):
            emulator.punch(pin)
        gateway.start()
        assert not await subscriber.missing_after(emulated_ids(emulator), timeout=90)
    rows, distinct = buffer_rows(tmp_path / "buffer.db")
    assert rows == distinct == len(emulated_ids(emulator))
    unparsed = gateway.events("push_line_unparsed")
    assert unparsed and all(event["text"] for event in unparsed), "the garbage lines, logged with their text"
    faults = [m.json() for m in subscriber.on("/devices/door-1/events")]
    assert any(f["code"] == "protocol_error" and f["event"] == "fault_raised" for f in faults)


@pytest.mark.parametrize("records", [10_000, pytest.param(100_000, marks=pytest.mark.long)])
async def test_a_backlog_kept_through_an_outage_reaches_central_whole(
    records: int, gateway_factory: Callable[..., GatewayProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    """The gateway is down when the terminal starts (an outage): its uploads fail and it keeps
    its records. Back up, the gateway takes the whole backlog, and central gets every punch."""
    gateway, emulator = start_emulated_terminal(gateway_factory, records=records, seed=9)
    gateway.stop()
    async with emulator:
        await wait_until_async(lambda: emulator.counters.retries >= 2, timeout=30, message="failed uploads")
        assert emulator.stamp == 0  # nothing answered: the terminal holds everything
        gateway.start()
        assert not await subscriber.missing_after(emulated_ids(emulator), timeout=240)
    await gateway.wait_until_async(lambda: staged_rows(tmp_path / "buffer.db") == 0, timeout=30)
    rows, distinct = buffer_rows(tmp_path / "buffer.db")
    assert rows == distinct == records


def staged_beyond(db: Path, held: int) -> Callable[[], bool]:
    """True while parts wait staged and the buffer holds more than `held` punches."""
    return lambda: staged_rows(db) > 0 and len(held_ids(db)) > held


async def test_a_backlog_upload_survives_kills_while_parts_wait_staged(
    gateway_factory: Callable[..., GatewayProcess], subscriber: Subscriber, tmp_path: Path
) -> None:
    """The emulated terminal uploads a 20,000-record backlog; the gateway is SIGKILLed three
    times, each time while answered parts wait staged (moves are held back while parts keep
    coming). The terminal resends what it had no answer for; every punch reaches central,
    and the buffer holds each once."""
    gateway, emulator = start_emulated_terminal(gateway_factory, records=20_000, seed=8)
    db = tmp_path / "buffer.db"
    async with emulator:
        for kill in range(3):
            await wait_until_async(
                staged_beyond(db, 3_000 * (kill + 1)),
                timeout=60,
                interval=0.005,
                message=f"parts staged before kill {kill + 1}",
            )
            gateway.kill()
            gateway.start()
        assert not await subscriber.missing_after(emulated_ids(emulator), timeout=120)
    await gateway.wait_until_async(lambda: staged_rows(db) == 0, timeout=30, message="everything moved")
    rows, distinct = buffer_rows(db)
    assert rows == distinct == len(emulated_ids(emulator))


async def test_an_emulated_factory_reset_is_a_log_reset_and_loses_nothing(
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
) -> None:
    gateway, emulator = start_emulated_terminal(gateway_factory, records=300, seed=5, reboot_seconds=0.5)
    async with emulator:
        before = emulated_ids(emulator)
        assert not await subscriber.missing_after(before, timeout=60)
        emulator.set_fault("factory_reset")
        await wait_until_async(lambda: emulator.counters.reboots >= 1, timeout=20, message="the reset reboot")
        ids = {emulated_id(emulator.punch(pin)) for pin in ("7", "8")}
        assert not await subscriber.missing_after(ids, timeout=60)

    def device_events() -> list[dict[str, Any]]:
        return [m.json() for m in subscriber.on("/devices/door-1/events")]

    await wait_until_async(
        lambda: any(e["code"] == "log_reset" and e["event"] == "fault_raised" for e in device_events()),
        timeout=20,
        message="log_reset raised",
    )
    assert any(e.get("code") == 22 for e in gateway.events("push_operation")), (
        "OPLOG 22 (factory reset) logged"
    )
