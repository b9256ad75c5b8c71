"""The push receiver over real sockets: every endpoint and every bad request, as raw HTTP.

The listener is the gateway's own (`punchgate.gateway.push.PushService`) on a free loopback
port, with a real buffer file; the rest of the gateway is a small stand-in (`PushRig`) that
holds what the service uses of it: the settings, the store, a forwarder that only counts
notifications, the terminals' health models and the gateway's fault set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
from click.testing import CliRunner

from punchgate.drivers.base import RawPunch
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push import attlog
from punchgate.gateway import cli
from punchgate.gateway import push as push_module
from punchgate.gateway.faults import FaultSet, FaultTransition
from punchgate.gateway.health import DeviceHealth, Thresholds, calendar_for
from punchgate.gateway.mosquitto import free_port
from punchgate.gateway.normalize import record_id
from punchgate.gateway.push import PushService, push_terminals
from punchgate.gateway.settings import ConfigError, Settings, load_settings, settings_from_dict
from punchgate.gateway.staged_mover import STAGE_MIN, StagedMover
from punchgate.sync.faults import GatewayFault
from punchgate.sync.store import Store
from tests.support.broker import make_test_pki
from tests.support.waiting import wait_until_async

SN = "CKJT203460012"
SN2 = "BOCK201261234"


def push_terminal(name: str, serial: str, **options: Any) -> dict[str, Any]:
    return {"type": "zk-push", "name": name, "serial_number": serial, **options}


class CountingForwarder:
    def __init__(self) -> None:
        self.notified = 0

    def notify_new_punches(self) -> None:
        self.notified += 1


class PushRig:
    """What PushService uses of the gateway's Application, with a real buffer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = Store.open(settings.buffer, gateway_id=settings.gateway_id)
        self.forwarder = CountingForwarder()
        self.gateway_faults = FaultSet("")
        self.transitions: list[FaultTransition] = []
        self.gateway_faults.on_transition.append(self.transitions.append)
        self.devices: dict[str, DeviceHealth] = {}
        for terminal in push_terminals(settings):
            health_settings = settings.terminal_health(terminal)
            health = DeviceHealth(
                terminal.name,
                Thresholds.from_settings(health_settings),
                calendar=calendar_for(health_settings, settings.terminal_timezone(terminal)),
            )
            health.faults.on_transition.append(self.transitions.append)
            self.devices[terminal.name] = health
        # Not run as a task: `punches()` moves what was staged when a test looks.
        self.staged_mover = StagedMover(self)  # type: ignore[arg-type]
        self.service = PushService(self, push_terminals(settings))  # type: ignore[arg-type]
        self.session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def port(self) -> int:
        return self.service.port

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str, Mapping[str, str]]:
        assert self.session is not None
        async with self.session.request(
            method, self.base + path, params=params, data=body, headers=headers
        ) as response:
            return response.status, await response.text(errors="replace"), response.headers

    async def upload(self, serial: str, table: str, body: bytes, stamp: str | None = None) -> tuple[int, str]:
        params = {"SN": serial, "table": table}
        if stamp is not None:
            params["Stamp"] = stamp
        status, text, _ = await self.request("POST", "/iclock/cdata", params, body)
        return status, text

    async def handshake(self, serial: str, **extra: str) -> tuple[int, str]:
        status, text, _ = await self.request(
            "GET", "/iclock/cdata", {"SN": serial, "options": "all", "pushver": "2.4.1", **extra}
        )
        return status, text

    def meta(self, key: str) -> dict[str, Any]:
        assert self.store is not None
        return self.store.get_device_meta(key)

    def punches(self) -> list[dict[str, Any]]:
        """Every stored punch's record JSON, oldest first (staged ones moved first, as the
        gateway's mover does: tests/gateway/test_staged_mover.py)."""
        assert self.store is not None
        if self.store.staged_count():
            self.staged_mover.after_move(self.store.move_staged(100_000))
        return [json.loads(row.payload) for row in self.store.pending_batch(10_000)]

    def raised(self, code: str, device: str = "") -> list[FaultTransition]:
        return [t for t in self.transitions if t.code == code and t.device == device and t.raised]


