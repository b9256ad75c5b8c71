"""The demo's "central": a subscriber to everything the gateway publishes, and what it has seen.

`subscribe_as_central` feeds each MQTT message (punches, terminal and gateway states, events,
and the sink's confirmations) to a `CentralView`, reconnecting while the broker is away. The
view keeps the newest punches (a record id seen before counts as a duplicate, not a punch), each
terminal's retained state and the newest events, and per terminal how many punches arrived and
how many of them the sink confirmed it stored (`{base}/confirm`: the gateway runs in central
delivery). `render` draws them as rich tables for a terminal, and with `lines` set it also
writes one plain line per arrival for output that is piped.

A confirmation can overtake the punch it names (the sink and this subscriber get the batch
from the broker independently), so confirmed ids are kept and counted for a terminal when its
punch arrives as well as when the confirmation does; each id counts once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from punchgate.gateway.demo_config import GATEWAY_ID

BATCH_AS_ONE_LINE = 3  # piped output: a backlog batch larger than this is one line, not one per punch
STATE_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}
SOURCE_STYLE = {"live": "bold magenta", "push": "bold cyan"}


@dataclass
class CentralView:
    """What the central subscriber has seen."""

    punches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=14))
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)  # unique punches per terminal
    confirmed: Counter[str] = field(default_factory=Counter)  # of those, confirmed by the sink
    confirmed_ids: set[str] = field(default_factory=set)  # every id a confirmation named
    device_of: dict[str, str] = field(default_factory=dict)  # record id -> terminal
    events: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    gateway_state: str = "unknown"
    footer: str = ""  # where to look: the status page, /metrics, `punchgate status`
    # Plain lines of what arrived, for output that is not a terminal; None: not kept.
    lines: list[str] | None = None

    def on_message(self, topic: str, payload: dict[str, Any]) -> None:
        parts = topic.split("/")
        if parts[-1] == "punches":
            new = []
            for record in payload["records"]:
                if record["id"] in self.ids:
                    self.duplicates += 1
                    continue
                self.ids.add(record["id"])
                self.device_of[record["id"]] = payload["device"]
                self.received[payload["device"]] += 1
                if record["id"] in self.confirmed_ids:  # its confirmation came first
                    self.confirmed[payload["device"]] += 1
                new.append(record)
                self.punches.appendleft({"device": payload["device"], **record})
            self._say_punches(payload["device"], new)
        elif parts[-1] == "confirm":
            self._on_confirmation(payload)
        elif parts[-1] == "state" and "devices" in parts:
            if self.devices.get(parts[-2], {}).get("state") != payload.get("state"):
                self._say(f"terminal {parts[-2]}: {payload.get('state')} {_faults_text(payload)}")
            self.devices[parts[-2]] = payload
        elif parts[-1] == "events":
            event = f"{parts[-2]}: {payload['event']} {payload['code']}"
            self.events.appendleft(f"{payload['time'][11:19]} {event}")
            self._say(f"event {event}: {payload.get('detail', '')}")
        elif parts[-1] == "state":
            if payload.get("state", "?") != self.gateway_state:
                self._say(f"gateway: {payload.get('state', '?')}")
            self.gateway_state = payload.get("state", "?")

    def _on_confirmation(self, payload: dict[str, Any]) -> None:
        """Count each id once (the sink confirms again what the gateway sends again)."""
        for record_id in payload.get("ids", []):
            if record_id in self.confirmed_ids:
                continue
            self.confirmed_ids.add(record_id)
            device = self.device_of.get(record_id)
            if device is not None:
                self.confirmed[device] += 1

    def confirmed_total(self) -> int:
        """Punches received here that the sink also confirmed."""
        return sum(self.confirmed.values())

    def delivery_lines(self) -> list[str]:
        """Per terminal: punches received and confirmed at central, as plain lines."""
        return [
            f"  {name:<12} received {self.received[name]:>5} · confirmed at central {self.confirmed[name]:>5}"
            for name in sorted(self.received)
        ]

    def _say(self, text: str) -> None:
        if self.lines is not None:
            self.lines.append(f"{dt.datetime.now():%H:%M:%S} {text}")

    def _say_punches(self, device: str, records: list[dict[str, Any]]) -> None:
        if len(records) > BATCH_AS_ONE_LINE:
            self._say(
                f"punches: {len(records)} from {device} in one batch ({records[0]['source']}), "
                f"local times {records[0]['local_time'][:19]} … {records[-1]['local_time'][:19]}"
            )
            return
        for r in records:
            self._say(
                f"punch: {device} user {r['user_id']} at {r['local_time'][:19]} local "
                f"({r['utc_time'][11:19]} UTC) {_name(r['state'])}/{_name(r['verify'])} "
                f"{r['source']} id {r['id'][:10]}"
            )

    def summary_line(self, produced: int) -> str:
        return (
            f"punched on terminals: {produced} · unique punches received: {len(self.ids)} · "
            f"confirmed at central: {self.confirmed_total()} · duplicates ignored: {self.duplicates}"
        )

    def render(self, produced: int) -> Group:
        punches = Table(title="punches arriving at central", title_justify="left", expand=True)
        for column in ("device", "user", "local time", "UTC", "state", "verify", "source", "id"):
            punches.add_column(column, no_wrap=True)
        for p in self.punches:
            punches.add_row(
                p["device"],
                p["user_id"],
                p["local_time"][:19],
                p["utc_time"][11:19],
                _name(p["state"]),
                _name(p["verify"]),
                _source(p["source"]),
                p["id"][:10],
            )
        devices = Table(title="terminals (retained state topics)", title_justify="left", expand=True)
        for column in ("terminal", "state", "faults", "serial", "records", "drift"):
            devices.add_column(column)
        devices.add_column("received", justify="right")
        devices.add_column("confirmed at central", justify="right")
        # A terminal whose punches arrived before its retained state still gets its row.
        for name in sorted(self.devices.keys() | self.received.keys()):
            d = self.devices.get(name, {"state": "unknown"})
            drift = d.get("clock_drift_seconds")
            received, confirmed = self.received[name], self.confirmed[name]
            devices.add_row(
                name,
                f"[{STATE_STYLE.get(d['state'], 'white')}]{d['state']}[/]",
                ", ".join(f["code"] for f in d.get("faults", [])) or "—",
                d.get("serial_number") or "?",
                f"{d.get('record_count')}/{d.get('record_capacity')}",
                "—" if drift is None else f"{drift:+.0f} s",
                str(received),
                # Behind: on its way (the sink commits in batches), or waiting for a re-send.
                f"[{'green' if confirmed == received else 'yellow'}]{confirmed}[/]",
            )
        summary = f"gateway: [bold]{self.gateway_state}[/] · {self.summary_line(produced)} · Ctrl-C to stop"
        footer = [f"[dim]{escape(self.footer)}[/]"] if self.footer else []
        return Group(devices, punches, summary, *(f"[dim]{e}[/]" for e in self.events), *footer)


def _name(field: dict[str, Any]) -> str:
    return str(field["name"] or field["code"])


def _source(source: str) -> str:
    style = SOURCE_STYLE.get(source)
    return f"[{style}]{source}[/]" if style else source


def _faults_text(state: dict[str, Any]) -> str:
    faults = [f"{f['code']} ({f['detail']})" for f in state.get("faults", [])]
    return f"faults: {'; '.join(faults)}" if faults else "no faults"


async def subscribe_as_central(port: int, view: CentralView, stop: asyncio.Event) -> None:
    """Everything under the demo gateway's topics into `view`, until `stop`."""
    while not stop.is_set():
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="demo-central") as client:
                await client.subscribe(f"punchgate/{GATEWAY_ID}/#", qos=1)
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes | bytearray) and payload:
                        view.on_message(str(message.topic), json.loads(payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)
