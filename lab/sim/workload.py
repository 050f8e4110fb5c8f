"""Simulated clients that run alongside the cluster: producers and a consumer, recorded in a history.

The script-style ``SimClient`` waits for each answer, so only one thing happens at a time. A
failover scenario needs load *while* faults happen: these actors work by callbacks instead, each
a network endpoint like a client process, so any number of them keep sending while a scenario
script kills, pauses and cuts nodes around them.

What they do goes into a ``SimHistory``: ``lab.history.History`` (the same recorder and format
the real-process tests use, judged by the same ``lab.checker``) on the virtual clock, so the
history of a seed is byte-identical run after run.

Producer semantics (a Kafka producer without idempotence, ``max.in.flight.requests=1``): every
value is unique (``<producer>-<n>``); a batch is retried as-is on retriable errors and failed
calls, with back-off and a fresh leader from metadata, until ``delivery_timeout_ms``. Its
outcome is ``ok`` (acknowledged, at base offset + i), ``fail`` only when *every* attempt got an
answer that proves nothing was appended (``lab.history.DEFINITE_FAILURES``, e.g.
NOT_ENOUGH_REPLICAS), else ``info``. A retry after an attempt whose fate is unknown (a timeout, a
broken call, NOT_LEADER_OR_FOLLOWER after a parked acks=all append) may legitimately duplicate a
value; the producer remembers those values (``maybe_duplicated``) so a checker can tell such a
duplicate from one a broker made up.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from brokerlab.errors import ErrorCode, KafkaError, is_retriable
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.record_batch import decode_records, encode_batch
from brokerlab.sansio import Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from lab.history import DEFINITE_FAILURES, FAIL, INFO, OK, History

from .network import call_timeout_ms

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


class TransportError(Exception):
    """A call that got no answer (the network's DEADLINE_EXCEEDED / UNAVAILABLE)."""


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


@dataclass(frozen=True)
class ProducerSpec:
    """One producer process of a scenario (Kafka's knobs where they exist)."""

    name: str = "writer"
    acks: int = -1
    interval_ms: int = 10  # pause between one batch settling and the next being sent
    min_batch: int = 1
    max_batch: int = 3
    timeout_ms: int = 1_500  # the Produce request's own timeout (acks=all wait)
    request_timeout_ms: int = 3_000  # gRPC deadline on top of the request's own wait
    delivery_timeout_ms: int = 10_000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1_000
    start: bool = True  # send continuously from the scenario start; else only in bursts
    partition: int | None = None  # always this partition (else the topic's partitions in turn)
    # > 0: paced at this many records per second instead: a batch holds what fell due while the
    # previous one was in flight (as a producer's accumulator does), at most max_batch.
    rate_per_s: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProducerSpec":
        values = dict(data)
        acks = values.get("acks", -1)
        values["acks"] = -1 if str(acks) in ("all", "-1") else int(acks)
        return cls(**values)


@dataclass
class _Batch:
    partition: int
    sends: list  # lab.history.Send, one per value
    first_ms: int
    attempts: int = 0
    attempt_sent_ms: int = 0
    indeterminate: bool = False  # some attempt may have been appended
    last_error: BaseException | None = None
    on_settled: Callable[[], None] | None = None


class SimProducer(Actor):
    def __init__(self, cluster: Any, history: History, topic: str, partitions: Iterable[int], spec: ProducerSpec,
                 brokers: list[str], rng: random.Random, on_acknowledged: Callable[..., None] | None = None,
                 lane: str = "") -> None:
        # ``lane``: one of several single-request lanes of one producer process (e.g. one per
        # partition, as a producer talks to each broker independently); values stay unique.
        super().__init__(f"client-{spec.name}{'-' + lane if lane else ''}", cluster, spec.request_timeout_ms)
        self.value_prefix = f"{spec.name}-{lane}" if lane else spec.name
        self.spec = spec
        self.process = spec.name
        self.history = history
        self.topic = topic
        self.partitions = list(partitions)
        self.rng = rng
        self.leaders = LeaderCache(self, topic, brokers, rng)
        self.on_acknowledged = on_acknowledged
        self.running = False
        self.batch: _Batch | None = None
        self._sent = 0
        self._batches = 0
        self._queue: list[tuple[int, Callable[[], None] | None]] = []  # bursts: (records, on_settled)
        self._paced_from_ms: int | None = None  # rate mode: when pacing started
        # Values a retry may have written twice, and which broker acknowledged each value.
        self.maybe_duplicated: set[bytes] = set()
        self.acknowledged_by: dict[bytes, str] = {}

    # -- control ----------------------------------------------------------------------------
    def start(self) -> None:
        self.running = True
        if self.batch is None:
            self.scheduler.after(0, self._next, label=f"produce {self.process}")

    def stop(self) -> None:
        """No new batches; the one in flight still settles (retries included)."""
        self.running = False

    def burst(self, records: int, on_settled: Callable[[], None] | None = None) -> None:
        """One batch of ``records`` values, sent as soon as the current one settled."""
        self._queue.append((records, on_settled))
        if self.batch is None:
            self.scheduler.after(0, self._next, label=f"produce {self.process}")

    @property
    def idle(self) -> bool:
        return self.batch is None and not self._queue

    # -- sending ----------------------------------------------------------------------------
    def _next(self) -> None:
        if self.batch is not None:
            return
        on_settled = None
        if self._queue:
            count, on_settled = self._queue.pop(0)
        elif self.running and self.spec.rate_per_s > 0:
            now = self.scheduler.now_ms
            if self._paced_from_ms is None:
                self._paced_from_ms = now
            due = int((now - self._paced_from_ms) * self.spec.rate_per_s / 1000) + 1 - self._sent
            if due <= 0:  # ahead of the rate: wait for the next record's time
                wait = (self._sent * 1000 / self.spec.rate_per_s) - (now - self._paced_from_ms)
                self.scheduler.after(max(1, int(wait) + 1), self._next, label=f"produce {self.process}")
                return
            count = min(due, self.spec.max_batch)
        elif self.running:
            count = self.rng.randint(self.spec.min_batch, self.spec.max_batch)
        else:
            return
        if self.spec.partition is not None:
            partition = self.spec.partition
        else:
            partition = self.partitions[self._batches % len(self.partitions)]
        self._batches += 1
        sends = []
        for _ in range(count):
            value = f"{self.value_prefix}-{self._sent}".encode()
            self._sent += 1
            sends.append(self.history.invoke_send(self.process, self.topic, partition, value))
        self.batch = _Batch(partition, sends, self.scheduler.now_ms, on_settled=on_settled)
        self._attempt()

    def _attempt(self) -> None:
        batch = self.batch
        leader = self.leaders.get(batch.partition)
        if leader is None:
            self.leaders.refresh(self._attempt_known)
            return
        node, _ = leader  # Produce carries no leader epoch (as in Kafka); the leader checks it leads
        batch.attempts += 1
        batch.attempt_sent_ms = self.scheduler.now_ms
        records = encode_batch([(self.scheduler.now_ms, None, send.value, ()) for send in batch.sends])
        request = broker_pb2.ProduceRequest(
            acks=self.spec.acks,
            timeout_ms=self.spec.timeout_ms,
            partitions=[broker_pb2.PartitionProduceData(
                topic=self.topic, partition=batch.partition, records=records)],
        )
        self.call(node, "Produce", request, lambda answer: self._on_answer(answer, node))

    def _attempt_known(self) -> None:
        if self.leaders.get(self.batch.partition) is None:
            self._retry_or_settle(KafkaError(ErrorCode.LEADER_NOT_AVAILABLE, "no leader in metadata"), refresh=False)
        else:
            self._attempt()

    def _on_answer(self, answer: Envelope, node: str) -> None:
        batch = self.batch
        if answer.transport_error is not None:
            batch.indeterminate = True
            self.leaders.forget(batch.partition)
            self._retry_or_settle(TransportError(f"{node}: {answer.transport_error}"), refresh=False)
            return
        part = answer.message.partitions[0]
        code = part.error_code
        if code == ErrorCode.NONE:
            self._settle_ok(part.base_offset, node)
            return
        error = KafkaError(code, part.error_message)
        if code not in DEFINITE_FAILURES:
            batch.indeterminate = True
        if code in LEADER_MOVED:
            self.leaders.forget(batch.partition)
        self._retry_or_settle(error, refresh=False)

    def _retry_or_settle(self, error: BaseException, refresh: bool) -> None:
        batch = self.batch
        batch.last_error = error
        retriable = isinstance(error, TransportError) or (
            isinstance(error, KafkaError) and is_retriable(error.code))
        backoff = min(self.spec.retry_backoff_ms * 2 ** max(batch.attempts - 1, 0), self.spec.retry_backoff_max_ms)
        if retriable and self.scheduler.now_ms + backoff < batch.first_ms + self.spec.delivery_timeout_ms:
            if batch.indeterminate:
                self.maybe_duplicated.update(send.value for send in batch.sends)
            self.scheduler.after(backoff, self._attempt, label=f"retry {self.process}")
            return
        outcome = INFO if batch.indeterminate else FAIL
        for send in batch.sends:
            self.history.complete_send(send, error=error, outcome=outcome)
        self.note("ProduceSettled", partition=batch.partition, records=len(batch.sends), outcome=outcome,
                  attempts=batch.attempts, error=_error_text(error), first=batch.sends[0].value.decode())
        self._finish()

    def _settle_ok(self, base_offset: int, node: str) -> None:
        batch = self.batch
        tp = TopicPartition(self.topic, batch.partition)
        for i, send in enumerate(batch.sends):
            self.history.complete_send(send, offset=base_offset + i)
            self.acknowledged_by[send.value] = node
            if self.on_acknowledged is not None and self.spec.acks == -1:
                self.on_acknowledged(tp, base_offset + i, send.value, batch.attempt_sent_ms)
        self.note("ProduceSettled", partition=batch.partition, records=len(batch.sends), outcome=OK,
                  attempts=batch.attempts, base_offset=base_offset, leader=node, first=batch.sends[0].value.decode())
        self._finish()

    def _finish(self) -> None:
        batch, self.batch = self.batch, None
        if batch.on_settled is not None:
            batch.on_settled()
        if self._queue:
            self.scheduler.after(0, self._next, label=f"produce {self.process}")
        elif self.running:
            delay = 0 if self.spec.rate_per_s > 0 else self.spec.interval_ms
            self.scheduler.after(delay, self._next, label=f"produce {self.process}")


def _error_text(error: BaseException) -> str:
    if isinstance(error, KafkaError):
        return error.code.name if hasattr(error.code, "name") else str(error.code)
    return str(error)


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