def rig_settings(tmp_path: Path, terminals: list[dict[str, Any]], **push: Any) -> Settings:
    return settings_from_dict(
        {
            "gateway_id": "gw-push",
            "timezone": "Europe/Berlin",
            "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0, **push.pop("buffer", {})},
            "push": {"bind": "127.0.0.1", "port": free_port(), **push},
            "terminals": terminals,
        }
    )


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Any]:
    rigs: list[PushRig] = []

    async def make(terminals: list[dict[str, Any]] | None = None, **push: Any) -> PushRig:
        if terminals is None:
            terminals = [push_terminal("door-1", SN, timezone="Asia/Shanghai")]
        rig = PushRig(rig_settings(tmp_path, terminals, **push))
        rigs.append(rig)
        await rig.service.start()
        rig.session = aiohttp.ClientSession()
        return rig

    yield make


@pytest.fixture
async def rig(make_rig: Any) -> AsyncIterator[PushRig]:
    made: PushRig = await make_rig()
    try:
        yield made
    finally:
        await close_rig(made)


@contextlib.asynccontextmanager
async def open_rig(tmp_path: Path) -> AsyncIterator[PushRig]:
    """A started receiver for the default push terminal, closed afterwards (other modules' rigs)."""
    made = PushRig(rig_settings(tmp_path, [push_terminal("door-1", SN, timezone="Asia/Shanghai")]))
    await made.service.start()
    made.session = aiohttp.ClientSession()
    try:
        yield made
    finally:
        await close_rig(made)


async def close_rig(rig: PushRig) -> None:
    if rig.session is not None:
        await rig.session.close()
    await rig.service.close()
    if rig.store is not None:
        rig.store.close()
        rig.store = None


