"""Per-terminal text encoding: names enrolled in Chinese on a GBK terminal come out right."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator
from tests.zk_driver.conftest import EmulatorFactory, terminal_config

NAMES = {"1": "张三", "2": "李小龙", "3": "Müller"}


@pytest.mark.parametrize(("profile", "transport"), [("tft", "tcp"), ("bw", "udp")])
async def test_gbk_names_decode_with_the_terminal_encoding(
    start_emulator: EmulatorFactory,
    open_driver: Callable[[ZkTerminal], Awaitable[ZkDriver]],
    profile: str,
    transport: str,
) -> None:
    emulator: ZkEmulator = await start_emulator(profile=profile, text_encoding="gbk")
    for user_id, name in NAMES.items():
        emulator.add_user(user_id, name=name if profile == "tft" else name[:2])
    expected = {u: (n if profile == "tft" else n[:2]) for u, n in NAMES.items()}

    right = await open_driver(terminal_config(emulator, transport, encoding="gbk"))
    assert {u.user_id: u.name for u in await right.read_users()} == expected
    await right.close()

    # The same bytes read as UTF-8 are garbage: the setting matters.
    wrong = await open_driver(terminal_config(emulator, transport, encoding="utf-8"))
    names = {u.user_id: u.name for u in await wrong.read_users()}
    assert names["1"] != expected["1"] and "\ufffd" in names["1"]
    await wrong.close()
