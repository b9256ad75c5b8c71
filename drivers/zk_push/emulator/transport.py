"""The emulated terminal's HTTP client: aiohttp for ordinary requests, plus the two broken
ways of posting that faults need (a post cut off mid-body, a post trickled byte by byte).

Like the firmware, it opens a new connection for every request (`Connection: close`) and
sends `User-Agent: iClock Proxy/1.09`. Any failure to get an answer (refused, reset,
timed out, dropped) is a `NoAnswer`; an answer of any status is a `Reply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

USER_AGENT = "iClock Proxy/1.09"

Params = Sequence[tuple[str, str]]


class NoAnswer(Exception):
    """The request got no HTTP answer: connection refused/reset/dropped, or a timeout."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]

    def text(self, encoding: str) -> str:
        return self.body.decode(encoding, "replace")


class PushHttp:
    def __init__(self, server_url: str, *, timeout: float) -> None:
        self.base = URL(server_url.rstrip("/"))
        if self.base.scheme not in ("http", "https") or not self.base.host:
            raise ValueError(f"{server_url!r}: expected http://host:port or https://host:port")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def url(self, path: str, params: Params) -> URL:
        return URL(str(self.base) + path).with_query(list(params))

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                headers={"User-Agent": USER_AGENT},
                skip_auto_headers=("Content-Type",),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the terminal's HTTP client is not open (start() first)")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        params: Params,
        body: bytes | None = None,
        *,
        trickle: tuple[int, float] | None = None,
    ) -> Reply:
        """One request; `trickle=(chunk_bytes, interval)` sends the body that slowly."""
        data: bytes | AsyncIterator[bytes] | None = body
        headers: dict[str, str] = {}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        if trickle is not None and body:
            data = _trickled(body, *trickle)
            headers["Content-Length"] = str(len(body))  # a plain body, not chunked encoding
            timeout = aiohttp.ClientTimeout(sock_connect=self.timeout, sock_read=self.timeout)
        try:
            async with self.session.request(
                method, self.url(path, params), data=data, headers=headers, timeout=timeout
            ) as response:
                return Reply(response.status, await response.read(), response.headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise NoAnswer(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def post_and_drop(self, path: str, params: Params, body: bytes, after_bytes: int) -> None:
        """Announce the whole body, send only its first `after_bytes`, and close the connection."""
        url = self.url(path, params)
        port = url.port or (443 if url.scheme == "https" else 80)
        context = ssl.create_default_context() if url.scheme == "https" else None
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await asyncio.open_connection(url.host, port, ssl=context)
        except (OSError, TimeoutError) as exc:
            raise NoAnswer(f"POST {path}: {type(exc).__name__}: {exc}") from exc
        head = (
            f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.raw_host}:{port}\r\n"
            f"User-Agent: {USER_AGENT}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + body[: max(0, after_bytes)])
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        raise NoAnswer(f"POST {path}: connection dropped after {after_bytes} of {len(body)} body bytes")


async def _trickled(body: bytes, chunk_bytes: int, interval: float) -> AsyncIterator[bytes]:
    step = max(1, chunk_bytes)
    for start in range(0, len(body), step):
        if start:
            await asyncio.sleep(interval)
        yield body[start : start + step]
