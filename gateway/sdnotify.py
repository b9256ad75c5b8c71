"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING over a unix datagram socket.

A few lines instead of a dependency: the protocol is one datagram of `KEY=value` lines to the
socket named in $NOTIFY_SOCKET (a leading '@' means the abstract namespace). Without that
variable (not under systemd, or Type=simple) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._watchdog_interval = self._watchdog_from(env)

    @staticmethod
    def _watchdog_from(env: dict[str, str] | os._Environ[str]) -> float | None:
        usec = env.get("WATCHDOG_USEC")
        if not usec or not usec.isdigit() or int(usec) == 0:
            return None
        # WATCHDOG_PID names the process systemd expects pings from; ignore it if it is not us.
        pid = env.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 1_000_000 / 2  # ping at half the timeout, as sd_watchdog_enabled advises

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings, or None when systemd asked for none."""
        return self._watchdog_interval if self.enabled else None

    def notify(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block: this runs on the event loop, and a listener that stops reading
                # (its queue full) must not freeze the daemon. A dropped STATUS is harmless;
                # a dropped WATCHDOG means the listener is not watching anyway.
                sock.setblocking(False)
                sock.sendto(message.encode("utf-8"), self._address)
        except BlockingIOError:
            log.debug("sd_notify_dropped", reason="listener queue full", message=message)
            return False
        except OSError as exc:
            # systemd gone or socket unreadable: worth a log line, never worth a crash.
            log.warning("sd_notify_failed", error=str(exc), message=message)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping from a task on the event loop, so that a blocked loop stops the pings."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)
