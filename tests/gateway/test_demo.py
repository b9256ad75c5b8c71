"""The README's main command, `punchgate demo`, runs end to end and shows punches arriving.

Run as `./dev demo | tee` would run it: stdout is a pipe, not a terminal. What it prints must
come as it happens (not all at the end), name the status page with a console account that can
sign in, /metrics and the status command (which must work while the demo runs), and the
folder with the logs, which stays. Its push terminal's punches arrive as they happen, with
source push. The gateway runs in central delivery with the reference sink on a SQLite file: per
terminal, every punch received is also confirmed at central, and the sink's file holds them.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DURATION = 20
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _read_lines(process: subprocess.Popen[str], lines: list[tuple[float, bool, str]]) -> None:
    """(when, demo still running, text) of every line, as it arrives."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.monotonic(), process.poll() is None, line.rstrip("\n")))


def test_demo_runs_and_punches_arrive_as_they_happen() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "punchgate.gateway", "demo", "--duration", str(DURATION)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
    )
    lines: list[tuple[float, bool, str]] = []
    reader = threading.Thread(target=_read_lines, args=(process, lines), daemon=True)
    reader.start()
    kept: Path | None = None
    try:
        status, (landed, page) = _while_running(process, lines)
        process.wait(120)
        reader.join(10)
        text = "\n".join(line for _, _, line in lines)
        assert process.returncode == 0, text[-3000:]
        folder = re.search(r"kept in (\S+):", text)
        assert folder, text[-2000:]
        kept = Path(folder[1])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The status command it printed worked against the running demo.
    assert status.returncode in (0, 1), status.stdout + status.stderr
    assert "gate-north" in status.stdout and "canteen" in status.stdout and "reception" in status.stdout
    # The status page's link was usable: the printed account signed in and saw the terminals.
    assert landed.endswith("/") and not landed.endswith("/login"), page[-2000:]
    assert "gate-north" in page and "reception" in page

    match = re.search(
        r"stopped: (\d+) punches on the terminals, (\d+) unique received, (\d+) confirmed at central", text
    )
    assert match, text[-2000:]
    produced, received, confirmed = int(match[1]), int(match[2]), int(match[3])
    # Central delivery: the sink confirmed every punch that arrived, terminal by terminal.
    assert confirmed == received, text[-2000:]
    per_terminal = {
        m[1]: (int(m[2]), int(m[3]))
        for m in re.finditer(r"^  (\S+) +received +(\d+) · confirmed at central +(\d+)$", text, re.M)
    }
    assert set(per_terminal) == {
        "gate-north",
        "gate-south",
        "canteen",
        "assembly-1",
        "assembly-2",
        "reception",
    }
    assert all(r == c > 0 for r, c in per_terminal.values()), per_terminal
    assert sum(r for r, _ in per_terminal.values()) == received
    assert produced > 150
    # A serial terminal's newest punch can still be waiting for its next poll (10 s);
    # everything else has arrived.
    assert received >= produced - 2
    for terminal in ("gate-north", "gate-south", "canteen", "assembly-1", "assembly-2", "reception"):
        assert terminal in text
    # The push terminal's backlog came at its handshake, and its punches as they happened.
    assert re.search(r" punches: \d+ from reception in one batch \(push\)", text), text[-2000:]
    pushed = [line for _, _, line in lines if " punch: reception user " in line]
    assert pushed and all(" push id " in line for line in pushed), text[-2000:]

    # Piped, it printed each arrival while running, not everything at the end.
    live = [(when, line) for when, running, line in lines if running and " punch: " in line]
    assert len(live) >= 10, text[-2000:]
    assert live[-1][0] - live[0][0] > DURATION / 2  # spread over the run

    # The logs stay after the demo, where it said.
    try:
        assert kept.is_dir() and not kept.is_relative_to(REPO)
        assert "gateway_started" in (kept / "gateway.log").read_text()
        assert (kept / "emulators.log").stat().st_size > 0
        assert (kept / "punchgate.toml").is_file()
        assert "sink_connected" in (kept / "sink.log").read_text()
        # What was confirmed is in the sink's database (a late arrival may have followed).
        with sqlite3.connect(kept / "sink.db") as db:
            assert db.execute("SELECT count(*) FROM punches").fetchone()[0] >= confirmed
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def _while_running(
    process: subprocess.Popen[str], lines: list[tuple[float, bool, str]]
) -> tuple[subprocess.CompletedProcess[str], tuple[str, str]]:
    """Once the demo shows live punches, run the `status` command it printed and sign in to
    the status page with the account it printed: the status result, and (the address the
    sign-in landed on, that page)."""
    deadline = time.monotonic() + 60
    command: list[str] | None = None
    url, account = "", None
    while time.monotonic() < deadline and process.poll() is None:
        text = "\n".join(line for _, _, line in lines)
        printed = re.search(r"status +(\S*punchgate) status --url (http://127\.0\.0\.1:\d+) ", text)
        if printed and " punch: " in text:
            url = printed[2]
            assert f"metrics      {url}/metrics" in text, text
            account = re.search(
                rf"status page  {re.escape(url)}/  \(sign in as (\S+), password (\S+)\)", text
            )
            assert account, text
            command = [sys.executable, "-m", "punchgate.gateway", "status", "--url", url]
            break
        time.sleep(0.2)
    assert command is not None and account is not None, "\n".join(line for _, _, line in lines)[-2000:]
    status = subprocess.run(
        command, capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, "COLUMNS": "200"}
    )
    return status, _sign_in(url, account[1], account[2])


