"""An emulated push terminal's requests to the server, counted, with the wire faults applied.

`ServerLink.request` sends one request (a request without an answer raises `NoAnswer` and
counts a failure); `reject` turns an answer that is not success into `Rejected`. `post_data`
posts one chunk of a table and returns only when the server answered `OK`; it applies the
faults that spoil posts: `drop_mid_post` cuts one off, `slow_posts` trickles its body.
`wrong_sn` changes the serial number every request carries. `online` is whether the server
answered lately; `last_ok_count` the n of the last `OK: n`.
"""

from __future__ import annotations

import structlog

from punchgate.drivers.zk_push.emulator.counters import PushCounters
from punchgate.drivers.zk_push.emulator.faults import ActiveFaults, number
from punchgate.drivers.zk_push.emulator.transport import NoAnswer, Params, PushHttp, Reply
from punchgate.drivers.zk_push.emulator.wire import parse_ok_count

log = structlog.get_logger(__name__)


class Rejected(Exception):
    """The server answered, but not with success: keep everything, retry after ErrorDelay."""


class ServerLink:
    """One terminal's requests to its server (see the module docstring)."""

    def __init__(
        self, http: PushHttp, *, sn: str, encoding: str, faults: ActiveFaults, counters: PushCounters
    ) -> None:
        self.http = http
        self.sn = sn
        self.encoding = encoding
        self.faults = faults
        self.counters = counters
        self.online = False
        self.last_ok_count: int | None = None  # n of the last `OK: n`

    def wire_sn(self) -> str:
        """The serial number requests carry: the terminal's, unless `wrong_sn` is on."""
        wrong = self.faults.get("wrong_sn")
        return self.sn if wrong is None else str(wrong.get("sn", self.sn + "X"))

    async def request(
        self,
        method: str,
        path: str,
        params: Params,
        body: bytes | None = None,
        *,
        trickle: tuple[int, float] | None = None,
    ) -> Reply:
        try:
            reply = await self.http.request(method, path, params, body, trickle=trickle)
        except NoAnswer:
            self.counters.failures += 1
            raise
        log.debug("zk_push_request", sn=self.sn, method=method, path=path, status=reply.status)
        return reply

    def reject(self, what: str, reply: Reply) -> Rejected:
        self.counters.rejected += 1
        return Rejected(f"{what}: HTTP {reply.status} {reply.text(self.encoding)[:60]!r}")

    async def post_data(self, table: str, stamp: int | None, lines: list[bytes]) -> None:
        """POST cdata?table=…&Stamp=…; returns only when the server answered `OK`."""
        params = [("SN", self.wire_sn()), ("table", table)]
        if stamp is not None:
            params.append(("Stamp", str(stamp)))
        body = b"\n".join(lines) + b"\n"
        drop = self.faults.use("drop_mid_post")
        if drop is not None:
            self.counters.failures += 1
            await self.http.post_and_drop(
                "/iclock/cdata", params, body, int(number(drop, "after_bytes", len(body) // 2))
            )
        slow = self.faults.use("slow_posts")
        trickle = None
        if slow is not None:
            trickle = (int(number(slow, "chunk_bytes", 16)), number(slow, "interval", 0.05))
        reply = await self.request("POST", "/iclock/cdata", params, body, trickle=trickle)
        if reply.status != 200:
            raise self.reject(f"{table} post", reply)
        try:
            self.last_ok_count = parse_ok_count(reply.text(self.encoding))
        except ValueError:
            raise self.reject(f"{table} post", reply) from None
        self.counters.uploads += 1
        self.online = True
