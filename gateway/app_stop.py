"""Stopping the gateway within `shutdown_timeout`: workers first (and what they leave for the
restart: each terminal's known log and digest days, in one commit), then the push listener,
then the forwarder's last drain, HTTP, the services, and the store last.

A commit in progress finishes (it is shielded); whatever is not delivered by the deadline stays
in the buffer. Kept apart from `app.py` so the composition root only calls it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from punchgate.gateway.app import Application

# The composition root's logger: these lines are its, wherever the code sits.
log = structlog.get_logger("punchgate.gateway.app")


async def drain_before_exit(app: Application, deadline: float) -> None:
    """Give the forwarder what is left of the budget to deliver pending punches."""
    assert app.store is not None and app.forwarder is not None
    while time.monotonic() < deadline and app.forwarder.connected and app.forwarder_alive():
        # Central delivery: what waits for a confirmation is sent again after a restart anyway.
        unconfirmed = app.store.unconfirmed_count() if app.forwarder.central else 0
        pending = await asyncio.to_thread(app.store.pending_count)
        # Staged push punches are moved into the outbox meanwhile (`StagedMover.uploads_over`).
        if pending + app.store.staged_count() - unconfirmed <= 0:
            return
        app.forwarder.notify_new_punches()
        await asyncio.sleep(0.1)


async def shutdown(app: Application) -> None:
    budget = app.settings.shutdown_timeout
    deadline = time.monotonic() + budget
    app.notifier.stopping("shutting down")
    log.info("gateway_stopping", timeout=budget)
    scheduler = getattr(app, "_scheduler", None)
    if scheduler is not None:
        scheduler.shutdown(wait=False)
    for task in app._worker_tasks:
        task.cancel()
    if app._worker_tasks:
        await asyncio.wait(app._worker_tasks, timeout=max(0.1, deadline - time.monotonic()))
    if app.commits is not None:  # punches workers handed over before they stopped: stored now
        await app.commits.close()
    await _write_metas(app)
    push = getattr(app, "_push", None)
    if push is not None:  # no new uploads; one being committed finishes (the commit is shielded)
        await push.close()
    app.staged_mover.uploads_over()
    if app.forwarder is not None and app.store is not None:
        await drain_before_exit(app, deadline)
    http = getattr(app, "_http", None)
    if http is not None:
        await http.close()
    for task in app._service_tasks:
        task.cancel()
    await asyncio.gather(*app._service_tasks, return_exceptions=True)
    if app.store is not None:
        await asyncio.to_thread(app.store.close)
    log.info("gateway_stopped")


async def _write_metas(app: Application) -> None:
    """Every terminal's known log as this run leaves it, and its digest days, in one commit:
    the restart goes on from there (`DeviceWorker.meta_at_stop`, `DigestPublisher.kept`). Not
    written, the restart reads a little more again and recomputes the digests: a refusal is
    logged, and the stop goes on."""
    metas = {
        name: meta for name, worker in app.workers.items() if (meta := worker.meta_at_stop()) is not None
    }
    if app.digests is not None:  # waits for a digest tick in progress
        metas.update(await asyncio.to_thread(app.digests.kept))
    if not metas or app.store is None:
        return
    try:
        await asyncio.to_thread(app.store.set_device_metas, metas)
    except Exception as exc:  # whatever the buffer says, the stop goes on
        log.warning("device_meta_not_written", terminals=len(metas), error=f"{type(exc).__name__}: {exc}")
