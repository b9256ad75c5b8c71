"""The durable queue of commands for push terminals: one queue per zk-push terminal.

A push terminal cannot be called: it asks for commands in its heartbeat (`GET getrequest`)
and posts their results to `POST devicecmd` (docs/zk-push.md, "Commands"). This queue holds
what waits for it, hands the receiver (`punchgate.drivers.zk_push.receiver`) each answer's
`C:<id>:<command>` lines, and matches the results by id. The wire format and the vocabulary
are `punchgate.drivers.zk_push.commands`.

API (for remote commands, gateway/commands, and the loopback API, gateway/push_commands_api.py)::

    queue = push_command_queue(app)          # None when the [push] listener does not run
    command_id = await queue.enqueue("door-1", commands.update_user("7", name="Li Wei"),
                                     expires_at=time.time() + 3600)   # unix time or aware datetime
    queue.status(command_id)                 # CommandStatus, or None for an id it does not know
    status = await queue.result(command_id)  # waits until ok, failed or expired
    queue.list_commands("door-1")            # the terminal's commands, oldest first

* `enqueue` returns once the command is stored durably in the buffer (device meta
  `<device>/commands`). It raises `PushCommandError` with `code`: `unknown_terminal` (not a
  zk-push terminal this listener serves), `bad_command` (outside the vocabulary: the message
  says what is wrong), `expired` (expires_at not in the future, or more than `MAX_TTL` ahead),
  `queue_full` (`MAX_OPEN` commands wait already), `unavailable` (the buffer did not store it).
* A command id is a string, `<device>/<n>` (n is the number sent as `C:<n>:`); treat it as
  opaque. It survives restarts: store it and ask `status`/`result` again after one.
* `CommandStatus.status`: `queued` (not sent yet), `sent` (in an answer; waiting for its
  result), then one final status: `ok` (Return 0 or a count), `failed` (a negative Return, or
  none; `meaning` says what the code means where it is known), `expired` (no result by
  `expires_at`). `returned` is the code, `details` INFO's `Key=Value` block, `sends` how many
  answers carried it. A result that arrives after the command expired is kept in
  `late_result`; the status stays `expired` (it was final).
* `CLEAR LOG` is queued only with `enqueue(..., clearing=True)`: by the log.clear remote
  command, after its guards (gateway/commands/push.py); the loopback API cannot queue it.
* `SET OPTIONS DateTime=now` (`commands.set_time()`) is written with the terminal's local
  time (its entry's timezone) each time it is sent.

Invariants:

* Order: a terminal gets its commands in the order they were queued, at most
  `commands_per_answer` (its entry; 10 by default) and `commands.MAX_ANSWER_BYTES` per answer,
  and nothing after a REBOOT in the same answer.
* Stored before sent: a command is recorded as sent (durably) before the answer carrying it
  leaves; a result is recorded before `OK` is answered to devicecmd, so a terminal whose post
  failed posts it again.
* Sent again until a result arrives or it expires, but never blindly: a command that was sent
  and has no result yet holds back itself and everything queued after it until the terminal
  has had one more heartbeat answered without it (a terminal that ran it but could not post
  the result, say while the gateway restarted, posts it then) and `resend_after` seconds have
  passed. An expired command is never sent again.
* A result is matched by its id; a result for an id this terminal's queue does not hold is
  ignored and counted (`punchgate_push_command_results_total{outcome="unknown"}`), a second
  result for a finished command too (`duplicate`).
* Passwords and card numbers in `DATA UPDATE USERINFO` are stored only until the command is
  final, and never shown (`commands.redact`).

The parts: `push_command_records` (a command as stored and as shown, its id),
`push_command_book` (one terminal's queue, stored whole, expiry), `push_command_batch` (what
a heartbeat answer carries), `push_command_results` (results matched and counted). This
module holds the queue and what it promises.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.drivers.zk_push import commands
from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.gateway.push_command_batch import answer_batch
from punchgate.gateway.push_command_book import CommandBook
from punchgate.gateway.push_command_records import (
    FINAL,
    OPEN,
    CommandStatus,
    StoredCommand,
    command_id,
    command_status,
    iso_time,
    split_command_id,
)
from punchgate.gateway.push_command_results import RESULT_OUTCOMES, ResultRecorder
from punchgate.gateway.ratelimit_log import RateLimitedLog

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

# CommandStatus was defined here before the split (push_command_records.py now); it is what
# the queue's API returns, so importers still find it here.
__all__ = ["CommandStatus", "PushCommandError", "PushCommandQueue", "push_command_queue"]

log = structlog.get_logger(__name__)

MAX_OPEN = 1000  # commands waiting for one terminal
MAX_TTL = 30 * 86400.0  # seconds: expires_at at most this far ahead
RESEND_AFTER = 30.0  # seconds before a command sent without a result may be sent again
EXPIRE_EVERY = 1.0  # seconds between expiry checks

Load = Callable[[str], Awaitable[dict[str, Any]]]
Save = Callable[[str, dict[str, Any]], Awaitable[None]]
Clock = Callable[[], float]


class PushCommandError(Exception):
    """A command the queue does not take; `code` says why, the message in a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unix(when: float | dt.datetime) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise PushCommandError("expired", "expires_at must be an aware datetime (with a timezone)")
        return when.timestamp()
    return float(when)


