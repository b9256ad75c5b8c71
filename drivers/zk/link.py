"""The socket of one ZK session: every read from the terminal bounded in time, bytes and by abort.

What a terminal sends decides neither how long the driver waits nor how much it keeps:

* time: one recv waits at most the terminal's `timeout` (silence raises socket.timeout: the
  terminal stopped answering), and never past the deadline of the driver call it serves
  (`begin`). An answer still incomplete at that deadline raises `TooSlow`: a terminal that
  trickles its replies a byte at a time is slow, not foreign;
* bytes: a TCP packet is cut out by its envelope length, and a length above what the caller
  accepts is refused before its body is read (`OversizedReply`); bytes that are no envelope
  raise `ZkFrameError` at once. A UDP datagram is one packet, refused likewise when longer;
* abort: `abort()`, called from the event loop, flags the call and shuts the socket down. A
  pool thread waiting on the terminal wakes up at once over TCP (the shutdown ends its recv)
  and within ABORT_POLL over UDP (a shut-down UDP socket does not end a blocked recv, so
  waits are cut into slices that look at the flag), and raises `Aborted`. Connecting is
  waited for the same way. An empty TCP read (the terminal closed the connection) raises
  ConnectionResetError. Nothing here loops on an empty read, and nothing keeps more than one
  packet plus one recv's worth of bytes.

One pool thread at a time sends and receives; `abort` is the only call from another thread,
and it only sets a flag and shuts the socket down (closing is the session's job, once the
thread is out: a closed descriptor number can be reused by the next socket).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Final

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.errors import Aborted, OversizedReply, TooSlow

RECV_SIZE: Final = 65536  # one TCP recv; also more than any UDP datagram can carry
ABORT_POLL: Final = 0.2  # how often a waiting pool thread looks whether its call was abandoned


class _ThreadBuffer(threading.local):
    """Each pool thread's receive buffer, RECV_SIZE bytes, made once and reused by every recv.

    `sock.recv(RECV_SIZE)` allocates those bytes before it waits, from malloc (too large for
    Python's own allocator), and shrinks them to what arrived: a 5,000-terminal gateway makes
    about a thousand such reads a second, each leaving a 64 KB hole for smaller allocations to
    settle in, and the heap keeps them. Receiving into this buffer allocates only the bytes
    that arrived. A restarted 5,000-terminal daemon (300-record logs, one run each) peaked at
    166 MiB with it against 173 MiB without; glibc's mmap threshold fixed at 64 KB, which sends
    such blocks straight back to the system, gave the same 166 MiB with this buffer and
    163 MiB without it."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(RECV_SIZE))


_buffers = _ThreadBuffer()


class Link:
    """The socket of one session, read and written by one pool thread at a time."""

    def __init__(self, *, tcp: bool, timeout: float) -> None:
        self.tcp = tcp
        self.timeout = timeout  # how long one recv may wait for the terminal
        self.sock: socket.socket | None = None
        self.aborted = False
        self._deadline: float | None = None  # time.monotonic() by which the current call ends
        self._allowed = 0.0  # the current call's whole allowance, for messages
        self._pending = bytearray()  # TCP bytes received past the last packet

    # -- the call's budget (set from the event loop, before the thread starts) --------------
    def begin(self, seconds: float | None) -> None:
        """A new driver call: it must be over within `seconds` (None: only per-recv timeouts)."""
        self.aborted = False
        self._allowed = seconds or 0.0
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def abort(self) -> None:
        """Give up on the current call (from any thread): its blocked recv returns and raises."""
        self.aborted = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()

    # -- the socket -------------------------------------------------------------------------
    def open(self, family: int, kind: int, address: Any) -> socket.socket:
        """Create and connect the socket (UDP too), abortable like any read."""
        sock = socket.socket(family, kind)
        self.sock = sock
        self._pending.clear()
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code == errno.EINPROGRESS:  # TCP: wait for the handshake, in slices
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                silent_until = time.monotonic() + self.timeout
                while not poller.poll(self._slice(silent_until) * 1000):
                    pass
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if self.aborted:
                raise Aborted("the session gave up on this call")
            if code:
                raise OSError(code, os.strerror(code))
        except BaseException:
            sock.close()
            raise
        return sock

    def send(self, packet: bytes) -> None:
        """Send one bare packet (in its envelope over TCP)."""
        sock = self._socket()
        sock.settimeout(self._wait())
        self._guarded(sock.sendall, zp.tcp_wrap(packet) if self.tcp else packet)

    def recv(self, size: int) -> bytes:
        """One recv of up to `size` bytes, within the per-recv timeout and the call's deadline.

        socket.timeout (TimeoutError) when the terminal says nothing for `timeout` seconds;
        TooSlow when the call's deadline comes first.
        """
        sock = self._socket()
        silent_until = time.monotonic() + self.timeout
        while True:
            sock.settimeout(self._slice(silent_until))
            try:
                view = _buffers.view
                received: int = self._guarded(sock.recv_into, view, min(size, RECV_SIZE))
                data = bytes(view[:received])
                break
            except TimeoutError:
                continue  # a slice is over: look at the flag, the deadline, the silence
        if self.aborted:
            raise Aborted("the session gave up on this call")
        if not data and self.tcp:
            raise ConnectionResetError("the terminal closed the connection")
        return data

    def read_packet(self, limit: int) -> bytes:
        """The next bare packet, carrying at most `limit` data bytes (else OversizedReply).

        TCP: cut out of the stream by its envelope; bytes behind it stay for the next call.
        UDP: the next datagram.
        """
        if not self.tcp:
            # One byte more than allowed tells a datagram that is too long from one that fits.
            datagram = self.recv(min(RECV_SIZE, limit + zp.HEADER_SIZE + 1))
            if len(datagram) > limit + zp.HEADER_SIZE:
                raise OversizedReply(
                    f"a {len(datagram)}-byte datagram arrived; at most {limit + zp.HEADER_SIZE} were expected"
                )
            return datagram
        while True:
            packet = self.buffered_packet(limit)
            if packet is not None:
                return packet
            self._pending += self.recv(RECV_SIZE)

    def read_bytes(self, size: int) -> bytes:
        """Exactly `size` more bytes of the TCP stream, those already received first."""
        while len(self._pending) < size:
            self._pending += self.recv(min(RECV_SIZE, size - len(self._pending)))
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def buffered_packet(self, limit: int) -> bytes | None:
        """The next complete TCP packet among the bytes already received, without waiting."""
        buf = self._pending
        if not zp.TCP_MAGIC.startswith(bytes(buf[:4])):
            raise self._garbage("bytes outside any ZK frame")
        if len(buf) < zp.TCP_ENVELOPE_SIZE:
            return None
        (length,) = struct.unpack_from("<I", buf, 4)
        if length < zp.HEADER_SIZE:
            raise self._garbage(f"an envelope announcing {length} bytes, less than a packet header")
        if length > limit + zp.HEADER_SIZE:
            buf.clear()
            raise OversizedReply(
                f"the terminal announced a {length}-byte packet; at most {limit + zp.HEADER_SIZE} were expected"
            )
        end = zp.TCP_ENVELOPE_SIZE + length
        if len(buf) < end:
            return None
        packet = bytes(buf[zp.TCP_ENVELOPE_SIZE : end])
        del buf[:end]
        return packet

    def take_pending(self) -> bytes:
        """The TCP bytes received but not yet read as a packet (handed to the live stream)."""
        pending = bytes(self._pending)
        self._pending.clear()
        return pending

    # -- helpers ----------------------------------------------------------------------------
    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise ConnectionResetError("no connection to the terminal")
        return self.sock

    def _slice(self, silent_until: float) -> float:
        """How long the next wait for the terminal may block (at most ABORT_POLL).

        Raises Aborted once the call is abandoned, TooSlow once its deadline has come, and
        TimeoutError once the terminal has been silent until `silent_until`.
        """
        if self.aborted:
            raise Aborted("the session gave up on this call")
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            raise self._too_slow()
        if now >= silent_until:
            raise TimeoutError("timed out")
        end = silent_until if self._deadline is None else min(silent_until, self._deadline)
        return max(0.001, min(end - now, ABORT_POLL))

    def _wait(self) -> float:
        """How long a send may block; raises once the call is over."""
        if self.aborted:
            raise Aborted("the session gave up on this call")
        if self._deadline is None:
            return self.timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        return min(self.timeout, left)

    def _too_slow(self) -> TooSlow:
        return TooSlow(f"no complete answer within {self._allowed:.0f} s")

    def _guarded(self, operation: Any, *arguments: Any) -> Any:
        """A socket operation whose failure after an abort is the abort, not a network error."""
        try:
            return operation(*arguments)
        except OSError as exc:
            if self.aborted:
                raise Aborted("the session gave up on this call") from exc
            raise

    def _garbage(self, what: str) -> zp.ZkFrameError:
        junk = bytes(self._pending[:64])
        self._pending.clear()
        return zp.ZkFrameError(what, junk)
