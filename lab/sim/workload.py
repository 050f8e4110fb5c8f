"""Simulated clients that run alongside the cluster: producers and a consumer, recorded in a history.

The script-style ``SimClient`` waits for each answer, so only one thing happens at a time. A
failover scenario needs load *while* faults happen: these actors work by callbacks instead, each
a network endpoint like a client process, so any number of them keep sending while a scenario
script kills, pauses and cuts nodes around them.

What they do goes into a ``SimHistory``: ``lab.history.History`` (the same recorder and format
the real-process tests use, judged by the same ``lab.checker``) on the virtual clock, so the
history of a seed is byte-identical run after run.

The producers are the real client: ``lab.sim.producer_actor.SimProducer`` runs
client/producer's accumulator, sender and idempotence cores as the asyncio facade does, with the
real metadata cache (its module docstring says what each send's outcome means). The consumer
here (``SimConsumer``) is still a small fetch loop of its own.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from brokerlab.errors import ErrorCode
from brokerlab.ids import broker_node
from brokerlab.record_batch import decode_records
from brokerlab.sansio import Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from lab.history import FAIL, INFO, OK, History

from .network import call_timeout_ms
from .producer_actor import ProducerSpec, SimProducer  # noqa: F401 (ProducerSpec: re-exported)

# Answers after which the leader may have moved: ask for metadata before the next attempt.
LEADER_MOVED = frozenset({
    ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
})


class SimHistory(History):
    """``lab.history.History`` on the simulator's virtual clock: times are virtual ms since it
    started, and its wall-clock anchor (``started_epoch_ms``) is the virtual time it started at
    (virtual time starts at a realistic epoch), so nothing in it depends on the real clock."""

    def __init__(self, clock: Callable[[], int]) -> None:
        super().__init__()
        self._clock = clock
        self._origin = clock()
        self.started_epoch_ms = float(self._origin)

    def now_ms(self) -> float:
        return float(self._clock() - self._origin)

    def at(self, virtual_ms: int) -> float:
        """A virtual time as this history's timestamps show it."""
        return float(virtual_ms - self._origin)


def history_bytes(history: History) -> bytes:
    """The history as ``History.save`` writes it (JSON lines), as bytes: what "the same seed
    gives the same history" compares."""
    with tempfile.TemporaryDirectory(prefix="sim-history-") as folder:
        path = Path(folder) / "history.jsonl"
        history.save(path)
        return path.read_bytes()


class Actor:
    """A client process on the simulated network that works by callbacks (never waits)."""

    incarnation = 1
    alive = True

    def __init__(self, name: str, cluster: Any, request_timeout_ms: int) -> None:
        self.name = name
        self.cluster = cluster
        self.scheduler = cluster.scheduler
        self.network = cluster.network
        self.request_timeout_ms = request_timeout_ms
        self._ids = RequestIds()
        self._pending: dict[int, Callable[[Envelope], None]] = {}
        self.network.register(self)

    def call_timeout(self, envelope: Envelope) -> int:
        return call_timeout_ms(envelope, self.request_timeout_ms)

    def call(self, dst: str, rpc: str, message: Any, on_answer: Callable[[Envelope], None]) -> None:
        request_id = self._ids.next()
        self._pending[request_id] = on_answer
        self.network.send(Envelope(self.name, dst, rpc, message, request_id))

    def deliver(self, envelope: Envelope) -> None:
        callback = self._pending.pop(envelope.request_id, None)
        if callback is not None:
            callback(envelope)

    def note(self, name: str, **fields: Any) -> None:
        self.cluster.trace.record(self.scheduler.now_ms, self.name, name, fields)


class LeaderCache:
    """Partition leaders as the brokers' Metadata answers say, asked of brokers in turn (a
    client knows the bootstrap list, not who is alive)."""

    def __init__(self, actor: Actor, topic: str, brokers: list[str], rng: random.Random) -> None:
        self.actor = actor
        self.topic = topic
        self.brokers = list(brokers)
        self.rng = rng
        self.leaders: dict[int, tuple[str, int]] = {}  # partition -> (leader node, leader epoch)
        self._waiting: list[Callable[[], None]] = []

    def get(self, partition: int) -> tuple[str, int] | None:
        return self.leaders.get(partition)

    def forget(self, partition: int) -> None:
        self.leaders.pop(partition, None)

    def refresh(self, then: Callable[[], None]) -> None:
        """Ask one broker (seed-chosen) for metadata, then call ``then`` (whatever it answered)."""
        self._waiting.append(then)
        if len(self._waiting) > 1:
            return  # one refresh in flight serves everyone waiting
        broker = self.rng.choice(self.brokers)
        self.actor.call(broker, "Metadata", broker_pb2.MetadataRequest(topics=[self.topic]), self._on_metadata)

    def _on_metadata(self, answer: Envelope) -> None:
        if answer.transport_error is None:
            for meta in answer.message.topics:
                if meta.name != self.topic or meta.error_code != ErrorCode.NONE:
                    continue
                for part in meta.partitions:
                    if part.leader_id >= 0:
                        self.leaders[part.partition] = (broker_node(part.leader_id), part.leader_epoch)
                    else:
                        self.leaders.pop(part.partition, None)
        waiting, self._waiting = self._waiting, []
        for then in waiting:
            then()


