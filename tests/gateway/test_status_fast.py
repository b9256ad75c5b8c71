"""The fast /metrics, /api/devices and `punchgate status` output equal the plain ones, through every kind of change.

`render_metrics` writes the per-terminal families itself and keeps each terminal's lines until a
value they show changes; `devices_json` keeps each terminal's JSON the same way (issue 18). Both
must give exactly what the plain renderings give (`reference_metrics`: prometheus_client over
`GatewayCollector`; `json.dumps(gateway_status(app))`), on the real Application (not started)
with a real buffer file, after each change a terminal can go through: a first contact, failures
(offline), a fault's detail rewritten, a read, punches stored, a clock correction, a fault
cleared, a terminal that left the config with punches still pending, names that need escaping.
`punchgate status`'s plain lines are held against rich's layout of the same lines, and the text
the daemon lays out for it (`status_text`, GET /api/status.txt) against what `punchgate status`
printed to a pipe from /api/devices' JSON (`status_cli.render`, rich's Console without colour).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.text import Text

from punchgate.drivers.base import DeviceInfo
from punchgate.gateway import status_cli
from punchgate.gateway.app import Application
from punchgate.gateway.console.health_view import terminal_views
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.metrics import reference_metrics, render_metrics
from punchgate.gateway.settings import Settings
from punchgate.gateway.status import devices_json, gateway_status
from punchgate.gateway.status_fast import MIN_WIDTH, WIDE
from punchgate.gateway.status_text import status_text
from punchgate.sync.settings import BufferSettings
from punchgate.sync.store import Store
from tests.support.factories import make_punches

NAMES = ("door-1", "door-2", "gateway", "dock")
# The only values that move between two renderings made one after the other: the age of the
# oldest pending punch (measured from now), and in it nothing else.
AGE_LINE = re.compile(rb"^punchgate_buffer_oldest_pending_age_seconds .*$", re.MULTILINE)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    terminals = [
        {"type": "zk", "name": name, "host": "127.0.0.1", "port": 4370 + n} for n, name in enumerate(NAMES)
    ]
    application = Application(Settings.model_validate({"gateway_id": "gw-fast", "terminals": terminals}))
    store = Store.open(
        BufferSettings.model_validate({"path": str(tmp_path / "buffer.db"), "min_free_disk_mb": 0})
    )
    application.store = store
    application.gateway_faults.on_transition.append(application._publish_transition)
    for name in NAMES:
        health = DeviceHealth(name)
        health.faults.on_transition.append(application._publish_transition)
        application.devices[name] = health
    try:
        yield application
    finally:
        store.close()


def assert_same(app: Application) -> None:
    """Both bodies equal their plain renderings (the pending age aside), and parse alike."""
    fast, plain = render_metrics(app), reference_metrics(app)
    assert AGE_LINE.sub(b"", fast) == AGE_LINE.sub(b"", plain)
    assert AGE_LINE.search(fast) is not None or app.store is None

    def parsed(text: bytes) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
        return [
            (
                family.name,
                family.documentation,
                family.type,
                [(s.name, s.labels, s.value) for s in family.samples if "oldest_pending_age" not in s.name],
            )
            for family in text_string_to_metric_families(text.decode())
        ]

    assert parsed(fast) == parsed(plain)
    fast_json = json.loads(devices_json(app))
    plain_json = json.loads(json.dumps(gateway_status(app), default=str))
    for body in (fast_json, plain_json):
        body["gateway"].pop("oldest_pending_age_seconds")
    assert fast_json == plain_json
    # Byte for byte too, once the age is the same in both.
    text = devices_json(app).decode()
    reference = json.dumps(gateway_status(app), default=str)
    age = re.compile(r'"oldest_pending_age_seconds": [^,]+,')
    assert age.sub("", text) == age.sub("", reference)

    assert_same_text(app)


def reference_text(app: Application, width: int) -> tuple[str, bool]:
    """What `punchgate status` printed to a pipe: /api/devices' JSON rendered by a Console
    without colour (a StringIO is no terminal), and whether it exited 0."""
    status = json.loads(devices_json(app))
    out = io.StringIO()
    status_cli.render(status, Console(file=out, width=width))
    return out.getvalue(), status_cli.is_healthy(status)


def assert_same_text(app: Application) -> None:
    """The daemon's text equals the CLI's rendering at every width it serves."""
    for width in (MIN_WIDTH, 41, 80, WIDE - 1):
        for _attempt in range(3):  # a root cause's "since … (age)" may tick between the two
            made, reference = status_text(app, width), reference_text(app, width)
            if made == reference:
                break
        assert made == reference, f"width {width}"
        assert made == status_text(app, width)  # and again from what it kept


def series(app: Application, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(render_metrics(app).decode())
        for s in family.samples
        if s.name == name
    }


def test_fast_bodies_equal_the_plain_ones_through_every_change(app: Application) -> None:
    assert_same(app)  # never contacted: every terminal offline, nothing pending

    door1, door2, gateway, dock = (app.devices[n] for n in NAMES)
    info = DeviceInfo(serial_number="S-1", record_count=950, record_capacity=1000, user_count=3)
    door1.contact_ok(info, drift_seconds=90.0)  # log nearly full, clock drift
    gateway.contact_ok(DeviceInfo(serial_number="S-g", record_capacity=0), drift_seconds=0.0)
    for _ in range(4):
        door2.contact_failed("unreachable", "door-2: connect refused")
    assert app.store is not None
    app.store.add_punches(make_punches("door-1", 5))
    app.store.add_punches(make_punches("old-door", 3))  # left the config, punches still pending
    app.gateway_faults.raise_fault("broker_unreachable", "connection refused")
    assert_same(app)
    assert series(app, "punchgate_device_state")[(("device", "door-2"), ("state", "offline"))] == 1.0
    assert series(app, "punchgate_buffer_pending_punches")[(("device", "old-door"),)] == 3.0

    # Changes each cached terminal must notice.
    door2.contact_failed("timeout", "door-2: no answer in 5 s")  # another fault replaces the first
    assert_same(app)
    door2.faults.raise_fault("timeout", "door-2: no answer in 6 s")  # only the detail changes
    assert_same(app)
    assert "6 s" in devices_json(app).decode()
    door1.read_done(count=960, new=10)
    door1.punches_stored(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    door1.clock_corrected(drift_seconds=90.0, detail="set")
    door1.contact_ok(
        DeviceInfo(serial_number="S-1", record_count=10, record_capacity=1000), drift_seconds=1.0
    )  # cleared: the log was emptied, the clock set
    dock.contact_ok(DeviceInfo(serial_number="S-d", record_count=0, record_capacity=500), drift_seconds=-2.5)
    assert_same(app)
    states = series(app, "punchgate_device_state")
    assert states[(("device", "door-1"), ("state", "online"))] == 1.0
    assert series(app, "punchgate_device_fault_active")[(("code", "timeout"), ("device", "door-2"))] == 1.0
    assert series(app, "punchgate_device_reads_total")[(("device", "door-1"),)] == 1.0
    assert series(app, "punchgate_device_clock_corrections_total")[(("device", "door-1"),)] == 1.0

    # A terminal removed while running drops out; one with a name that needs escaping comes in.
    del app.devices["dock"]
    odd = DeviceHealth('quote"back\\slash')
    odd.contact_failed("unreachable", 'no "answer"\nat all')
    app.devices[odd.name] = odd
    assert_same(app)
    assert (("device", 'quote"back\\slash'),) in series(app, "punchgate_device_failures_total")
    assert (("device", "dock"),) not in series(app, "punchgate_device_failures_total")
    assert [d["device"] for d in json.loads(devices_json(app))["devices"]] == [
        "door-1",
        "door-2",
        "gateway",
        'quote"back\\slash',
    ]


def test_fast_bodies_without_a_buffer(app: Application) -> None:
    """Starting: no store yet, so no pending or age series at all, as before."""
    store, app.store = app.store, None
    try:
        assert render_metrics(app) == reference_metrics(app)
        assert b"punchgate_buffer_pending_punches" not in render_metrics(app)
        assert devices_json(app) == json.dumps(gateway_status(app), default=str).encode()
        assert_same_text(app)
    finally:
        app.store = store


def test_plain_status_lines_equal_what_rich_prints(app: Application) -> None:
    """`punchgate status` without colour writes its lines itself: the same text rich lays out,
    wrapped and padded alike, at any width, for short, long, unbreakable and odd lines."""
    door1, door2, gateway, dock = (app.devices[n] for n in NAMES)
    door1.contact_ok(
        DeviceInfo(serial_number="S-1", record_count=950, record_capacity=1000), drift_seconds=90.0
    )
    door2.contact_failed("unreachable", "door-2: connect tcp://192.0.2.10:4370: " + "x" * 130)
    gateway.contact_failed("timeout", 'tab\there, "quotes" [bold]not markup[/] :smile: 门口 wide')
    dock.contact_failed("auth_failed", "refused   with   runs   of   spaces " * 4)
    status = json.loads(devices_json(app))
    views = terminal_views(status)
    lines = status_cli._compact(views, "punchgate gw-fast — terminals") + status_cli.gateway_lines(status)
    assert any(len(line.plain) > 100 for line in lines)
    for width in (40, 63, 80, 119):
        printed = []
        for fast in (False, True):
            out = io.StringIO()
            status_cli.print_lines(lines, Console(file=out, width=width), fast=fast)
            printed.append(out.getvalue())
        assert printed[0] == printed[1], f"width {width}"
    assert "door-2" in printed[1] and "→ " in printed[1]
    assert_same_text(app)  # the daemon lays out the lines rich would change through rich too
    text, healthy = status_text(app, 80)
    assert "门口" in text and "→ " in text and not healthy


def test_plain_wrap_breaks_where_rich_does() -> None:
    """The plain word wrap against rich's own (Text.wrap) on many texts: runs of spaces,
    trailing and leading spaces, words longer than a line, widths from 5 to 100."""
    console = Console(file=io.StringIO(), width=200)
    chance = random.Random(18)  # seeded: the same texts every run
    for _ in range(3000):
        count = chance.randint(1, 25)
        words = ["w" * chance.choice([1, 2, 3, 5, 8, 13, 21, 40, 90]) for _ in range(count)]
        text = "".join(word + " " * chance.choice([1, 1, 1, 2, 3, 7]) for word in words)
        text = chance.choice([text, text.rstrip(), "  " + text])
        width = chance.randint(5, 100)
        expected = [line.plain for line in Text(text).wrap(console, width)]
        assert status_cli._wrap(text, width) == expected, (text, width)


def test_the_daemons_text_follows_the_clock(app: Application, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the root causes' ages move (no value changed): each block's root line follows,
    from seconds to minutes, hours and days, at every width kept."""
    door1, door2, _gateway, dock = (app.devices[n] for n in NAMES)
    door2.contact_failed("unreachable", "door-2: connect refused")
    dock.contact_failed("timeout", "dock: no answer in 5 s")
    door1.contact_ok(DeviceInfo(serial_number="S-1", record_count=1, record_capacity=10), drift_seconds=0.0)
    start = dt.datetime.now(dt.UTC)
    for later in (0, 61, 3 * 3600 + 300, 2 * 86400):
        monkeypatch.setattr(status_cli, "utc_now", lambda later=later: start + dt.timedelta(seconds=later))
        for width in (MIN_WIDTH, 80):
            made, reference = status_text(app, width), reference_text(app, width)
            assert made == reference, (later, width)
    assert "(2 d)" in made[0]