def buffer_bytes(path: Path) -> bytes:
    """The buffer file and its WAL and companions, as bytes (to look for what must never be kept)."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file())


async def exchange(port: int, raw: bytes, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes, read until the server closes; (status, body). Status 0: closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


ATTLOG = (
    b"7\t2026-03-02 08:01:15\t0\t1\t0\t0\t0\n"
    b"8\t2026-03-02 08:03:40\t0\t15\t0\t0\t0\n"
    b"7\t2026-03-02 17:30:02\t1\t1\t0\t0\t0\n"
)


# --- the handshake -------------------------------------------------------------------------------


async def test_handshake_answers_the_option_block(rig: PushRig) -> None:
    status, text, headers = await rig.request(
        "GET", "/iclock/cdata", {"SN": SN, "options": "all", "pushver": "2.4.1", "language": "69"}
    )
    assert status == 200, text
    lines = text.splitlines()
    assert lines[0] == f"GET OPTION FROM: {SN}"
    options = dict(line.split("=", 1) for line in lines[1:])
    assert options["ATTLOGStamp"] == options["OPERLOGStamp"] == options["ATTPHOTOStamp"] == "0"
    assert options["TimeZone"] == "8"  # Asia/Shanghai
    assert options["Realtime"] == "1" and options["Delay"] == "10" and options["ErrorDelay"] == "30"
    assert options["TransInterval"] == "1"
    flag = options["TransFlag"]
    assert flag.startswith("TransData ") and "AttLog" in flag and "OpLog" in flag
    assert "FP" not in flag  # never ask for fingerprint templates
    assert "AttPhoto" not in flag  # not in the terminal's tables
    assert "Date" in headers  # some firmware sets its clock from it
    assert rig.devices["door-1"].last_contact is not None


async def test_old_firmware_gets_the_old_stamp_names_and_bits(make_rig: Any) -> None:
    rig = await make_rig(
        [push_terminal("door-1", SN, timezone="Asia/Kolkata", realtime=False, tables=["ATTLOG"], delay=30)]
    )
    try:
        status, text, _ = await rig.request("GET", "/iclock/cdata", {"SN": SN, "options": "all"})
        assert status == 200
        options = dict(line.split("=", 1) for line in text.splitlines()[1:])
        assert options["Stamp"] == options["OpStamp"] == options["PhotoStamp"] == "0"
        assert "ATTLOGStamp" not in options
        assert options["TransFlag"] == "1000000000"
        assert options["TimeZone"] == "5.5" and options["Realtime"] == "0" and options["Delay"] == "30"
    finally:
        await close_rig(rig)


# --- ATTLOG ------------------------------------------------------------------------------------


async def test_attlog_is_stored_then_answered_and_its_stamp_persisted(rig: PushRig) -> None:
    status, text = await rig.upload(SN, "ATTLOG", ATTLOG, stamp="9001")
    assert (status, text) == (200, "OK: 3")
    punches = rig.punches()
    assert [(p["user_id"], p["local_time"], p["source"]) for p in punches] == [
        ("7", "2026-03-02T08:01:15", "push"),
        ("8", "2026-03-02T08:03:40", "push"),
        ("7", "2026-03-02T17:30:02", "push"),
    ]
    first = punches[0]
    assert first["serial"] == SN and first["utc_time"] == "2026-03-02T00:01:15Z"  # Asia/Shanghai
    assert first["state"] == {"code": 0, "name": "check_in"}
    assert punches[1]["verify"] == {"code": 15, "name": "face"}
    assert first["historical"] is True  # an old punch: backlog
    raw = RawPunch(user_id="7", timestamp=dt.datetime(2026, 3, 2, 8, 1, 15), state=0, verify=1)
    assert first["id"] == record_id(SN, raw)
    assert rig.meta("door-1")["push_stamps"] == {"ATTLOG": "9001"}
    assert rig.meta("door-1")["serial_number"] == SN
    assert rig.forwarder.notified == 1
    health = rig.devices["door-1"]
    assert health.punches_new_total == 3 and health.last_punch_at is not None
    # The next handshake resumes from the stored stamp.
    _, reply = await rig.handshake(SN)
    assert "ATTLOGStamp=9001" in reply.splitlines()


async def test_the_same_upload_again_is_answered_and_stored_once(rig: PushRig) -> None:
    assert await rig.upload(SN, "ATTLOG", ATTLOG, stamp="9001") == (200, "OK: 3")
    assert await rig.upload(SN, "ATTLOG", ATTLOG.replace(b"\n", b"\r\n"), stamp="9001") == (200, "OK: 3")
    assert len(rig.punches()) == 3
    assert rig.devices["door-1"].punches_new_total == 3


async def test_a_fresh_realtime_punch_is_live(rig: PushRig) -> None:
    now = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=8))).replace(tzinfo=None)
    line = f"9\t{now:%Y-%m-%d %H:%M:%S}\t0\t1\t0\n".encode()
    assert await rig.upload(SN, "ATTLOG", line, stamp="1") == (200, "OK: 1")
    (punch,) = rig.punches()
    assert punch["historical"] is False and punch["source"] == "push"


async def test_a_bad_line_is_kept_aside_and_the_rest_stored(rig: PushRig) -> None:
    body = (
        ATTLOG + b"9\t2026-13-45 99:00:00\t0\t1\n" + b"no tabs at all\n" + b"10\t2026-03-02 09:00:00\tx\t1\n"
    )
    status, text = await rig.upload(SN, "ATTLOG", body, stamp="9004")
    assert (status, text) == (200, "OK: 3")
    assert len(rig.punches()) == 3
    meta = rig.meta("door-1")
    kept = meta["push_unparsed"]
    assert [line["line"] for line in kept] == [4, 5, 6]
    assert kept[0]["text"] == "9\t2026-13-45 99:00:00\t0\t1" and kept[0]["table"] == "ATTLOG"
    assert "not YYYY-MM-DD" in kept[0]["problem"] and "status" in kept[2]["problem"]
    assert meta["push_stamps"]["ATTLOG"] == "9004"  # what was sent is stored: the good lines and the bad text
    assert DeviceFault.PROTOCOL_ERROR in rig.devices["door-1"].faults.active
    assert rig.service.receiver is not None and rig.service.receiver.counts["unparsed_lines"] == 3


def backlog_part(dead_clock: int, good: int) -> bytes:
    """An ATTLOG part: `dead_clock` punches dated 1999 (a terminal whose clock battery died),
    then `good` ordinary ones."""
    lines = [f"{n}\t1999-12-31 08:{n % 60:02d}:00\t0\t1\t0\n" for n in range(dead_clock)]
    lines += [f"{n}\t2026-02-03 07:{n % 60:02d}:{n // 60:02d}\t0\t1\t0\n" for n in range(good)]
    return "".join(lines).encode()


async def test_a_staged_backlog_part_with_impossible_times_raises_clock_invalid(rig: PushRig) -> None:
    assert rig.store is not None
    assert await rig.upload(SN, "ATTLOG", backlog_part(3, STAGE_MIN), stamp="60") == (
        200,
        f"OK: {STAGE_MIN + 3}",
    )
    assert rig.store.staged_count("door-1") == STAGE_MIN + 3  # staged, not in the outbox yet
    assert rig.raised("clock_invalid", "door-1")


async def test_only_impossible_times_new_to_the_buffer_count_when_staged(rig: PushRig) -> None:
    assert rig.store is not None
    assert await rig.upload(SN, "ATTLOG", backlog_part(2, 0), stamp="2") == (200, "OK: 2")  # stored directly
    fault = rig.devices["door-1"].faults.active[DeviceFault.CLOCK_INVALID]
    assert fault.detail.startswith("2 punches with impossible times")

    # The same two again and a third, in a staged part: only the third is new.
    assert await rig.upload(SN, "ATTLOG", backlog_part(3, STAGE_MIN), stamp="60") == (
        200,
        f"OK: {STAGE_MIN + 3}",
    )

    assert rig.store.staged_count("door-1") == STAGE_MIN + 3
    fault = rig.devices["door-1"].faults.active[DeviceFault.CLOCK_INVALID]
    assert fault.detail.startswith("1 punches with impossible times")


async def test_a_body_that_is_not_text_costs_nothing_but_its_lines(rig: PushRig) -> None:
    junk = b"\xff\xfe\x80\x81garbage\x00\x01"
    body = bytes(range(256)) * 16 + b"\n" + ATTLOG + junk + b"\n"
    status, text = await rig.upload(SN, "ATTLOG", body)
    assert status == 200 and text == "OK: 3"
    kept = rig.meta("door-1")["push_unparsed"]
    assert bytes.fromhex(kept[-1]["raw_hex"]) == junk  # bytes no text can show are kept as bytes


async def test_a_stamp_that_goes_back_is_a_log_reset_and_is_stored(rig: PushRig) -> None:
    assert (await rig.upload(SN, "ATTLOG", ATTLOG, stamp="9001"))[0] == 200
    assert DeviceFault.LOG_RESET not in rig.devices["door-1"].faults.active
    again = b"7\t2026-03-03 08:00:00\t0\t1\t0\n"
    assert await rig.upload(SN, "ATTLOG", again, stamp="12") == (200, "OK: 1")
    active = rig.devices["door-1"].faults.active
    assert DeviceFault.LOG_RESET in active and "from 9001 to 12" in active[DeviceFault.LOG_RESET].detail
    assert rig.meta("door-1")["push_stamps"]["ATTLOG"] == "12"  # so nothing newer than 12 is skipped


async def test_a_full_buffer_answers_503_and_keeps_the_old_stamp(make_rig: Any) -> None:
    rig = await make_rig(buffer={"max_pending": 2})
    try:
        status, text = await rig.upload(SN, "ATTLOG", ATTLOG, stamp="9001")
        assert status == 503 and "cannot store" in text
        assert len(rig.punches()) == 2  # what fitted is stored
        assert rig.meta("door-1").get("push_stamps", {}).get("ATTLOG") is None  # the terminal sends again
    finally:
        await close_rig(rig)


async def test_a_backlog_part_without_room_is_refused_whole_with_503(make_rig: Any) -> None:
    rig = await make_rig(buffer={"max_pending": STAGE_MIN + 10})
    try:
        assert rig.store is not None
        part = backlog_part(0, STAGE_MIN)
        assert await rig.upload(SN, "ATTLOG", part, stamp=str(STAGE_MIN)) == (200, f"OK: {STAGE_MIN}")
        status, text = await rig.upload(
            SN, "ATTLOG", backlog_part(0, 2 * STAGE_MIN)[len(part) :], stamp="100"
        )
        assert status == 503 and "cannot store" in text
        assert rig.store.staged_count() == STAGE_MIN  # nothing of the refused part, the first one whole
        assert rig.meta("door-1")["push_stamps"]["ATTLOG"] == str(STAGE_MIN)  # it sends the part again
    finally:
        await close_rig(rig)


# --- OPERLOG, photos, heartbeats, command results --------------------------------------------


async def test_operlog_keeps_the_user_list_and_never_a_template_or_password(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN, encoding="gb18030")])
    try:
        template = "TMP=" + "Sm9obiBEb2UgZmluZ2VycHJpbnQ" * 40
        body = (
            "USER PIN=7\tName=李伟\tPri=0\tPasswd=secret77\tCard=[9A00C45B01]\tGrp=1\tTZ=0000000000000000\n"
            "USER PIN=8\tName=Ana\tPri=14\tPasswd=\tCard=\tGrp=1\tTZ=\n"
            f"FP PIN=7\tFID=6\tSize=1024\tValid=1\t{template}\n"
            "OPLOG 4\t0\t2026-03-02 08:10:00\t0\t0\t0\t0\n"
            "OPLOG 3\t0\t2026-03-02 08:11:00\t55\t0\t0\t0\n"
        ).encode("gb18030")
        assert await rig.upload(SN, "OPERLOG", body, stamp="77") == (200, "OK: 5")
        roster = rig.meta("door-1/roster")["users"]
        assert roster["7"] == {
            "name": "李伟",
            "privilege": 0,
            "group": "1",
            "has_password": True,
            "has_card": True,
        }
        assert roster["8"]["privilege"] == 14 and roster["8"]["has_card"] is False
        assert rig.meta("door-1")["push_stamps"] == {"OPERLOG": "77"}
        assert rig.service.receiver is not None and rig.service.receiver.counts["biometric_lines"] == 1
        stored = buffer_bytes(Path(rig.settings.buffer.path))
        assert b"has_password" in stored  # the user list is in there
        for secret in (b"secret77", b"9A00C45B01", b"Sm9obiBEb2UgZmluZ2VycHJpbnQ"):
            assert secret not in stored
    finally:
        await close_rig(rig)


async def test_photos_are_answered_and_counted_not_kept(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN, tables=["ATTLOG", "ATTPHOTO"])])
    try:
        photo = (
            b"PIN=20260302081015-7.jpg\nSN=" + SN.encode() + b"\nsize=2048\nCMD=uploadphoto\x00" + bytes(2048)
        )
        assert await rig.upload(SN, "ATTPHOTO", photo, stamp="5") == (200, "OK")
        status, text, _ = await rig.request("POST", "/iclock/fdata", {"SN": SN, "table": "ATTPHOTO"}, photo)
        assert (status, text) == (200, "OK")
        assert rig.service.receiver is not None and rig.service.receiver.counts["photos"] == 2
        assert rig.punches() == []
        assert rig.meta("door-1")["push_stamps"] == {"ATTPHOTO": "5"}
    finally:
        await close_rig(rig)


async def test_heartbeat_is_a_contact_and_its_info_the_terminals_facts(rig: PushRig) -> None:
    info = "Ver 8.0.4.2-20190119,17,12,3456,192.168.1.201,10,7,12,2,11"
    status, text, _ = await rig.request("GET", "/iclock/getrequest", {"SN": SN, "INFO": info})
    assert (status, text) == (200, "OK")
    health = rig.devices["door-1"]
    assert health.info is not None
    assert health.info.firmware == "Ver 8.0.4.2-20190119"
    assert (health.info.user_count, health.info.record_count) == (17, 3456)
    assert health.info.serial_number == SN
    assert health.snapshot()["state"] == "online"
    # .aspx spellings, as older firmware uses
    status, text, _ = await rig.request("GET", "/iclock/getrequest.aspx", {"SN": SN})
    assert (status, text) == (200, "OK")


async def test_command_results_are_accepted(rig: PushRig) -> None:
    body = b"ID=14&Return=0&CMD=INFO\n~DeviceName=SpeedFace-V5L\nUserCount=17\nID=15&Return=-1002&CMD=DATA\n"
    status, text, _ = await rig.request("POST", "/iclock/devicecmd", {"SN": SN}, body)
    assert (status, text) == (200, "OK")
    assert rig.service.receiver is not None and rig.service.receiver.counts["command_results"] == 2


# --- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "says"),
    [
        ("GET", "/iclock/cdata", {"options": "all"}, 400, "no SN="),
        ("GET", "/iclock/cdata", {"SN": "CK JT/1"}, 400, "not a serial number"),
        ("GET", "/iclock/cdata", {"SN": "X" * 80}, 400, "not a serial number"),
        ("POST", "/iclock/cdata", {"SN": SN, "table": "RTLOG"}, 400, "unknown table RTLOG"),
        ("POST", "/iclock/cdata", {"SN": SN}, 400, "unknown table (none)"),
        ("PUT", "/iclock/cdata", {"SN": SN}, 405, "method not allowed"),
        ("GET", "/iclock/registry", {"SN": SN}, 404, "not found"),
        ("GET", "/", {}, 404, "not found"),
        ("POST", "/iclock/getrequest", {"SN": SN}, 405, "method not allowed"),
    ],
)
async def test_bad_requests_get_a_plain_answer(
    rig: PushRig, method: str, path: str, params: dict[str, str], status: int, says: str
) -> None:
    got, text, _ = await rig.request(method, path, params, b"1\t2026-03-02 08:00:00\t0\t1\n")
    assert got == status, text
    assert says in text
    assert rig.punches() == []


async def test_an_unknown_serial_is_refused_with_one_event_per_serial(rig: PushRig) -> None:
    for _ in range(3):
        status, text = await rig.upload("NOTCONFIGURED1", "ATTLOG", ATTLOG, stamp="1")
        assert status == 403 and "NOTCONFIGURED1 is not configured" in text
    assert (await rig.handshake("NOTCONFIGURED2"))[0] == 403
    assert rig.punches() == []
    events = rig.raised(GatewayFault.UNKNOWN_TERMINAL)
    assert [("NOTCONFIGURED1" in e.detail, "NOTCONFIGURED2" in e.detail) for e in events] == [
        (True, False),
        (False, True),
    ]
    assert "127.0.0.1" in events[0].detail
    assert GatewayFault.UNKNOWN_TERMINAL in rig.gateway_faults.active
    assert rig.service.receiver is not None and rig.service.receiver.counts["refused_unknown_serial"] == 4
    assert await rig.upload(SN, "ATTLOG", ATTLOG + b"x\n", stamp="1") == (200, "OK: 3")
    metrics = {
        (sample.name, sample.labels.get("outcome", "")): sample.value
        for family in rig.service.metrics()
        for sample in family.samples
    }
    assert metrics[("punchgate_push_requests_total", "unknown_serial")] == 4
    assert metrics[("punchgate_push_requests_total", "accepted")] == 1
    assert metrics[("punchgate_push_requests_total", "wrong_source")] == 0
    assert metrics[("punchgate_push_punches_received_total", "")] == 3
    assert metrics[("punchgate_push_unparsed_lines_total", "")] == 1


async def test_an_unknown_serial_can_be_quarantined(make_rig: Any) -> None:
    rig = await make_rig(unknown_terminals="quarantine")
    try:
        status, text = await rig.handshake("STRAY0001")
        assert status == 200 and text.startswith("GET OPTION FROM: STRAY0001")
        assert await rig.upload("STRAY0001", "ATTLOG", ATTLOG, stamp="3") == (200, "OK: 3")
        punches = rig.punches()
        assert {p["serial"] for p in punches} == {"STRAY0001"} and len(punches) == 3
        assert rig.store is not None and rig.store.pending_devices() == {"unknown-STRAY0001": 3}
        assert "stored under device unknown-STRAY0001" in rig.raised(GatewayFault.UNKNOWN_TERMINAL)[0].detail
        assert rig.meta("unknown-STRAY0001")["push_stamps"] == {"ATTLOG": "3"}
    finally:
        await close_rig(rig)


async def test_a_disabled_terminal_is_refused_but_not_unknown(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN), push_terminal("door-2", SN2, enabled=False)])
    try:
        status, text = await rig.upload(SN2, "ATTLOG", ATTLOG, stamp="1")
        assert status == 403 and f"{SN2} is not configured" in text
        assert rig.raised(GatewayFault.UNKNOWN_TERMINAL) == [] and rig.punches() == []
    finally:
        await close_rig(rig)


async def test_https(make_rig: Any, tmp_path: Path) -> None:
    pki = await asyncio.to_thread(make_test_pki, tmp_path / "pki")
    rig = await make_rig(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key))
    try:
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        assert rig.session is not None
        url = f"https://127.0.0.1:{rig.port}/iclock/cdata"
        params = {"SN": SN, "table": "ATTLOG", "Stamp": "1"}
        async with rig.session.post(url, params=params, data=ATTLOG, ssl=context) as response:
            assert (response.status, await response.text()) == (200, "OK: 3")
        # Plain HTTP on the HTTPS port gets nowhere, and stores nothing.
        status, _ = await exchange(rig.port, b"GET /iclock/cdata?SN=" + SN.encode() + b" HTTP/1.1\r\n\r\n")
        assert status in (0, 400)
        assert len(rig.punches()) == 3
    finally:
        await close_rig(rig)


async def test_a_request_from_outside_allowed_sources_is_refused(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN, allowed_sources=["192.0.2.0/24"])])
    try:
        status, text = await rig.upload(SN, "ATTLOG", ATTLOG, stamp="1")
        assert status == 403 and "may not connect from 127.0.0.1" in text
        assert rig.punches() == []
        fault = rig.devices["door-1"].faults.active[DeviceFault.PROTOCOL_ERROR]
        assert "not from allowed_sources" in fault.detail
    finally:
        await close_rig(rig)


async def test_an_allowed_source_network_is_served(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN, allowed_sources=["192.0.2.7", "127.0.0.0/8"])])
    try:
        assert await rig.upload(SN, "ATTLOG", ATTLOG, stamp="1") == (200, "OK: 3")
    finally:
        await close_rig(rig)


async def test_a_body_over_the_limit_is_413_declared_or_chunked(make_rig: Any) -> None:
    rig = await make_rig(max_body_bytes=64 * 1024)
    try:
        big = ATTLOG * (70 * 1024 // len(ATTLOG))
        status, text = await rig.upload(SN, "ATTLOG", big, stamp="1")
        assert status == 413, text

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(80):
                yield b"x" * 1024

        assert rig.session is not None
        async with rig.session.post(
            rig.base + "/iclock/cdata", params={"SN": SN, "table": "ATTLOG"}, data=chunks()
        ) as response:
            assert response.status == 413
        assert rig.punches() == []
        assert rig.meta("door-1").get("push_stamps", {}) == {}
    finally:
        await close_rig(rig)


async def test_slow_clients_are_timed_out(make_rig: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_module, "BODY_TIMEOUT", 0.5)
    monkeypatch.setattr(push_module, "HEADER_TIMEOUT", 0.5)
    rig = await make_rig()
    try:
        # A request head that never ends: the connection is closed.
        status, _ = await exchange(rig.port, b"GET /iclock/getrequest?SN=" + SN.encode() + b" HTTP/1.1\r\n")
        assert status == 0
        # A body that never arrives: 408.
        head = (
            f"POST /iclock/cdata?SN={SN}&table=ATTLOG&Stamp=1 HTTP/1.1\r\nHost: gw\r\n"
            "Content-Length: 1000\r\nConnection: close\r\n\r\n"
        ).encode()
        status, body = await exchange(rig.port, head + b"7\t2026-03-02 08:01:15\t0\t1\n")
        assert status == 408 and b"did not arrive" in body
        assert rig.punches() == []
    finally:
        await close_rig(rig)


async def test_garbage_never_crashes_the_listener(rig: PushRig) -> None:
    for raw in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello to a plain port
        b"GET /iclock/cdata?SN=" + b"\xff" * 10 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /iclock/cdata?SN=" + SN.encode() + b"&table=ATTLOG HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: " + b"h" * 70000 + b"\r\n\r\n",
    ):
        status, _ = await exchange(rig.port, raw)
        assert status in (0, 400, 404, 413, 431), raw[:40]
    assert await rig.upload(SN, "ATTLOG", ATTLOG, stamp="2") == (200, "OK: 3")


# --- health: heartbeats --------------------------------------------------------------------------


async def test_a_terminal_that_stops_asking_becomes_unreachable_and_comes_back(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN, delay=2)], missed_heartbeats=2)
    try:
        health = rig.devices["door-1"]
        assert (await rig.request("GET", "/iclock/getrequest", {"SN": SN}))[0] == 200
        assert health.snapshot()["state"] == "online"
        await wait_until_async(
            lambda: DeviceFault.UNREACHABLE in health.faults.active, timeout=15, message="unreachable"
        )
        assert "no request from the terminal" in health.faults.active[DeviceFault.UNREACHABLE].detail
        assert (await rig.request("GET", "/iclock/getrequest", {"SN": SN}))[0] == 200
        assert DeviceFault.UNREACHABLE not in health.faults.active
        assert health.snapshot()["state"] == "online"
    finally:
        await close_rig(rig)


async def test_a_terminal_that_never_comes_is_unreachable(make_rig: Any) -> None:
    rig = await make_rig([push_terminal("door-1", SN, delay=2)], missed_heartbeats=2)
    try:
        health = rig.devices["door-1"]
        await wait_until_async(
            lambda: health.consecutive_failures >= 3, timeout=20, message="three missed-heartbeat reports"
        )
        assert DeviceFault.UNREACHABLE in health.faults.active
        assert health.snapshot()["state"] == "offline"
    finally:
        await close_rig(rig)


# --- the parser, for what raw HTTP cannot show cheaply ----------------------------------------


def test_attlog_lines_parse_like_the_protocol_says() -> None:
    punch = attlog.parse_attlog_line("0042\t2026-03-02 08:01:15\t4\t2\t17\t0\t0\t\t")
    assert punch == RawPunch(
        user_id="0042", timestamp=dt.datetime(2026, 3, 2, 8, 1, 15), state=4, verify=2, work_code=17
    )
    assert attlog.parse_attlog_line("7\t2026-03-02 08:01:15").state == 0  # short firmware lines
    assert attlog.parse_attlog_line("7\t2026-03-02 08:01:15\t0\t1\tA1").work_code == 0
    for bad in (
        "\t2026-03-02 08:01:15\t0\t1",
        "7 2026-03-02 08:01:15 0 1",
        "7\t2026-03-02\t0\t1",
        "7\tx\t0\t1",
    ):
        with pytest.raises(ValueError):
            attlog.parse_attlog_line(bad)


# --- the [push] section and check-config --------------------------------------------------------


def _config_file(tmp_path: Path, push: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "gateway_id": "gw-push",
                "buffer": {"path": str(tmp_path / "buffer.db")},
                "push": push,
                "terminals": [push_terminal("door-1", SN)],
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("bind", "says"),
    [
        ("0.0.0.0", "push listener http://0.0.0.0:8081/iclock/ for 1 terminals (WARNING: bind is a wildcard"),
        ("::", "push listener http://[::]:8081/iclock/ for 1 terminals (WARNING: bind is a wildcard"),
        ("127.0.0.1", "(loopback only: terminals on the LAN cannot reach it; set [push] bind)"),
        ("192.0.2.10", "push listener http://192.0.2.10:8081/iclock/ for 1 terminals\n"),
    ],
)
def test_check_config_says_where_push_terminals_must_send(tmp_path: Path, bind: str, says: str) -> None:
    result = CliRunner().invoke(cli.main, ["check-config", str(_config_file(tmp_path, {"bind": bind}))])
    assert result.exit_code == 0, result.output
    assert says in result.output


def test_the_https_files_must_be_readable(tmp_path: Path) -> None:
    path = _config_file(
        tmp_path, {"tls_cert_file": str(tmp_path / "missing.crt"), "tls_key_file": str(tmp_path / "x.key")}
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [
        f"push.tls_cert_file: {tmp_path / 'missing.crt'} does not exist: check the path",
        f"push.tls_key_file: {tmp_path / 'x.key'} does not exist: check the path",
    ]
    with pytest.raises(ConfigError, match=r"push\.tls_key_file: HTTPS needs both"):
        load_settings(_config_file(tmp_path, {"tls_cert_file": str(tmp_path / "missing.crt")}))
