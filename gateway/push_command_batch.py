"""Which waiting commands go into a push terminal's heartbeat answer.

`answer_batch` walks the terminal's queue in order and takes open commands until a limit:

* order holds: a command sent without a result yet holds back itself and everything queued
  after it until it may be sent again (`resendable`): after one more heartbeat answered
  without it (a terminal that ran it but could not post the result posts it then) and
  `resend_after` seconds;
* at most `commands_per_answer` (the terminal's entry) and `commands.MAX_ANSWER_BYTES` per
  answer, and nothing after a REBOOT (the terminal goes away; the rest waits for its return);
* each line is rendered at send time, so `SET OPTIONS DateTime=now` carries the terminal's
  local time (its entry's timezone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from punchgate.drivers.zk_push import commands
from punchgate.gateway.push_command_book import CommandBook
from punchgate.gateway.push_command_records import OPEN, StoredCommand


def resendable(book: CommandBook, entry: StoredCommand, now: float, resend_after: float) -> bool:
    """Sent, no result: again only after one heartbeat answered without it (the terminal
    may hold a result it could not post) and `resend_after` seconds."""
    waited = now - (entry.sent_at or 0.0)
    return book.beats >= entry.sent_beat + 2 and waited >= resend_after


def answer_batch(
    book: CommandBook, skip: dict[int, StoredCommand], now: float, resend_after: float
) -> tuple[list[str], dict[int, StoredCommand]]:
    """This heartbeat's `C:<id>:<command>` lines, and their commands marked sent (by wire id).
    Commands in `skip` (just expired) are passed over."""
    terminal = book.terminal
    local_now = dt.datetime.fromtimestamp(now, ZoneInfo(terminal.timezone)).replace(tzinfo=None)
    lines: list[str] = []
    sent: dict[int, StoredCommand] = {}
    size = 0
    for entry in book.entries.values():
        if entry.status not in OPEN or entry.wire_id in skip:
            continue
        if entry.status == "sent" and not resendable(book, entry, now, resend_after):
            break  # in flight: neither it nor anything after it, so the order holds
        line = commands.command_line(entry.wire_id, commands.render(entry.text, local_now))
        length = len(line.encode(terminal.encoding)) + 1
        if lines and (
            len(lines) >= terminal.commands_per_answer or size + length > commands.MAX_ANSWER_BYTES
        ):
            break
        lines.append(line)
        size += length
        sent[entry.wire_id] = dataclasses.replace(
            entry, status="sent", sends=entry.sends + 1, sent_at=now, sent_beat=book.beats
        )
        if entry.kind == "reboot":
            break  # the terminal goes away: what follows waits for its return
    return lines, sent