def _sign_in(url: str, name: str, password: str) -> tuple[str, str]:
    """Sign in as a browser would (the form's CSRF token, cookies kept); where it landed, and the page."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{url}/login", timeout=30) as response:
        token = CSRF.search(response.read().decode())
    assert token, "no CSRF token in the sign-in form"
    form = urllib.parse.urlencode({"csrf": token[1], "name": name, "password": password, "next": "/"})
    with opener.open(f"{url}/login", data=form.encode(), timeout=30) as response:  # 303 → GET /
        return response.geturl(), response.read().decode()


def _record(record_id: str) -> dict[str, object]:
    return {
        "id": record_id,
        "user_id": "7",
        "local_time": "2026-11-30T08:00:00",
        "utc_time": "2026-11-30T07:00:00Z",
        "state": {"code": 0, "name": "check_in"},
        "verify": {"code": 1, "name": "fingerprint"},
        "source": "poll",
    }


def test_live_table_counts_confirmed_beside_received_once_per_id() -> None:
    """The terminal table's columns, with a confirmation that overtakes its punch and one that
    repeats: the columns count each id once, whichever came first."""
    from rich.console import Console

    from punchgate.gateway.demo_central import CentralView

    view = CentralView()
    base = "punchgate/demo-gw"
    batch = {"device": "door-1", "records": [_record("a" * 32), _record("b" * 32)]}
    view.on_message(f"{base}/confirm", {"schema": "punchgate.confirm", "ids": ["b" * 32]})  # overtook
    view.on_message(f"{base}/devices/door-1/punches", batch)
    assert (view.received["door-1"], view.confirmed["door-1"]) == (2, 1)
    view.on_message(f"{base}/confirm", {"schema": "punchgate.confirm", "ids": ["a" * 32, "b" * 32]})
    view.on_message(f"{base}/confirm", {"schema": "punchgate.confirm", "ids": ["a" * 32]})  # a repeat
    assert (view.received["door-1"], view.confirmed["door-1"]) == (2, 2)
    console = Console(width=200, record=True, color_system=None)
    console.print(view.render(produced=2))
    table = console.export_text()
    assert "received" in table and "confirmed at central" in table
    row = next(line for line in table.splitlines() if "door-1" in line and "unknown" in line)
    assert row.split()[-4:] == ["2", "│", "2", "│"], row
    assert "confirmed at central: 2" in table
