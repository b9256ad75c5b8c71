"""`punchgate sink run`'s settings: the database, the broker, the subscription and the flushes.

One frozen value, filled from the command line (`cli.py`) or by tests; the defaults are the
documented ones (docs/sink.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from punchgate.sync.sink.engine import DEFAULT_DB


@dataclass(frozen=True)
class SinkSettings:
    db: str = DEFAULT_DB
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls: bool = False
    prefix: str = "punchgate"
    group: str = "punchgate-sink"
    client_id: str = "punchgate-sink"
    session_expiry: int = 7 * 86400  # seconds the broker keeps our session (and queue) while we are away
    keepalive: int = 30
    max_messages: int = 200  # per flush (one transaction)
    linger: float = 0.05  # seconds a flush waits for more once the first message arrived
    receive_maximum: int = 400  # MQTT 5: messages the broker may have in flight to us
    confirm: bool = True
    check_interval: float = 30.0  # seconds between re-checks of digest days that did not match
    mismatch_grace: float = 600.0  # a day mismatching for less than this is still being delivered
    resend: bool = True  # ask the gateway for punches.resend of a day still missing punches after the grace
    resend_interval: float = 3600.0  # seconds before the same gateway/terminal/day is asked for again
