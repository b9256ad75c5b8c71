"""anviz decoder: throughput and worst cost per byte of the Anviz frame decoder, and its CRC-16.

    python -m bench.bench_anviz_decoder        # prints the figures; about 10 s

What it feeds `FrameDecoder`, in the chunk sizes a link sees (4096 bytes: one TCP read; 1 byte:
a trickle, where each feed is a call):
  * valid frames: 0xC0 download replies of 25 records (362 bytes), the largest a driver gets;
  * a flood of 0xA5, 1.5 KB and 64 KB: every byte a start byte announcing LEN 0xA5A5;
  * random bytes;
  * the worst a peer can craft: a plausible header (LEN 512 for an unknown code) every 13
    bytes and never a valid CRC, so that every start byte costs a CRC over 522 bytes.
For each: the total time, bytes per second, and the longest single `feed()` (on a TCP link,
that is how long the event loop is held at a time). The CRC figures compare the one the
codec uses (the standard library's C `crc_hqx`, reflected) with a 256-entry table in Python.
Nothing here is written anywhere: the figures are printed only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from punchgate.drivers.anviz import codec
from punchgate.drivers.anviz.codec import FrameDecoder, Garbage, Record, Response


def _table_entry(index: int) -> int:
    crc = index
    for _ in range(8):
        crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


_TABLE = tuple(_table_entry(i) for i in range(256))


def crc16_python_table(data: bytes) -> int:
    """The CRC-16/MCRF4XX with a 256-entry table, in Python: the alternative to the codec's."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def _per_call(function: Callable[[], object], seconds: float = 0.5) -> float:
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        function()
        calls += 1
    return elapsed / calls


def _decode(stream: bytes, chunk: int) -> tuple[float, float, int, int]:
    """(total seconds, longest feed in seconds, frames, garbage pieces)."""
    decoder = FrameDecoder()
    worst = 0.0
    frames = garbage = 0
    started = time.perf_counter()
    for offset in range(0, len(stream), chunk):
        fed = time.perf_counter()
        out = decoder.feed(stream[offset : offset + chunk])
        worst = max(worst, time.perf_counter() - fed)
        pieces = sum(isinstance(item, Garbage) for item in out)
        garbage += pieces
        frames += len(out) - pieces
    total = time.perf_counter() - started
    return total, worst, frames, garbage


def _row(name: str, stream: bytes, chunk: int) -> None:
    total, worst, frames, garbage = _decode(stream, chunk)
    rate = len(stream) / total / 1e6
    print(
        f"  {name:<34} {len(stream):>9,} B  chunk {chunk:>5}  {total * 1000:9.1f} ms"
        f"  {rate:7.2f} MB/s  {total / len(stream) * 1e6:7.3f} us/B  longest feed {worst * 1000:7.2f} ms"
        f"  ({frames} frames, {garbage} garbage)"
    )


def _streams() -> dict[str, bytes]:
    rng = random.Random(7)
    records = [Record(rng.randrange(1 << 40), rng.randrange(1 << 32), 1, 0) for _ in range(25)]
    batch = Response(1, 0xC0, 0, codec.encode_records(records)).encode()
    crafted = bytes.fromhex("a5000000017e0200") + bytes(5)  # LEN 512, code 0x7E, never valid
    return {
        "valid 0xC0 replies (362 B)": batch * 2900,  # ~1 MB
        "0xA5 flood 1.5 KB": b"\xa5" * 1536,
        "0xA5 flood 64 KB": b"\xa5" * 65536,
        "random bytes": rng.randbytes(1 << 20),
        "crafted: a plausible header / 13 B": crafted * 20_000,  # 260 KB
    }


def main() -> None:
    frame = bytes(Response(1, 0xC0, 0, bytes(351)).encode()[:-2])
    codec_crc = _per_call(lambda: codec.crc16(frame))
    table_crc = _per_call(lambda: crc16_python_table(frame))
    assert codec.crc16(frame) == crc16_python_table(frame)
    print(f"CRC-16/MCRF4XX over {len(frame)} bytes (a full 0xC0 reply):")
    print(f"  codec (binascii.crc_hqx, reflected)   {codec_crc * 1e6:8.2f} us")
    print(f"  256-entry table in Python            {table_crc * 1e6:8.2f} us  ({table_crc / codec_crc:.0f}x)")
    print("FrameDecoder.feed:")
    streams = _streams()
    for name, stream in streams.items():
        _row(name, stream, 4096)
        if name.startswith("0xA5") or name.startswith("crafted"):
            _row(name, stream[: 16 * 1024] if name.startswith("crafted") else stream, 1)
        if name == "0xA5 flood 64 KB":
            _row(name, stream, len(stream))


if __name__ == "__main__":
    main()
