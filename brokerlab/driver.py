"""The asyncio driver that runs one sans-IO core in a real process.

It turns inbound requests into envelopes, steps the core, resolves the waiting callers with the
core's replies, executes the core's sends through a transport, feeds their answers back as
envelopes, and re-arms a timer at ``core.next_deadline_ms()``. It holds no protocol logic.

Blocking jobs (``Effects.blocking``: a rolled segment's fsync, a periodic checkpoint) run in the
default executor's threads, so the loop keeps serving; each completion goes back to the core on
the loop. Two writes of one metadata file (a job's and the loop's) are ordered by the disk's
write tickets (brokerlab/disk.py), so late content never lands over newer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from brokerlab.sansio import BlockingJob, Core, Effects, Envelope, RequestIds, TraceEvent

Transport = Callable[[Envelope], Awaitable[Envelope]]
log = logging.getLogger("brokerlab.driver")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class CoreDriver:
    def __init__(
        self,
        core: Core,
        node: str,
        transport: Transport,
        clock_ms: Callable[[], int] = wall_clock_ms,
        on_event: Callable[[TraceEvent], None] | None = None,
    ) -> None:
        self.core = core
        self.node = node
        self._transport = transport
        self._clock_ms = clock_ms
        self._on_event = on_event
        self._ids = RequestIds()
        self._pending: dict[int, asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due_ms: int | None = None
        self._tasks: set[asyncio.Task] = set()
        self._blocking: set[asyncio.Task] = set()
        self._closed = False

    def now_ms(self) -> int:
        return self._clock_ms()

    async def request(self, rpc: str, message: Any, src: str = "client") -> Any:
        """Hand one inbound request to the core and wait for its reply message."""
        loop = asyncio.get_running_loop()
        request_id = self._ids.next()
        future = loop.create_future()
        self._pending[request_id] = future
        try:
            self.execute(self.core.step(Envelope(src, self.node, rpc, message, request_id), self.now_ms()))
            return await future
        finally:
            self._pending.pop(request_id, None)

    def start(self) -> None:
        """Run the core's first timers (registration, heartbeats)."""
        self.execute(self.core.tick(self.now_ms()))

    def step(self, envelope: Envelope) -> None:
        self.execute(self.core.step(envelope, self.now_ms()))

    def execute(self, effects: Effects) -> None:
        for reply in effects.replies:
            future = self._pending.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply.message)
        for envelope in effects.sends:
            task = asyncio.ensure_future(self._send(envelope))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for job in effects.blocking:
            task = asyncio.ensure_future(self._run_blocking(job))
            self._blocking.add(task)
            task.add_done_callback(self._blocking.discard)
        if self._on_event is not None:
            for event in effects.events:
                self._on_event(event)
        self._rearm()

    async def _run_blocking(self, job: BlockingJob) -> None:
        try:
            await asyncio.to_thread(job.run)
        except Exception:  # a job reports its own IO errors; this is a bug: never claim it done
            log.exception("blocking job %s failed", type(job).__name__)
            return
        if not self._closed:
            self.execute(self.core.on_blocking_done(job, self.now_ms()))  # type: ignore[attr-defined]

    async def _send(self, envelope: Envelope) -> None:
        try:
            response = await self._transport(envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a transport must not kill the driver
            log.warning("transport failed for %s to %s: %s", envelope.rpc, envelope.dst, exc)
            response = envelope.failed(f"{type(exc).__name__}: {exc}")
        if not self._closed:
            self.step(response)

    def _rearm(self) -> None:
        if self._closed:
            return
        due_ms = self.core.next_deadline_ms()
        if due_ms == self._timer_due_ms and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due_ms = due_ms
        if due_ms is None:
            return
        delay_s = max(0.0, (due_ms - self.now_ms()) / 1000.0)
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_due_ms = None
        self.execute(self.core.tick(self.now_ms()))

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let running fsyncs end (not cancelled: their threads would go on) before the caller
        # closes the files; their completions are dropped, a clean close flushes on its own.
        await self.wait_blocking()

    async def wait_blocking(self) -> None:
        """Until the blocking jobs running now have ended (and, while open, been handed back)."""
        while self._blocking:
            await asyncio.gather(*self._blocking, return_exceptions=True)
