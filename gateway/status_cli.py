"""`punchgate status`: the running daemon's health, root cause first; exit 1 when anything is unhealthy.

Terminals worst first; each active fault set shows its root cause (punchgate.gateway.console.
health_view) with its detail, since when, and what to do (docs/health.md), the other codes after
it. From `WIDE` columns on, terminals are a table; narrower (80 columns), a short block each,
so nothing is cut to "termin…".

Without colour (output to a file or a pipe, as scripts and monitoring read it), the short blocks
are written as plain text directly: rich parsing, measuring and wrapping some 2,000 lines for
500 terminals took 0.7 s (issue 18). The lines wrap and pad exactly as rich lays them out
(`_wrap`: rich's line breaking); a line rich would change otherwise (control
characters, characters two cells wide, emoji codes) still goes through rich.
tests/gateway/test_status_fast.py holds the two outputs equal. The command itself first asks
the daemon for this text ready-made (`status_fast`, GET /api/status.txt laid out by
`status_text` with these functions); this module renders when it cannot (colour, the table,
another zone, an older daemon, an error to explain).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import urllib.error
import urllib.request
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from rich._emoji_replace import _emoji_replace
from rich.cells import cell_len, chop_cells
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from punchgate.gateway.console.health_view import (
    FaultView,
    TerminalView,
    drift_text,
    fill_text,
    root_cause_first,
    short_duration,
    terminal_views,
)
from punchgate.gateway.status_fast import WIDE

STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}
STATE_MARK = {"online": "●", "degraded": "▲", "offline": "✖"}  # state is never colour alone


def fetch_status(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(base_url.rstrip("/") + "/api/devices", timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def is_healthy(status: dict[str, Any]) -> bool:
    """Healthy: the daemon's own verdict is good, no gateway fault, every terminal online."""
    gateway = status["gateway"]
    return (
        gateway.get("healthy", True)
        and not gateway["faults"]
        and gateway["broker_connected"]
        and all(d["state"] == "online" for d in status["devices"])
    )


def _when(value: dt.datetime | None, *, date: bool = True) -> str:
    """A time in this machine's zone (the gateway's; the header names it): `11-30 19:35:53`."""
    if value is None:
        return "never"
    return value.astimezone().strftime("%m-%d %H:%M:%S" if date else "%H:%M:%S")


def since_text(fault: FaultView) -> str:
    if fault.since is None:
        return ""
    return f"since {_when(fault.since)} ({age_text(fault, utc_now())})"


def utc_now() -> dt.datetime:
    """Now, for how long ago a fault began (one place, so a test can move the clock)."""
    return dt.datetime.now(dt.UTC)


def age_text(fault: FaultView, now: dt.datetime) -> str:
    """The part of `since_text` that moves with the clock: how long ago, as it is shown."""
    return "" if fault.since is None else short_duration((now - fault.since).total_seconds())


def _state(state: str) -> tuple[str, str]:
    return f"{STATE_MARK.get(state, '?')} {state}", STATE_STYLE.get(state, "white")


class Line(NamedTuple):
    """One printed line (before wrapping): its pieces of text, each with its style ("" none).
    The markup is made only for rich: escaping 2,500 pieces costs more than printing them."""

    pieces: tuple[tuple[str, str], ...]
    indent: bool = False  # in the terminal's block (two columns in)

    @property
    def plain(self) -> str:
        return "".join(text for text, _style in self.pieces)

    @property
    def markup(self) -> str:
        return "".join(
            f"[{style}]{escape(text)}[/]" if style else escape(text) for text, style in self.pieces
        )


def _line(*pieces: tuple[str, str] | str, indent: bool = False) -> Line:
    return Line(tuple((piece, "") if isinstance(piece, str) else piece for piece in pieces), indent)


def _fault_lines(faults: list[FaultView], *, advice: bool = True, indent: bool = False) -> list[Line]:
    """The root cause with its detail, since and what to do; the others by code."""
    if not faults:
        return []
    root = faults[0]
    lines = [root_line(root, indent=indent)]
    if advice and root.what_to_do:
        lines.append(Line(((f"→ {root.what_to_do}", "cyan"),), indent))
    if len(faults) > 1:
        lines.append(Line((("also: " + ", ".join(f.code for f in faults[1:]), ""),), indent))
    return lines


def root_line(root: FaultView, *, indent: bool) -> Line:
    """The root cause: its code, detail (or summary) and since when (`since_text`)."""
    return Line(
        ((root.code, "bold"), (f": {root.detail or root.summary} ", ""), (since_text(root), "dim")), indent
    )


def _facts(view: TerminalView) -> str:
    return (
        f"last punch {_when(view.last_punch)} · contact {_when(view.last_contact)} · "
        f"drift {drift_text(view.drift_seconds)} · {fill_text(view)} · pending {view.pending}"
    )


