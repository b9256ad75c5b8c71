"""Turning a byte stream back into Anviz frames, resynchronising after noise and bad CRCs.

Kept apart from the frame values (frames.py) because it is the one stateful, incremental part
of the codec: serial and TCP transports and both emulator servers feed it whatever chunks the
line delivers and get frames, or `Garbage` to log and count, back out.

Invariants, because a peer controls every byte it is fed (a flood of 0xA5 reads as one start
byte after another, each announcing LEN 0xA5A5):
  * A candidate frame is never longer than the protocol allows for its command or reply code
    (`payloads.max_data_length`), whatever its LEN field says, and its header is checked
    before anything waits for its bytes or computes its CRC. So the decoder holds at most one
    frame's worth of bytes (about 600) plus the noise it has not reported yet.
  * Each start byte is looked at once as a frame head and once as a possible later frame, and
    each candidate's CRC is computed at most once. Decoding costs time linear in the bytes fed,
    however they are split into chunks.
  * Noise is held back to be reported with the frame after it, but never more than
    `MAX_HELD_NOISE` bytes: past that it comes out as `Garbage` at once.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator

from punchgate.drivers.anviz.commands import RET_SUCCESS
from punchgate.drivers.anviz.frames import STX, CodecError, Frame, Garbage, Request, Response, crc16
from punchgate.drivers.anviz.payloads import MAX_DATA, OTHER_MAX_DATA, max_data_length

MAX_HELD_NOISE = 1024  # bytes of noise held back, waiting for a frame, before they are reported
_NEED_MORE = 0  # _frame_size: the header is not complete yet
_IMPLAUSIBLE = -1  # _frame_size: no frame can start like this
_LONGEST_HEADER = 9

# A quick first look, done by the regex engine in C: a start byte whose header has a LEN high
# byte that no frame of any code can have is skipped without Python looking at it. A flood of
# 0xA5 (LEN 0xA5A5) goes by at memory speed this way. `_frame_size` then checks what passes.
_LEN_HIGH = b"\\x%02x" % (max(OTHER_MAX_DATA, *MAX_DATA.values()) >> 8)
_MAYBE_HEADER = re.compile(
    rb"\xa5[\x00-\xff]{4}(?:[\x00-\x7f][\x00-%b]|[\x80-\xff][\x00-\xff][\x00-%b])" % (_LEN_HIGH, _LEN_HIGH)
)


def _frame_size(buffer: bytearray, start: int) -> int:
    """Length of the frame whose start byte is at `start`, judged by its header alone.

    `_NEED_MORE` when the header has not arrived yet, `_IMPLAUSIBLE` when LEN is over the
    maximum for the frame's code, or when a refusal (RET not success) claims data, which the
    protocol never sends (anviz.md §2.2).
    """
    have = len(buffer) - start
    if have < 6:
        return _NEED_MORE
    code = buffer[start + 5]
    header = 9 if code >= 0x80 else 8
    if have < header:
        return _NEED_MORE
    length = buffer[start + header - 2] << 8 | buffer[start + header - 1]
    if length > max_data_length(code) or (header == 9 and length and buffer[start + 6] != RET_SUCCESS):
        return _IMPLAUSIBLE
    return header + length + 2


def _implausible_reason(buffer: bytearray, start: int) -> str:
    code = buffer[start + 5]
    header = 9 if code >= 0x80 else 8
    length = int.from_bytes(buffer[start + header - 2 : start + header], "big")
    limit = max_data_length(code)
    if length > limit:
        return f"LEN {length} over the maximum {limit} for 0x{code:02X}"
    return f"refusal 0x{code:02X} (RET 0x{buffer[start + 6]:02X}) with {length} data bytes"


def _next_start(buffer: bytearray, position: int) -> int:
    """Offset of the first start byte at or after `position` that may begin a frame (-1: none):
    one whose header passes the quick look, or one too near the end to have a whole header."""
    match = _MAYBE_HEADER.search(buffer, position)
    found = match.start() if match is not None else -1
    near_end = buffer.find(STX, max(position, len(buffer) - _LONGEST_HEADER + 1))
    if near_end >= 0 and (found < 0 or near_end < found):
        return near_end
    return found


def _crc_ok(buffer: bytearray, start: int, size: int) -> bool:
    end = start + size
    return crc16(buffer[start : end - 2]) == buffer[end - 2] | buffer[end - 1] << 8


class FrameDecoder:
    """Incremental decoder for a byte stream of frames in either direction.

    Noise before a start byte, headers no frame can have, and frames whose CRC fails come out
    as `Garbage` so that the caller can log and count them. A failed candidate drops only its
    start byte and the scan goes on at the next one, because a corrupted LEN would otherwise
    swallow the next good frame. While a candidate waits for its bytes, a complete, CRC-valid
    frame starting inside it wins: the start byte was noise, and a real frame follows.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._base = 0  # stream offset of _buffer[0]
        self._junk = bytearray()
        self._junk_reason = ""
        # Possible frames after the head, as (end, start) stream offsets, the next to complete
        # first; `_scanned` is the stream offset up to which start bytes have been considered.
        self._later: list[tuple[int, int]] = []
        self._scanned = 0
        self._verdicts: dict[int, bool] = {}  # stream offset -> CRC result, each computed once

    @property
    def pending(self) -> bytes:
        """Bytes held back: an incomplete frame, or noise not yet reported."""
        return bytes(self._junk + self._buffer)

    @property
    def held_noise(self) -> int:
        """Bytes of noise held back, to be reported with the next frame or at the flush."""
        return len(self._junk)

    @property
    def held_frame(self) -> int:
        """Bytes of a frame begun but not complete yet."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Frame | Garbage]:
        self._buffer += chunk
        out = list(self._drain())
        self._forget_passed()
        return out

    def flush(self) -> Garbage | None:
        """Give up on whatever is held back (the line went quiet mid-frame)."""
        rest = self.pending
        self._base += len(self._buffer)
        self._buffer.clear()
        self._junk.clear()
        self._forget_passed()
        if not rest:
            return None
        reason = self._junk_reason or "incomplete frame"
        self._junk_reason = ""
        return Garbage(rest, reason)

    def _drain(self) -> Iterator[Frame | Garbage]:
        buffer = self._buffer
        while buffer:
            size = _frame_size(buffer, 0) if buffer[0] == STX else _IMPLAUSIBLE
            if size == _NEED_MORE:
                return
            if size == _IMPLAUSIBLE:
                # skip to the next start byte worth a look, and report what was skipped as noise
                if self._junk:
                    reason = ""  # the reason of the noise held already stands for all of it
                elif buffer[0] != STX:
                    reason = "noise before start byte"
                else:
                    reason = _implausible_reason(buffer, 0)
                start = _next_start(buffer, 1)
                yield from self._discard(len(buffer) if start < 0 else start, reason)
                continue
            if len(buffer) < size:
                later = self._later_frame()
                if later is None:
                    return  # wait for more bytes
                # a start byte in noise announced a frame that is not coming; a real one follows
                yield from self._discard(later - self._base, "noise before start byte")
                continue
            ok = self._verdicts.pop(self._base, None)
            if ok is None:
                ok = _crc_ok(buffer, 0, size)
            if not ok:
                yield from self._discard(1, "bad CRC")
                continue
            frame = bytes(buffer[:size])
            self._consume(size)
            yield from self._report_junk()
            yield _parse(frame)
        # noise with no frame after it yet stays held (up to MAX_HELD_NOISE) until a frame or a flush

    def _consume(self, count: int) -> None:
        del self._buffer[:count]  # cheap: a bytearray drops bytes at its front without copying
        self._base += count

    def _discard(self, count: int, reason: str) -> Iterator[Garbage]:
        if not self._junk:
            self._junk_reason = reason
        self._junk += self._buffer[:count]
        self._consume(count)
        if len(self._junk) >= MAX_HELD_NOISE:
            yield from self._report_junk()

    def _report_junk(self) -> Iterator[Garbage]:
        if self._junk:
            yield Garbage(bytes(self._junk), self._junk_reason)
            self._junk.clear()
            self._junk_reason = ""

    def _later_frame(self) -> int | None:
        """Stream offset of the first complete, CRC-valid frame after the head, if one is buffered.

        Start bytes are considered once each (from `_scanned` on) and a candidate's CRC is
        computed once, when its last byte has arrived; the answers are remembered.
        """
        buffer, base = self._buffer, self._base
        position = max(self._scanned, base + 1) - base
        while (start := _next_start(buffer, position)) >= 0:
            size = _frame_size(buffer, start)
            if size == _NEED_MORE:
                position = start  # look at it again when its header is complete
                break
            if size != _IMPLAUSIBLE:
                heapq.heappush(self._later, (base + start + size, base + start))
            position = start + 1
        else:
            position = len(buffer)
        self._scanned = base + position
        buffered_end = base + len(buffer)
        found: int | None = None
        while self._later and self._later[0][0] <= buffered_end:
            end, start = heapq.heappop(self._later)
            if start <= base:
                continue  # behind the head already
            ok = self._verdicts[start] = _crc_ok(buffer, start - base, end - start)
            if ok and (found is None or start < found):
                found = start
        return found

    def _forget_passed(self) -> None:
        """Drop what is remembered about start bytes the scan has moved past."""
        base = self._base
        if not self._buffer:
            self._later.clear()
            self._verdicts.clear()
        elif self._verdicts and min(self._verdicts) < base:
            self._verdicts = {start: ok for start, ok in self._verdicts.items() if start >= base}
        if len(self._later) > 2 * len(self._buffer) + 16:
            self._later = [entry for entry in self._later if entry[1] > base]
            heapq.heapify(self._later)


def _parse(frame: bytes) -> Frame:
    device_id = int.from_bytes(frame[1:5], "big")
    if frame[5] >= 0x80:
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
