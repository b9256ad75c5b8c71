"""Live EF_ATTLOG events: building one for a punch and pacing them out to the session.

Events go out one at a time, never inside a pending reply, and the next one waits for
the client's ACK_OK (or `event_ack_timeout`), because clients read each packet with one
recv() and would glue two events together. The queue itself lives on the `Session`, so
it goes when the session does.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator.context import TerminalContext
from punchgate.drivers.zk.emulator.session_slot import Session
from punchgate.drivers.zk.protocol import UserRecord


def announce_punch(
    ctx: TerminalContext, user: UserRecord, when: dt.datetime, *, verify: int, state: int
) -> None:
    """Queue the live event for a punch, if the open session registered EF_ATTLOG."""
    session = ctx.slot.session
    if session is None or not session.event_mask & p.EF_ATTLOG or session.link.abandoned:
        return
    size = ctx.terminal.profile.live_event_size
    event_user = str(user.uid) if size in (10, 14) else user.user_id
    payload = p.encode_live_attendance(
        p.LiveAttendance(user_id=event_user, verify=verify, state=state, timestamp=when), size
    )
    session.events.append(p.build_packet(p.CMD_REG_EVENT, p.EF_ATTLOG, 0, payload))
    pump_events(ctx, session)


def pump_events(ctx: TerminalContext, session: Session) -> None:
    """Send the next queued event if no reply is pending and the last one was acked."""
    if session.busy or session.ack_timer is not None or not session.events:
        return
    if session is not ctx.slot.session or session.link.closed or session.link.abandoned:
        session.events.clear()
        return
    session.link.send([session.events.popleft()])
    ctx.counters.bump(events_sent=1)
    loop = asyncio.get_running_loop()
    session.ack_timer = loop.call_later(ctx.terminal.event_ack_timeout, event_acked, ctx, session)


def event_acked(ctx: TerminalContext, session: Session) -> None:
    """The client acknowledged the last event (or the wait timed out): send the next."""
    if session.ack_timer is not None:
        session.ack_timer.cancel()
        session.ack_timer = None
    pump_events(ctx, session)
