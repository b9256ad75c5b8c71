"""`PatchedZK` skips pyzk's `ZK.__init__` (its 45 attributes became class defaults, issue 18):
a new client must still read as pyzk's own would, attribute by attribute."""

from __future__ import annotations

import socket

import pytest
from zk import ZK
from zk.base import ZK_helper
from zk.user import User

from punchgate.drivers.zk.pyzk_patches import PatchedZK


@pytest.mark.parametrize("udp", [False, True])
def test_a_new_client_holds_what_pyzk_would(udp: bool) -> None:
    bare = ZK(
        "10.1.2.3", port=4371, timeout=7, password=1234, force_udp=udp, ommit_ping=True, encoding="cp1252"
    )
    state = dict(vars(bare))
    bare_sock, bare_helper = state.pop("_ZK__sock"), state.pop("helper")
    User.encoding = "UTF-8"
    ours = PatchedZK(host="10.1.2.3", port=4371, udp=udp, comm_key=1234, timeout=7, encoding="cp1252")
    try:
        assert {name: getattr(ours, name) for name in state} == state
        assert User.encoding == "cp1252"  # pyzk's process-wide side effect, kept
        # The placeholder socket pyzk makes before connect (the patched connect closes it).
        assert (ours.sock.family, ours.sock.type, ours.sock.gettimeout()) == (
            bare_sock.family,
            bare_sock.type,
            bare_sock.gettimeout(),
        )
        assert ours.sock.type == socket.SOCK_DGRAM
        assert isinstance(ours.helper, ZK_helper)
        assert (ours.helper.ip, ours.helper.port, ours.helper.address) == (
            bare_helper.ip,
            bare_helper.port,
            bare_helper.address,
        )
    finally:
        bare_sock.close()
        ours.sock.close()
        User.encoding = "UTF-8"  # pyzk's default, for the tests after this one


def test_writes_stay_with_the_instance() -> None:
    first = PatchedZK(host="10.1.2.3", port=4370, udp=False, comm_key=0, timeout=5, encoding="UTF-8")
    second = PatchedZK(host="10.1.2.4", port=4370, udp=False, comm_key=0, timeout=5, encoding="UTF-8")
    try:
        first.users = 12
        first.is_connect = True
        first.set_reply_number(40)
        assert (second.users, second.is_connect, second.next_reply_number()) == (0, False, 0)
        assert (first.users, first.is_connect, first.next_reply_number()) == (12, True, 41)
    finally:
        first.sock.close()
        second.sock.close()