class PushCommandQueue:
    """The queues of every push terminal the listener serves; see the module docstring."""

    def __init__(
        self,
        terminals: Sequence[PushTerminal],
        *,
        load: Load,
        save: Save,
        resend_after: float = RESEND_AFTER,
        clock: Clock = time.time,
    ) -> None:
        self._books = {t.name: CommandBook(t) for t in terminals if not t.quarantined}
        self._load = load
        self._save = save
        self.resend_after = resend_after
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.limited = RateLimitedLog(log)
        self._results = ResultRecorder(self.counts, self.limited)
        self._loaded = False
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    # --- life cycle --------------------------------------------------------------------------
    async def load(self) -> None:
        """Read every terminal's queue from the buffer (at start-up, before the listener serves)."""
        for name, book in self._books.items():
            book.restore(await self._load(book.meta_key))
            waiting = len(book.open_entries())
            if waiting:
                log.info("push_commands_loaded", device=name, waiting=waiting)
        self._loaded = True

    def start(self) -> None:
        """Start expiring commands on time (a terminal that is away never asks)."""
        if self._task is None:
            self._task = asyncio.create_task(self._expire_forever(), name="push-command-expiry")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.limited.flush()

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY)
            try:
                await self.expire_due()
            except Exception:  # the buffer refused, say: try again at the next round
                self.limited.error(
                    "push_command_expiry_failed", key="push_command_expiry_failed", exc_info=True
                )

    # --- the API -------------------------------------------------------------------------------
    @property
    def devices(self) -> list[str]:
        return list(self._books)

    async def enqueue(
        self, device: str, command_text: str, *, expires_at: float | dt.datetime, clearing: bool = False
    ) -> str:
        """Queue `command_text` for `device`; its command id once it is stored durably. `CLEAR
        LOG` only with `clearing` (the log.clear remote command, which checked its guards)."""
        book = self._books.get(device)
        if book is None:
            raise PushCommandError(
                "unknown_terminal", f"{device!r} is not a zk-push terminal of this gateway"
            )
        if not self._loaded:
            raise PushCommandError("unavailable", "the push listener is starting")
        try:
            parsed = commands.parse(command_text)
        except commands.CommandTextError as exc:
            raise PushCommandError("bad_command", str(exc)) from None
        if parsed.kind == "clear_log" and not clearing:
            raise PushCommandError(
                "bad_command",
                "CLEAR LOG is sent only by the log.clear remote command, which checks the terminal's "
                "clear_log and its serial number first (docs/mqtt-contract.md)",
            )
        now = self.clock()
        expires = _unix(expires_at)
        if not expires > now:
            raise PushCommandError("expired", f"expires_at {iso_time(expires)} is not in the future")
        if expires - now > MAX_TTL:
            raise PushCommandError("expired", f"expires_at is more than {MAX_TTL / 86400:g} days ahead")
        if not commands.encodable(parsed.text, book.terminal.encoding):
            raise PushCommandError(
                "bad_command",
                f"the command holds characters {device}'s encoding ({book.terminal.encoding}) lacks",
            )
        async with book.lock:
            if len(book.open_entries()) >= MAX_OPEN:
                raise PushCommandError("queue_full", f"{MAX_OPEN} commands wait for {device} already")
            wire_id = book.next_id
            entry = StoredCommand(wire_id, parsed.text, parsed.kind, "queued", now, expires)
            try:
                await self._persist(book, {wire_id: entry}, next_id=wire_id + 1)
            except PushCommandError:
                raise
            except Exception as exc:
                raise PushCommandError(
                    "unavailable", f"the buffer did not store the command: {exc}"
                ) from None
        log.info(
            "push_command_queued",
            device=device,
            id=command_id(device, wire_id),
            command=commands.redact(parsed.text),
            expires_at=iso_time(expires),
        )
        return command_id(device, wire_id)

    def status(self, command_id_: str) -> CommandStatus | None:
        """Where the command is now; None for an id this queue does not hold (or forgot)."""
        found = self._find(command_id_)
        return None if found is None else command_status(found[0], found[1])

    async def result(self, command_id_: str) -> CommandStatus:
        """Wait until the command is final (ok, failed, expired) and return it."""
        while True:
            current = self.status(command_id_)
            if current is None:
                raise PushCommandError("unknown_command", f"no push command {command_id_!r}")
            if current.final:
                return current
            event = self._waiters.setdefault(command_id_, asyncio.Event())
            await event.wait()

    def list_commands(self, device: str, *, finished: bool = True) -> list[CommandStatus]:
        """The terminal's commands, oldest first (`finished=False`: the open ones only)."""
        book = self._books.get(device)
        if book is None:
            raise PushCommandError(
                "unknown_terminal", f"{device!r} is not a zk-push terminal of this gateway"
            )
        return [command_status(device, e) for e in book.entries.values() if finished or e.status in OPEN]

    def _find(self, value: str) -> tuple[str, StoredCommand] | None:
        parts = split_command_id(value)
        if parts is None:
            return None
        book = self._books.get(parts[0])
        entry = book.entries.get(parts[1]) if book is not None else None
        return None if entry is None else (parts[0], entry)

    # --- what the receiver calls (commands.CommandSource) ---------------------------------------
    async def next_batch(self, device: str) -> list[str]:
        book = self._books.get(device)
        if book is None:
            return []
        async with book.lock:
            book.beats += 1
            now = self.clock()
            changed = book.expired(now)
            lines, sent = answer_batch(book, changed, now, self.resend_after)
            changed.update(sent)
            if changed:
                await self._persist(book, changed)
        if lines:
            log.info(
                "push_commands_sent",
                device=device,
                ids=[e.wire_id for e in sent.values()],
                resent=[e.wire_id for e in sent.values() if e.sends > 1],
            )
        return lines

    async def record_results(self, device: str, results: Sequence[commands.Result]) -> None:
        book = self._books.get(device)
        if book is None:
            self._results.unknown(device, results)
            return
        async with book.lock:
            now = self.clock()
            changed: dict[int, StoredCommand] = {}
            for result in results:
                wire_id = result.wire_id
                entry = None if wire_id is None else changed.get(wire_id) or book.entries.get(wire_id)
                if entry is None:
                    self._results.unknown(device, [result])
                    continue
                update = self._results.apply(device, entry, result, now)
                if update is not None:
                    changed[entry.wire_id] = update
            if changed:
                await self._persist(book, changed)

    # --- expiry ----------------------------------------------------------------------------------
    async def expire_due(self) -> int:
        """Mark every open command past its expires_at expired; how many."""
        now = self.clock()
        expired = 0
        for book in self._books.values():
            if not any(e.status in OPEN and e.expires_at <= now for e in book.entries.values()):
                continue
            async with book.lock:
                changed = book.expired(self.clock())
                if changed:
                    await self._persist(book, changed)
                    expired += len(changed)
        return expired

    # --- storage -----------------------------------------------------------------------------------
    async def _persist(
        self, book: CommandBook, changed: dict[int, StoredCommand], *, next_id: int | None = None
    ) -> None:
        """Store the book with `changed` applied, then apply it in memory (and wake waiters):
        what the queue acts on is always what the buffer holds."""
        entries, new_next = book.updated(changed, next_id)
        await self._save(book.meta_key, book.stored(entries, new_next))
        book.entries, book.next_id = entries, new_next
        for entry in changed.values():
            if entry.status in FINAL:
                event = self._waiters.pop(command_id(book.terminal.name, entry.wire_id), None)
                if event is not None:
                    event.set()

    # --- /metrics ----------------------------------------------------------------------------------
    def metrics(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        results = CounterMetricFamily(
            "punchgate_push_command_results",
            "command results posted by push terminals, by outcome (ok, failed, unknown id, "
            "duplicate, after expiry)",
            labels=["outcome"],
        )
        for outcome in RESULT_OUTCOMES:
            results.add_metric([outcome], self.counts[outcome])
        yield results
        waiting = GaugeMetricFamily(
            "punchgate_push_commands_waiting",
            "commands queued or sent and not finished, per terminal",
            labels=["device"],
        )
        for name, book in self._books.items():
            waiting.add_metric([name], len(book.open_entries()))
        yield waiting


def push_command_queue(app: Application) -> PushCommandQueue | None:
    """The running gateway's queue; None when the [push] listener does not run."""
    service = getattr(app, "_push", None)  # the listener, when it runs (gateway/push.py)
    queue = getattr(service, "commands", None)
    return queue if isinstance(queue, PushCommandQueue) else None
