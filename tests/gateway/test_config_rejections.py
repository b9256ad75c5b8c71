"""What people actually get wrong in the config, each refused with its key path and the fix.

One row per mistake: the keys to change (on top of a valid one-terminal file) and the exact
problem line `punchgate check-config` prints for it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from punchgate.gateway.settings import ConfigError, settings_from_dict

ZK = {"type": "zk", "name": "gate-north", "host": "192.0.2.21"}
BASE: dict[str, Any] = {"gateway_id": "gw1", "terminals": [ZK]}


def _zk(**keys: Any) -> dict[str, Any]:
    return {**ZK, **keys}


def _anviz(name: str, endpoint: str, **keys: Any) -> dict[str, Any]:
    return {"type": "anviz", "name": name, "endpoint": endpoint, **keys}


def problems(patch: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({**BASE, **patch})
    return caught.value.problems


CASES: list[tuple[str, dict[str, Any], str]] = [
    # --- the buffer file ---
    (
        "buffer is a directory",
        {"buffer": {"path": "/etc"}},
        "buffer.path: /etc is a directory: name the file inside it, e.g. /etc/buffer.db",
    ),
    (
        "buffer path empty",
        {"buffer": {"path": ""}},
        "buffer.path: must not be empty: write an absolute file path, e.g. /var/lib/punchgate/buffer.db",
    ),
    (
        "buffer is /dev/null",
        {"buffer": {"path": "/dev/null"}},
        "buffer.path: /dev/null is a device or kernel file, not a file on a disk: "
        "write a path such as /var/lib/punchgate/buffer.db",
    ),
    (
        "buffer in memory",
        {"buffer": {"path": ":memory:"}},
        "buffer.path: ':memory:' is not a file: an in-memory or URI database would lose buffered "
        "punches; write an absolute file path, e.g. /var/lib/punchgate/buffer.db",
    ),
    (
        "buffer path relative traversal",
        {"buffer": {"path": "../../../../etc/shadow"}},
        "buffer.path: '../../../../etc/shadow' is relative: write an absolute path, e.g. "
        "/var/lib/punchgate/buffer.db (a relative one depends on the directory the service starts in)",
    ),
    (
        "buffer path absolute traversal",
        {"buffer": {"path": "/var/lib/../../etc/shadow"}},
        "buffer.path: '/var/lib/../../etc/shadow' contains '..': write the directory it really is, "
        "e.g. /var/lib/punchgate/buffer.db",
    ),
    (
        "buffer path ends in a slash",
        {"buffer": {"path": "/var/lib/punchgate/"}},
        "buffer.path: '/var/lib/punchgate/' is a directory: name the file inside it, "
        "e.g. /var/lib/punchgate/buffer.db",
    ),
    (
        "free disk beyond any disk",
        {"buffer": {"min_free_disk_mb": 99999999999999}},
        "buffer.min_free_disk_mb: must be <= 10000000",
    ),
    (
        "retention of millennia",
        {"buffer": {"retention_days": 10000000000}},
        "buffer.retention_days: must be <= 3650",
    ),
    # --- the broker ---
    (
        "empty broker host",
        {"mqtt": {"host": ""}},
        "mqtt.host: must not be empty: write a host name or an IP address, e.g. 192.0.2.10",
    ),
    (
        "backoff that shrinks",
        {"mqtt": {"reconnect_min": 100, "reconnect_max": 1}},
        "mqtt.reconnect_max: is 1, below reconnect_min (100): raise reconnect_max or lower reconnect_min",
    ),
    (
        "a yes that is a string",
        {"mqtt": {"tls": {"insecure": "yes"}}},
        "mqtt.tls.insecure: write it as true, without quotes",
    ),
    ("protocol as a number", {"mqtt": {"protocol": 5}}, 'mqtt.protocol: write it as a string: "5"'),
    (
        "infinite timeout",
        {"mqtt": {"publish_timeout": float("inf")}},
        "mqtt.publish_timeout: must be a finite number (not nan or inf)",
    ),
    # --- http ---
    (
        "bind to nonsense",
        {"http": {"bind": "not an address!!"}},
        "http.bind: 'not an address!!' is not a valid host name: it contains ' ' '!'; "
        "a host name holds only letters, digits, '-' and '.'",
    ),
    # --- strict types ---
    ("port as a string", {"terminals": [_zk(port="4370")]}, "terminals[0].port: write it as a number: 4370"),
    (
        "poll interval as a string",
        {"terminals": [_zk(poll_interval="30.5")]},
        "terminals[0].poll_interval: write it as a number: 30.5",
    ),
    ("a one for true", {"terminals": [_zk(live=1)]}, "terminals[0].live: write it as true"),
    (
        "comm key as a number",
        {"terminals": [_zk(comm_key=1234)]},
        'terminals[0].comm_key: write it as a string: "1234"',
    ),
    (
        "work start as a string",
        {"health": {"work_start": "08:00"}},
        "health.work_start: write it as a time without quotes, e.g. 08:00:00",
    ),
    (
        "transport in capitals",
        {"terminals": [_zk(transport="TCP")]},
        "terminals[0].transport: must be 'tcp' or 'udp'; did you mean 'tcp'?",
    ),
    # --- terminals that collide ---
    (
        "two ZK terminals on one address",
        {"terminals": [ZK, _zk(name="gate-south")]},
        "terminals[1].port: TCP 192.0.2.21:4370 is also terminal 'gate-north' (terminals[0]): "
        "each terminal needs its own host and port",
    ),
    (
        "an Anviz TCP terminal on a ZK terminal's address",
        {"terminals": [_zk(port=5010), _anviz("line-1", "tcp://192.0.2.21")]},
        "terminals[1].endpoint: TCP 192.0.2.21:5010 is also terminal 'gate-north' (terminals[0]): "
        "each terminal needs its own host and port",
    ),
    (
        "one device id twice on a serial line",
        {
            "terminals": [
                _anviz("line-1", "serial:///dev/ttyUSB0", device_id=3),
                _anviz("line-2", "serial:///dev/ttyUSB0?baud=9600", device_id=3),
            ]
        },
        "terminals[1].device_id: device_id 3 on serial line /dev/ttyUSB0 is also terminal 'line-1' "
        "(terminals[0]): terminals on one line need different device ids (set on each terminal's menu)",
    ),
    (
        "names that differ only in case",
        {"terminals": [_zk(name="gate-north"), _zk(name="GATE-NORTH", host="192.0.2.22")]},
        "terminals[1].name: 'GATE-NORTH' and 'gate-north' (terminals[0]) differ only in case or in "
        "'-', '.', '_': both would take their comm key from PUNCHGATE_COMM_KEY_GATE_NORTH; rename one",
    ),
    (
        "names that differ in punctuation",
        {"terminals": [_zk(name="gate.north"), _zk(name="gate_north", host="192.0.2.22")]},
        "terminals[1].name: 'gate_north' and 'gate.north' (terminals[0]) differ only in case or in "
        "'-', '.', '_': both would take their comm key from PUNCHGATE_COMM_KEY_GATE_NORTH; rename one",
    ),
    # --- codecs, devices, calendars ---
    (
        "a codec that is not a text encoding",
        {"terminals": [_zk(encoding="rot13")]},
        "terminals[0].encoding: 'rot13' is not a text encoding (it transforms data, it does not "
        "decode names); write e.g. utf-8, gbk, cp1252 or latin-1",
    ),
    (
        "a disk as a serial line",
        {"terminals": [_anviz("line-1", "serial:///dev/sda")]},
        "terminals[0].endpoint: endpoint 'serial:///dev/sda': /dev/sda is a disk, not a serial port: "
        "use the serial adapter's device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...",
    ),
    (
        "/dev/null as a serial line",
        {"terminals": [_anviz("line-1", "serial:///dev/null")]},
        "terminals[0].endpoint: endpoint 'serial:///dev/null': /dev/null is not a serial port: "
        "use the serial adapter's device, e.g. /dev/ttyUSB0 or /dev/ttyS0",
    ),
    (
        "a working day that ends when it starts",
        {"health": {"work_start": dt.time(8), "work_end": dt.time(8)}},
        "health.work_end: the working day ends when it starts (08:00): write the end of the day, "
        "or work_start = 00:00:00 and work_end = 00:00:00 for round the clock",
    ),
    (
        "the same, on one terminal",
        {"terminals": [_zk(health={"work_start": dt.time(9), "work_end": dt.time(9)})]},
        "terminals[0].health.work_end: the working day ends when it starts (09:00): write the end of "
        "the day, or work_start = 00:00:00 and work_end = 00:00:00 for round the clock",
    ),
    # --- suggestions ---
    (
        "a typo in a terminal key",
        {"terminals": [_zk(poll_intervall=30)]},
        "terminals[0].poll_intervall: unknown key; did you mean `poll_interval`?",
    ),
    ("a typo in a section", {"mqqt": {}}, "mqqt: unknown key; did you mean `mqtt`?"),
    ("a key in capitals", {"buffer": {"Path": "/x"}}, "buffer.Path: unknown key; did you mean `path`?"),
    (
        "an Anviz key on a ZK terminal",
        {"terminals": [_zk(endpoint="tcp://x")]},
        "terminals[0].endpoint: unknown key; a ZK terminal takes `host` and `port` "
        "(endpoint is for Anviz terminals)",
    ),
    (
        "a timezone abbreviation",
        {"timezone": "CST"},
        "timezone: unknown IANA timezone 'CST'; did you mean one of: Asia/Shanghai, America/Chicago, "
        "Asia/Taipei, America/Mexico_City?",
    ),
    (
        "a misspelt zone",
        {"terminals": [_zk(timezone="Europe/Berln")]},
        "terminals[0].timezone: unknown IANA timezone 'Europe/Berln'; did you mean one of: Europe/Berlin",
    ),
    (
        "a zone in lower case",
        {"timezone": "europe/berlin"},
        "timezone: unknown IANA timezone 'europe/berlin'; did you mean one of: Europe/Berlin",
    ),
    (
        "an offset for a zone",
        {"timezone": "UTC+8"},
        "timezone: unknown IANA timezone 'UTC+8'; did you mean one of: Etc/GMT-8?",
    ),
    (
        "an unknown terminal type",
        {"terminals": [{**ZK, "type": "zkteco"}]},
        "terminals[0]: unknown terminal type 'zkteco' (expected one of: 'zk', 'anviz', 'zk-push'); did you mean 'zk'?",
    ),
    (
        "[terminals] instead of [[terminals]]",
        {"terminals": ZK},
        "terminals: must be an array of tables: write each terminal under its own [[terminals]] (two brackets)",
    ),
]


@pytest.mark.parametrize(("patch", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_key_path_and_fix(patch: dict[str, Any], expected: str) -> None:
    found = problems(patch)
    assert any(p.startswith(expected) for p in found), found


def test_serial_line_settings_must_agree() -> None:
    found = problems(
        {
            "terminals": [
                _anviz("line-1", "serial:///dev/ttyUSB0?baud=9600", device_id=1),
                _anviz("line-2", "serial:///dev/ttyUSB0?baud=19200", device_id=2),
            ]
        }
    )
    assert found == [
        "terminals[1].endpoint: serial line /dev/ttyUSB0 is used by terminal 'line-1' (terminals[0]) "
        "with baud=9600, parity=N, rs485=none, here with baud=19200, parity=N, rs485=none: every "
        "terminal on one line needs the same baud, parity and rs485"
    ]


@pytest.mark.parametrize(
    "terminals",
    [
        pytest.param([ZK, _zk(name="spare", enabled=False)], id="a disabled twin takes nothing"),
        pytest.param([ZK, _zk(name="bw", transport="udp")], id="tcp and udp on one port"),
        pytest.param([_zk(port=5010), _anviz("line-1", "tcp://192.0.2.22")], id="anviz on another host"),
        pytest.param(
            [
                _anviz("a", "serial:///dev/ttyUSB0", device_id=1),
                _anviz("b", "serial:///dev/ttyUSB0", device_id=2),
            ],
            id="two device ids on one line",
        ),
        pytest.param(
            [_anviz("a", "serial:///dev/ttyUSB0"), _anviz("b", "serial:///dev/ttyUSB1")],
            id="one id on two lines",
        ),
    ],
)
def test_terminals_that_do_not_collide(terminals: list[dict[str, Any]]) -> None:
    assert len(settings_from_dict({**BASE, "terminals": terminals}).terminals) == len(terminals)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (dt.time(0), dt.time(0)),
        (dt.time(22), dt.time(6)),
        (dt.time(8), dt.time(0)),
        (dt.time(6), dt.time(14)),
    ],
    ids=["round the clock", "night shift", "until midnight", "early shift"],
)
def test_working_days_the_calendar_understands(start: dt.time, end: dt.time) -> None:
    settings = settings_from_dict({**BASE, "health": {"work_start": start, "work_end": end}})
    assert (settings.health.work_start, settings.health.work_end) == (start, end)


def test_every_problem_in_one_run() -> None:
    found = problems(
        {
            "mqtt": {"host": "1.2.3.4:1883", "port": "1883"},
            "buffer": {"path": "buffer.db"},
            "http": {"bind": "0.0.0.0 "},
            "health": {"work_days": ["mon", "Tue"]},
        }
    )
    assert [p.split(":")[0] for p in found] == [
        "mqtt.host",
        "mqtt.port",
        "buffer.path",
        "http.bind",
        "health.work_days[1]",
    ]
    # Per-terminal keys and the checks across terminals are reported together with the rest.
    found = problems(
        {
            "gateway_id": "g w",
            "terminals": [_zk(encoding="base64", poll_intervall=5)],
        }
    )
    assert [p.split(":")[0] for p in found] == [
        "gateway_id",
        "terminals[0].encoding",
        "terminals[0].poll_intervall",
    ]
    found = problems({"gateway_id": "g w", "terminals": [ZK, _zk(name="GATE-north")]})
    assert [p.split(":")[0] for p in found] == ["gateway_id", "terminals[1].name", "terminals[1].port"]
