"""The push-terminal emulator against a tiny fake receiver over real loopback HTTP.

The fake (`FakeReceiver`) is deliberately not the gateway's receiver: it records every
request as it arrived on the wire (body bytes, whether the body was complete, in how many
pieces), keeps stamps the simple correct way (stored only with the lines), hands out queued
commands until their results arrive, and can be told to misbehave for the next requests of
one kind. test_emulator_faults.py and test_emulator_cli.py use it too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from aiohttp import web

from punchgate.drivers.zk_push.emulator import ZkPushEmulator
from punchgate.drivers.zk_push.emulator.wire import encode_zk_time
from tests.support.waiting import wait_until_async

SN = "CKUW201960001"
LINE = re.compile(r"^[0-9]+\t\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\t\d+\t\d+\t\d+\t0\t0$")
RESULT = re.compile(r"^ID=([^&]+)&Return=(-?\d+)&CMD=(.*)$")


def valid_attlog(line: str) -> bool:
    """The fake's check of an ATTLOG line: seven TAB-separated fields and a real date."""
    if not LINE.match(line):
        return False
    try:
        datetime.strptime(line.split("\t")[1], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


@dataclass
class Seen:
    """One request as the fake receiver got it."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    complete: bool  # the whole announced body arrived
    pieces: int  # reads it took to get the body
    seconds: float  # from the handler's start to the body's end
    status: int = 0  # what the fake answered (0: nothing, the client was gone)

    @property
    def table(self) -> str | None:
        return self.query.get("table")

    def lines(self, encoding: str = "gb18030") -> list[str]:
        return [line for line in self.body.decode(encoding, "replace").split("\n") if line]


@dataclass
class Misbehaviour:
    status: int = 500
    text: str = "ERROR"
    hang: float = 0.0  # seconds to wait before answering
    times: int = 1
    after_storing: bool = False  # store the lines and the stamp first, then misbehave


@dataclass
class FakeReceiver:
    encoding: str = "gb18030"
    options: dict[str, str] = field(
        default_factory=lambda: {
            "ErrorDelay": "0.1",
            "Delay": "0.05",
            "TransTimes": "00:00;14:05",
            "TransInterval": "1",
            "TransFlag": "TransData AttLog OpLog EnrollUser ChgUser EnrollFP ChgFP",
            "TimeZone": "8",
            "Realtime": "1",
            "Encrypt": "0",
        }
    )
    requests: list[Seen] = field(default_factory=list)
    stamps: dict[tuple[str, str], int] = field(default_factory=dict)  # (SN, table) -> stamp
    commands: dict[str, str] = field(default_factory=dict)  # id -> command, until its result comes
    results: list[str] = field(default_factory=list)  # devicecmd result blocks, decoded
    misbehave: dict[str, Misbehaviour] = field(default_factory=dict)  # kind -> what to do
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/iclock/cdata", self._cdata)
        app.router.add_get("/iclock/getrequest", self._getrequest)
        app.router.add_post("/iclock/devicecmd", self._devicecmd)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests look at ------------------------------------------------------------------

    def posts(self, table: str, *, sn: str = SN, answered_ok: bool = True) -> list[Seen]:
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.table == table
            and r.query.get("SN") == sn
            and (r.status == 200 or not answered_ok)
        ]

    def lines(self, table: str, *, sn: str = SN) -> list[str]:
        return [line for post in self.posts(table, sn=sn) for line in post.lines(self.encoding)]

    def of(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    def handshakes(self) -> list[Seen]:
        return [r for r in self.of("/iclock/cdata") if r.method == "GET" and r.query.get("options") == "all"]

    def result_codes(self) -> dict[str, tuple[int, str]]:
        codes: dict[str, tuple[int, str]] = {}
        for block in self.results:
            for line in block.split("\n"):
                match = RESULT.match(line)
                if match:
                    codes[match.group(1)] = (int(match.group(2)), match.group(3))
        return codes

    def queue(self, *lines: str) -> None:
        for line in lines:
            _, command_id, _ = line.split(":", 2)
            self.commands[command_id] = line

    # -- the endpoints -----------------------------------------------------------------------

    async def _read(self, request: web.Request) -> Seen:
        started = time.monotonic()
        body = b""
        pieces = 0
        complete = True
        try:
            while chunk := await request.content.readany():
                body += chunk
                pieces += 1
        except Exception:  # the client went away mid-body
            complete = False
        if request.content_length is not None and len(body) < request.content_length:
            complete = False
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            body,
            complete,
            pieces,
            time.monotonic() - started,
        )
        self.requests.append(seen)
        return seen

    async def _answer(self, seen: Seen, kind: str, text: str) -> web.Response:
        trouble = self.misbehave.get(kind)
        if trouble is not None:
            trouble.times -= 1
            if trouble.times <= 0:
                del self.misbehave[kind]
            if trouble.hang:
                await asyncio.sleep(trouble.hang)
            seen.status = trouble.status
            return web.Response(status=trouble.status, text=trouble.text)
        seen.status = 200
        return web.Response(body=text.encode(self.encoding), content_type="text/plain")

    async def _cdata(self, request: web.Request) -> web.Response:
        seen = await self._read(request)
        sn = seen.query.get("SN", "")
        if request.method == "GET":
            if seen.query.get("options") != "all":
                return await self._answer(seen, "cdata", "OK")
            return await self._answer(seen, "handshake", self.option_block(sn))
        table = seen.table or ""
        if not seen.complete:
            return web.Response(status=400, text="incomplete body")
        trouble = self.misbehave.get(table)
        if trouble is not None and not trouble.after_storing:
            return await self._answer(seen, table, "")
        lines = seen.lines(self.encoding)
        good = [line for line in lines if table != "ATTLOG" or valid_attlog(line)]
        if "Stamp" in seen.query:
            self.stamps[(sn, table)] = int(seen.query["Stamp"])
        return await self._answer(seen, table, f"OK: {len(good)}")

    def option_block(self, sn: str) -> str:
        def stamp(table: str) -> str:
            value = self.stamps.get((sn, table))
            return "None" if value is None else str(value)

        lines = [
            f"GET OPTION FROM: {sn}",
            f"ATTLOGStamp={stamp('ATTLOG')}",
            f"OPERLOGStamp={stamp('OPERLOG')}",
            "ATTPHOTOStamp=None",
            *(f"{key}={value}" for key, value in self.options.items()),
        ]
        return "\n".join(lines) + "\n"

    async def _getrequest(self, request: web.Request) -> web.Response:
        seen = await self._read(request)
        answer = "\n".join(self.commands.values()) + "\n" if self.commands else "OK"
        return await self._answer(seen, "getrequest", answer)

    async def _devicecmd(self, request: web.Request) -> web.Response:
        seen = await self._read(request)
        response = await self._answer(seen, "devicecmd", "OK")
        if seen.status == 200:
            block = seen.body.decode(self.encoding, "replace")
            self.results.append(block)
            for line in block.split("\n"):
                match = RESULT.match(line)
                if match:
                    self.commands.pop(match.group(1), None)
        return response


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    fake = FakeReceiver()
    await fake.start()
    yield fake
    await fake.stop()


Maker = Callable[..., ZkPushEmulator]


@pytest.fixture
async def make(receiver: FakeReceiver) -> AsyncIterator[Maker]:
    """`make(**options)`: an emulator (not started) for the fake; all are stopped at the end."""
    made: list[ZkPushEmulator] = []

    def build(**options: object) -> ZkPushEmulator:
        settings: dict[str, object] = {
            "users": 5,
            "seed": 7,
            "request_timeout": 2.0,
            "reboot_seconds": 0.1,
        }
        settings.update(options)
        emulator = ZkPushEmulator(receiver.url, str(settings.pop("sn", SN)), **settings)  # type: ignore[arg-type]
        made.append(emulator)
        return emulator

    yield build
    for emulator in made:
        await emulator.stop()


async def test_handshake_first_then_uploads_from_the_servers_stamp(
    receiver: FakeReceiver, make: Maker
) -> None:
    receiver.stamps[(SN, "ATTLOG")] = 4  # the server already has the first four
    emulator = make(records=10)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 10, timeout=5, message="stamp 10")

    first = receiver.requests[0]
    assert (first.method, first.path) == ("GET", "/iclock/cdata")
    assert first.query == {"SN": SN, "options": "all", "pushver": "2.4.1", "language": "83"}
    assert receiver.lines("ATTLOG") == [record.line() for record in emulator.records[4:]]
    assert all(LINE.match(line) for line in receiver.lines("ATTLOG"))
    assert receiver.posts("ATTLOG")[-1].query["Stamp"] == "10"
    assert receiver.stamps[(SN, "ATTLOG")] == 10
    assert emulator.counters.handshakes == 1 and emulator.counters.rejected == 0

    await wait_until_async(lambda: receiver.of("/iclock/getrequest"), timeout=5, message="a heartbeat")
    info = receiver.of("/iclock/getrequest")[0].query["INFO"].split(",")
    assert info[1:4] == ["5", "0", "10"], "users, fingerprints, records"


async def test_a_punch_is_pushed_at_once_in_realtime(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(records=3)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 3, timeout=5, message="backlog uploaded")

    record = emulator.punch("2", state=1, verify=15)
    await wait_until_async(lambda: emulator.stamp == record.seq, timeout=5, message="punch uploaded")
    last = receiver.posts("ATTLOG")[-1]
    assert last.lines() == [record.line()]
    assert last.query["Stamp"] == str(record.seq) == "4"
    assert record.line().startswith(f"2\t{record.when:%Y-%m-%d %H:%M:%S}\t1\t15\t0\t0\t0")


async def test_it_obeys_the_option_block(receiver: FakeReceiver, make: Maker) -> None:
    """Realtime=0 with no TransInterval/TransTimes: punches wait; TransFlag without OpLog or
    user tokens: no OPERLOG at all; a LOG command makes it upload now."""
    receiver.options.update(Realtime="0", TransInterval="0", TransTimes="", TransFlag="TransData AttLog")
    emulator = make(records=2, realtime=True)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 2, timeout=5, message="backlog uploaded on connect")

    record = emulator.punch("1")
    beats = len(receiver.of("/iclock/getrequest"))
    await wait_until_async(lambda: len(receiver.of("/iclock/getrequest")) >= beats + 10, timeout=5)
    assert emulator.stamp == 2, "no realtime push"
    assert receiver.posts("OPERLOG", answered_ok=False) == []

    receiver.queue("C:77:LOG")
    await wait_until_async(lambda: emulator.stamp == record.seq, timeout=5, message="LOG uploads")
    assert receiver.result_codes()["77"] == (0, "LOG")
    assert receiver.posts("OPERLOG", answered_ok=False) == []


@pytest.mark.parametrize(
    "trouble",
    [
        Misbehaviour(status=500, text="Internal Server Error"),
        Misbehaviour(status=200, text="ERROR: database is locked"),
        Misbehaviour(status=200, text="OK: 3", hang=1.0),  # answers after the terminal gave up
    ],
    ids=["http-500", "200-without-OK", "timeout"],
)
async def test_no_stamp_advance_without_OK_and_the_retry_resends_the_same_lines(
    receiver: FakeReceiver, make: Maker, trouble: Misbehaviour
) -> None:
    receiver.misbehave["ATTLOG"] = trouble
    emulator = make(records=3, request_timeout=0.4)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 3, timeout=5, message="stamp 3 after the retry")

    tries = receiver.posts("ATTLOG", answered_ok=False)
    assert len(tries) == 2
    assert tries[0].body == tries[1].body and tries[0].query == tries[1].query
    assert tries[1].lines() == [record.line() for record in emulator.records]
    assert emulator.counters.retries == 1
    assert len(receiver.handshakes()) == 2, "after an error it shakes hands again"
    if trouble.hang:
        assert emulator.counters.failures == 1
    else:
        assert emulator.counters.rejected == 1


async def test_after_a_lost_answer_it_resumes_from_the_stamp_the_server_reports(
    receiver: FakeReceiver, make: Maker
) -> None:
    """The server stored the first chunk but its answer was an error: the terminal's own stamp
    stays, and the next handshake tells it where to go on from."""
    receiver.misbehave["ATTLOG"] = Misbehaviour(status=500, after_storing=True)
    emulator = make(records=5, chunk_size=2)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 5, timeout=5)
    posts = receiver.posts("ATTLOG", answered_ok=False)
    assert [(p.query["Stamp"], p.status) for p in posts] == [("2", 500), ("4", 200), ("5", 200)]
    assert emulator.counters.rejected == 1


async def test_uploads_go_in_chunks_of_at_most_chunk_size_lines(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(records=1200, users=30)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 1200, timeout=10, message="all 1200 uploaded")
    posts = receiver.posts("ATTLOG")
    assert [len(p.lines()) for p in posts] == [500, 500, 200]
    assert [p.query["Stamp"] for p in posts] == ["500", "1000", "1200"]
    assert receiver.lines("ATTLOG") == [record.line() for record in emulator.records]
    assert [len(p.lines()) for p in receiver.posts("OPERLOG")] == [30]


async def test_operlog_user_lines_carry_gb18030_names(receiver: FakeReceiver, make: Maker) -> None:
    emulator = make(users=8)
    await emulator.start()
    await wait_until_async(lambda: emulator.op_stamp == 8, timeout=5, message="roster uploaded")

    (post,) = receiver.posts("OPERLOG")
    assert post.query["Stamp"] == "8"
    with pytest.raises(UnicodeDecodeError):
        post.body.decode("utf-8")
    lines = post.body.decode("gb18030").rstrip("\n").split("\n")
    assert lines[0] == "USER PIN=1\tName=王喆\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=0000000000000000"
    assert "USER PIN=3\tName=𠮷祥\t" in post.body.decode("gb18030")
    assert "𠮷".encode("gb18030") in post.body, "a four-byte GB18030 code on the wire"
    assert [line.split("\t")[1] for line in lines] == [
        f"Name={user.name}" for user in emulator.users.values()
    ]


async def test_a_utf8_terminal_sends_utf8_names(receiver: FakeReceiver, make: Maker) -> None:
    receiver.encoding = "utf-8"
    emulator = make(users=3, encoding="utf-8")
    await emulator.start()
    await wait_until_async(lambda: emulator.op_stamp == 3, timeout=5)
    assert "Name=李堃" in receiver.posts("OPERLOG")[0].body.decode("utf-8")


async def test_commands_run_and_their_results_are_posted_with_their_ids(
    receiver: FakeReceiver, make: Maker
) -> None:
    emulator = make(records=2)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 2, timeout=5)

    set_to = datetime(2030, 1, 2, 3, 4, 5)
    receiver.queue(
        "C:101:INFO",
        "C:102:DATA UPDATE USERINFO PIN=900\tName=李伟\tPri=14\tPasswd=\tCard=4242\tGrp=1\tTZ=0000000000000000",
        "C:103:DATA DELETE USERINFO PIN=1",
        f"C:104:SET OPTION DateTime={encode_zk_time(set_to)}",
        "C:105:ENROLL_PALM PIN=3",
        "C:106:CHECK",
    )
    await wait_until_async(lambda: "106" in receiver.result_codes(), timeout=5, message="results")
    assert receiver.result_codes() == {
        "101": (0, "INFO"),
        "102": (0, "DATA"),
        "103": (0, "DATA"),
        "104": (0, "SET OPTION"),
        "105": (-1002, "ENROLL_PALM"),
        "106": (0, "CHECK"),
    }
    (info,) = [block for block in receiver.results if block.startswith("ID=101&")]
    assert f"~SerialNumber={SN}" in info.split("\n") and "UserCount=5" in info.split("\n")
    others = [block for block in receiver.results if not block.startswith("ID=101&")]
    assert all(RESULT.match(line) for block in others for line in block.split("\n")), "INFO's block alone"
    assert emulator.users["900"].name == "李伟" and emulator.users["900"].privilege == 14
    assert "1" not in emulator.users
    assert set_to <= emulator.now() < set_to + timedelta(minutes=1)
    await wait_until_async(lambda: len(receiver.handshakes()) == 2, timeout=5, message="CHECK handshakes")

    receiver.queue("C:107:REBOOT", "C:108:INFO")  # nothing after REBOOT runs before the reboot
    await wait_until_async(lambda: "108" in receiver.result_codes(), timeout=5, message="INFO after reboot")
    assert emulator.counters.reboots == 1
    rebooted = next(i for i, r in enumerate(receiver.requests) if b"ID=107&Return=0&CMD=REBOOT" in r.body)
    answered = next(i for i, r in enumerate(receiver.requests) if r.body.startswith(b"ID=108&"))
    assert any(r in receiver.handshakes() for r in receiver.requests[rebooted:answered])


async def test_data_query_attlog_posts_the_matching_records_without_a_stamp(
    receiver: FakeReceiver, make: Maker
) -> None:
    emulator = make(records=20, days=10)
    await emulator.start()
    await wait_until_async(lambda: emulator.stamp == 20, timeout=5)
    start, end = emulator.records[5].when, emulator.records[9].when
    receiver.queue(
        f"C:9:DATA QUERY ATTLOG StartTime={start:%Y-%m-%d %H:%M:%S}\tEndTime={end:%Y-%m-%d %H:%M:%S}"
    )
    await wait_until_async(lambda: "9" in receiver.result_codes(), timeout=5)
    (answer,) = [p for p in receiver.posts("ATTLOG") if "Stamp" not in p.query]
    assert answer.lines() == [record.line() for record in emulator.records[5:10]]
    assert receiver.result_codes()["9"] == (5, "DATA")
    assert emulator.stamp == 20


async def test_with_sync_clock_the_servers_date_header_sets_the_clock(
    receiver: FakeReceiver, make: Maker
) -> None:
    emulator = make(sync_clock=True)
    emulator.set_clock(datetime(2031, 5, 6, 7, 8, 9))
    await emulator.start()
    await wait_until_async(lambda: emulator.counters.handshakes == 1, timeout=5)
    local_now = datetime.now(emulator.zone).replace(tzinfo=None)
    assert abs(emulator.now() - local_now) < timedelta(seconds=5)
