"""Turning a byte stream back into Anviz frames, resynchronising after noise and bad CRCs.

Kept apart from the frame values (frames.py) because it is the one stateful, incremental part
of the codec: serial and TCP transports and both emulator servers feed it whatever chunks the
line delivers and get frames, or `Garbage` to log and count, back out.
"""

from __future__ import annotations

from collections.abc import Iterator

from punchgate.drivers.anviz.frames import STX, CodecError, Frame, Garbage, Request, Response, crc16


class FrameDecoder:
    """Incremental decoder for a byte stream of frames in either direction.

    Noise before a start byte and frames whose CRC fails come out as `Garbage` so that the
    caller can log and count them. A CRC failure drops only the start byte and rescans,
    because a corrupted LEN would otherwise swallow the next good frame.
    """

    def __init__(self, *, max_data: int = 0xFFFF) -> None:
        self._buffer = bytearray()
        self._junk = bytearray()
        self._junk_reason = ""
        self._max_data = max_data

    @property
    def pending(self) -> bytes:
        """Bytes held back: an incomplete frame, or junk not yet reported."""
        return bytes(self._junk + self._buffer)

    def feed(self, chunk: bytes) -> list[Frame | Garbage]:
        self._buffer += chunk
        return list(self._drain())

    def flush(self) -> Garbage | None:
        """Give up on whatever is held back (the line went quiet mid-frame)."""
        rest = self.pending
        self._buffer.clear()
        self._junk.clear()
        if not rest:
            return None
        reason = self._junk_reason or "incomplete frame"
        self._junk_reason = ""
        return Garbage(rest, reason)

    def _discard(self, count: int, reason: str) -> None:
        if not self._junk:
            self._junk_reason = reason
        self._junk += self._buffer[:count]
        del self._buffer[:count]

    def _report_junk(self) -> Iterator[Garbage]:
        if self._junk:
            yield Garbage(bytes(self._junk), self._junk_reason)
            self._junk.clear()
            self._junk_reason = ""

    def _drain(self) -> Iterator[Frame | Garbage]:
        while self._buffer:
            start = self._buffer.find(STX)
            if start != 0:
                self._discard(len(self._buffer) if start < 0 else start, "noise before start byte")
                continue
            if len(self._buffer) < 6:
                return
            is_reply = self._buffer[5] >= 0x80
            header = 9 if is_reply else 8
            if len(self._buffer) < header:
                return
            length = int.from_bytes(self._buffer[header - 2 : header], "big")
            if length > self._max_data:
                self._discard(1, f"length {length} over the limit")
                continue
            total = header + length + 2
            if len(self._buffer) < total:
                later = self._later_complete_frame()
                if later is None:
                    return  # wait for more bytes
                # a start byte in noise announced a frame that is not coming; a real one follows
                self._discard(later, "noise before start byte")
                continue
            frame = bytes(self._buffer[:total])
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self._discard(1, "bad CRC")
                continue
            del self._buffer[:total]
            yield from self._report_junk()
            yield _parse(frame, is_reply)
        # junk with no frame after it yet stays held until a frame or a flush

    def _later_complete_frame(self) -> int | None:
        """Offset of the first complete, CRC-valid frame after offset 0, if one is buffered."""
        start = self._buffer.find(STX, 1)
        while start > 0:
            if _is_complete_frame(self._buffer, start):
                return start
            start = self._buffer.find(STX, start + 1)
        return None


def _is_complete_frame(buffer: bytearray, start: int) -> bool:
    if len(buffer) - start < 9:
        return False
    header = 9 if buffer[start + 5] >= 0x80 else 8
    total = header + int.from_bytes(buffer[start + header - 2 : start + header], "big") + 2
    frame = buffer[start : start + total]
    return len(frame) == total and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def _parse(frame: bytes, is_reply: bool) -> Frame:
    device_id = int.from_bytes(frame[1:5], "big")
    if is_reply:
        return Response(device_id, frame[5], frame[6], frame[9:-2], raw=frame)
    return Request(device_id, frame[5], frame[8:-2])


def decode_frame(frame: bytes) -> Frame:
    """Decode exactly one complete frame; raises CodecError for anything else."""
    decoder = FrameDecoder()
    out = decoder.feed(frame)
    leftover = decoder.flush()
    garbage = [g for g in [*out, leftover] if isinstance(g, Garbage)]
    frames = [f for f in out if not isinstance(f, Garbage)]
    if garbage or len(frames) != 1:
        problem = garbage[0].reason if garbage else "not exactly one frame"
        raise CodecError(f"{problem}: {frame.hex()}")
    return frames[0]
