"""Prometheus metrics, collected from the live state at scrape time.

A custom collector instead of counters sprinkled through the code: the health model and the
forwarder already keep their counts, so a scrape reads them in one place and nothing can
drift. Labels are terminal names and fault codes, never user ids (unbounded, and personal).

A terminal may be called anything the config allows, `gateway` included, so the gateway's own
series never use a terminal name as a stand-in: they are separate metrics
(`punchgate_gateway_*`), or, where one metric covers both, carry `scope="gateway"` and an empty
`device` beside the terminals' `scope="device"` (docs/health.md, "Metrics").

`render_metrics` (what GET /metrics serves) writes the per-terminal families itself: with 500
terminals they are some 11,000 series, and building them as prometheus_client families and
formatting them through `generate_latest` took over 100 ms a scrape (issue 18). Each terminal's
lines are kept with the values they were made from and made again only when one of those
changed, so a scrape re-formats only the terminals that changed since the last one. The text is
the same, byte for byte, as `GatewayCollector` rendered through prometheus_client (the reference,
held by tests/gateway/test_status_fast.py); the gateway's own families, few, still go through it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _go_float

from punchgate.gateway import __version__
from punchgate.gateway.faults import DEVICE_FAULTS, GATEWAY_FAULTS, DeviceStatus

if TYPE_CHECKING:
    from punchgate.gateway.app import Application
    from punchgate.gateway.health import DeviceHealth


class GatewayCollector(Collector):
    def __init__(self, app: Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self.head()
        yield from self._devices()
        yield from self.transitions()
        yield from self.gateway_faults()
        yield from self.pending()
        yield from self.tail()

    def head(self) -> Iterator[Metric]:
        yield InfoMetricFamily("punchgate_build", "punchgate version", value={"version": __version__})
        yield GaugeMetricFamily(
            "punchgate_start_time_seconds", "when the gateway started", value=self.app.started_at.timestamp()
        )

    def tail(self) -> Iterator[Metric]:
        """Everything after the pending punches: the buffer's age, the broker, central delivery,
        the push listener and remote commands."""
        app = self.app
        yield from self._gateway()
        push = getattr(app, "_push", None)  # the [push] listener, when it runs (gateway/push.py)
        if push is not None:
            yield from push.metrics()
        commands = getattr(app, "_commands", None)  # remote commands (gateway/commands)
        if commands is not None:
            yield from commands.metrics()

    def _devices(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        app = self.app
        state = GaugeMetricFamily(
            "punchgate_device_state", "1 for the device's current state", labels=["device", "state"]
        )
        fault = GaugeMetricFamily(
            "punchgate_device_fault_active", "1 while the fault is active", labels=["device", "code"]
        )
        contact = GaugeMetricFamily(
            "punchgate_device_last_contact_timestamp_seconds", "last successful contact", labels=["device"]
        )
        drift = GaugeMetricFamily(
            "punchgate_device_clock_drift_seconds", "terminal clock minus gateway clock", labels=["device"]
        )
        records = GaugeMetricFamily(
            "punchgate_device_records", "records held by the terminal", labels=["device"]
        )
        capacity = GaugeMetricFamily(
            "punchgate_device_record_capacity", "record capacity of the terminal", labels=["device"]
        )
        reads = CounterMetricFamily("punchgate_device_reads", "completed full reads", labels=["device"])
        failures = CounterMetricFamily("punchgate_device_failures", "failed contacts", labels=["device"])
        new = CounterMetricFamily(
            "punchgate_device_punches_stored", "new punches committed", labels=["device"]
        )
        corrections = CounterMetricFamily(
            "punchgate_device_clock_corrections",
            "times the gateway set the terminal's clock",
            labels=["device"],
        )
        last_punch = GaugeMetricFamily(
            "punchgate_device_last_punch_timestamp_seconds", "newest punch stored (UTC)", labels=["device"]
        )
        failing = GaugeMetricFamily(
            "punchgate_device_consecutive_failures",
            "failed contacts since the last good one",
            labels=["device"],
        )
        for name, health in app.devices.items():
            for status in DeviceStatus:
                state.add_metric([name, status.value], 1.0 if health.status is status else 0.0)
            for code in DEVICE_FAULTS:
                fault.add_metric([name, code], 1.0 if code in health.faults.active else 0.0)
            if health.last_contact is not None:
                contact.add_metric([name], health.last_contact.timestamp())
            if health.clock_drift_seconds is not None:
                drift.add_metric([name], health.clock_drift_seconds)
            info = health.info
            if info is not None and info.record_count is not None:
                records.add_metric([name], info.record_count)
            if info is not None and info.record_capacity:
                capacity.add_metric([name], info.record_capacity)
            reads.add_metric([name], health.reads_total)
            failures.add_metric([name], health.failures_total)
            new.add_metric([name], health.punches_new_total)
            corrections.add_metric([name], health.clock_corrections_total)
            failing.add_metric([name], health.consecutive_failures)
            if health.last_punch_at is not None:
                last_punch.add_metric([name], health.last_punch_at.timestamp())
        yield from (state, fault, contact, drift, records, capacity, reads, failures, new)
        yield from (corrections, last_punch, failing)

    def transitions(self) -> Iterator[Metric]:
        app = self.app
        transitions = CounterMetricFamily(
            "punchgate_fault_transitions",
            "faults raised and cleared (scope: device or gateway; device is empty for the gateway)",
            labels=["scope", "device", "code", "transition"],
        )
        for (device, code, transition), count in sorted(app.fault_transitions.items()):
            transitions.add_metric(["device" if device else "gateway", device, code, transition], count)
        yield transitions

    def gateway_faults(self) -> Iterator[Metric]:
        app = self.app
        fault = GaugeMetricFamily(
            "punchgate_gateway_fault_active", "1 while the fault is active", labels=["code"]
        )
        for code in GATEWAY_FAULTS:
            fault.add_metric([code], 1.0 if code in app.gateway_faults.active else 0.0)
        yield fault

    def pending(self) -> Iterator[Metric]:
        if self.app.store is None:
            return
        pending = GaugeMetricFamily(
            "punchgate_buffer_pending_punches", "undelivered punches", labels=["device"]
        )
        for device, count in pending_series(self.app):
            pending.add_metric([device], count)
        yield pending

    def _gateway(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        app = self.app
        store = app.store
        if store is not None:
            age = store.oldest_pending_age()
            yield GaugeMetricFamily(
                "punchgate_buffer_oldest_pending_age_seconds",
                "age of the oldest undelivered punch (0 when none)",
                value=age or 0.0,
            )
            yield GaugeMetricFamily(
                "punchgate_buffer_staged_punches",
                "push backlog punches committed staged, not moved into the outbox yet",
                value=store.staged_count(),
            )
        forwarder = app.forwarder
        if forwarder is not None:
            yield GaugeMetricFamily(
                "punchgate_mqtt_connected",
                "1 while connected to the broker",
                value=1.0 if forwarder.connected else 0.0,
            )
            stats = forwarder.stats
            for key, help_text in (
                ("punches_published", "punches acknowledged by the broker"),
                ("messages_published", "punch batches acknowledged by the broker"),
                ("publish_failures", "publishes that failed or timed out (rows stay pending)"),
                ("reconnects", "broker connection attempts after the first"),
            ):
                yield CounterMetricFamily(f"punchgate_mqtt_{key}", help_text, value=getattr(stats, key))
            yield from self._central()

    def _central(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Central delivery (docs/mqtt-contract.md, "Confirmations"): nothing in broker mode."""
        app = self.app
        central = getattr(app.forwarder, "central", None)  # None: broker mode (or a test double)
        if central is None or app.store is None:
            return
        yield GaugeMetricFamily(
            "punchgate_buffer_unconfirmed_punches",
            "punches sent and not confirmed by a central consumer yet",
            value=app.store.unconfirmed_count(),
        )
        yield GaugeMetricFamily(
            "punchgate_buffer_oldest_unconfirmed_age_seconds",
            "age of the oldest sent, unconfirmed punch (0 when none)",
            value=app.store.oldest_unconfirmed_age() or 0.0,
        )
        stats = central.stats
        for key, help_text in (
            ("messages", "confirmation messages read"),
            ("confirmed", "punches delivered by a confirmation"),
            ("repeated", "ids confirmed again after they were delivered (ignored)"),
            ("unknown_ids", "confirmed ids the buffer does not hold (ignored)"),
            ("unknown_batches", "confirmed batches the gateway does not remember (ignored)"),
            ("malformed", "confirmation messages that are not valid (ignored, logged)"),
            ("resent", "punches sent again for want of a confirmation"),
        ):
            yield CounterMetricFamily(f"punchgate_confirmations_{key}", help_text, value=getattr(stats, key))


