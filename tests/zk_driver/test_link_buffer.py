"""A ZK session's reads receive into their pool thread's one buffer (drivers/zk/link.py): a
recv allocates only the bytes that arrived, never the 64 KB it may take, and hands back bytes
of their own. Over a real connected socket pair."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from collections.abc import Iterator

import pytest

from punchgate.drivers.zk.link import RECV_SIZE, Link


@pytest.fixture
def wired() -> Iterator[tuple[Link, socket.socket]]:
    ours, theirs = socket.socketpair()
    link = Link(tcp=True, timeout=5.0)
    link.sock = ours
    link.begin(10.0)
    yield link, theirs
    ours.close()
    theirs.close()


def test_each_recv_hands_back_bytes_of_its_own(wired: tuple[Link, socket.socket]) -> None:
    link, terminal = wired
    terminal.sendall(b"first")
    first = link.recv(RECV_SIZE)
    terminal.sendall(b"second")
    second = link.recv(RECV_SIZE)
    assert (first, second) == (b"first", b"second")  # the second read did not overwrite the first
    assert type(first) is bytes


def test_a_read_larger_than_the_buffer_is_cut_to_it(wired: tuple[Link, socket.socket]) -> None:
    link, terminal = wired
    sent = bytes(range(256)) * 300  # 76,800 bytes: more than one recv's worth
    terminal.sendall(sent)
    got = b""
    while len(got) < len(sent):
        part = link.recv(len(sent))
        assert 0 < len(part) <= RECV_SIZE
        got += part
    assert got == sent


def test_small_reads_allocate_no_64_kb_block(wired: tuple[Link, socket.socket]) -> None:
    """`sock.recv(65536)` allocated 64 KB before each wait; now only what arrived."""
    link, terminal = wired
    terminal.sendall(b"warm")
    assert link.recv(RECV_SIZE) == b"warm"  # this thread's buffer exists from here on
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for n in range(50):
            terminal.sendall(b"%04d" % n)
            assert link.recv(RECV_SIZE) == b"%04d" % n
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < RECV_SIZE // 4, f"a recv allocated {peak - base} bytes at its peak"


def test_each_thread_has_a_buffer_of_its_own() -> None:
    from punchgate.drivers.zk import link as link_module

    views: list[memoryview] = []
    threads = [threading.Thread(target=lambda: views.append(link_module._buffers.view)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(views) == 2 and views[0].obj is not views[1].obj
