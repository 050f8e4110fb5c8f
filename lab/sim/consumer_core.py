"""A consumer process on the simulator: the real client fetch core and the poll loop around it.

What every consumer of an experiment is for real (lab/experiment/workload.py ``ConsumerLoad`` on
the asyncio ``Consumer``), as one sim core on its own node:

- the client's ``FetchCore`` (client/consumer/fetcher.py: positions, fetches, offset resets)
  over a ``MetadataCache`` that this core keeps fresh as the facade's metadata task does;
- the application: ``ConsumerLoad``'s loop of ``poll(timeout_ms=100)`` (``Consumer.poll``: take
  an error, drain the buffer, else wait for a change until the poll's deadline), written as a
  generator that waits where the asyncio code awaits: for any change, for a time, or (group
  members) for an offset request's answer; every poll's records go into the history.

``ConsumerCore`` is that shared part; ``AssignConsumerCore`` (``consumer_mode=assign``: every
partition assigned, read from the beginning) is it as is, ``group_consumer.GroupConsumerCore``
adds the group membership and its poll path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Generator, Iterable

from brokerlab.errors import KafkaError
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from client.consumer.fetcher import FetchConfig, FetchCore
from client.metadata import MetadataCache

from .node import BootContext

FETCH_RPCS = frozenset({"Fetch", "ListOffsets", "OffsetForLeaderEpoch"})
# Trace noise the real consumer does not log either (one per fetch answer).
QUIET_EVENTS = frozenset({"RecordsFetched"})


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer process, as ``ConsumerLoad._new_consumer`` configures it."""

    process: str  # its name in the history: "consumer-1"
    topic: str
    brokers: tuple[str, ...]  # the bootstrap list
    fetch: FetchConfig
    request_timeout_ms: int = 5_000
    poll_timeout_ms: int = 100  # ConsumerLoad polls with timeout_ms=100
    max_poll_records: int = 500
    metadata_max_age_ms: int = 300_000

    @property
    def node(self) -> str:
        return f"client-{self.process}"  # client.id is the process name

    @classmethod
    def assigned(cls, process: str, topic: str, brokers: Iterable[str]) -> "ConsumerSpec":
        """``ConsumerLoad``'s consumer without a group: reads from the earliest offset."""
        return cls(process, topic, tuple(brokers), FetchConfig(auto_offset_reset="earliest", fetch_max_wait_ms=100))

    def call_timeout_ms(self, envelope: Envelope) -> int:
        """The deadline the facade puts on a call; a Fetch's includes its long-poll wait."""
        if envelope.rpc == "Fetch":
            return self.request_timeout_ms + envelope.message.max_wait_ms
        return self.request_timeout_ms


@dataclass
class Wait:
    """Where the application waits: until ``until_ms``, or sooner for the answer to offset
    request ``request_id`` or (``on_change``) anything the cores report. Resumes with True when
    woken early, False at ``until_ms``."""

    until_ms: int
    request_id: int | None = None
    on_change: bool = False


