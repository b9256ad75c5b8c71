"""A simulated reboot, whether a client sent CMD_RESTART or the `restart` fault asked.

The session is gone and its live events with it, the terminal comes back enabled, and for
`downtime` seconds nothing listens. A silent restart leaves a TCP client's connection
open but never answered again, the way a connection to a rebooted terminal goes quiet.
"""

from __future__ import annotations

import asyncio

from punchgate.drivers.zk.emulator.context import TerminalContext
from punchgate.drivers.zk.emulator.links import TcpLink


async def restart(ctx: TerminalContext, *, silent: bool, downtime: float) -> None:
    """Reboot: the session is gone, events stop, the terminal comes back enabled."""
    ctx.counters.bump(restarts=1)
    session = ctx.slot.session
    ctx.log.warning("zk_restart", silent=silent, downtime=downtime, had_session=session is not None)
    if session is not None:
        link = session.link
        ctx.slot.end_session("restart")
        if isinstance(link, TcpLink):
            if silent:
                link.abandoned = True
            else:
                link.close()
    ctx.terminal.enabled = True
    if downtime > 0 and ctx.server.running:
        await ctx.server.close_listeners(hold_ports=True)  # no other process takes them meanwhile
        ctx.server.spawn(_come_back_after(ctx, downtime))


async def _come_back_after(ctx: TerminalContext, downtime: float) -> None:
    await asyncio.sleep(downtime)
    if ctx.server.running and "refuse_connections" not in ctx.faults:
        await ctx.server.open_listeners()
        ctx.log.info("zk_restart_done", tcp_port=ctx.server.tcp_port, udp_port=ctx.server.udp_port)
