"""The sink's inbox: messages received from the broker and not committed yet, in arrival order.

paho's network thread puts each message in; the writer thread takes a flush at a time: the
first message it waits for briefly, then whatever else arrives within `linger`, up to
`max_messages`.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the broker delivered it, kept until it is committed and acknowledged."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    epoch: int  # the connection it came on: only that connection may acknowledge it


class Inbox:
    """A thread-safe queue of `Received` messages, taken a flush at a time."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Received] = queue.Queue()

    def put(self, message: Received) -> None:
        self._queue.put(message)

    def size(self) -> int:
        return self._queue.qsize()

    def take(self, max_messages: int, linger: float) -> list[Received]:
        """The next flush: empty when nothing arrived within 0.2 s."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        taken = [first]
        deadline = time.monotonic() + linger
        while len(taken) < max_messages:
            try:
                taken.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return taken
