"""GET /api/status.txt: `punchgate status`'s text without colour, made by the daemon and kept.

`punchgate status` writing to a pipe or a file (scripts, monitoring) printed some 2,000 lines
for 500 terminals: importing what `--version` does not, parsing 330 kB of /api/devices' JSON,
building the terminals' views, their lines and laying them out took about 38 ms of its own
CPU on every run (issue 18). The daemon now does that once and keeps it: each terminal's
block (its state line, root cause and what to do, facts) stays laid out until its JSON text
(`status._DeviceTexts`, itself kept until a value it shows changes), its pending count or its
root cause's "since … (age)" changes; the CLI (`punchgate.gateway.status_fast`) writes the
bytes. The text is exactly what `status_cli.render` prints without colour at that width from
the same JSON (tests/gateway/test_status_text.py): the same functions make the lines, the
views come from the JSON text itself, and a line rich would change still goes through rich.

Times are in the daemon's zone; `zone_problem` refuses a caller whose zone differs (it then
renders itself, in its own), so the text is never in another zone than the CLI's would be.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import threading
import weakref
from typing import TYPE_CHECKING, NamedTuple

from rich.console import Console

from punchgate.gateway import status_cli
from punchgate.gateway.console.health_view import STATE_ORDER, TerminalView, terminal_view
from punchgate.gateway.status import device_parts
from punchgate.gateway.status_cli import (
    age_text,
    block,
    gateway_lines,
    is_healthy,
    plain_text,
    root_line,
    title_line,
)
from punchgate.gateway.status_fast import MIN_WIDTH, WIDE, zone_label

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

WIDTHS_KEPT = 4  # terminals of different widths asking in turn each keep their blocks


def zone_problem(tz: str | None, zone: str | None) -> str | None:
    """Why the caller's zone (its TZ variable, None when unset, and `zone_label`) is not ours."""
    if tz != os.environ.get("TZ") or zone != zone_label():
        return "the caller's time zone differs from the daemon's: it lays out the status itself"
    return None


def _console(width: int) -> Console:
    """What `Console()` is for the CLI writing to a pipe: no colour, this width (rich lays out
    the lines it would change with it)."""
    return Console(
        file=io.StringIO(),
        width=width,
        height=25,  # as rich takes it; given, the size is not looked up on every line
        color_system=None,
        force_terminal=False,
        force_jupyter=False,
        force_interactive=False,
        legacy_windows=False,
        _environ={},
    )


class _Laid(NamedTuple):
    """A terminal's block laid out at one width: the lines before its root cause, the root
    cause's line (it shows how long ago: `age`), the lines after; from `view`."""

    view: TerminalView
    age: str
    head: str
    root: str
    tail: str


def _lay(view: TerminalView, console: Console, now: dt.datetime) -> _Laid:
    lines = block(view)
    if not view.faults:  # no root cause: a state line, then the facts
        return _Laid(view, "", plain_text(lines, console), "", "")
    root = view.faults[0]
    return _Laid(
        view,
        age_text(root, now),
        plain_text(lines[:1], console),
        plain_text(lines[1:2], console),
        plain_text(lines[2:], console),
    )


class _Blocks:
    """Each terminal's view (from its JSON text and pending count) and, per width, its block
    laid out (`_Laid`); when only the root cause's age moved, only that line is laid out again."""

    def __init__(self) -> None:
        self.views: dict[str, tuple[str, int, TerminalView]] = {}
        self.widths: dict[int, tuple[Console, dict[str, _Laid]]] = {}
        self.zone = ""
        self.lock = threading.Lock()  # requests run on the API's threads

    def text(self, app: Application, width: int) -> tuple[str, bool]:
        parts, gateway_ready = device_parts(app)
        # The gateway's part as the CLI would read it back from /api/devices (default=str).
        gateway = json.loads(json.dumps(gateway_ready, default=str))
        with self.lock:
            fresh: dict[str, tuple[str, int, TerminalView]] = {}
            views = []
            for name, text, pending in parts:
                entry = self.views.get(name)
                if entry is None or entry[1] != pending or entry[0] != text:
                    entry = (text, pending, terminal_view(json.loads(f'{text}, "pending": {pending}}}')))
                fresh[name] = entry
                views.append(entry[2])
            self.views = fresh  # terminals gone from the config drop out here
            views.sort(key=lambda v: STATE_ORDER.get(v.state, 0))  # as health_view.terminal_views
            if self.zone != zone_label():  # the times were laid out in another zone
                self.zone, self.widths = zone_label(), {}
            console, kept = self._width(width)
            now = status_cli.utc_now()  # the clock since_text reads
            blocks, out = {}, [plain_text([title_line(gateway)], console)]
            for view in views:
                laid = kept.get(view.name)
                if laid is not None and laid.view is not view and laid.view == view:
                    # A value only /api/devices shows changed (a terminal failing again
                    # changes its failure counts): the block is the same.
                    laid = laid._replace(view=view)
                if laid is None or laid.view is not view:
                    laid = _lay(view, console, now)
                elif view.faults and laid.age != age_text(view.faults[0], now):
                    root = view.faults[0]
                    line = root_line(root, indent=True)
                    laid = laid._replace(age=age_text(root, now), root=plain_text([line], console))
                blocks[view.name] = laid
                out += (laid.head, laid.root, laid.tail)
            kept.clear()
            kept.update(blocks)
            out.append(plain_text(gateway_lines({"gateway": gateway}), console))
        devices = [{"state": view.state} for view in views]
        return "".join(out), is_healthy({"gateway": gateway, "devices": devices})

    def _width(self, width: int) -> tuple[Console, dict[str, _Laid]]:
        kept = self.widths.pop(width, None) or (_console(width), {})
        self.widths[width] = kept  # the most recently used last
        while len(self.widths) > WIDTHS_KEPT:
            del self.widths[next(iter(self.widths))]
        return kept


_blocks: weakref.WeakKeyDictionary[Application, _Blocks] = weakref.WeakKeyDictionary()
_blocks_lock = threading.Lock()


def status_text(app: Application, width: int) -> tuple[str, bool]:
    """(`punchgate status`'s text without colour at `width`, healthy): what the CLI prints and
    whether it exits 0. `width` from MIN_WIDTH up to WIDE (the table's, laid out by the CLI)."""
    if not MIN_WIDTH <= width < WIDE:
        raise ValueError(f"width must be from {MIN_WIDTH} to {WIDE - 1}")
    with _blocks_lock:
        blocks = _blocks.get(app)
        if blocks is None:
            blocks = _blocks[app] = _Blocks()
    return blocks.text(app, width)
