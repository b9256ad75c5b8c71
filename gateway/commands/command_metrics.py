"""The command service's /metrics: requests by outcome, refusals by code, final answers, targets still open."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from punchgate.gateway.commands.open_request import OpenRequest
from punchgate.sync.command_contract import FINAL_STATUSES


def command_metrics(
    requests_by_outcome: Counter[str],
    rejected_by_code: Counter[str],
    results: Counter[tuple[str, str]],
    open_requests: Iterable[OpenRequest],
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The metric final_answers, from the service's counters and its open requests."""
    requests = CounterMetricFamily(
        "punchgate_command_requests",
        "remote command requests read, by outcome (accepted, repeat, rejected, dropped)",
        labels=["outcome"],
    )
    for outcome in ("accepted", "repeat", "rejected", "dropped"):
        requests.add_metric([outcome], requests_by_outcome[outcome])
    yield requests
    rejected = CounterMetricFamily(
        "punchgate_command_rejected", "remote command requests refused, by error code", labels=["code"]
    )
    for code, count in sorted(rejected_by_code.items()):
        rejected.add_metric([code], count)
    yield rejected
    final_answers = CounterMetricFamily(
        "punchgate_command_results",
        "final answers per terminal, by command and status (ok, error, expired)",
        labels=["command", "status"],
    )
    for (command, status), count in sorted(results.items()):
        final_answers.add_metric([command, status], count)
    yield final_answers
    waiting = sum(
        1 for entry in open_requests for status in entry.targets.values() if status not in FINAL_STATUSES
    )
    yield GaugeMetricFamily("punchgate_commands_open", "terminal answers still to come", value=waiting)
