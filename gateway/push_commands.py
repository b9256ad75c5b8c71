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
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.drivers.zk_push import commands
from punchgate.drivers.zk_push.backend import PushTerminal
from punchgate.gateway.ratelimit_log import RateLimitedLog

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)

Status = Literal["queued", "sent", "ok", "failed", "expired"]
STATUSES: tuple[Status, ...] = ("queued", "sent", "ok", "failed", "expired")
OPEN: frozenset[str] = frozenset({"queued", "sent"})
FINAL: frozenset[str] = frozenset({"ok", "failed", "expired"})
META_SUFFIX = "/commands"  # device meta key of a terminal's queue: `<device>/commands`
MAX_OPEN = 1000  # commands waiting for one terminal
MAX_FINISHED_KEPT = 200  # finished commands remembered per terminal (the newest)
MAX_TTL = 30 * 86400.0  # seconds: expires_at at most this far ahead
RESEND_AFTER = 30.0  # seconds before a command sent without a result may be sent again
EXPIRE_EVERY = 1.0  # seconds between expiry checks
RESULT_OUTCOMES = ("ok", "failed", "unknown", "duplicate", "late")

Load = Callable[[str], Awaitable[dict[str, Any]]]
Save = Callable[[str, dict[str, Any]], Awaitable[None]]
Clock = Callable[[], float]


class PushCommandError(Exception):
    """A command the queue does not take; `code` says why, the message in a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _unix(when: float | dt.datetime) -> float:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise PushCommandError("expired", "expires_at must be an aware datetime (with a timezone)")
        return when.timestamp()
    return float(when)


def command_id(device: str, wire_id: int) -> str:
    return f"{device}/{wire_id}"


def split_command_id(value: str) -> tuple[str, int] | None:
    device, sep, number = value.rpartition("/")
    if not sep or not device or not number.isdigit() or len(number) > 18:
        return None
    return device, int(number)


@dataclass(frozen=True, slots=True)
class _Entry:
    wire_id: int
    text: str  # canonical (commands.parse); redacted once final
    kind: commands.Kind
    status: Status
    queued_at: float
    expires_at: float
    sends: int = 0
    sent_at: float | None = None
    finished_at: float | None = None
    returned: int | None = None
    meaning: str = ""
    reply: str = ""  # the CMD= the terminal echoed
    details: dict[str, str] = field(default_factory=dict)
    late_result: dict[str, Any] | None = None
    sent_beat: int = 0  # not stored: the heartbeat (of this process) that last carried it

    def stored(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["sent_beat"]
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> _Entry:
        known = {f.name for f in dataclasses.fields(cls)} - {"sent_beat"}
        entry = cls(**{k: v for k, v in data.items() if k in known})
        if entry.status not in STATUSES or entry.kind not in commands.KINDS:
            raise ValueError(f"status {entry.status!r} / kind {entry.kind!r}")
        return entry


@dataclass(frozen=True, slots=True)
class CommandStatus:
    """One command as the API shows it (times are unix seconds; `as_dict` gives ISO 8601)."""

    command_id: str
    device: str
    wire_id: int
    command: str  # the text, with passwords and card numbers masked
    kind: commands.Kind
    status: Status
    queued_at: float
    expires_at: float
    sends: int
    sent_at: float | None
    finished_at: float | None
    returned: int | None
    meaning: str
    reply: str
    details: dict[str, str]
    late_result: dict[str, Any] | None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.command_id,
            "device": self.device,
            "wire_id": self.wire_id,
            "command": self.command,
            "kind": self.kind,
            "status": self.status,
            "queued_at": _iso(self.queued_at),
            "expires_at": _iso(self.expires_at),
            "sends": self.sends,
            "sent_at": _iso(self.sent_at),
            "finished_at": _iso(self.finished_at),
            "returned": self.returned,
            "meaning": self.meaning,
            "reply": self.reply,
            "details": self.details,
            "late_result": self.late_result,
        }


def _status(device: str, entry: _Entry) -> CommandStatus:
    return CommandStatus(
        command_id=command_id(device, entry.wire_id),
        device=device,
        wire_id=entry.wire_id,
        command=commands.redact(entry.text),
        kind=entry.kind,
        status=entry.status,
        queued_at=entry.queued_at,
        expires_at=entry.expires_at,
        sends=entry.sends,
        sent_at=entry.sent_at,
        finished_at=entry.finished_at,
        returned=entry.returned,
        meaning=entry.meaning,
        reply=entry.reply,
        details=dict(entry.details),
        late_result=entry.late_result,
    )


@dataclass
class _Book:
    """One terminal's queue: entries by wire id (ascending), the next id, its lock."""

    terminal: PushTerminal
    entries: dict[int, _Entry] = field(default_factory=dict)
    next_id: int = 1
    beats: int = 0  # heartbeats answered by this process
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def open_entries(self) -> list[_Entry]:
        return [e for e in self.entries.values() if e.status in OPEN]


