"""An example central-system consumer of the punchgate MQTT stream (docs/mqtt-contract.md).

    python docs/examples/consumer.py --host broker.example --db punches.db
    python docs/examples/consumer.py --host 127.0.0.1 --port 1883 --prefix punchgate \\
        --client-id central-1 --username central --password-env CENTRAL_MQTT_PASSWORD

It needs only paho-mqtt (2.x) and the standard library, and does what the contract asks of a
consumer:

* a **persistent session**: a fixed client id and `clean_session=False` (MQTT 3.1.1), so the
  broker keeps the QoS 1 batches that arrive while this program is stopped or restarting;
* a **QoS 1** subscription to `{prefix}/+/devices/+/punches`;
* **store, then acknowledge**: each batch is committed to SQLite before its PUBACK goes out
  (`manual_ack`), so a crash between the two means the broker sends the batch again;
* **deduplicate on `id`**: the punches table's primary key is the record id, so a punch that
  arrives twice (delivery is at least once) is stored once;
* unknown fields are ignored and unknown state/verify names kept as they are (the contract
  may add both without a version change);
* retained gateway and device states, with the rule that tells a live device state from a
  stale one (`device_state_is_live`).

Each new punch is printed as one line; `--quiet` prints only the start and the stop. SIGTERM
or Ctrl-C disconnects cleanly; the session (and what queues in it) stays with the broker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sqlite3
import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

# The gateway republishes every device state at least this often while it is connected
# (docs/mqtt-contract.md, "Device state"); twice that, and the state is no longer current.
STALE_AFTER = dt.timedelta(minutes=20)

SCHEMA = """
CREATE TABLE IF NOT EXISTS punches (
    id TEXT PRIMARY KEY,          -- the record id: the deduplication key
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    serial TEXT NOT NULL,
    user_id TEXT NOT NULL,
    utc_time TEXT NOT NULL,
    local_time TEXT NOT NULL,
    state_name TEXT,
    verify_name TEXT,
    flags TEXT NOT NULL,          -- JSON list; before_2000 / in_future mean "review the time"
    record TEXT NOT NULL,         -- the record as received
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateways (
    gateway TEXT PRIMARY KEY, state TEXT NOT NULL, started_at TEXT, received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device_states (
    gateway TEXT NOT NULL, device TEXT NOT NULL, state TEXT NOT NULL, as_of TEXT,
    payload TEXT NOT NULL, PRIMARY KEY (gateway, device)
);
"""


def parse_time(text: str | None) -> dt.datetime | None:
    """The contract's `…Z` timestamps as aware datetimes (None stays None)."""
    return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def device_state_is_live(
    device_state: dict[str, Any], gateway_state: dict[str, Any] | None, now: dt.datetime
) -> tuple[bool, str]:
    """(live, why) for a retained device state, by the contract's rule: its gateway's retained
    state says online, the device state was built during that gateway run (`as_of` not before
    `started_at`), and `as_of` is recent (the gateway refreshes it every 10 minutes)."""
    if gateway_state is None or gateway_state.get("state") != "online":
        return False, "gateway offline"
    as_of = parse_time(device_state.get("as_of"))
    if as_of is None:
        return False, "no as_of (an older gateway)"
    started_at = parse_time(gateway_state.get("started_at"))
    if started_at is not None and as_of < started_at:
        return False, "left over from an earlier run of the gateway"
    if now - as_of > STALE_AFTER:
        return False, f"not refreshed since {device_state['as_of']}"
    return True, "live"


class Consumer:
    def __init__(self, db: sqlite3.Connection, prefix: str, *, quiet: bool) -> None:
        self.db = db
        self.prefix = prefix
        self.quiet = quiet

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    # --- MQTT callbacks ----------------------------------------------------------------------
    def on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _properties: Any
    ) -> None:
        if reason.is_failure:
            print(f"connect refused: {reason}", file=sys.stderr, flush=True)
            return
        resumed = "resumed" if flags.session_present else "new"
        print(f"connected ({resumed} session)", flush=True)
        # Subscribing again on every connect is harmless and covers a broker that lost the session.
        client.subscribe(
            [
                (f"{self.prefix}/+/devices/+/punches", 1),
                (f"{self.prefix}/+/state", 1),
                (f"{self.prefix}/+/devices/+/state", 1),
            ]
        )

    def on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, codes: Any, _props: Any) -> None:
        if any(code.is_failure for code in codes):
            print(f"subscription refused: {codes}", file=sys.stderr, flush=True)
        else:
            print("subscribed", flush=True)

    def on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        # {prefix}/{gateway}/state, {prefix}/{gateway}/devices/{device}/state or .../punches
        levels = message.topic.removeprefix(self.prefix + "/").split("/")
        payload = json.loads(message.payload) if message.payload else None  # empty: a cleared retain
        if payload is not None:
            if levels[-1] == "punches":
                self.store_batch(payload)
            elif levels[1:] == ["state"]:
                self.store_gateway_state(levels[0], payload)
            elif levels[1] == "devices" and levels[-1] == "state":
                self.store_device_state(levels[0], levels[2], payload)
        # Only now, with the data committed, the broker may forget the message.
        if message.qos > 0:
            client.ack(message.mid, message.qos)

    # --- storing -----------------------------------------------------------------------------
    def store_batch(self, batch: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        new = []
        with self.db:  # one transaction per batch
            for record in batch["records"]:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO punches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record["id"],
                        batch["gateway"],
                        batch["device"],
                        record["serial"],
                        record["user_id"],
                        record["utc_time"],
                        record["local_time"],
                        record["state"]["name"],
                        record["verify"]["name"],
                        json.dumps(record["flags"]),
                        json.dumps(record, sort_keys=True),
                        now,
                    ),
                )
                if cursor.rowcount:
                    new.append(record)
        for record in new:
            flags = f" flags={','.join(record['flags'])}" if record["flags"] else ""
            self.say(
                f"punch {record['id']} {batch['gateway']}/{batch['device']} user {record['user_id']} "
                f"{record['utc_time']} {record['state']['name'] or record['state']['code']}{flags}"
            )

    def store_gateway_state(self, gateway: str, state: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO gateways VALUES (?, ?, ?, ?)",
                (gateway, state["state"], state.get("started_at"), dt.datetime.now(dt.UTC).isoformat()),
            )
        self.say(f"gateway {gateway} {state['state']}")

    def store_device_state(self, gateway: str, device: str, state: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO device_states VALUES (?, ?, ?, ?, ?)",
                (gateway, device, state["state"], state.get("as_of"), json.dumps(state, sort_keys=True)),
            )
        row = self.db.execute(
            "SELECT state, started_at FROM gateways WHERE gateway = ?", (gateway,)
        ).fetchone()
        gateway_state = None if row is None else {"state": row[0], "started_at": row[1]}
        _live, why = device_state_is_live(state, gateway_state, dt.datetime.now(dt.UTC))
        faults = ",".join(f["code"] for f in state.get("faults", [])) or "no faults"
        self.say(f"device {gateway}/{device} {state['state']} ({faults}; {why})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Store punches from punchgate gateways in SQLite, once each."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="punchgate", help="the gateways' mqtt.topic_prefix")
    parser.add_argument(
        "--client-id", default="punchgate-example-consumer", help="keep it fixed: it names the session"
    )
    parser.add_argument("--db", default="punches.db", help="SQLite file")
    parser.add_argument("--username")
    parser.add_argument("--password-env", help="name of the environment variable holding the password")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    db = sqlite3.connect(args.db)
    db.executescript(SCHEMA)
    consumer = Consumer(db, args.prefix, quiet=args.quiet)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        clean_session=False,  # the persistent session: the broker queues QoS 1 messages for us
        protocol=MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    if args.username:
        password = os.environ.get(args.password_env) if args.password_env else None
        client.username_pw_set(args.username, password)
    client.on_connect = consumer.on_connect
    client.on_subscribe = consumer.on_subscribe
    client.on_message = consumer.on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)

    def stop(_signum: int, _frame: object) -> None:
        client.disconnect()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client.connect_async(args.host, args.port, keepalive=30)
    client.loop_forever(retry_first_connection=True)
    count = db.execute("SELECT count(*) FROM punches").fetchone()[0]
    db.close()
    print(f"stopped; {count} punches stored", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
