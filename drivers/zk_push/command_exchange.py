"""Commands between the gateway's queue and a push terminal: heartbeat answers and results.

A heartbeat (`GET getrequest`) is answered with the `C:<id>:<command>` lines the
`CommandSource` (the gateway's durable queue) hands out; it records them as sent before it
returns them. A queue that cannot answer costs the heartbeat nothing: no commands this time,
and the error is counted and logged. A quarantined terminal gets no commands. Results posted
to `devicecmd` are recorded in the queue (matched by id) before `OK` is answered, so should
that fail, the terminal posts them again.
"""

from __future__ import annotations

from collections import Counter

import structlog

from punchgate.drivers.zk_push import commands, protocol
from punchgate.drivers.zk_push.terminal_state import TerminalState

log = structlog.get_logger(__name__)


class CommandExchange:
    """Hands out a terminal's waiting commands and takes in its results."""

    def __init__(self, source: commands.CommandSource | None, counts: Counter[str]) -> None:
        self.source = source
        self.counts = counts

    async def pending(self, state: TerminalState) -> list[str]:
        """The command lines for this heartbeat's answer ([] for none, or when the queue fails)."""
        if self.source is None or state.terminal.quarantined:
            return []
        try:
            return await self.source.next_batch(state.terminal.name)
        except Exception as exc:  # the buffer refused, say: no commands this time, and say why
            self.counts["command_queue_errors"] += 1
            if state.budget.take():
                log.error(
                    "push_commands_unavailable",
                    device=state.terminal.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return []

    async def take_results(self, state: TerminalState, body: bytes) -> None:
        """A devicecmd body: its facts remembered, its results logged and recorded in the queue."""
        parsed = protocol.parse_devicecmd(body, state.terminal.encoding)
        state.remember(parsed.facts)
        for result in parsed.results:
            self.counts["command_results"] += 1
            if state.budget.take():
                log.info(
                    "push_command_result",
                    device=state.terminal.name,
                    id=result.id,
                    returned=result.returned,
                    command=result.command,
                )
        if parsed.bad:
            self._unparsed(state, parsed.bad)
        if self.source is not None and not state.terminal.quarantined and parsed.results:
            # Recorded before OK: should this fail, the terminal posts the results again.
            await self.source.record_results(
                state.terminal.name, commands.parse_results(body, state.terminal.encoding)
            )

    def _unparsed(self, state: TerminalState, bad: list[protocol.BadLine]) -> None:
        self.counts["unparsed_lines"] += len(bad)
        if state.budget.take():
            first = bad[0]
            log.warning(
                "push_line_unparsed",
                device=state.terminal.name,
                table="devicecmd",
                line=first.number,
                problem=first.problem,
                text=first.text,
                lines=len(bad),
            )
