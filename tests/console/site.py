"""A real site for the console's browser tests: a broker, emulated ZK terminals, the gateway
daemon with its HTTP server, and one account per role; plus Debian's Chromium under Playwright.

    with Site.start(tmp_path) as site:          # everything running, accounts made
        page = site.browser.new_page()           # Playwright, driving /usr/bin/chromium
        site.sign_in(page, "viewer")
        site.farm.run(site.terminals["gate-b"].set_fault("refuse_connections"))

Playwright's own browser download is never used: Chromium is Debian's package (`./dev` installs
it), started with `executable_path`, a fresh profile folder (Playwright makes one per launch)
and every background feature that
would reach the network switched off. The gateway, broker and terminals listen on loopback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.console.accounts import Accounts
from tests.health.rig import EmulatorFarm, http_get
from tests.support.broker import Broker, free_port
from tests.support.config import write_config, zk_terminal
from tests.support.gateway import GatewayProcess

CHROMIUM = Path(os.environ.get("PUNCHGATE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a long test password"
ROLES = ("viewer", "clerk", "approver", "admin")
TIMEZONE = "Asia/Shanghai"  # the site's zone: not the machine's, so times must be converted
POLL = 2.0
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def require_chromium() -> Path:
    if CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    # A missing browser is a broken set-up, never a reason to pass: fail and say how to fix it.
    pytest.fail(f"no Chromium at {CHROMIUM}: ./dev setup installs Debian's chromium (as root)")


@dataclass
class Site:
    folder: Path
    broker: Broker
    farm: EmulatorFarm
    terminals: dict[str, ZkEmulator]
    gateway: GatewayProcess
    port: int
    buffer_path: Path
    _playwright: Any = None
    _browser: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        folder: Path,
        *,
        terminals: tuple[str, ...] = ("gate-a", "gate-b"),
        commands: dict[str, Any] | None = None,
    ) -> Iterator[Site]:
        """The site running; `commands` is its `[commands]` section (default: the gateway's)."""
        require_chromium()
        with contextlib.ExitStack() as stack:
            broker = Broker(folder / "broker")
            broker.start()
            stack.callback(broker.stop)
            farm = EmulatorFarm()
            stack.callback(farm.close)
            emulators = {
                name: farm.add(name, records=60 + 20 * i, seed=i) for i, name in enumerate(terminals)
            }
            buffer_path = folder / "state" / "buffer.db"
            accounts = Accounts.beside_buffer(buffer_path)
            for role in ROLES:
                accounts.add(role, role, PASSWORD)
            port = free_port()
            config = write_config(
                folder / "gateway.toml",
                gateway_id="console-gw",
                broker_port=broker.port,
                buffer_path=buffer_path,
                http_port=port,
                terminals=[
                    # The emulators' clocks keep UTC (tests.health.rig); the site is elsewhere.
                    zk_terminal(name, emulator, poll_interval=POLL, timeout=1.0, timezone="UTC")
                    for name, emulator in emulators.items()
                ],
                mqtt={"reconnect_max": 1.0},
                sections={
                    "health": {"fault_hold_seconds": 5},
                    **({"commands": commands} if commands else {}),
                },
                site="Plant 7",
                timezone=TIMEZONE,
            )
            gateway = GatewayProcess(config)
            gateway.start()
            stack.callback(gateway.stop)
            site = cls(folder, broker, farm, emulators, gateway, port, buffer_path)
            stack.callback(site._close_browser)
            site.wait_read(*terminals)
            yield site

    def wait_read(self, *names: str, timeout: float = 30.0) -> None:
        """Until every named terminal has been read once (online, with a record count)."""
        import json

        def read() -> bool:
            status, body = http_get(self.url + "/api/devices")
            devices = {d["device"]: d for d in json.loads(body)["devices"]} if status == 200 else {}
            return all(devices.get(n, {}).get("record_count") for n in names)

        self.gateway.wait_until(read, timeout=timeout, message=f"{names} read")

    # --- the browser ------------------------------------------------------------------------
    @property
    def browser(self) -> Any:
        if self._browser is None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            # launch() gives Chromium a fresh, empty profile folder of its own (Playwright passes
            # --user-data-dir itself and refuses ours) and removes it when the browser closes.
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
        return self._browser

    def new_page(self, *, viewport: dict[str, int] | None = None, locale: str = "en-GB") -> Any:
        context = self.browser.new_context(viewport=viewport or DESKTOP, locale=locale)
        return context.new_page()

    def sign_in(self, page: Any, role: str, *, password: str = PASSWORD) -> None:
        page.goto(self.url + "/login")
        page.get_by_label("Account name").fill(role)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.url + "/")

    def _close_browser(self) -> None:
        if self._browser is not None:
            with contextlib.suppress(Exception):
                self._browser.close()
            self._playwright.stop()
            self._browser = self._playwright = None


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page PNG under the test's tmp folder; its path is printed (pytest -s shows it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