def pending_series(app: Application) -> list[tuple[str, int]]:
    """The pending punches per terminal, sorted by name. Every configured terminal has a series,
    0 when nothing waits (an absent series reads as "no data" in alerts and dashboards), plus
    any terminal that left the config with punches still undelivered."""
    store = app.store
    counts = dict.fromkeys((t.name for t in app.settings.terminals), 0)
    if store is not None:
        counts.update(store.pending_devices())
    return sorted(counts.items())


def reference_metrics(app: Application) -> bytes:
    """The whole exposition through prometheus_client: what `render_metrics` must equal."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(app))
    return generate_latest(registry)


class _Families:
    """A few families as a collector, for `generate_latest`."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _exposition(families: Iterable[Metric]) -> str:
    return generate_latest(_Families(families)).decode()


def _go(value: float) -> str:
    """A value as prometheus_client writes it (`1.0`, `1.7e+09`, `+Inf`)."""
    text: str = _go_float(value)  # type: ignore[no-untyped-call]
    return text


def _label(value: str) -> str:
    """A label value escaped as prometheus_client escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _header(name: str, help_text: str, kind: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


# The per-terminal families in GatewayCollector._devices's order: (name as exposed, help, type).
_DEVICE_FAMILIES = (
    ("punchgate_device_state", "1 for the device's current state", "gauge"),
    ("punchgate_device_fault_active", "1 while the fault is active", "gauge"),
    ("punchgate_device_last_contact_timestamp_seconds", "last successful contact", "gauge"),
    ("punchgate_device_clock_drift_seconds", "terminal clock minus gateway clock", "gauge"),
    ("punchgate_device_records", "records held by the terminal", "gauge"),
    ("punchgate_device_record_capacity", "record capacity of the terminal", "gauge"),
    ("punchgate_device_reads_total", "completed full reads", "counter"),
    ("punchgate_device_failures_total", "failed contacts", "counter"),
    ("punchgate_device_punches_stored_total", "new punches committed", "counter"),
    ("punchgate_device_clock_corrections_total", "times the gateway set the terminal's clock", "counter"),
    ("punchgate_device_last_punch_timestamp_seconds", "newest punch stored (UTC)", "gauge"),
    ("punchgate_device_consecutive_failures", "failed contacts since the last good one", "gauge"),
)
_DEVICE_HEADERS = tuple(_header(*family) for family in _DEVICE_FAMILIES)
_STATES = tuple(status.value for status in DeviceStatus)


def _device_key(health: DeviceHealth) -> tuple[Any, ...]:
    """Every value a terminal's lines are made from: equal keys, equal lines."""
    info = health.info
    return (
        health.status,
        tuple(health.faults.active),
        health.last_contact,
        health.clock_drift_seconds,
        info.record_count if info is not None else None,
        info.record_capacity if info is not None else None,
        health.reads_total,
        health.failures_total,
        health.punches_new_total,
        health.clock_corrections_total,
        health.last_punch_at,
        health.consecutive_failures,
    )


