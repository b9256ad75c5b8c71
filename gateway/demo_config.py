"""The demo's gateway config: six emulated terminals, a broker and listeners, all on loopback.

`write_config` writes `punchgate.toml` into the demo's folder: three ZK terminals (two TFT
over TCP, one of them with a comm key taken from the environment as a site would keep it,
one BW over UDP in another zone), two Anviz terminals sharing one RS485 line (a
pseudo-terminal), and a push terminal (`PUSH_TERMINAL`, serial `PUSH_SERIAL`) uploading to
the `[push]` listener. Delivery is `central`: a punch is delivered when the demo's sink confirms it.
"""

from __future__ import annotations

from pathlib import Path

from punchgate.drivers.zk.emulator import ZkEmulator

GATEWAY_ID = "demo-gw"
COMM_KEY = 1234
PUSH_TERMINAL = "reception"  # the push terminal's name in the config
PUSH_SERIAL = "DEMO-PUSH-0006"


def write_config(
    workdir: Path,
    broker_port: int,
    http_port: int,
    push_port: int,
    emulators: dict[str, ZkEmulator],
    anviz_pty: str,
) -> Path:
    tft_a, tft_b, bw = emulators["gate-north"], emulators["gate-south"], emulators["canteen"]
    config = f"""
gateway_id = "{GATEWAY_ID}"
site = "demo"
timezone = "Europe/Berlin"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
# Delivered means stored at central: the demo's sink (sink.db) confirms what it committed.
delivery = "central"
# Shorter than the default 120 s, so a punch the sink missed comes again while one watches.
resend_after = 30

[buffer]
path = "{workdir / "buffer.db"}"

[http]
port = {http_port}

# The listener push terminals upload to (loopback here; on a site, the gateway's LAN address).
[push]
bind = "127.0.0.1"
port = {push_port}

[[terminals]]
type = "zk"
name = "gate-north"
host = "127.0.0.1"
port = {tft_a.tcp_port}
poll_interval = 30

[[terminals]]
type = "zk"
name = "gate-south"
host = "127.0.0.1"
port = {tft_b.tcp_port}
poll_interval = 30
# comm key: from PUNCHGATE_COMM_KEY_GATE_SOUTH, as a site would keep it out of the file

[[terminals]]
type = "zk"
name = "canteen"
host = "127.0.0.1"
port = {bw.udp_port}
transport = "udp"
poll_interval = 20
timezone = "Asia/Shanghai"

# two Anviz terminals on one RS485 line (a pseudo-terminal here), addressed by device id
[[terminals]]
type = "anviz"
name = "assembly-1"
endpoint = "serial://{anviz_pty}?baud=9600"
device_id = 1
poll_interval = 10

[[terminals]]
type = "anviz"
name = "assembly-2"
endpoint = "serial://{anviz_pty}?baud=9600"
device_id = 2
poll_interval = 10

# a terminal that pushes its punches to the [push] listener (ADMS), named by its serial number
[[terminals]]
type = "zk-push"
name = "{PUSH_TERMINAL}"
serial_number = "{PUSH_SERIAL}"
encoding = "gb18030"
"""
    path = workdir / "punchgate.toml"
    path.write_text(config)
    return path
