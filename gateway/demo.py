"""`punchgate demo`: the whole pipeline on one machine, with nothing but loopback.

It starts a private mosquitto on a free port, three emulated ZK terminals (two TFT over TCP,
one of them with a comm key, and one BW over UDP), two emulated Anviz terminals sharing one
pseudo-terminal (an RS485 bus), an emulated push terminal (ADMS) uploading to the gateway's
`[push]` listener, the reference sink (`punchgate sink`) on a SQLite file as the central
consumer, and the real gateway as a child process in `central` delivery (a punch is delivered
when the sink confirms it stored it). People punch at random on the terminals; a "central"
subscriber shows the punches arriving, how many of them the sink confirmed, and each terminal's
health: a
live table on a terminal, one line per arrival when the output is piped (`| tee`), flushed as
it comes. A console account (admin, a random password) is created before the gateway starts,
and printed with the status page's address. Ctrl-C stops everything it started. The config,
the buffer and every log (gateway, emulators, broker) stay in a folder under the system's temp
directory, named at start and at exit, for a look afterwards.

This module runs it: what starts in which order, what is printed at the start and at the
end, and what is stopped on the way out. The parts:

    demo_config     the gateway's config (the terminals, the broker, the listeners)
    demo_terminals  the emulated terminals and the people punching on them
    demo_gateway    the gateway as a child process, its console account, where to look
    demo_sink       the reference sink on `sink.db`, confirming what it stored
    demo_central    the central subscriber and what it has seen (`CentralView`)
    demo_screen     the live table, or plain lines when piped
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from punchgate.gateway.demo_central import CentralView, subscribe_as_central
from punchgate.gateway.demo_config import write_config
from punchgate.gateway.demo_gateway import console_account, start_gateway, stop_gateway, where_to_look
from punchgate.gateway.demo_screen import show, wait_for_last_punches
from punchgate.gateway.demo_sink import start_sink, stop_sink
from punchgate.gateway.demo_terminals import DemoTerminals
from punchgate.gateway.logs import configure_logging
from punchgate.gateway.mosquitto import MosquittoBroker, free_port


def _print_start(
    console: Console,
    *,
    broker_port: int,
    push_port: int,
    gateway: subprocess.Popen[bytes],
    workdir: Path,
    places: list[tuple[str, str]],
    config: Path,
    kept: str,
) -> None:
    console.print(
        f"[bold]punchgate demo[/]: broker 127.0.0.1:{broker_port} · 6 emulated terminals "
        f"(one pushing to 127.0.0.1:{push_port}) · gateway pid {gateway.pid}, log {workdir / 'gateway.log'}",
        soft_wrap=True,
    )
    for name, where in places:
        also = f"   (or --config {config})" if name == "status" else ""
        console.print(f"  {name:<12} {escape(where)}{escape(also)}", soft_wrap=True, highlight=False)
    console.print(f"  {'files':<12} {escape(kept)}", soft_wrap=True, highlight=False)


async def _demo(duration: float) -> int:
    console = Console()
    # Kept after exit (named at start and at the end): the logs are how one looks back.
    workdir = Path(tempfile.mkdtemp(prefix="punchgate-demo-"))
    broker = MosquittoBroker(workdir / "broker")
    # Emulator logs go to a file: the screen belongs to the central view. (Before building the
    # emulators: they bind their loggers when constructed.)
    emulator_log = (workdir / "emulators.log").open("a", encoding="utf-8")
    configure_logging("info", stream=emulator_log, json=True)
    push_port = free_port()
    terminals = DemoTerminals(push_port)
    gateway: subprocess.Popen[bytes] | None = None
    sink: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    view = CentralView(lines=None if console.is_terminal else [])
    kept = (
        f"kept in {workdir}: gateway.log, sink.log, emulators.log, broker/, punchgate.toml, buffer.db, "
        f"sink.db, console/ "
        f"(delete it when done: rm -r {workdir})"
    )
    try:
        broker.start()
        # Before the gateway: the sink's session must be there when the first batch is published.
        sink = await start_sink(workdir, broker.port)
        await terminals.start()
        http_port = free_port()
        config = write_config(
            workdir, broker.port, http_port, push_port, terminals.zk, terminals.anviz_bus.path
        )
        password = await asyncio.to_thread(console_account, workdir / "buffer.db")
        gateway = start_gateway(workdir, config)
        places = where_to_look(http_port, password)
        _print_start(
            console,
            broker_port=broker.port,
            push_port=push_port,
            gateway=gateway,
            workdir=workdir,
            places=places,
            config=config,
            kept=kept,
        )
        view.footer = " · ".join(f"{name} {where}" for name, where in places)
        subscriber = asyncio.create_task(subscribe_as_central(broker.port, view, stop))
        punchers = terminals.punching(gateway, workdir / "gateway.log", stop)
        await show(view, terminals.produced, gateway, stop, console, duration, workdir / "gateway.log")
        for task in punchers:
            task.cancel()
        await wait_for_last_punches(view, terminals.produced, gateway, console)
        stop.set()
        subscriber.cancel()
        await asyncio.gather(subscriber, *punchers, return_exceptions=True)
        for line in [*(view.lines or []), "per terminal:", *view.delivery_lines()]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print()
        console.print(
            f"stopped: {terminals.produced()} punches on the terminals, {len(view.ids)} unique received, "
            f"{view.confirmed_total()} confirmed at central (sink.db).",
            soft_wrap=True,
        )
        return 0 if gateway.returncode in (None, 0) else 1
    finally:
        if gateway is not None:
            await stop_gateway(gateway)
        if sink is not None:
            await stop_sink(sink)
        await terminals.stop()
        broker.close()
        emulator_log.close()
        console.print(escape(kept), soft_wrap=True, highlight=False)


def run_demo(*, duration: float = 0) -> int:
    return asyncio.run(_demo(duration))


# CentralView was defined here before the split (demo_central.py now); it stays importable here.
__all__ = ["CentralView", "run_demo"]
