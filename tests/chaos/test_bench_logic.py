"""Pure logic of the harness and benchmarks: where a missing punch stopped, percentiles, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results
from bench.bench_fleet import percentile
from bench.chaos import ChaosReport, _where_it_stopped, report_from_json
from bench.results import BenchResult, Figure


def test_a_punch_never_stored_is_the_gateways_loss() -> None:
    assert _where_it_stopped(False, None, crashes=[]) == "never stored by the gateway"


def test_a_punch_still_pending_is_reported_as_such() -> None:
    assert "still pending" in _where_it_stopped(True, None, crashes=[100.0])


def test_an_ack_just_before_a_broker_crash_is_the_brokers_loss() -> None:
    where = _where_it_stopped(True, 98.5, crashes=[50.0, 100.0])
    assert where.startswith("acknowledged by the broker 1.50 s before it was SIGKILLed")


def test_an_ack_far_from_any_crash_is_not_excused() -> None:
    where = _where_it_stopped(True, 10.0, crashes=[100.0])
    assert where.startswith("acknowledged by the broker, never reached")


def test_report_is_ok_only_without_losses_or_strangers() -> None:
    assert ChaosReport(produced=10, received=10).ok
    assert not ChaosReport(produced=10, received=9, lost=1).ok
    assert not ChaosReport(produced=10, received=10, unexpected=1).ok


def test_report_round_trips_through_its_json(tmp_path: Path) -> None:
    report = ChaosReport(produced=5, received=5, duplicates=2)
    report.actions["gateway_sigkill"] = 3
    path = tmp_path / "report.json"
    data = {**report.__dict__, "actions": dict(report.actions)}
    path.write_text(json.dumps(data))
    again = report_from_json(path)
    assert again.actions["gateway_sigkill"] == 3 and again.duplicates == 2


@pytest.mark.parametrize(("q", "expected"), [(50, 50.0), (99, 99.0), (100, 100.0), (0, 1.0)])
def test_percentile_is_an_observed_value_by_nearest_rank(q: float, expected: float) -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_a_missed_goal_is_rendered_as_missed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS_FILE", tmp_path / "results.json")
    monkeypatch.setattr(results, "NOTES_FILE", tmp_path / "notes.md")
    result = BenchResult(name="drain", title="drain: test", command="python -m bench --only drain")
    result.figures.append(
        Figure(
            "rate",
            40.0,
            "punches/s",
            goal="≥ 0.5× the probe",
            met=False,
            versus="probe",
            versus_value=100.0,
            ratio=0.4,
        )
    )
    results.save_result(result)
    text = results.render_doc()
    assert "| rate | 40.0 punches/s | probe: 100 punches/s | 0.40× | ≥ 0.5× the probe | **missed** |" in text
    assert result.machine["cores"] in text
