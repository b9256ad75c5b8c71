"""What the demo shows while it runs: a live table on a terminal, plain lines when piped.

`show` draws what central receives until Ctrl-C, the duration, or the gateway's end. On a
terminal that is a live `CentralView` table; when the output is piped (`| tee`), one line per
arrival and a progress line every `PROGRESS_EVERY` seconds, each written and flushed as it
comes. `wait_for_last_punches` gives the pipeline a moment to deliver what is in flight once
punching has stopped, and the sink to confirm it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from punchgate.gateway.demo_central import CentralView

PROGRESS_EVERY = 10.0  # piped output: seconds between progress lines
CONFIRM_GRACE = 10.0  # after the wait for arrivals, for the sink's confirmation of the last ones


async def show(
    view: CentralView,
    produced: Callable[[], int],
    gateway: subprocess.Popen[bytes],
    stop: asyncio.Event,
    console: Console,
    duration: float,
    log: Path,
) -> None:
    """Show what central receives until Ctrl-C, the duration, or the gateway's end: a live
    table on a terminal, otherwise one line per arrival, written (and flushed) as it comes."""
    deadline = time.monotonic() + duration if duration > 0 else None
    piped = not console.is_terminal
    live = None if piped else Live(view.render(produced()), console=console, refresh_per_second=4)
    next_progress = time.monotonic() + PROGRESS_EVERY
    with live or contextlib.nullcontext():
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if gateway.poll() is not None:
                console.print(
                    f"[red]the gateway exited with {gateway.returncode}: see {escape(str(log))}[/]",
                    soft_wrap=True,
                )
                break
            if live is not None:
                live.update(view.render(produced()))
            else:
                lines, view.lines = view.lines or [], []
                if time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY
                    lines.append(f"{dt.datetime.now():%H:%M:%S} progress: {view.summary_line(produced())}")
                for line in lines:
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


async def wait_for_last_punches(
    view: CentralView, produced: Callable[[], int], gateway: subprocess.Popen[bytes], console: Console
) -> None:
    """Punching has stopped: give the pipeline a moment to deliver what is in flight, and the
    sink to confirm it (it commits every 50 ms or 200 messages, then confirms)."""
    deadline = time.monotonic() + 10

    def behind() -> bool:
        now = time.monotonic()
        # What arrived last gets its own time to be confirmed, also when it came at the deadline.
        return (len(view.ids) < produced() and now < deadline) or (
            view.confirmed_total() < len(view.ids) and now < deadline + CONFIRM_GRACE
        )

    if not console.is_terminal:
        console.print("waiting for the last punches to arrive and be confirmed…")
    with console.status("waiting for the last punches to arrive and be confirmed…"):
        while behind() and gateway.poll() is None:
            await asyncio.sleep(0.2)
