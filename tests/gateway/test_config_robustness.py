"""No value in any key crashes validation: every input ends in Settings or a ConfigError.

Every key of every section and terminal family gets the values a careless edit, a broken
generator or a hostile file could put there. A traceback from `check-config` is a bug.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from punchgate.gateway.settings import (
    TERMINAL_MODELS,
    ConfigError,
    HealthSettings,
    Settings,
    settings_from_dict,
)
from punchgate.sync.settings import BufferSettings, MqttSettings, TlsSettings

NASTY: list[Any] = [
    "",
    " ",
    "\0",
    "x" * 5000,
    "../../../../etc/shadow",
    "/dev/zero",
    "💥",
    -1,
    0,
    2**64,
    10**400,
    float("nan"),
    float("inf"),
    -0.0,
    True,
    [],
    [[[]]],
    {},
    {"a": {"b": 1}},
    dt.time(25 % 24, 0),
    dt.date(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59),
]


def _keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _cases() -> list[tuple[str, dict[str, Any]]]:
    zk = {"type": "zk", "name": "t", "host": "192.0.2.1"}
    anviz = {"type": "anviz", "name": "a", "endpoint": "tcp://192.0.2.2"}
    push = {"type": "zk-push", "name": "p", "serial_number": "PUSH0001"}
    bases = {"zk": zk, "anviz": anviz, "zk-push": push}
    cases: list[tuple[str, dict[str, Any]]] = []
    for value in NASTY:
        label = repr(value)[:20]
        for key in _keys(Settings):
            cases.append((f"{key}={label}", {key: value}))
        for section, model in (
            ("mqtt", MqttSettings),
            ("buffer", BufferSettings),
            ("health", HealthSettings),
        ):
            cases += [(f"{section}.{k}={label}", {section: {k: value}}) for k in _keys(model)]
        cases += [(f"mqtt.tls.{k}={label}", {"mqtt": {"tls": {k: value}}}) for k in _keys(TlsSettings)]
        for kind, family in TERMINAL_MODELS.items():
            cases += [
                (f"{kind}.{k}={label}", {"terminals": [{**bases[kind], k: value}]}) for k in _keys(family)
            ]
        cases.append((f"terminals[0]={label}", {"terminals": [value]}))
    return cases


CASES = _cases()


def test_no_value_anywhere_crashes() -> None:
    crashes = []
    for label, patch in CASES:
        data = {"gateway_id": "gw", **patch}
        try:
            settings_from_dict(data)
        except ConfigError as exc:
            if not exc.problems or not all(isinstance(p, str) and ": " in p for p in exc.problems):
                crashes.append(f"{label}: problems without a key path: {exc.problems}")
        except Exception as exc:  # the point of the test: nothing else may escape
            crashes.append(f"{label}: {type(exc).__name__}: {exc}")
    assert not crashes, "\n".join(crashes[:20])


def test_long_values_are_not_echoed_whole() -> None:
    long = "x" * 5000
    crowded = []
    for label, patch in CASES:
        if long not in repr(patch):
            continue
        try:
            settings_from_dict({"gateway_id": "gw", **patch})
        except ConfigError as exc:
            crowded += [f"{label}: {p[:100]}" for p in exc.problems if len(p) > 400]
    assert not crowded, "\n".join(crowded)
