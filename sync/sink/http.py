"""`/healthz` and `/metrics` of the sink (aiohttp), on loopback by default."""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from punchgate.sync.sink.consumer import Sink

# Unhealthy when the broker has been away, or nothing could be committed, for this long.
UNHEALTHY_AFTER = 60.0


class SinkCollector(Collector):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.sink.stats
        for key, help_text in (
            ("received", "messages received"),
            ("flushes", "transactions committed"),
            ("punches_new", "punches stored for the first time"),
            ("punches_repeated", "punches received again (already stored; confirmed again)"),
            ("dead_letters", "messages stored in the dead-letter table"),
            ("ignored", "empty messages (retained messages being cleared)"),
            ("confirmations", "confirmation messages published"),
            ("confirmed_ids", "punch ids confirmed to gateways"),
            ("db_failures", "failed attempts to reach the database"),
            ("connects", "connections to the broker"),
            ("resend_requests", "punches.resend requests published for digest days missing punches"),
            ("resend_requests_limited", "gap days not asked for again yet (within the resend interval)"),
        ):
            yield CounterMetricFamily(f"punchgate_sink_{key}", help_text, value=getattr(stats, key))
        yield GaugeMetricFamily(
            "punchgate_sink_connected", "1 while connected to the broker", value=float(stats.connected)
        )
        yield GaugeMetricFamily(
            "punchgate_sink_waiting_for_database",
            "1 while the sink waits for its database to start",
            value=float(stats.waiting_for_database),
        )
        yield GaugeMetricFamily(
            "punchgate_sink_inbox_messages", "received, not committed yet", value=stats.inbox
        )
        yield GaugeMetricFamily(
            "punchgate_sink_digest_mismatch_days",
            "digest days whose count or ids differ from the sink's tables for longer than the grace",
            value=stats.mismatching_days,
        )
        if stats.last_flush_at is not None:
            yield GaugeMetricFamily(
                "punchgate_sink_last_flush_timestamp_seconds", "last commit", value=stats.last_flush_at
            )


def health(sink: Sink) -> tuple[bool, str]:
    if sink.stats.waiting_for_database:
        return False, f"waiting for the database: {sink.stats.last_db_error}"
    if not sink.writer_alive():
        return False, "the writer is not running"
    stats = sink.stats
    if not stats.connected:
        return False, "not connected to the broker"
    if stats.db_failures and stats.inbox and (stats.last_flush_at or 0) < time.time() - UNHEALTHY_AFTER:
        return False, f"database unavailable: {stats.last_db_error}"
    return True, "ok"


def build_app(sink: Sink) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SinkCollector(sink))

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    async def healthz(_request: web.Request) -> web.Response:
        ok, reason = health(sink)
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start(sink: Sink, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(sink), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
