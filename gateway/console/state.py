"""What the console's handlers share: `Console`, built once per server, and its application key.

`Console.open` finds (or makes) the session key and the accounts file beside the buffer; a
problem with either leaves the console `unavailable`, saying why, and never stops the daemon:
the terminals are still read and the JSON API still answers. The gateway and the API's thread
pool are attached when the server is built (`attach`), and every blocking step of a page
(store queries, password hashing, rendering) runs on those threads through `blocking`, so the
event loop never waits for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import jinja2
import structlog
from aiohttp import web

from punchgate.gateway.console.accounts import AccountError, Accounts
from punchgate.gateway.console.assets import environment, static_files
from punchgate.gateway.console.keyfile import KeyFileError, ensure_session_key
from punchgate.gateway.console.sessions import LoginLimiter, Signer
from punchgate.gateway.ratelimit_log import RateLimitedLog

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class Console:
    """What the console's handlers share; built once per server (`Console.open`)."""

    accounts: Accounts | None
    signer: Signer | None
    problem: str = ""  # why signing in is unavailable (no key, no accounts file)
    secure_cookies: bool = False
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    limited: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))
    gateway: Application | None = None
    executor: Executor | None = None
    env: jinja2.Environment = field(default_factory=environment)
    static: dict[str, tuple[bytes, str]] = field(default_factory=static_files)

    @classmethod
    def open(cls, buffer_path: Path, *, secure_cookies: bool = False) -> Console:
        """The console for the buffer at `buffer_path`: its key and accounts file, created when
        missing. A problem with either leaves it `unavailable`, saying why, never raising."""
        try:
            key = ensure_session_key(buffer_path)
            accounts = Accounts.beside_buffer(buffer_path)
        except (KeyFileError, AccountError, OSError) as exc:
            problem = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc.filename}"
            log.error("console_unavailable", problem=problem)
            return cls.unavailable(problem)
        return cls(accounts, Signer(key), secure_cookies=secure_cookies)

    @classmethod
    def unavailable(cls, problem: str) -> Console:
        return cls(None, None, problem=problem)

    def attach(self, gateway: Application, executor: Executor) -> None:
        self.gateway, self.executor = gateway, executor

    async def blocking(self, work: Callable[[], T]) -> T:
        """Run `work` on the API's threads (store queries, password hashing, rendering)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)


CONSOLE: web.AppKey[Console] = web.AppKey("console")
