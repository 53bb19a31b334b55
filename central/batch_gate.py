"""How a worker of the API takes batches that arrive at once.

The central chain takes one batch at a time (the log lock), and each batch is credited
before its answer (:meth:`central.service.CentralLog.follow_committed`). Run whole in the
server's thread pool (40 threads), 200 terminals' batches arriving together held every
thread: waiting for the log lock or for the shared crediting run. A terminal's status
report, its totals and its round, which take a few milliseconds, then waited seconds for a
thread.

:class:`BatchGate` lets :data:`BATCH_SLOTS` batches of a worker be decoded and appended
at once (enough to overlap decoding and the append with each other, since the log takes
one at a time), the others waiting without a thread; and a batch waits for its crediting
without a thread too, sharing runs as ``follow_committed`` does. Only the run itself takes
one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from central.service import CentralLog, SharedRuns

#: batches a worker decodes and appends at once
BATCH_SLOTS = 4

T = TypeVar("T")


class BatchGate:
    """The batch slots and the shared crediting runs of one worker's event loop."""

    def __init__(self, service: CentralLog, slots: int = BATCH_SLOTS) -> None:
        if slots < 1:
            raise ValueError("a worker needs at least one batch slot")
        self.service = service
        self.slots = slots
        #: the loop these belong to, and its slots, its runs' condition and their bookkeeping
        self._prims: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore, asyncio.Condition,
                           SharedRuns] | None = None
        #: runs under way (a task is kept only as long as something refers to it)
        self._running: set[asyncio.Future[None]] = set()

    def _here(self) -> tuple[asyncio.Semaphore, asyncio.Condition, SharedRuns]:
        # asyncio's locks belong to the loop that first waits on them; an app can be served
        # by one loop after another (a test client each), never by two at once
        loop = asyncio.get_running_loop()
        if self._prims is None or self._prims[0] is not loop:
            self._prims = (loop, asyncio.Semaphore(self.slots), asyncio.Condition(),
                           SharedRuns())
        return self._prims[1:]

    async def take(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread of the pool once a slot is free."""
        slots, _, _ = self._here()
        async with slots:
            return await run_in_threadpool(fn, *args)

    async def follow(self) -> None:
        """Return once the service's followers have caught up with everything committed
        before this call; the run is shared as in ``follow_committed``, and only the
        caller that runs it takes a thread."""
        _, changed, runs = self._here()
        async with changed:
            ticket = runs.take()
            while runs.waits(ticket):
                await changed.wait()
            if runs.done(ticket):
                return
            covers = runs.start()
        # A task of its own: a request cancelled meanwhile (its client gone) stops
        # waiting, but the run goes on, and the waiters it covers are told it is over only
        # once it is.
        run = asyncio.ensure_future(self._run(covers))
        self._running.add(run)
        run.add_done_callback(self._running.discard)
        await asyncio.shield(run)

    async def _run(self, covers: int) -> None:
        _, changed, runs = self._here()
        try:
            await run_in_threadpool(self.service.run_followers)
        finally:
            async with changed:
                runs.finish(covers)
                changed.notify_all()