class ConsumerCore:
    """Step/tick/next_deadline_ms for the node; ``history`` gets what the application saw.

    Subclasses add cores through the hooks: ``_step_other`` (answers the fetch path does not
    take), ``_tick_cores`` (around the application's turn), ``_deadlines``, ``_answered`` (an
    offset request a ``Wait`` is for) and ``_on_poll`` (the poll path before the drain)."""

    def __init__(self, spec: ConsumerSpec, history: Any, rng: random.Random, now_ms: int) -> None:
        self.spec = spec
        self.history = history
        self.node = spec.node
        self.cache = MetadataCache(spec.metadata_max_age_ms)
        self.fetch = FetchCore(spec.fetch, self.cache, node=self.node, random=rng)
        self.closed = False
        self._now_ms = now_ms
        self._fx = Effects()
        self._metadata_ids = RequestIds()
        self._metadata_inflight: int | None = None
        self._metadata_due_ms = now_ms
        self._metadata_backoff_ms = spec.fetch.retry_backoff_ms
        self._next_broker = rng.randrange(len(spec.brokers))
        self._wait: Wait | None = None  # None: the application has not started (the first tick starts it)
        self._app: Generator[Wait, bool, None] = self._application()

    # ---- the core contract ------------------------------------------------------------------

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        self._now_ms, self._fx = now_ms, Effects()
        if envelope.rpc == "Metadata":
            self._on_metadata(envelope)
        elif envelope.rpc in FETCH_RPCS:
            self._fx.extend(self.fetch.step(envelope, now_ms))
        else:
            self._step_other(envelope)
        return self._run(changed=True)

    def tick(self, now_ms: int) -> Effects:
        self._now_ms, self._fx = now_ms, Effects()
        return self._run(changed=False)

    def next_deadline_ms(self) -> int | None:
        due = [d for d in (*self._deadlines(), self.fetch.next_deadline_ms()) if d is not None]
        if self._wait is not None:
            due.append(self._wait.until_ms)
        if self._metadata_inflight is None:
            if self.cache.needs_update(self._now_ms):
                due.append(max(self._metadata_due_ms, self._now_ms + 1))
            elif self.cache.last_update_ms is not None:
                due.append(self.cache.last_update_ms + self.cache.metadata_max_age_ms)
        return min(due) if due else None

    def _run(self, changed: bool) -> Effects:
        """The application goes on if it may, then the cores send what became due."""
        now, fx = self._now_ms, self._fx
        self._tick_cores(before_app=True)
        self._advance(changed)
        self._tick_cores(before_app=False)
        fx.extend(self.fetch.tick(now))
        self._maybe_refresh_metadata()
        fx.events[:] = [event for event in fx.events if event.name not in QUIET_EVENTS]
        self._saw_events(fx.events)
        return fx

    def _advance(self, changed: bool) -> None:
        """Resume the application while what it waits for is there (the driver of ``Wait``)."""
        while not self.closed:
            wait = self._wait
            if wait is None:
                woken = False
            elif (wait.request_id is not None and self._answered(wait.request_id)) or (wait.on_change and changed):
                woken = True
            elif self._now_ms >= wait.until_ms:
                woken = False
            else:
                return
            changed = False  # one change wakes one wait
            try:
                self._wait = self._app.send(woken if wait is not None else None)
            except StopIteration:
                self._wait = None
                self.closed = True

    # ---- hooks --------------------------------------------------------------------------------

    def _step_other(self, envelope: Envelope) -> None:
        self._fx.event("UnexpectedMessageDropped", rpc=envelope.rpc, src=envelope.src)

    def _tick_cores(self, before_app: bool) -> None:
        pass

    def _deadlines(self) -> Iterable[int | None]:
        return ()

    def _answered(self, request_id: int) -> bool:
        return False

    def _on_poll(self, deadline: int) -> Generator[Wait, bool, None]:
        return
        yield  # a generator that waits for nothing

    def _saw_events(self, events: list) -> None:
        pass

    # ---- metadata (the facades' metadata tasks) -------------------------------------------------

    def _maybe_refresh_metadata(self) -> None:
        now = self._now_ms
        if self._metadata_inflight is not None or not self.cache.needs_update(now) or now < self._metadata_due_ms:
            return
        known = [broker_node(b) for b in self.cache.brokers()] or list(self.spec.brokers)
        broker = known[self._next_broker % len(known)]
        self._next_broker += 1
        self._metadata_inflight = self._metadata_ids.next()
        self._fx.send(Envelope(self.node, broker, "Metadata", broker_pb2.MetadataRequest(
            topics=self.cache.wanted_topics()), self._metadata_inflight))

    def _on_metadata(self, envelope: Envelope) -> None:
        if envelope.request_id != self._metadata_inflight:
            return
        self._metadata_inflight = None
        if envelope.transport_error is None:
            self.cache.update(envelope.message, self._now_ms)
            self._metadata_backoff_ms = self.spec.fetch.retry_backoff_ms
            self._metadata_due_ms = self._now_ms + self._metadata_backoff_ms  # the refresh backoff
        else:  # the next broker, after an exponential backoff
            self._metadata_due_ms = self._now_ms + self._metadata_backoff_ms
            self._metadata_backoff_ms = min(self._metadata_backoff_ms * 2, self.spec.fetch.retry_backoff_max_ms)

    # ---- the application: ConsumerLoad._run and Consumer.poll -----------------------------------

    def _application(self) -> Generator[Wait, bool, None]:
        while True:
            try:
                records = yield from self._poll(self.spec.poll_timeout_ms)
            except KafkaError as exc:  # e.g. a commit that failed after a rebalance: carry on polling
                self.history.record_event("client", "PollFailed", self.spec.process, error=str(exc))
                yield Wait(self._now_ms + 100)
                continue
            if records:
                self.history.record_poll(self.spec.process, records)

    def _poll(self, timeout_ms: int) -> Generator[Wait, bool, list]:
        deadline = self._now_ms + timeout_ms
        while True:
            yield from self._on_poll(deadline)
            error = self.fetch.take_error()
            if error is not None:
                raise error
            records = self.fetch.drain(self.spec.max_poll_records)
            if records:
                return records
            if not (yield Wait(deadline, on_change=True)):
                return []


