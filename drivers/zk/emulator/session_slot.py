"""The terminal's one session slot: which client holds the terminal, and its session.

Real terminals serve one client at a time. A second TCP client is accepted but waits
(`claim`) until the first session ends; a second UDP client is turned away by the server.
A UDP owner that stays silent longer than the idle timeout is evicted so a crashed client
cannot lock the terminal forever (TCP owners leave when their connection closes).

The slot knows links and sessions only; what a session's end means for the terminal
(re-enabling it) is the `on_session_end` callback's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from structlog.typing import FilteringBoundLogger

from punchgate.drivers.zk.emulator.links import Link, UdpLink


@dataclass(eq=False)
class Session:
    """One client session: its id and link, and the live events queued for it."""

    id: int
    link: Link
    authenticated: bool
    last_seen: float
    event_mask: int = 0
    staged: bytes | None = None  # a data set PREPARE_BUFFER staged for READ_BUFFER
    busy: bool = False  # a request is being answered: live events wait
    ack_timer: asyncio.TimerHandle | None = None  # waiting for the client to ACK an event
    events: deque[bytes] = field(default_factory=deque)


class SessionSlot:
    """Who owns the terminal (`owner`, a link) and the session open on it (`session`)."""

    def __init__(
        self,
        *,
        log: FilteringBoundLogger,
        idle_timeout: Callable[[], float],
        on_session_end: Callable[[Session, str], None],
    ) -> None:
        self.owner: Link | None = None
        self.session: Session | None = None
        self._log = log
        self._idle_timeout = idle_timeout
        self._on_session_end = on_session_end
        self._free = asyncio.Event()
        self._free.set()

    def session_on(self, link: Link) -> Session | None:
        """The open session if it belongs to `link`."""
        session = self.session
        return session if session is not None and session.link is link else None

    def begin(self, session: Session) -> None:
        """Open `session` (CMD_CONNECT accepted)."""
        self.session = session

    def take(self, link: Link) -> None:
        """Make `link` the owner at once (the caller knows the slot is free or forfeit)."""
        self.owner = link
        self._free.clear()

    async def claim(self, link: Link) -> None:
        """Wait until no other client holds the terminal, then take it."""
        while self.owner is not None and self.owner is not link:
            self.evict_idle_owner()
            if self.owner is None:
                break
            self._free.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._free.wait(), timeout=1.0)
        self.take(link)

    def evict_idle_owner(self) -> None:
        """Free the slot from a UDP owner with no session, or one silent for too long."""
        owner = self.owner
        session = self.session
        if isinstance(owner, UdpLink) and (
            session is None or time.monotonic() - session.last_seen > self._idle_timeout()
        ):
            self._log.info("zk_session_expired", peer=owner.peer)
            self.release(owner)

    def release(self, link: Link) -> None:
        """`link` is gone or done: end its session and free the slot if it held it."""
        if self.session is not None and self.session.link is link:
            self.end_session("released")
        if self.owner is link:
            self._free_slot()

    def end_session(self, reason: str) -> None:
        """Close the open session (if any); its owner's hold on the slot goes with it."""
        session = self.session
        if session is None:
            return
        self.session = None
        if session.ack_timer is not None:
            session.ack_timer.cancel()
        if self.owner is session.link:
            self._free_slot()
        self._on_session_end(session, reason)

    def reset(self) -> None:
        """Forget owner and session without ceremony (the terminal has stopped)."""
        self.session = None
        self.owner = None

    def _free_slot(self) -> None:
        self.owner = None
        self._free.set()