class SimConsumer(Actor):
    """A consumer reading assigned partitions from offset 0 with long-poll fetches, every poll
    recorded. It sends the leader epoch it knows (FENCED/UNKNOWN_LEADER_EPOCH send it back to
    metadata); OFFSET_OUT_OF_RANGE resets it to the log start (auto.offset.reset=earliest),
    recorded as a seek."""

    def __init__(self, name: str, cluster: Any, history: History, topic: str, partitions: Iterable[int],
                 brokers: list[str], rng: random.Random, max_wait_ms: int = 100,
                 request_timeout_ms: int = 3_000, backoff_ms: int = 50) -> None:
        super().__init__(f"client-{name}", cluster, request_timeout_ms)
        self.process = name
        self.history = history
        self.topic = topic
        self.partitions = list(partitions)
        self.positions = {p: 0 for p in self.partitions}
        self.leaders = LeaderCache(self, topic, brokers, rng)
        self.max_wait_ms = max_wait_ms
        self.backoff_ms = backoff_ms
        self.running = False
        self._turn = 0

    def start(self) -> None:
        self.running = True
        self.scheduler.after(0, self._poll, label=f"poll {self.process}")

    def stop(self) -> None:
        self.running = False

    def _poll(self) -> None:
        if not self.running:
            return
        partition = self.partitions[self._turn % len(self.partitions)]
        self._turn += 1
        leader = self.leaders.get(partition)
        if leader is None:
            self.leaders.refresh(lambda: self._later(self.backoff_ms if self.leaders.get(partition) is None else 0))
            return
        node, epoch = leader
        request = broker_pb2.FetchRequest(
            replica_id=-1, max_wait_ms=self.max_wait_ms, min_bytes=1, max_bytes=1 << 20,
            partitions=[broker_pb2.FetchPartition(
                topic=self.topic, partition=partition, fetch_offset=self.positions[partition],
                partition_max_bytes=1 << 20, current_leader_epoch=epoch, last_fetched_epoch=-1)],
        )
        self.call(node, "Fetch", request, lambda answer: self._on_fetch(answer, partition))

    def _later(self, delay_ms: int) -> None:
        self.scheduler.after(delay_ms, self._poll, label=f"poll {self.process}")

    def _on_fetch(self, answer: Envelope, partition: int) -> None:
        if answer.transport_error is not None:
            self.leaders.forget(partition)
            self._later(self.backoff_ms)
            return
        part = answer.message.partitions[0]
        if part.error_code == ErrorCode.OFFSET_OUT_OF_RANGE:
            self.positions[partition] = max(part.log_start_offset, 0)
            self.history.record_seek(self.process, self.topic, partition, self.positions[partition])
            self._later(0)
            return
        if part.error_code != ErrorCode.NONE:
            if part.error_code in LEADER_MOVED:
                self.leaders.forget(partition)
            self._later(self.backoff_ms)
            return
        position = self.positions[partition]
        rows = [(self.topic, partition, r.offset, r.value)
                for r in (decode_records(part.records) if part.records else []) if r.offset >= position]
        if rows:
            self.history.record_poll(self.process, rows)
            self.positions[partition] = rows[-1][2] + 1
        self._later(0)


@dataclass
class Workload:
    """The producers and consumers of one scenario run, over one history."""

    history: SimHistory
    producers: dict[str, SimProducer] = field(default_factory=dict)
    consumers: list[SimConsumer] = field(default_factory=list)

    def start(self) -> None:
        for producer in self.producers.values():
            if producer.spec.start:
                producer.start()
        for consumer in self.consumers:
            consumer.start()

    def stop(self) -> None:
        for producer in self.producers.values():
            producer.stop()
        for consumer in self.consumers:
            consumer.stop()

    def settled(self) -> bool:
        return all(producer.idle for producer in self.producers.values())

    def maybe_duplicated(self) -> set[bytes]:
        return set().union(*(p.maybe_duplicated for p in self.producers.values()))

    def acknowledged_by(self) -> dict[bytes, str]:
        out: dict[bytes, str] = {}
        for producer in self.producers.values():
            out.update(producer.acknowledged_by)
        return out

    def outcomes(self) -> dict[str, int]:
        counts = {OK: 0, FAIL: 0, INFO: 0}
        for send in self.history.sends:
            counts[send.outcome] = counts.get(send.outcome, 0) + 1
        return counts