class AssignConsumerCore(ConsumerCore):
    """``consumer_mode=assign``: every partition of the topic assigned, each read from the log
    start (auto.offset.reset=earliest) and recorded as a seek, as ``ConsumerLoad.start`` does.

    Unlike the real workload, the client's own moves are recorded as seeks too: a reset after
    OFFSET_OUT_OF_RANGE (to the offset ListOffsets gave) and a position cut back to where the
    new leader's log diverges (KIP-320), so the checker does not count the jump a second time as
    a skip or a rewind (the records lost with the log are counted as such)."""

    def __init__(self, spec: ConsumerSpec, partitions: Iterable[int], history: Any, rng: random.Random,
                 now_ms: int) -> None:
        super().__init__(spec, history, rng, now_ms)
        tps = [TopicPartition(spec.topic, p) for p in partitions]
        self.fetch.assign(tps)
        for tp in tps:
            history.record_seek(spec.process, tp.topic, tp.partition)
        self._out_of_range: set[tuple[str, int]] = set()

    def _saw_events(self, events: list) -> None:
        for event in events:
            if event.name == "OffsetResetRequested":
                self._out_of_range.add((event.fields["topic"], event.fields["partition"]))
            elif event.name == "OffsetReset":
                key = (event.fields["topic"], event.fields["partition"])
                if key in self._out_of_range:
                    self._out_of_range.discard(key)
                    self.history.record_seek(self.spec.process, *key, event.fields["offset"])
            elif event.name == "PositionValidated" and event.fields.get("truncated"):
                fields = event.fields
                self.history.record_seek(self.spec.process, fields["topic"], fields["partition"], fields["position"])


class SimConsumer:
    """A ``consumer_mode=assign`` consumer of a workload: ``AssignConsumerCore`` on its own node,
    started with the workload; ``stop`` is the process closing (nothing to commit, no group)."""

    def __init__(self, cluster: Any, history: Any, spec: ConsumerSpec, partitions: Iterable[int]) -> None:
        self.cluster = cluster
        self.history = history
        self.spec = spec
        self.partitions = list(partitions)

    @property
    def process(self) -> str:
        return self.spec.process

    def start(self) -> None:
        def factory(context: BootContext) -> AssignConsumerCore:
            return AssignConsumerCore(self.spec, self.partitions, self.history, context.random, context.now_ms)

        self.cluster.add_node(self.spec.node, factory, call_timeout=self.spec.call_timeout_ms)

    def stop(self) -> None:
        node = self.cluster.nodes.get(self.spec.node)
        if node is not None and node.alive:
            self.cluster.stop(self.spec.node)
