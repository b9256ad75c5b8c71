"""Asking a gateway to send a day again when the sink's digest check finds punches missing.

A gap in central delivery closes by itself while the punches are unconfirmed (the gateway
re-sends them), but not once they were confirmed and then lost at central (a restored database,
rows deleted by hand), nor in broker delivery. So when a digest day has been `missing` or
`differs` (fewer ids, or other ids, than the gateway counted) for longer than `mismatch_grace`,
the sink publishes a `punches.resend` request for that terminal and day on the gateway's
`{base}/commands/request` (docs/mqtt-contract.md, "Remote commands"). The gateway queues the
day's punches again; they arrive as repeats, and the next digest check matches.

Invariants: at most one request per (gateway, terminal, day) within `resend_interval` (the
gateway is not flooded while a big day is on its way, nor every check interval while a gateway
that refuses the command keeps the gap open); every request gets a new id, because a gateway
answers a repeated id from what it stored instead of running it again. The limit is kept in
memory: a restarted sink may ask once more at once, which is harmless (a resend is idempotent at
central). The sink does not read the answers; the digest check shows whether it worked.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable

import structlog

from punchgate.sync.command_contract import REQUEST_SCHEMA_NAME, parse_request
from punchgate.sync.sink.reconcile import DayCheck
from punchgate.sync.sink.settings import SinkSettings
from punchgate.sync.sink.stats import SinkStats

log = structlog.get_logger(__name__)

GAP_STATUSES = frozenset({"missing", "differs"})  # central lacks ids the gateway holds
Publish = Callable[[str, str], None]  # (topic, payload): QoS 1, not retained


def request_payload(request_id: str, requester: str, device: str, day: str) -> str:
    """The `punches.resend` request for one terminal-local day; checked with the gateway's own
    parser, so the sink cannot publish what a gateway would refuse as malformed."""
    body = {
        "schema": REQUEST_SCHEMA_NAME,
        "version": 1,
        "id": request_id,
        "requester": requester[:128],
        "command": "punches.resend",
        "terminals": [device],
        "args": {"day": day},
    }
    text = json.dumps(body, separators=(",", ":"))
    parse_request(text)
    return text


class ResendRequests:
    """Which gap days to ask for, the rate limit, and the publishing (called by the writer thread)."""

    def __init__(
        self,
        settings: SinkSettings,
        stats: SinkStats,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.publish = publish
        self.clock = clock
        self._asked: dict[tuple[str, str, str], float] = {}  # (gateway, device, day) -> when

    def ask(self, gaps: Iterable[DayCheck]) -> int:
        """Publish a request for every gap day not asked for within the interval; how many."""
        if not self.settings.resend:
            return 0
        now = self.clock()
        interval = self.settings.resend_interval
        # Forget what is past its interval, so the table stays as small as the open gaps.
        self._asked = {key: at for key, at in self._asked.items() if now - at < interval}
        sent = 0
        for gap in gaps:
            if gap.status not in GAP_STATUSES:
                continue
            key = (gap.gateway, gap.device, gap.day)
            if key in self._asked:
                self.stats.resend_requests_limited += 1
                continue
            self._asked[key] = now
            self._send(gap)
            sent += 1
        return sent

    def _send(self, gap: DayCheck) -> None:
        request_id = f"sink-resend-{gap.day}-{uuid.uuid4().hex[:16]}"
        topic = f"{self.settings.prefix}/{gap.gateway}/commands/request"
        try:
            payload = request_payload(request_id, self.settings.client_id, gap.device, gap.day)
        except ValueError as exc:  # a name no request can carry: nothing to ask, but say so
            log.warning(
                "sink_resend_impossible", gateway=gap.gateway, device=gap.device, day=gap.day, error=str(exc)
            )
            return
        self.publish(topic, payload)
        self.stats.resend_requests += 1
        log.warning(
            "sink_resend_requested",
            id=request_id,
            gateway=gap.gateway,
            device=gap.device,
            day=gap.day,
            status=gap.status,
            gateway_count=gap.gateway_count,
            central_count=gap.central_count,
        )