def _device_lines(name: str, key: tuple[Any, ...]) -> tuple[str, ...]:
    """One terminal's lines of each family in `_DEVICE_FAMILIES` (the key's values, in its order)."""
    status, faults, contact, drift, count, capacity, reads, failures, new, corrections, punch, failing = key
    device = f'device="{_label(name)}"'

    def one(family: str, value: float | None) -> str:
        return "" if value is None else f"{family}{{{device}}} {_go(value)}\n"

    return (
        "".join(
            f'punchgate_device_state{{{device},state="{state}"}} {"1.0" if status.value == state else "0.0"}\n'
            for state in _STATES
        ),
        "".join(
            f'punchgate_device_fault_active{{code="{code}",{device}}} {"1.0" if code in faults else "0.0"}\n'
            for code in DEVICE_FAULTS
        ),
        one("punchgate_device_last_contact_timestamp_seconds", contact and contact.timestamp()),
        one("punchgate_device_clock_drift_seconds", drift),
        one("punchgate_device_records", count),
        one("punchgate_device_record_capacity", capacity or None),  # 0: unknown, as in _devices
        one("punchgate_device_reads_total", reads),
        one("punchgate_device_failures_total", failures),
        one("punchgate_device_punches_stored_total", new),
        one("punchgate_device_clock_corrections_total", corrections),
        one("punchgate_device_last_punch_timestamp_seconds", punch and punch.timestamp()),
        one("punchgate_device_consecutive_failures", failing),
    )


class MetricsRenderer:
    """GET /metrics for one application: the per-terminal lines cached by the values they show."""

    def __init__(self) -> None:
        # Not the application itself: the renderers are kept per application in a weak map,
        # and a value holding its key would keep every application ever scraped alive.
        self._lines: dict[str, tuple[tuple[Any, ...], tuple[str, ...]]] = {}
        # Scrapes run on the API's threads; one at a time keeps the cache simple (each takes ms).
        self._lock = threading.Lock()

    def render(self, app: Application) -> bytes:
        with self._lock:
            collector = GatewayCollector(app)
            parts = [_exposition(collector.head()), self._devices(app)]
            parts.append(_exposition([*collector.transitions(), *collector.gateway_faults()]))
            if app.store is not None:
                parts.append(_header("punchgate_buffer_pending_punches", "undelivered punches", "gauge"))
                parts.extend(
                    f'punchgate_buffer_pending_punches{{device="{_label(device)}"}} {_go(count)}\n'
                    for device, count in pending_series(app)
                )
            parts.append(_exposition(collector.tail()))
            return "".join(parts).encode()

    def _devices(self, app: Application) -> str:
        cached, fresh = self._lines, {}
        for name, health in app.devices.items():
            key = _device_key(health)
            entry = cached.get(name)
            if entry is None or entry[0] != key:
                entry = (key, _device_lines(name, key))
            fresh[name] = entry
        self._lines = fresh  # terminals gone from the config drop out here
        columns = [entry[1] for entry in fresh.values()]
        return "".join(
            header + "".join(lines[index] for lines in columns)
            for index, header in enumerate(_DEVICE_HEADERS)
        )


_renderers: weakref.WeakKeyDictionary[Application, MetricsRenderer] = weakref.WeakKeyDictionary()
_renderers_lock = threading.Lock()


def render_metrics(app: Application) -> bytes:
    """The exposition GET /metrics serves (the same text as `reference_metrics`, faster)."""
    with _renderers_lock:
        renderer = _renderers.get(app)
        if renderer is None:
            renderer = _renderers[app] = MetricsRenderer()
    return renderer.render(app)
