"""`punchgate command COMMAND [TERMINAL...]`: send one remote command over MQTT and print the answers.

A thin MQTT client of the same topics central uses (docs/mqtt-contract.md, "Remote commands"),
so IT can try any command from a shell: it publishes the request on
`{prefix}/{gateway}/commands/request` and prints every answer until each target has its final
one. Broker, TLS, topic prefix and gateway id come from the gateway's config (`--config`);
the broker account from `--username` (password in PUNCHGATE_COMMAND_PASSWORD, or asked),
else the config's own (a broker whose ACL follows config/mosquitto-acl.example lets only a
commander account publish requests). MQTT 5 (response topic and correlation data) unless
`--mqtt 3.1.1`: then it listens on the gateway's response topic and picks its answers by id.

    punchgate command device.info door-1 door-2
    punchgate command users.upsert door-1 --args '{"users": [{"user_id": "17", "name": "Ann"}]}'
    punchgate command punches.resend --all --arg day=2026-11-20
    punchgate command log.clear door-1 --arg serial=CKJT2034

Exit codes: 0 every answer ok, 1 an error or expired answer, 2 no final answer in time (or the
broker unreachable, or bad usage).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from punchgate.sync.settings import MqttSettings

EXIT_FAILED = 1
EXIT_NO_ANSWER = 2
PASSWORD_ENV = "PUNCHGATE_COMMAND_PASSWORD"


def _args(pairs: tuple[str, ...], as_json: str | None) -> dict[str, Any]:
    """--args JSON and --arg KEY=VALUE (a value that parses as JSON is taken as JSON)."""
    args: dict[str, Any] = {}
    if as_json:
        try:
            parsed = json.loads(as_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--args")
        args.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--arg")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


class _Listener:
    """Collects the answers to one request id (paho's thread fills it)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.answers: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.changed = threading.Condition()

    def on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            answer = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(answer, dict) and answer.get("id") in (self.request_id, None):
            with self.changed:
                self.answers.append(answer)
                self.changed.notify_all()

    def finished(self, targets: list[str | None] | None) -> bool:
        finals = {a.get("terminal") for a in self.answers if a.get("status") in ("ok", "error", "expired")}
        refused = any(a.get("terminal") is None and a.get("status") == "error" for a in self.answers)
        if refused:
            return True
        accepted = next((a for a in self.answers if a.get("status") == "accepted"), None)
        wanted = targets
        if wanted is None and accepted is not None:
            wanted = list((accepted.get("result") or {}).get("terminals") or []) or [None]
        return wanted is not None and all(t in finals for t in wanted)


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, ensure_ascii=False))
        return
    where = answer.get("terminal") or "(request)"
    status = str(answer.get("status"))
    detail: Any = answer.get("error") or answer.get("result")
    if isinstance(detail, dict) and "code" in detail and "message" in detail:
        text = f"{detail['code']}: {detail['message']}"
    else:
        text = "" if detail is None else json.dumps(detail, ensure_ascii=False)
    repeat = " (repeat)" if answer.get("repeat") else ""
    click.echo(f"{where:<20} {status:<9}{repeat} {text}".rstrip())