def _render_wide(views: list[TerminalView], console: Console, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in (
        "terminal",
        "state",
        "cause first",
        "last contact",
        "last punch",
        "drift",
        "records",
        "pending",
    ):
        table.add_column(column, overflow="fold")
    for view in views:
        table.add_row(
            escape(view.name),
            _line(_state(view.state)).markup,
            "\n".join(line.markup for line in _fault_lines(view.faults)) or "—",
            _when(view.last_contact),
            _when(view.last_punch),
            drift_text(view.drift_seconds),
            fill_text(view),
            str(view.pending),
        )
    console.print(table)


def block(view: TerminalView) -> list[Line]:
    """A terminal's block: a state line, then the root cause and what to do, then the facts."""
    lines = [Line((_state(view.state), ("  ", ""), (view.name, "bold")))]
    lines.extend(_fault_lines(view.faults, indent=True))
    lines.append(Line(((_facts(view), ""),), True))
    return lines


def _compact(views: list[TerminalView], title: str) -> list[Line]:
    """One block per terminal under the title."""
    lines = [_line((title, "bold"))]
    for view in views:
        lines.extend(block(view))
    return lines


def title_line(gateway: dict[str, Any]) -> Line:
    zone = dt.datetime.now().astimezone().strftime("%Z, UTC%z")
    return _line((f"punchgate {gateway['gateway_id']} — terminals (times {zone})", "bold"))


def render(status: dict[str, Any], console: Console) -> None:
    """Terminals worst first, each with its root cause and what to do; then the gateway."""
    views = terminal_views(status)
    title = title_line(status["gateway"]).plain
    if console.width >= WIDE:
        _render_wide(views, console, title)
        print_lines(gateway_lines(status), console)
    else:
        print_lines(_compact(views, title) + gateway_lines(status), console)


def gateway_lines(status: dict[str, Any]) -> list[Line]:
    gateway = status["gateway"]
    connected = gateway["broker_connected"]
    broker = ("connected", "green") if connected else ("NOT connected", "red")
    age = gateway["oldest_pending_age_seconds"]
    unconfirmed = ""
    if gateway.get("delivery") == "central":
        oldest = gateway.get("oldest_unconfirmed_age_seconds")
        unconfirmed = f" · unconfirmed by central {gateway.get('unconfirmed', 0)}" + (
            f" (oldest {oldest:.0f} s)" if oldest else ""
        )
    rest = f" · pending {gateway['pending']}" + (f" (oldest {age:.0f} s)" if age else "") + unconfirmed
    lines = [_line("gateway: broker ", broker, rest)]
    faults = root_cause_first(list(gateway["faults"]))
    if faults:
        lines.append(_line("gateway faults:"))
        lines.extend(_fault_lines(faults, indent=True))
    else:
        lines.append(_line("gateway faults: none"))
    synced = gateway.get("clock_synchronised")
    clock = {True: ("synchronised", "green"), False: ("NOT synchronised", "red")}.get(
        synced, ("unknown", "yellow")
    )
    lines.append(_line("gateway clock: ", clock, f" ({gateway.get('clock_sync_source', '?')})"))
    return lines


def print_lines(lines: list[Line], console: Console, *, fast: bool | None = None) -> None:
    """Print `lines` through rich, or, without colour, as the same plain text written directly
    (`fast`: None decides by the console; the tests force either)."""
    if fast is None:
        fast = console.color_system is None
    if not fast:
        for line in lines:
            console.print(Padding(line.markup, (0, 0, 0, 2), expand=False) if line.indent else line.markup)
        return
    # One look for emoji codes in the whole text instead of one a line (a code never spans
    # lines: it holds no whitespace); only when there is one is each line looked at.
    joined = "\n".join(line.plain for line in lines)
    console.file.write(plain_text(lines, console, emoji=_emoji_replace(joined) != joined))
    console.file.flush()


def plain_text(lines: list[Line], console: Console, *, emoji: bool = True) -> str:
    """`lines` as `console` (without colour) prints them; each line's text depends on it alone
    (`emoji`: False when no line holds an emoji code, which spares looking)."""
    width, out = console.width, []
    for line in lines:
        text = _plain(line.plain, width - 2 if line.indent else width, pad=line.indent, emoji=emoji)
        if text is None:  # rich would change this line: let rich lay it out
            with console.capture() as captured:
                print_lines([line], console, fast=False)
            out.append(captured.get())
        else:
            out.append(text)
    return "".join(out)


@functools.lru_cache(maxsize=1024)  # many lines repeat (what to do, facts of idle terminals)
def _plain(text: str, width: int, *, pad: bool, emoji: bool = True) -> str | None:
    """`text` wrapped (and, in a block, indented and padded) as rich prints it without colour;
    None when rich would change the text itself (`emoji`: it may hold an emoji code)."""
    if not text.isprintable() or (emoji and ":" in text and _holds_emoji(text)):
        return None
    if not text.isascii() and cell_len(text) != len(text):  # a character two cells wide
        return None
    lines = [text] if len(text) <= width else _wrap(text, width)
    if not pad:
        return "".join(f"{line}\n" for line in lines)
    # Padding(expand=False): as wide as the text's longest line at most, every line padded to it.
    inner = min(len(text), width)
    return "".join(f"  {line.ljust(inner)}\n" for line in lines)


def _holds_emoji(text: str) -> bool:
    """Whether rich would replace an emoji code in `text`. A code (`:name:`) never holds
    whitespace, so each word with two colons is looked at on its own, and remembered: a fault's
    line changes every second with its age, its words hardly ever."""
    return any(_word_holds_emoji(word) for word in text.split() if word.count(":") > 1)


@functools.lru_cache(maxsize=4096)
def _word_holds_emoji(word: str) -> bool:
    return _emoji_replace(word) != word


def _wrap(text: str, width: int) -> list[str]:
    """`_wrap_words`, found by looking only where a line ends (printable text's only whitespace
    is the space): a line from p holds every word whose last letter is within p + width, so it
    breaks at the start of the word that crosses that column. A text that starts with spaces,
    or holds a word longer than a line (folded), takes `_wrap_words`."""
    end = len(text.rstrip(" "))
    if text.startswith(" "):
        return _wrap_words(text, width)
    breaks: list[int] = []
    start = 0
    while end - start > width:
        limit = start + width
        if text[limit] == " ":  # the words up to here fit; the next one starts the next line
            start = limit + 1
            while text[start] == " ":
                start += 1
        else:  # the word across the limit starts the next line, unless it is the line's first
            space = text.rfind(" ", start, limit)
            if space < 0:
                return _wrap_words(text, width)
            start = space + 1
        breaks.append(start)
    return _lines(text, breaks, width)


def _wrap_words(text: str, width: int) -> list[str]:
    """rich's word wrap of one line of text whose characters are one cell each (Text.wrap:
    overflow fold, default justify; the breaks are rich's divide_line's, with len for cell_len)."""
    breaks: list[int] = []
    offset = 0
    for word in _WORD.finditer(text):
        start, chunk = word.start(), word.group()
        length = len(chunk.rstrip())
        if width - offset >= length:
            offset += len(chunk)
        elif length > width:  # longer than a line: folded
            pieces = chop_cells(chunk, width=width)
            for piece in pieces:
                if start:
                    breaks.append(start)
                start += len(piece)
            offset = len(pieces[-1])
        elif offset and start:
            breaks.append(start)
            offset = len(chunk)
    return _lines(text, breaks, width)


def _lines(text: str, breaks: list[int], width: int) -> list[str]:
    """`text` cut at `breaks`, each line without the spaces beyond `width` (Text.rstrip_end)."""
    wrapped = []
    for begin, end in zip([0, *breaks], [*breaks, len(text)], strict=True):
        line = text[begin:end]
        if len(line) > width:  # whitespace beyond the width goes (Text.rstrip_end)
            spaces = len(line) - len(line.rstrip())
            line = line[: len(line) - min(spaces, len(line) - width)]
        wrapped.append(line[:width])
    return wrapped


def unreachable_message(base_url: str, exc: BaseException) -> str:
    """One line for a daemon that does not answer: connection refused, timeout, unknown host."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    refused = isinstance(reason, ConnectionRefusedError)
    why = "" if refused else f" ({getattr(reason, 'strerror', None) or reason})"
    return f"no punchgate is answering at {base_url}{why} — is it running? (--config/--url)"


def unreachable(base_url: str, exc: BaseException, console: Console | None = None) -> int:
    """Say that the daemon does not answer (`unreachable_message`); the exit code, 2."""
    (console or Console()).print(f"[red]{escape(unreachable_message(base_url, exc))}[/]", soft_wrap=True)
    return 2


def show_status(base_url: str, *, as_json: bool = False) -> int:
    console = Console()
    if urlsplit(base_url).scheme not in ("http", "https"):
        console.print(
            f"[red]{escape(base_url)} is not a URL such as http://127.0.0.1:9108 (--url)[/]", soft_wrap=True
        )
        return 2
    try:
        status = fetch_status(base_url)
    except urllib.error.HTTPError as exc:  # e.g. 403: the URL's host is not one the daemon answers to
        if exc.headers.get_content_type() in ("text/plain", "application/json"):
            reason = " ".join(exc.read().decode(errors="replace").split())[:300]
        else:  # a web page: not punchgate's API answering
            reason = f"{exc.reason} (not punchgate's API? check --config/--url)"
        console.print(
            f"[red]the punchgate daemon at {escape(base_url)} refused: {exc.code} {escape(reason)}[/]",
            soft_wrap=True,
        )
        return 2
    except json.JSONDecodeError as exc:  # a ValueError too: something else answers there
        message = f"something at {base_url} answered, but not as punchgate does ({exc}); check --config/--url"
        console.print(f"[red]{escape(message)}[/]", soft_wrap=True)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        return unreachable(base_url, exc, console)
    except ValueError as exc:  # a URL urllib cannot use
        console.print(f"[red]{escape(base_url)}: {escape(str(exc))} (--url)[/]", soft_wrap=True)
        return 2
    if as_json:
        console.print_json(json.dumps(status))
    else:
        render(status, console)
    return 0 if is_healthy(status) else 1


_WORD = re.compile(r"\s*\S+\s*")  # rich._wrap's words: a word and the whitespace after it
