"""Prometheus metrics, collected from the live state at scrape time.

A custom collector instead of counters sprinkled through the code: the health model and the
forwarder already keep their counts, so a scrape reads them in one place and nothing can
drift. Labels are terminal names and fault codes, never user ids (unbounded, and personal).

A terminal may be called anything the config allows, `gateway` included, so the gateway's own
series never use a terminal name as a stand-in: they are separate metrics
(`punchgate_gateway_*`), or, where one metric covers both, carry `scope="gateway"` and an empty
`device` beside the terminals' `scope="device"` (docs/health.md, "Metrics").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from punchgate.gateway import __version__
from punchgate.gateway.faults import DEVICE_FAULTS, GATEWAY_FAULTS, DeviceStatus

if TYPE_CHECKING:
    from punchgate.gateway.app import Application


class GatewayCollector(Collector):
    def __init__(self, app: Application) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        app = self.app
        yield InfoMetricFamily("punchgate_build", "punchgate version", value={"version": __version__})
        yield GaugeMetricFamily(
            "punchgate_start_time_seconds", "when the gateway started", value=app.started_at.timestamp()
        )
        yield from self._devices()
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
        transitions = CounterMetricFamily(
            "punchgate_fault_transitions",
            "faults raised and cleared (scope: device or gateway; device is empty for the gateway)",
            labels=["scope", "device", "code", "transition"],
        )
        for (device, code, transition), count in sorted(app.fault_transitions.items()):
            transitions.add_metric(["device" if device else "gateway", device, code, transition], count)
        yield transitions

    def _gateway(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        app = self.app
        fault = GaugeMetricFamily(
            "punchgate_gateway_fault_active", "1 while the fault is active", labels=["code"]
        )
        for code in GATEWAY_FAULTS:
            fault.add_metric([code], 1.0 if code in app.gateway_faults.active else 0.0)
        yield fault
        store = app.store
        if store is not None:
            pending = GaugeMetricFamily(
                "punchgate_buffer_pending_punches", "undelivered punches", labels=["device"]
            )
            # Every configured terminal has a series, 0 when nothing waits (an absent series
            # reads as "no data" in alerts and dashboards), plus any terminal that left the
            # config with punches still undelivered.
            counts = dict.fromkeys((t.name for t in app.settings.terminals), 0)
            counts.update(store.pending_devices())
            for device, count in sorted(counts.items()):
                pending.add_metric([device], count)
            yield pending
            age = store.oldest_pending_age()
            yield GaugeMetricFamily(
                "punchgate_buffer_oldest_pending_age_seconds",
                "age of the oldest undelivered punch (0 when none)",
                value=age or 0.0,
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


def render_metrics(app: Application) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(app))
    return generate_latest(registry)
