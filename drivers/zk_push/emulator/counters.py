"""`PushCounters`: what an emulated push terminal counts, for tests, benchmarks and the CLI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PushCounters:
    handshakes: int = 0  # option blocks received
    heartbeats: int = 0  # getrequest polls sent
    uploads: int = 0  # data posts (ATTLOG/OPERLOG) answered OK
    lines_uploaded: int = 0  # record lines in those posts (duplicates and garbage excluded)
    rejected: int = 0  # requests answered with anything but success (non-200, no OK)
    failures: int = 0  # requests with no answer: refused, dropped, timed out
    retries: int = 0  # times the terminal waited ErrorDelay and started over
    duplicates: int = 0  # chunks posted again after their OK (duplicate_uploads)
    commands: int = 0  # server commands executed
    reboots: int = 0
