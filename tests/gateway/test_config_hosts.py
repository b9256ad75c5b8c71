"""Host keys: an IPv4/IPv6 address or an RFC 1123 host name, nothing else, with the fix named.

The same rule lives twice (drivers and sync may not import each other); this table holds both
copies, and every host key in the file, to it, and the copies are held to the same code.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from punchgate.drivers import config as drivers_config
from punchgate.drivers.config import check_host as drivers_check_host
from punchgate.gateway.settings import ConfigError, settings_from_dict
from punchgate.sync import settings as sync_settings
from punchgate.sync.settings import check_host as sync_check_host

GOOD = [
    "192.0.2.10",
    "::1",
    "fe80::1%eth0",
    "2001:db8::5",
    "localhost",
    "mqtt.example.internal",
    "gw-1.local.",
]
BAD = [
    ("192.168.1.300", "'192.168.1.300' is not a valid IPv4 address (four numbers 0-255, e.g. 192.168.1.30)"),
    ("1.2.3.4:4370", "'1.2.3.4:4370' has a port in it: put the port in `port` and write only '1.2.3.4' here"),
    ("[::1]:1883", "'[::1]:1883' has a port in it: put the port in `port` and write only '::1' here"),
    ("[::1]", "'[::1]': write an IPv6 address without brackets"),
    (
        "gate north",
        "'gate north' is not a valid host name: it contains ' '; "
        "a host name holds only letters, digits, '-' and '.'",
    ),
    ("gate-north ", "'gate-north ' has spaces around it: remove them"),
    (" 10.0.0.5", "' 10.0.0.5' has spaces around it: remove them"),
    ("", "must not be empty: write a host name or an IP address, e.g. 192.0.2.10"),
    ("tcp://10.0.0.5", "'tcp://10.0.0.5' is a URL: write only the host name or address"),
    (
        "-gate.local",
        "'-gate.local' is not a valid host name: write dot-separated labels of 1-63 letters, digits "
        "and '-', none starting or ending with '-'",
    ),
    (
        "a..b",
        "'a..b' is not a valid host name: write dot-separated labels of 1-63 letters, digits "
        "and '-', none starting or ending with '-'",
    ),
    (
        "not an address!!",
        "'not an address!!' is not a valid host name: it contains ' ' '!'; "
        "a host name holds only letters, digits, '-' and '.'",
    ),
]


@pytest.mark.parametrize("check", [drivers_check_host, sync_check_host], ids=["drivers", "sync"])
@pytest.mark.parametrize("host", GOOD)
def test_addresses_and_host_names_pass(check: Any, host: str) -> None:
    assert check(host) == host


@pytest.mark.parametrize("check", [drivers_check_host, sync_check_host], ids=["drivers", "sync"])
@pytest.mark.parametrize(("host", "message"), BAD, ids=[host or "empty" for host, _ in BAD])
def test_bad_hosts_say_what_to_write(check: Any, host: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check(host)
    assert str(caught.value) == message


def _code(function: Callable[..., Any]) -> str:
    """The function as the parser sees it, without its docstring (each copy says where its twin is)."""
    (node,) = ast.parse(inspect.getsource(function)).body
    assert isinstance(node, ast.FunctionDef)
    if ast.get_docstring(node) is not None:
        node.body = node.body[1:]
    return ast.dump(node)


def test_the_two_copies_are_the_same_code() -> None:
    assert _code(drivers_check_host) == _code(sync_check_host)
    assert drivers_config._LABEL.pattern == sync_settings._LABEL.pattern


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"gateway_id": "gw", **data})
    return caught.value.problems


@pytest.mark.parametrize(("host", "message"), BAD[:6], ids=[host for host, _ in BAD[:6]])
def test_every_host_key_uses_the_rule(host: str, message: str) -> None:
    zk = {"terminals": [{"type": "zk", "name": "t", "host": host}]}
    assert _problems(zk) == [f"terminals[0].host: {message}"]
    assert _problems({"mqtt": {"host": host}}) == [f"mqtt.host: {message}"]
    assert _problems({"http": {"bind": host}}) == [f"http.bind: {message}"]


def test_anviz_tcp_endpoint_host() -> None:
    terminal = {"type": "anviz", "name": "a", "endpoint": "tcp://192.168.1.300:5010"}
    assert _problems({"terminals": [terminal]}) == [
        "terminals[0].endpoint: endpoint 'tcp://192.168.1.300:5010': '192.168.1.300' is not a valid "
        "IPv4 address (four numbers 0-255, e.g. 192.168.1.30)"
    ]