@click.command("command")
@click.argument("command")
@click.argument("terminals", nargs=-1)
@click.option("--all", "all_terminals", is_flag=True, help='every terminal ("*")')
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE", help="an argument (repeatable)")
@click.option("--args", "args_json", metavar="JSON", help="the arguments as one JSON object")
@click.option("--config", "-c", "config", type=click.Path(path_type=Path), help="the gateway's config file")
@click.option("--gateway", "gateway_id", help="the gateway's id (default: from --config)")
@click.option("--host", help="broker host (default: from --config)")
@click.option("--port", type=int, help="broker port (default: from --config)")
@click.option("--username", help=f"broker account (password in ${PASSWORD_ENV}, or asked)")
@click.option("--mqtt", "protocol", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)
@click.option("--id", "request_id", help="the request id (default: a new one; repeat one to ask again)")
@click.option("--expires-in", type=float, help="seconds the gateway may wait for an offline terminal")
@click.option("--requester", help="who asks, for the audit trail (default: cli:USER@HOST)")
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="seconds to wait for the answers"
)
@click.option("--json", "as_json", is_flag=True, help="print the answers as JSON, one per line")
def command(
    command: str,
    terminals: tuple[str, ...],
    all_terminals: bool,
    arg_pairs: tuple[str, ...],
    args_json: str | None,
    config: Path | None,
    gateway_id: str | None,
    host: str | None,
    port: int | None,
    username: str | None,
    protocol: str,
    request_id: str | None,
    expires_in: float | None,
    requester: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Send one remote command to a gateway over MQTT and print its answers."""
    from punchgate.gateway.cli import _load_or_exit

    settings = _load_or_exit(config, check_files=False) if config else None
    gateway_id = gateway_id or (settings.gateway_id if settings is not None else None)
    if gateway_id is None:
        raise click.UsageError("name the gateway: --gateway ID, or --config FILE")
    if all_terminals and terminals:
        raise click.UsageError("name terminals or give --all, not both")
    mqtt_settings = settings.mqtt if settings is not None else None
    base = f"{mqtt_settings.topic_prefix if mqtt_settings is not None else 'punchgate'}/{gateway_id}"
    request_id = request_id or f"cli-{uuid.uuid4()}"
    request: dict[str, Any] = {
        "schema": "punchgate.command",
        "version": 1,
        "id": request_id,
        "requester": requester or f"cli:{getpass.getuser()}@{socket.gethostname()}",
        "command": command,
        "args": _args(arg_pairs, args_json),
    }
    if all_terminals or terminals:
        request["terminals"] = "*" if all_terminals else list(terminals)
    if expires_in is not None:
        request["expires_at"] = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)).isoformat()
    connection = _Connection(base, protocol == "5", _Listener(request_id))
    connection.open(mqtt_settings, host=host, port=port, username=username)
    try:
        connection.send(request)
        listener = connection.listener
        if not _wait(listener, list(terminals) if terminals else None, timeout, as_json):
            click.echo(
                f"no final answer within {timeout:g} s (is the gateway connected and subscribed? "
                f"ask again with --id {request_id}: it is never run twice)",
                err=True,
            )
            sys.exit(EXIT_NO_ANSWER)
        failed = any(a.get("status") in ("error", "expired") for a in listener.answers)
        sys.exit(EXIT_FAILED if failed else 0)
    finally:
        connection.close()


def _wait(listener: _Listener, targets: list[str | None] | None, timeout: float, as_json: bool) -> bool:
    """Print answers as they come until every target has its final one; False on timeout."""
    shown = 0
    deadline = time.monotonic() + timeout
    with listener.changed:
        while True:
            while shown < len(listener.answers):
                _show(listener.answers[shown], as_json)
                shown += 1
            if listener.finished(targets):
                return True
            if time.monotonic() >= deadline:
                return False
            listener.changed.wait(max(0.0, min(1.0, deadline - time.monotonic())))


class _Connection:
    """The command's own MQTT client: subscribed to its answers before it publishes."""

    def __init__(self, base: str, v5: bool, listener: _Listener) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.base, self.v5, self.listener = base, v5, listener
        client_id = f"punchgate-command-{uuid.uuid4().hex[:12]}"
        self.reply_topic = f"{base}/commands/response/{client_id}" if v5 else f"{base}/commands/response"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        self.client.on_message = listener.on_message
        self.client.on_subscribe = lambda *_a: listener.subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(self.reply_topic, qos=1)

    def open(
        self, settings: MqttSettings | None, *, host: str | None, port: int | None, username: str | None
    ) -> None:
        from punchgate.sync.forwarder import tls_context

        if username is not None:
            password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"broker password for {username}: ")
            self.client.username_pw_set(username, password)
        elif settings is not None and settings.username is not None:
            secret = settings.password.get_secret_value() if settings.password else None
            self.client.username_pw_set(settings.username, secret)
        context = tls_context(settings) if settings is not None else None
        if context is not None:
            self.client.tls_set_context(context)
        try:
            self.client.connect(
                host or (settings.host if settings else "127.0.0.1"),
                port or (settings.port if settings else 1883),
                keepalive=30,
            )
        except OSError as exc:
            click.echo(f"cannot reach the broker: {exc}", err=True)
            sys.exit(EXIT_NO_ANSWER)
        self.client.loop_start()
        if not self.listener.subscribed.wait(10):
            self.close()
            click.echo("the broker did not confirm the subscription to the answers", err=True)
            sys.exit(EXIT_NO_ANSWER)

    def send(self, request: dict[str, Any]) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = None
        if self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = self.reply_topic
            properties.CorrelationData = str(request["id"]).encode()
        self.client.publish(
            f"{self.base}/commands/request", json.dumps(request), qos=1, properties=properties
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