_EXPECTED_REPLY: dict[str, tuple[str, ...]] = {
    "info": ("INFO",),
    "check": ("CHECK",),
    "reboot": ("REBOOT",),
    "set_time": ("SET", "SET OPTION", "SET OPTIONS"),
    "user_update": ("DATA", "DATA UPDATE"),
    "user_delete": ("DATA", "DATA DELETE"),
}


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
        self._books = {t.name: _Book(t) for t in terminals if not t.quarantined}
        self._load = load
        self._save = save
        self.resend_after = resend_after
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.limited = RateLimitedLog(log)
        self._loaded = False
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    # --- life cycle --------------------------------------------------------------------------
    async def load(self) -> None:
        """Read every terminal's queue from the buffer (at start-up, before the listener serves)."""
        for name, book in self._books.items():
            data = await self._load(name + META_SUFFIX)
            for item in data.get("commands", []) if isinstance(data.get("commands"), list) else []:
                try:
                    entry = _Entry.from_stored(item)
                except (TypeError, ValueError) as exc:
                    log.error("push_command_unreadable", device=name, error=str(exc)[:200])
                    continue
                book.entries[entry.wire_id] = entry
            book.entries = dict(sorted(book.entries.items()))
            stored_next = data.get("next_id")
            book.next_id = max(
                stored_next if isinstance(stored_next, int) else 1, max(book.entries, default=0) + 1
            )
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

    async def enqueue(self, device: str, command_text: str, *, expires_at: float | dt.datetime) -> str:
        """Queue `command_text` for `device`; its command id once it is stored durably."""
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
        now = self.clock()
        expires = _unix(expires_at)
        if not expires > now:
            raise PushCommandError("expired", f"expires_at {_iso(expires)} is not in the future")
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
            entry = _Entry(wire_id, parsed.text, parsed.kind, "queued", now, expires)
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
            expires_at=_iso(expires),
        )
        return command_id(device, wire_id)

    def status(self, command_id_: str) -> CommandStatus | None:
        """Where the command is now; None for an id this queue does not hold (or forgot)."""
        found = self._find(command_id_)
        return None if found is None else _status(found[0], found[1])

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
        return [_status(device, e) for e in book.entries.values() if finished or e.status in OPEN]

    def _find(self, value: str) -> tuple[str, _Entry] | None:
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
            changed = self._expired(book, now)
            terminal = book.terminal
            local_now = dt.datetime.fromtimestamp(now, ZoneInfo(terminal.timezone)).replace(tzinfo=None)
            lines: list[str] = []
            size = 0
            for entry in book.entries.values():
                if entry.status not in OPEN or entry.wire_id in changed:
                    continue
                if entry.status == "sent" and not self._resendable(book, entry, now):
                    break  # in flight: neither it nor anything after it, so the order holds
                line = commands.command_line(entry.wire_id, commands.render(entry.text, local_now))
                length = len(line.encode(terminal.encoding)) + 1
                if lines and (
                    len(lines) >= terminal.commands_per_answer or size + length > commands.MAX_ANSWER_BYTES
                ):
                    break
                lines.append(line)
                size += length
                changed[entry.wire_id] = dataclasses.replace(
                    entry, status="sent", sends=entry.sends + 1, sent_at=now, sent_beat=book.beats
                )
                if entry.kind == "reboot":
                    break  # the terminal goes away: what follows waits for its return
            if changed:
                await self._persist(book, changed)
        if lines:
            sent = [e for e in changed.values() if e.status == "sent" and e.sent_at == now]
            log.info(
                "push_commands_sent",
                device=device,
                ids=[e.wire_id for e in sent],
                resent=[e.wire_id for e in sent if e.sends > 1],
            )
        return lines

    def _resendable(self, book: _Book, entry: _Entry, now: float) -> bool:
        """Sent, no result: again only after one heartbeat answered without it (the terminal
        may hold a result it could not post) and `resend_after` seconds."""
        waited = now - (entry.sent_at or 0.0)
        return book.beats >= entry.sent_beat + 2 and waited >= self.resend_after

    async def record_results(self, device: str, results: Sequence[commands.Result]) -> None:
        book = self._books.get(device)
        if book is None:
            self._unknown(device, results)
            return
        async with book.lock:
            now = self.clock()
            changed: dict[int, _Entry] = {}
            for result in results:
                wire_id = result.wire_id
                entry = None if wire_id is None else changed.get(wire_id) or book.entries.get(wire_id)
                if entry is None:
                    self._unknown(device, [result])
                    continue
                update = self._apply(device, entry, result, now)
                if update is not None:
                    changed[entry.wire_id] = update
            if changed:
                await self._persist(book, changed)

    def _apply(self, device: str, entry: _Entry, result: commands.Result, now: float) -> _Entry | None:
        """The entry with this result recorded, or None when it changes nothing (a duplicate)."""
        shown = command_id(device, entry.wire_id)
        late = {
            "returned": result.returned,
            "meaning": commands.meaning(result.returned),
            "at": _iso(now),
        }
        if entry.status == "expired" and entry.late_result is None:
            self.counts["late"] += 1
            log.warning("push_command_result_after_expiry", device=device, id=shown, **late)
            return dataclasses.replace(entry, late_result=late)
        if entry.status in FINAL:
            self.counts["duplicate"] += 1
            self.limited.info(
                "push_command_result_duplicate", key="push_command_result_duplicate", device=device, id=shown
            )
            return None
        outcome = commands.outcome(result.returned)
        self.counts[outcome] += 1
        expected = _EXPECTED_REPLY[entry.kind]
        if result.command and result.command.strip().upper() not in expected:
            self.limited.warning(
                "push_command_result_mismatch",
                key="push_command_result_mismatch",
                device=device,
                id=shown,
                kind=entry.kind,
                reply=result.command,
            )
        (log.info if outcome == "ok" else log.warning)(
            "push_command_done",
            device=device,
            id=shown,
            command=commands.redact(entry.text),
            status=outcome,
            returned=result.returned,
            meaning=commands.meaning(result.returned),
        )
        return dataclasses.replace(
            entry,
            text=commands.redact(entry.text),
            status=outcome,
            finished_at=now,
            returned=result.returned,
            meaning=commands.meaning(result.returned),
            reply=result.command,
            details=dict(result.details),
        )

    def _unknown(self, device: str, results: Sequence[commands.Result]) -> None:
        for result in results:
            self.counts["unknown"] += 1
            self.limited.warning(
                "push_command_result_unknown",
                key="push_command_result_unknown",
                device=device,
                id=result.id,
                returned=result.returned,
                reply=result.command,
            )

    # --- expiry ----------------------------------------------------------------------------------
    async def expire_due(self) -> int:
        """Mark every open command past its expires_at expired; how many."""
        now = self.clock()
        expired = 0
        for book in self._books.values():
            if not any(e.status in OPEN and e.expires_at <= now for e in book.entries.values()):
                continue
            async with book.lock:
                changed = self._expired(book, self.clock())
                if changed:
                    await self._persist(book, changed)
                    expired += len(changed)
        return expired

    def _expired(self, book: _Book, now: float) -> dict[int, _Entry]:
        changed: dict[int, _Entry] = {}
        for entry in book.entries.values():
            if entry.status in OPEN and entry.expires_at <= now:
                changed[entry.wire_id] = dataclasses.replace(
                    entry,
                    text=commands.redact(entry.text),
                    status="expired",
                    finished_at=now,
                    meaning="no result before it expired"
                    if entry.sends
                    else "never sent: the terminal did not ask in time",
                )
                log.warning(
                    "push_command_expired",
                    device=book.terminal.name,
                    id=command_id(book.terminal.name, entry.wire_id),
                    command=commands.redact(entry.text),
                    sends=entry.sends,
                )
        return changed

    # --- storage -----------------------------------------------------------------------------------
    async def _persist(self, book: _Book, changed: dict[int, _Entry], *, next_id: int | None = None) -> None:
        """Store the book with `changed` applied, then apply it in memory (and wake waiters):
        what the queue acts on is always what the buffer holds."""
        entries = dict(sorted({**book.entries, **changed}.items()))
        finished = [e for e in entries.values() if e.status in FINAL]
        finished.sort(key=lambda e: (e.finished_at or 0.0, e.wire_id))
        for old in finished[:-MAX_FINISHED_KEPT] if len(finished) > MAX_FINISHED_KEPT else []:
            del entries[old.wire_id]
        new_next = book.next_id if next_id is None else next_id
        data = {
            "serial_number": book.terminal.serial_number,
            "next_id": new_next,
            "commands": [e.stored() for e in entries.values()],
        }
        await self._save(book.terminal.name + META_SUFFIX, data)
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
