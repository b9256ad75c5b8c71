"""The gateway's side of the push receiver: its `PushBackend` (punchgate.drivers.zk_push.backend).

* `commit` reads (parses) the punches, normalises them like the device workers do (`normalize_punches`, so the same punch pulled
  or pushed gets the same id), with `source = "push"`, and commits to the buffer (shielded,
  in a thread) before returning; the receiver answers `OK` only after that. A fresh punch
  uploaded in real time (within `LIVE_WINDOW`) is live, anything else backlog. Punches with
  impossible times raise `clock_invalid`;
* `load_meta` / `save_meta` are the buffer's device meta;
* `contact` / `problem` feed the terminal's `DeviceHealth`, which the composition root built
  like a pulled terminal's (same faults, retained state, metrics and status); a contact is
  also a heartbeat (`push_heartbeats`);
* `unknown_terminal` is what `push_unknown` decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from punchgate.drivers.base import DeviceInfo, RawPunch
from punchgate.drivers.faults import DeviceFault
from punchgate.drivers.zk_push import TYPE_NAME
from punchgate.drivers.zk_push.backend import Committed, PushStoreRefusedError, PushTerminal
from punchgate.gateway.normalize import normalize_punches
from punchgate.gateway.push_heartbeats import HeartbeatWatch
from punchgate.gateway.push_unknown import UnknownTerminals
from punchgate.gateway.ratelimit_log import RateLimitedLog
from punchgate.gateway.staged_mover import STAGE_MIN
from punchgate.sync.records import Punch
from punchgate.sync.store import StoreRefusedError

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

LIVE_WINDOW = dt.timedelta(minutes=2)  # a realtime upload of a punch this fresh is "as it happened"


class GatewayPushBackend:
    """`PushBackend` over the gateway's buffer, forwarder and health models."""

    def __init__(
        self,
        app: Application,
        *,
        limited: RateLimitedLog,
        heartbeats: HeartbeatWatch,
        unknown: UnknownTerminals,
    ) -> None:
        self.app = app
        self.limited = limited
        self.heartbeats = heartbeats
        self.unknown = unknown

    async def commit(
        self,
        terminal: PushTerminal,
        read: Callable[[], Sequence[RawPunch]],
        *,
        received_at: dt.datetime,
    ) -> Committed:
        app = self.app
        store, forwarder = app.store, app.forwarder
        if store is None or forwarder is None:
            raise PushStoreRefusedError("the gateway is starting")

        def read_normalize_and_store() -> tuple[list[Punch], list[str] | None, list[Punch]]:
            normalized = normalized_punches(terminal, read(), received_at)
            inserted = store.add_or_stage(normalized, stage=len(normalized) >= STAGE_MIN)
            # Punches with impossible times raise clock_invalid only when new to the buffer;
            # staged ones are not in it yet, so the index says which it already holds.
            bad = [p for p in normalized if p.flags and p.quarantined]
            if bad:
                new = (
                    set(inserted)
                    if inserted is not None
                    else {p.id for p in bad} - store.known_ids(p.id for p in bad)
                )
                bad = [p for p in bad if p.id in new]
            return normalized, inserted, bad

        try:
            # In a thread: a large upload costs seconds of CPU the event loop must not wait for.
            # The parse too (`read`): one hand-off to a thread and back per post, not two (each
            # waits for the GIL while the forwarder drains: py-spy of a backlog upload).
            # Shielded: a shutdown that cancels the request mid-commit still lets the commit finish.
            normalized, inserted, bad = await asyncio.shield(asyncio.to_thread(read_normalize_and_store))
        except StoreRefusedError as exc:
            if exc.stored:
                forwarder.notify_new_punches()
            raise PushStoreRefusedError(str(exc), stored=len(exc.stored)) from exc
        if not normalized:
            return Committed(new=0, received=0)
        if inserted is None:
            app.staged_mover.staged(len(normalized))
        elif inserted:
            forwarder.notify_new_punches()
        health = app.devices.get(terminal.name)
        if health is not None:
            health.punches_stored(max(p.utc_time for p in normalized))
            # Staged punches are counted new when they reach the outbox (`StagedMover`).
            health.read_done(count=len(normalized), new=len(inserted or ()))
            if bad:
                health.set_fault(
                    DeviceFault.CLOCK_INVALID,
                    True,
                    f"{len(bad)} punches with impossible times (e.g. {bad[0].local_time})",
                )
        staged = len(normalized) if inserted is None else 0
        return Committed(new=len(inserted or ()), received=len(normalized), staged=staged)

    async def load_meta(self, key: str) -> dict[str, Any]:
        store = self.app.store
        if store is None:
            raise PushStoreRefusedError("the gateway is starting")
        return await asyncio.to_thread(store.get_device_meta, key)

    async def save_meta(self, key: str, data: dict[str, Any]) -> None:
        store = self.app.store
        if store is None:
            raise PushStoreRefusedError("the gateway is starting")
        await asyncio.shield(asyncio.to_thread(store.set_device_meta, key, data))

    def contact(self, terminal: PushTerminal, info: DeviceInfo) -> None:
        self.heartbeats.heard_from(terminal)
        health = self.app.devices.get(terminal.name)
        if health is not None and not terminal.quarantined:
            health.contact_ok(info, drift_seconds=None)

    def problem(self, terminal: PushTerminal, fault: DeviceFault, detail: str) -> None:
        health = self.app.devices.get(terminal.name)
        if health is None or terminal.quarantined:
            self.limited.warning(
                "push_problem", key=f"push_problem:{fault}", device=terminal.name, detail=detail
            )
            return
        health.set_fault(fault, True, detail)

    def unknown_terminal(self, serial_number: str, address: str) -> PushTerminal | None:
        return self.unknown.decide(serial_number, address)


def normalized_punches(
    terminal: PushTerminal, punches: Sequence[RawPunch], received_at: dt.datetime
) -> list[Punch]:
    """The punches as the device workers normalise theirs (so the ids match), source push."""
    normalized = normalize_punches(
        punches,
        device=terminal.name,
        serial_number=terminal.serial_number,
        zone=ZoneInfo(terminal.timezone),
        source="push",
        historical=True,
        driver_type=TYPE_NAME,
        now=received_at,
    )
    if terminal.realtime:
        # A fresh punch uploaded in real time was seen as it happened; anything else is backlog.
        live_since = received_at - LIVE_WINDOW
        for index, punch in enumerate(normalized):
            if punch.utc_time >= live_since:
                normalized[index] = dataclasses.replace(punch, historical=False)
    return normalized
