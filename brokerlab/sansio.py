"""The sans-IO vocabulary every core speaks: envelopes in, effects out, time and randomness as ports.

A core offers ``step(envelope, now_ms) -> Effects``, ``tick(now_ms) -> Effects`` and
``next_deadline_ms() -> int | None``. It never touches sockets, threads, asyncio, the wall clock
or global randomness; the real driver (asyncio + gRPC) and the simulator (virtual clock,
simulated network) execute the effects.

Blocking disk IO that must not stall the event loop (an fsync of a rolled segment, Kafka's
"flush-log" scheduler task; a periodic checkpoint) leaves a core as a ``BlockingJob`` in
``Effects.blocking``: the driver calls ``job.run()`` off the loop (real: a thread; simulator: a
scheduled event), then hands the job back with ``core.on_blocking_done(job, now_ms) -> Effects``
on the core's own loop. A caller with neither uses ``run_blocking_inline``, so no fsync is ever skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Envelope:
    """One message between nodes.

    A request has ``is_response=False`` and a ``request_id`` chosen by its sender; the answer
    carries the same ``request_id`` with ``is_response=True``. ``transport_error`` is set (and
    ``message`` is None) when the network could not deliver a request or its answer: the driver
    or simulator hands that back to the sender as its response.
    """

    src: str
    dst: str
    rpc: str
    message: Any
    request_id: int
    is_response: bool = False
    transport_error: str | None = None

    def reply(self, message: Any) -> "Envelope":
        """The answer to this request."""
        return Envelope(self.dst, self.src, self.rpc, message, self.request_id, True)

    def failed(self, reason: str) -> "Envelope":
        """The answer a sender gets when this request could not be delivered or answered."""
        return Envelope(self.dst, self.src, self.rpc, None, self.request_id, True, reason)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """Something that happened, named in the past tense (``LeaderElected``, ``SegmentRolled``)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)


class BlockingJob(Protocol):
    """Blocking IO a core wants done off its loop. ``run()`` does only that IO (Disk port calls on
    files the core already wrote), reads and writes no core state, and may run on another
    thread; what it found out stays on the job for ``on_blocking_done``."""

    def run(self) -> None: ...


@dataclass(slots=True)
class Effects:
    """What a core wants done after one step or tick."""

    sends: list[Envelope] = field(default_factory=list)
    replies: list[Envelope] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)
    blocking: list[BlockingJob] = field(default_factory=list)

    def send(self, envelope: Envelope) -> None:
        self.sends.append(envelope)

    def reply(self, envelope: Envelope) -> None:
        self.replies.append(envelope)

    def event(self, name: str, **fields: Any) -> None:
        self.events.append(TraceEvent(name, fields))

    def extend(self, other: "Effects") -> "Effects":
        self.sends.extend(other.sends)
        self.replies.extend(other.replies)
        self.events.extend(other.events)
        self.blocking.extend(other.blocking)
        return self

    def __bool__(self) -> bool:
        return bool(self.sends or self.replies or self.events or self.blocking)


class Core(Protocol):
    def step(self, envelope: Envelope, now_ms: int) -> Effects: ...

    def tick(self, now_ms: int) -> Effects: ...

    def next_deadline_ms(self) -> int | None: ...


class BlockingCore(Core, Protocol):
    """A core whose Effects may carry blocking jobs."""

    def on_blocking_done(self, job: BlockingJob, now_ms: int) -> Effects: ...


def run_blocking_inline(core: BlockingCore, effects: Effects, now_ms: int) -> Effects:
    """Run ``effects.blocking`` in the caller, feed each completion back and fold its effects in
    (returns ``effects``, its jobs done): for tests and drivers without threads or a scheduler."""
    while effects.blocking:
        job = effects.blocking.pop(0)
        job.run()
        effects.extend(core.on_blocking_done(job, now_ms))
    return effects


class Clock(Protocol):
    """Wall-clock milliseconds (real: time.time; simulated: the scheduler's virtual clock)."""

    def now_ms(self) -> int: ...


class Random(Protocol):
    """The subset of random.Random a core may use; always an instance seeded by its owner."""

    def random(self) -> float: ...

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int: ...

    def shuffle(self, x: list) -> None: ...

    def getrandbits(self, k: int) -> int: ...


class RequestIds:
    """Monotonic request ids for one sender."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def next(self) -> int:
        self._next += 1
        return self._next
