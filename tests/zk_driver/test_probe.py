"""`punchgate probe zk://…` as a subprocess against emulators: the report and the diagnoses."""

from __future__ import annotations

import asyncio
import socket

from tests.support.gateway import run_punchgate
from tests.zk_driver.conftest import EmulatorFactory


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


async def test_probe_reports_identity_counts_clock_and_last_punches(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft", comm_key=77, serial_number="OGT8123456")
    emulator.generate_log(3000, days=30, users=12, seed=2)
    emulator.add_punch("7", state=1, verify=15)
    status, out, err = await run_punchgate(
        "probe", f"zk://127.0.0.1:{emulator.tcp_port}", "--comm-key", "77", "--last", "3"
    )
    assert status == 0, err
    for expected in (
        "OGT8123456",
        "ZEM600_TFT",
        "F19",
        "Ver 6.60 Apr 28 2017",
        "00:17:61:00:00:01",
        "12 / 10,000",
        "3,001 / 200,000",
        "Terminal clock",
        "in step",
        "Last 3 of 3,001 punches",
        "User 7",
        "1 check_out",
        "15 face",
        "Read 3,001 records and 12 users",
    ):
        assert expected in out, expected
    assert err == ""


async def test_probe_over_udp_with_drift(start_emulator: EmulatorFactory) -> None:
    import datetime as dt

    emulator = await start_emulator(profile="bw", clock_offset=dt.timedelta(minutes=-5))
    emulator.generate_log(20, days=2, users=4)
    status, out, err = await run_punchgate(
        "probe", f"zk://127.0.0.1:{emulator.udp_port}", "--udp", "--last", "0"
    )
    assert status == 0, err
    assert "ZEM560" in out and "20 / 50,000" in out
    assert "-300 s (terminal behind" in out or "-299 s (terminal behind" in out
    assert "punches" not in out  # --last 0


async def test_probe_wrong_or_missing_comm_key(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft", comm_key=77)
    url = f"zk://127.0.0.1:{emulator.tcp_port}"
    status, _, err = await run_punchgate("probe", url, "--comm-key", "78")
    assert status == 1
    assert one_line(err).startswith("probe failed: wrong comm key: the terminal at 127.0.0.1:")
    assert "refused the comm key" in err
    status, _, err = await run_punchgate("probe", url)
    assert status == 1
    assert "requires a comm key (give --comm-key)" in one_line(err)


async def test_probe_unreachable() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    status, out, err = await run_punchgate("probe", f"zk://127.0.0.1:{port}", "--timeout", "2")
    assert status == 1
    assert one_line(err).startswith(
        f"probe failed: unreachable: no ZK terminal answered at 127.0.0.1:{port} over TCP"
    )
    assert "refused" in err
    assert out == ""


async def test_probe_not_a_zk_terminal() -> None:
    async def http_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http_like, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        status, _, err = await run_punchgate("probe", f"zk://127.0.0.1:{port}", "--timeout", "2")
    finally:
        server.close()
        await server.wait_closed()
    assert status == 1
    assert one_line(err).startswith("probe failed: not a ZK terminal: something at 127.0.0.1:")
    assert b"HTTP/1.1".hex() in err


async def test_probe_count_mismatch(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(2500, days=10, users=5)
    await emulator.set_fault("short_read", missing=2)
    status, out, err = await run_punchgate("probe", f"zk://127.0.0.1:{emulator.tcp_port}")
    assert status == 1
    assert "2,500 / 200,000" in out  # the identity was printed before the read failed
    assert one_line(err).startswith(
        "probe failed: protocol error: the terminal reports 2500 records but sent 2498"
    )


async def test_probe_terminal_that_hangs(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft")
    await emulator.set_fault("hang")
    status, _, err = await run_punchgate("probe", f"zk://127.0.0.1:{emulator.tcp_port}", "--timeout", "1")
    assert status == 1
    assert one_line(err).startswith("probe failed: timeout: the terminal at 127.0.0.1:")


async def test_probe_bad_url() -> None:
    status, _, err = await run_punchgate("probe", "zk://127.0.0.1:notaport")
    assert status == 2
    assert "the port must be a number" in err
