"""An emulated push terminal's conversation with the server: the protocol 2.x client loop.

`PushSession.run` repeats one cycle: shake hands when it has not (the option block: stamps,
Delay, ErrorDelay, Realtime, TransInterval, TransTimes, TransFlag), upload what is due, send a
heartbeat when one is due, run the commands its answer carries and post their results, then
sleep until the next heartbeat or upload, or until something wakes it (a punch, a fault). A
request without an answer or with an error answer makes it wait ErrorDelay and start over
with a handshake; a REBOOT (or a factory reset) stops it for `reboot_seconds` first.

The terminal (`ZkPushEmulator`) gives the session its settings, which tests may change while
it runs, and is what server commands act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import structlog

from punchgate.drivers.zk_push.emulator import schedule
from punchgate.drivers.zk_push.emulator.commands import execute
from punchgate.drivers.zk_push.emulator.counters import PushCounters
from punchgate.drivers.zk_push.emulator.faults import ActiveFaults
from punchgate.drivers.zk_push.emulator.link import Rejected, ServerLink
from punchgate.drivers.zk_push.emulator.memory import TerminalMemory
from punchgate.drivers.zk_push.emulator.transport import NoAnswer
from punchgate.drivers.zk_push.emulator.uploads import Uploader
from punchgate.drivers.zk_push.emulator.wire import Command, ServerOptions, parse_commands, parse_options

if TYPE_CHECKING:
    from punchgate.drivers.zk_push.emulator.terminal import ZkPushEmulator

log = structlog.get_logger(__name__)


class Reboot(Exception):
    """REBOOT or a factory reset: stop, stay down a while, start over with a handshake."""


class PushSession:
    """One terminal's client loop and what it learnt from the server (see the module docstring)."""

    def __init__(
        self,
        terminal: ZkPushEmulator,
        *,
        memory: TerminalMemory,
        link: ServerLink,
        faults: ActiveFaults,
        counters: PushCounters,
        rng: random.Random,
        wake: asyncio.Event,
    ) -> None:
        self.terminal = terminal
        self.memory = memory
        self.link = link
        self.faults = faults
        self.counters = counters
        self.wake = wake
        self.uploads = Uploader(
            memory,
            link,
            faults=faults,
            counters=counters,
            rng=rng,
            chunk_size=terminal.chunk_size,
            encoding=terminal.encoding,
            check_reboot=self.check_reboot,
        )
        self.options: ServerOptions | None = None  # the last handshake's option block
        self.handshaken = False
        self.upload_due = False
        self.reboot_requested = False
        self.send_info = False
        self.next_heartbeat_at = 0.0
        self.next_upload_at = math.inf
        self.pending_results: list[str] = []

    async def run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("zk_push_emulator_crashed", sn=self.terminal.sn)
            raise

    async def _loop(self) -> None:
        sn = self.terminal.sn
        while True:
            try:
                await self._cycle()
            except (NoAnswer, Rejected) as exc:
                self.link.online = False
                self.handshaken = False
                self.counters.retries += 1
                wait = schedule.error_delay(self.options, self.terminal.error_delay_override)
                log.info("zk_push_retry", sn=sn, reason=str(exc), after_s=wait)
                await asyncio.sleep(wait)
            except Reboot:
                self.link.online = False
                self.handshaken = False
                self.reboot_requested = False
                self.counters.reboots += 1
                log.info("zk_push_reboot", sn=sn, down_s=self.terminal.reboot_seconds)
                await asyncio.sleep(self.terminal.reboot_seconds)

    async def _cycle(self) -> None:
        self.wake.clear()
        self.check_reboot()
        if not self.handshaken:
            await self._handshake()
        if self._should_upload():
            self.upload_due = False
            await self.uploads.upload(schedule.tables_to_push(self.options))
            self.next_upload_at = schedule.next_scheduled_upload(
                self.options, asyncio.get_running_loop().time(), self.memory.now()
            )
        loop = asyncio.get_running_loop()
        if loop.time() >= self.next_heartbeat_at:
            self.next_heartbeat_at = loop.time() + self._heartbeat_interval()
            await self._heartbeat()
        if self.upload_due or self.reboot_requested or not self.handshaken:
            return
        wake_at = self.next_heartbeat_at
        if not self._realtime():
            wake_at = min(wake_at, self.next_upload_at)
        timeout = wake_at - loop.time()
        if timeout > 0:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel (stop()) that
            # arrives in the same tick as the wake-up, and the terminal would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()

    def check_reboot(self) -> None:
        if self.reboot_requested:
            raise Reboot

    # -- what the server said ----------------------------------------------------------------

    def _realtime(self) -> bool:
        return schedule.pushes_at_once(self.options, self.terminal.realtime)

    def _heartbeat_interval(self) -> float:
        return schedule.heartbeat_interval(
            self.options, self.terminal.delay_override, self.faults.get("heartbeat_flood")
        )

    def _should_upload(self) -> bool:
        if self.upload_due:
            return True
        if not self.memory.has_pending(schedule.tables_to_push(self.options)):
            return False
        return self._realtime() or asyncio.get_running_loop().time() >= self.next_upload_at

    # -- requests ----------------------------------------------------------------------------

    async def _handshake(self) -> None:
        terminal, link = self.terminal, self.link
        params = [
            ("SN", link.wire_sn()),
            ("options", "all"),
            ("pushver", terminal.pushver),
            ("language", str(terminal.language)),
        ]
        reply = await link.request("GET", "/iclock/cdata", params)
        if reply.status != 200:
            raise link.reject("handshake", reply)
        self.options = options = parse_options(reply.text(terminal.encoding))
        self.memory.adopt_stamps(options.attlog_stamp, options.operlog_stamp)
        if terminal.sync_clock and "Date" in reply.headers:
            with contextlib.suppress(TypeError, ValueError):
                self.memory.set_clock(parsedate_to_datetime(reply.headers["Date"]))
        self.handshaken = link.online = True
        self.send_info = True
        self.upload_due = True  # whatever is newer than the stamps goes now
        self.next_heartbeat_at = 0.0
        self.counters.handshakes += 1
        log.info("zk_push_handshake", sn=terminal.sn, stamp=self.memory.stamp, op_stamp=self.memory.op_stamp)

    async def _heartbeat(self) -> None:
        terminal, link = self.terminal, self.link
        params = [("SN", link.wire_sn())]
        if self.send_info:
            memory = self.memory
            info = (
                f"{terminal.firmware},{len(memory.users)},0,{len(memory.records)},{terminal.ip},10,0,0,0,100"
            )
            params.append(("INFO", info))
        self.counters.heartbeats += 1
        reply = await link.request("GET", "/iclock/getrequest", params)
        if reply.status != 200:
            raise link.reject("getrequest", reply)
        self.send_info = False
        link.online = True
        commands = parse_commands(reply.text(terminal.encoding))
        if commands:
            await self._run_commands(commands)
        elif self.pending_results:
            await self.post_results()

    async def _run_commands(self, commands: list[Command]) -> None:
        """Run an answer's commands in order (nothing after REBOOT), post their results, then
        act on what they asked for."""
        effects: set[str] = set()
        for command in commands:
            outcome = await execute(self.terminal, command)
            self.counters.commands += 1
            self.pending_results.append(outcome.result(command))
            log.info(
                "zk_push_command", sn=self.terminal.sn, id=command.id, command=command.name, code=outcome.code
            )
            if outcome.effect is not None:
                effects.add(outcome.effect)
            if outcome.effect == "reboot":
                break
        await self.post_results()
        if "upload" in effects:
            self.upload_due = True
        if "handshake" in effects:
            self.handshaken = False
        if "reboot" in effects:
            self.reboot_requested = True

    async def post_results(self) -> None:
        """Post pending results: plain ones together, one per line; INFO's block alone."""
        bodies: list[list[str]] = []
        for result in self.pending_results:
            if "\n" in result or not bodies or any("\n" in r for r in bodies[-1]):
                bodies.append([result])
            else:
                bodies[-1].append(result)
        for batch in bodies:
            body = "\n".join(batch).encode(self.terminal.encoding, "replace")
            reply = await self.link.request("POST", "/iclock/devicecmd", [("SN", self.link.wire_sn())], body)
            if reply.status != 200:
                raise self.link.reject("devicecmd", reply)
            del self.pending_results[: len(batch)]
