"""The real producer on the simulator: client/producer's cores driven over the simulated network.

``SimProducer`` is a client process on the simulated network running the producer's real
sans-IO cores: the ``RecordAccumulator`` (batches, linger, backoff, in-flight limits), the
``SenderCore`` (Produce requests, retries, InitProducerId) and, unless turned off, the
``IdempotenceManager`` (producer id, sequences, epoch bumps). It drives them as the asyncio
facade (client/producer/producer.py) does: records are appended as ``send`` appends them and
the sender runs at once when a batch opens or fills, after every answer and at
``next_deadline_ms()``; each send of the core goes on the network with ``request.timeout.ms``
as its deadline and its answer (or failed call) goes back to ``step``; metadata lives in the
real ``client.metadata.MetadataCache``, refreshed over the network the way ``ClusterLink``
does it (``SimClusterLink``) whenever the cache wants it, at most once per
``retry.backoff.ms``. The clock is the scheduler's and the jitter comes from the seed.

The application on top (``ProducerSpec``) sends unique values ``<producer>-<n>`` (padded to
``value_bytes``): either rounds of ``min_batch..max_batch`` records every ``interval_ms``, each
round to one partition in turn (or always ``partition``), or, with ``rate_per_s``, records
paced at that rate, keyed ``k<n % keys>`` (the murmur2 partitioner decides) or to the
partitions in turn; or only bursts (``burst``: append, flush, wait for the answers). Sends are
never awaited one by one, so several batches of a partition can be on the wire at once
(``max_in_flight``).

Every send goes into the history (``lab.history``) when it is appended, and completes when its
batch does:

- ``ok`` at ``base_offset + i`` when acknowledged; an idempotent retry that the broker answers
  with DUPLICATE_SEQUENCE_NUMBER (written before its retained batches, offset unknown) is
  ``ok`` without an offset;
- ``fail`` only when no attempt can have been appended: the batch was never sent, or every
  attempt was answered with a code that proves it (``lab.history.DEFINITE_FAILURES``);
- ``info`` otherwise (a timeout, a failed call, NOT_LEADER_OR_FOLLOWER after a parked
  acks=all append, a sequence error...), and for acks=0.

Without idempotence a retry after an attempt whose fate is unknown may write a value twice:
those values are kept in ``maybe_duplicated`` so the verdict tells such a duplicate from one a
broker made up. With idempotence no duplicate is explained that way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from brokerlab.errors import error_name
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from client.metadata import METADATA_HEDGE_MS, MetadataBrokerOrder, MetadataCache
from client.producer.accumulator import RecordAccumulator
from client.producer.batch import ProducerBatch
from client.producer.idempotence import IdempotenceManager, resolve_idempotence
from client.producer.partitioner import partition_for_key
from client.producer.sender import SenderCore
from lab.history import DEFINITE_FAILURES, FAIL, INFO, OK, History, Send

from .cores import SIM_PORT
from .scheduler import Timer

# The facade's defaults (client/producer/producer.py) where a ProducerSpec leaves them out.
BUFFER_MEMORY = 32 * 1024 * 1024
MAX_REQUEST_SIZE = 1024 * 1024
FACADE_PIPELINE_MIN_BYTES = 256 * 1024


@dataclass(frozen=True)
class ProducerSpec:
    """One producer process of a scenario: the client's settings (Kafka's names and defaults,
    except where a failover scenario wants faster timeouts) and the application's load."""

    name: str = "writer"
    acks: int = -1
    # enable.idempotence: on by default as in Kafka 3.0+, quietly off with acks other than all or
    # more than 5 requests in flight (``effective_idempotence``).
    idempotence: bool = True
    max_in_flight: int = 5  # max.in.flight.requests.per.connection
    linger_ms: int = 5
    batch_size: int = 16_384
    request_timeout_ms: int = 3_000  # the Produce's own acks wait and the call's deadline
    # Unlike Kafka (and the facade) not held to >= linger + request timeout: a scenario may want
    # sends to fail fast while the acks=all wait stays long (two-down).
    delivery_timeout_ms: int = 10_000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1_000
    metadata_max_age_ms: int = 300_000
    # brokerlab's accumulator knob (see RecordAccumulator.drain): 0 pipelines like Kafka, a
    # request per ready batch; the facade's default (FACADE_PIPELINE_MIN_BYTES) waits for bulk.
    pipeline_min_bytes: int = 0
    # -- the application --------------------------------------------------------------------
    interval_ms: int = 40  # between one round of sends and the next
    min_batch: int = 1  # records per round (all to one partition)
    max_batch: int = 3
    start: bool = True  # send continuously from the scenario start; else only in bursts
    partition: int | None = None  # always this partition (else the topic's partitions in turn)
    # > 0: records paced at this many per second, one by one, instead of rounds.
    rate_per_s: float = 0.0
    keys: int = 0  # > 0 (paced records): keyed k<n % keys>, the partitioner picks the partition
    value_bytes: int = 0  # values padded with "_" to this length

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProducerSpec":
        values = dict(data)
        acks = values.get("acks", -1)
        values["acks"] = -1 if str(acks) in ("all", "-1") else int(acks)
        return cls(**values)

    @property
    def effective_idempotence(self) -> bool:
        """Kafka's rule for the default (on, quietly off with other acks or more in flight)."""
        return self.idempotence and resolve_idempotence(None, self.acks, self.max_in_flight)


class SimClusterLink:
    """``ClusterLink``'s metadata refresh on the simulated network: a MetadataCache filled by
    Metadata calls to the known brokers (rotating the first), then the bootstrap list, recently
    failed ones last; a candidate silent for METADATA_HEDGE_MS gets company from the next, a
    failed one is followed at once, the first answer wins."""

    def __init__(self, owner: "SimProducer", bootstrap: list[str], metadata_max_age_ms: int) -> None:
        self.owner = owner
        self.bootstrap = list(bootstrap)
        self.cache = MetadataCache(metadata_max_age_ms)
        self._ids = RequestIds()
        self._broker_order = MetadataBrokerOrder(self.bootstrap)
        self._round: dict[int, str] | None = None  # request id -> address, while a refresh runs
        self._candidates: list[str] = []
        self._request: broker_pb2.MetadataRequest | None = None
        self._full = False
        self._hedge: Timer | None = None
        self._then: Callable[[bool], None] | None = None

    @property
    def refreshing(self) -> bool:
        return self._round is not None

    def refresh(self, topics: list[str] | None, then: Callable[[bool], None]) -> None:
        """Start a refresh of ``topics`` (None: every topic); ``then(ok)`` once it ends."""
        self._round, self._then = {}, then
        self._request = broker_pb2.MetadataRequest(topics=list(topics or ()))
        self._full = not topics
        self._candidates = self._metadata_candidates()
        self._launch()

    def _metadata_candidates(self) -> list[str]:
        return self._broker_order.candidates(list(self.cache.brokers().values()), self.owner.scheduler.now_ms)

    def _launch(self) -> None:
        if self._hedge is not None:
            self._hedge.cancel()
            self._hedge = None
        if not self._candidates:
            if not self._round:
                self._finish(False)
            return
        address = self._candidates.pop(0)
        request_id = self._ids.next()
        self._round[request_id] = address
        owner = self.owner
        owner.network.send(Envelope(owner.name, address.rsplit(":", 1)[0], "Metadata", self._request, request_id))
        if self._candidates:
            self._hedge = owner.scheduler.after(METADATA_HEDGE_MS, self._launch, label=f"metadata hedge {owner.name}")

    def on_answer(self, answer: Envelope) -> None:
        if self._round is None or answer.request_id not in self._round:
            return  # a hedged call that lost, or one of a refresh already over
        address = self._round.pop(answer.request_id)
        now = self.owner.scheduler.now_ms
        if answer.transport_error is None:
            self._broker_order.answered(address)
            self.cache.update(answer.message, now, full=self._full)
            self._finish(True)
            return
        self._broker_order.failed(address, now)
        self._launch()

    def _finish(self, ok: bool) -> None:
        if self._hedge is not None:
            self._hedge.cancel()
            self._hedge = None
        self._round, then = None, self._then
        self._then = None
        then(ok)


class _Tracked:
    """What the history needs of one producer batch."""

    __slots__ = ("sends", "attempts_seen", "definite")

    def __init__(self) -> None:
        self.sends: list[tuple[Send, "_Burst | None"]] = []
        self.attempts_seen = 0
        self.definite = 0  # attempts answered with a code that proves nothing was appended


class _Request:
    __slots__ = ("sent_ms", "batches")

    def __init__(self, sent_ms: int, batches: dict[tuple[str, int], list[ProducerBatch]]) -> None:
        self.sent_ms = sent_ms
        self.batches = batches


class _Burst:
    __slots__ = ("left", "on_settled")

    def __init__(self, left: int, on_settled: Callable[[], None] | None) -> None:
        self.left = left
        self.on_settled = on_settled


class SimProducer:
    """One producer process (``client-<name>`` on the network); see the module docstring."""

    incarnation = 1
    alive = True

    def __init__(self, cluster: Any, history: History, topic: str, partitions: Iterable[int], spec: ProducerSpec,
                 brokers: list[str], rng: random.Random, on_acknowledged: Callable[..., None] | None = None) -> None:
        self.name = f"client-{spec.name}"
        self.process = spec.name
        self.spec = spec
        self.cluster = cluster
        self.scheduler = cluster.scheduler
        self.network = cluster.network
        self.history = history
        self.topic = topic
        self.partitions = list(partitions)
        self.rng = rng
        self.on_acknowledged = on_acknowledged
        self.idempotent = spec.effective_idempotence
        self.link = SimClusterLink(self, [f"{broker}:{SIM_PORT}" for broker in brokers], spec.metadata_max_age_ms)
        self.accumulator = RecordAccumulator(
            batch_size=spec.batch_size, linger_ms=spec.linger_ms, buffer_memory=BUFFER_MEMORY,
            delivery_timeout_ms=spec.delivery_timeout_ms, retry_backoff_ms=spec.retry_backoff_ms,
            retry_backoff_max_ms=spec.retry_backoff_max_ms, max_in_flight_per_broker=spec.max_in_flight,
            max_request_size=MAX_REQUEST_SIZE, pipeline_min_bytes=spec.pipeline_min_bytes,
            random=random.Random(rng.getrandbits(64)),  # the client's jitter, apart from the load's draws
            idempotence=IdempotenceManager() if self.idempotent else None,
        )
        self.core = SenderCore(self.accumulator, self.link.cache, acks=spec.acks,
                               request_timeout_ms=spec.request_timeout_ms, node=self.name)
        self.running = False
        self.closed = False
        self._sent = 0  # values so far (<producer>-<n>)
        self._rounds = 0
        self._paced_from_ms: int | None = None
        self._app_timer: Timer | None = None
        self._blocked = False  # a send waits for the topic's metadata (as Producer.send does)
        self._bursts: list[tuple[int, _Burst]] = []  # waiting for metadata
        self._tracked: dict[ProducerBatch, _Tracked] = {}
        self._requests: dict[int, _Request] = {}
        self._answering: tuple[str, int] | None = None  # (broker, sent_ms) of the answer being stepped
        self._timer: Timer | None = None
        self._timer_due_ms: int | None = None
        self._next_refresh_ms = 0
        # Values a retry may have written twice (idempotence off), and who acknowledged each value.
        self.maybe_duplicated: set[bytes] = set()
        self.acknowledged_by: dict[bytes, str] = {}
        self.network.register(self)

    # -- the endpoint ---------------------------------------------------------------------------
    def call_timeout(self, envelope: Envelope) -> int:
        """Every call's deadline is request.timeout.ms, as the facade's and ClusterLink's are."""
        return self.spec.request_timeout_ms

    def deliver(self, envelope: Envelope) -> None:
        if envelope.rpc == "Metadata":
            self.link.on_answer(envelope)
            return
        request = self._requests.pop(envelope.request_id, None) if envelope.rpc == "Produce" else None
        if request is not None:
            self._count_definite(envelope, request)
            self._answering = (envelope.src, request.sent_ms)
        try:
            effects = self.core.step(envelope, self.scheduler.now_ms)
        finally:
            self._answering = None
        self._execute(effects)
        self._run_sender()

    def note(self, name: str, **fields: Any) -> None:
        self.cluster.trace.record(self.scheduler.now_ms, self.name, name, fields)

    # -- control --------------------------------------------------------------------------------
    def start(self) -> None:
        self.running = True
        self._app_after(0)

    def stop(self) -> None:
        """No new sends; what is buffered goes at once (Producer.close) and still settles."""
        self.running = False
        if self._app_timer is not None:
            self._app_timer.cancel()
            self._app_timer = None
        if not self.closed:
            self.closed = True
            self.accumulator.close()
            self._run_sender()

    def burst(self, records: int, on_settled: Callable[[], None] | None = None) -> None:
        """Send ``records`` values now and flush (linger ignored); ``on_settled`` once every one
        of them is acknowledged or failed."""
        self._bursts.append((records, _Burst(records, on_settled)))
        self.scheduler.after(0, self._send_bursts, label=f"burst {self.process}")

    @property
    def idle(self) -> bool:
        return not self._tracked and not self._bursts

    # -- the application ------------------------------------------------------------------------
    def _app_after(self, delay_ms: int) -> None:
        if self._app_timer is not None:
            self._app_timer.cancel()
        self._app_timer = self.scheduler.after(delay_ms, self._app_round, label=f"produce {self.process}")

    def _app_round(self) -> None:
        self._app_timer = None
        if not self.running:
            return
        if not self._topic_known():
            self._blocked = True
            return
        spec, now = self.spec, self.scheduler.now_ms
        if spec.rate_per_s > 0:
            if self._paced_from_ms is None:
                self._paced_from_ms = now
            due = int((now - self._paced_from_ms) * spec.rate_per_s / 1000) + 1 - self._sent
            for _ in range(max(due, 0)):
                self._send_one(None)
            next_ms = self._paced_from_ms + -(-self._sent * 1000 // spec.rate_per_s)
            self._app_after(max(1, int(next_ms) - now))
        else:
            partition = self._next_partition()
            for _ in range(self.rng.randint(spec.min_batch, spec.max_batch)):
                self._send_one(None, partition)
            self._app_after(spec.interval_ms)
        self._after_appends()

    def _send_bursts(self) -> None:
        if not self._bursts:
            return
        if not self._topic_known():
            self._blocked = True
            return
        bursts, self._bursts = self._bursts, []
        for count, burst in bursts:
            partition = self._next_partition()
            self.accumulator.begin_flush()  # Producer.flush: everything buffered goes now
            for _ in range(count):
                self._send_one(burst, partition)
            if count == 0:
                self._burst_done(burst)
        self._after_appends()

    def _burst_done(self, burst: _Burst) -> None:
        self.accumulator.end_flush()
        if burst.on_settled is not None:
            burst.on_settled()

    def _next_partition(self) -> int:
        if self.spec.partition is not None:
            return self.spec.partition
        self._rounds += 1
        return self.partitions[(self._rounds - 1) % len(self.partitions)]

    def _topic_known(self) -> bool:
        """Producer.send's wait for the topic's metadata: ask for it, and come back when it is in."""
        cache = self.link.cache
        if cache.partition_count(self.topic):
            return True
        cache.add_topics([self.topic])
        cache.request_update()
        self._run_sender()
        return False

    def _send_one(self, burst: _Burst | None, partition: int | None = None) -> None:
        """Producer.send: pick the partition, append the record, record the send."""
        spec, n = self.spec, self._sent
        self._sent += 1
        value = f"{self.process}-{n}".encode()
        if spec.value_bytes > len(value):
            value += b"_" * (spec.value_bytes - len(value))
        key = f"k{n % spec.keys}".encode() if spec.keys > 0 and burst is None else None
        if partition is None:
            count = self.link.cache.partition_count(self.topic) or len(self.partitions)
            partition = partition_for_key(key, count) if key is not None else self.partitions[n % len(self.partitions)]
        now = self.scheduler.now_ms
        acc = self.accumulator
        batch = acc.append(self.topic, partition, now, key, value, ())
        if batch is None:
            batch = acc.append(self.topic, partition, now, key, value, (), now)
        tracked = self._tracked.get(batch)
        if tracked is None:
            tracked = self._tracked[batch] = _Tracked()
            batch.add_done_callback(self._on_batch_done)
        send = self.history.invoke_send(self.process, self.topic, partition, value, key)
        tracked.sends.append((send, burst))

    def _after_appends(self) -> None:
        if self.accumulator.wakeup or self.accumulator.flushes_in_progress:
            self.accumulator.wakeup = False
            self._run_sender()

    # -- the sender (Producer._run_sender) -------------------------------------------------------
    def _run_sender(self) -> None:
        now = self.scheduler.now_ms
        # The core times out requests at their deadline in this tick: no answer will count them.
        for request_id in [r for r, request in self._requests.items()
                           if request.sent_ms + self.spec.request_timeout_ms <= now]:
            del self._requests[request_id]
        self._execute(self.core.tick(now))
        self._maybe_refresh_metadata(now)
        due = self.core.next_deadline_ms()
        if not self.link.refreshing and self.link.cache.needs_update(now):
            if due is None or self._next_refresh_ms < due:
                due = self._next_refresh_ms  # a refresh is due but rate-limited
        if due is not None:
            due = max(int(due), now + 1)  # the facade's 1 ms floor: a deadline "now" must not spin
        if due == self._timer_due_ms and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due_ms = None, due
        if due is not None:
            self._timer = self.scheduler.at(due, self._on_timer, label=f"sender {self.process}")

    def _on_timer(self) -> None:
        self._timer = self._timer_due_ms = None
        self._run_sender()

    def _execute(self, effects: Effects) -> None:
        now = self.scheduler.now_ms
        if effects.events:
            self.cluster.trace.record_events(now, self.name, effects.events)
        produce = [envelope for envelope in effects.sends if envelope.rpc == "Produce"]
        if produce:
            self._map_requests(produce, now)
        for envelope in effects.sends:
            self.network.send(envelope)
        if self.core.fatal_error is not None and self.running:
            self.note("ProducerFailed", error=str(self.core.fatal_error))
            self.running = False

    def _map_requests(self, envelopes: list[Envelope], now: int) -> None:
        """Which batches each Produce carries: those taken in this tick (their attempts went up),
        by partition; a drain puts each partition into one request at most."""
        taken: dict[tuple[str, int], list[ProducerBatch]] = {}
        for batch, tracked in self._tracked.items():
            if batch.attempts > tracked.attempts_seen:
                if not self.idempotent and tracked.attempts_seen > tracked.definite:
                    # An earlier attempt may be in the log and this one may land too.
                    self.maybe_duplicated.update(send.value for send, _ in tracked.sends)
                tracked.attempts_seen = batch.attempts
                taken.setdefault((batch.tp.topic, batch.tp.partition), []).append(batch)
        for envelope in envelopes:
            batches = {}
            for data in envelope.message.partitions:
                key = (data.topic, data.partition)
                batches[key] = sorted(taken.get(key, ()), key=lambda b: b.sequence)
            self._requests[envelope.request_id] = _Request(now, batches)

    def _count_definite(self, answer: Envelope, request: _Request) -> None:
        if answer.transport_error is not None or self.spec.acks == 0:
            return
        for result in answer.message.partitions:
            if result.error_code in DEFINITE_FAILURES:
                for batch in request.batches.get((result.topic, result.partition), ()):
                    tracked = self._tracked.get(batch)
                    if tracked is not None:
                        tracked.definite += 1

    def _maybe_refresh_metadata(self, now: int) -> None:
        cache = self.link.cache
        if self.link.refreshing or now < self._next_refresh_ms or not cache.needs_update(now):
            return
        self.link.refresh(cache.wanted_topics() or None, self._on_refreshed)

    def _on_refreshed(self, ok: bool) -> None:
        # At most one refresh per retry.backoff.ms, so a leaderless partition does not spin.
        self._next_refresh_ms = self.scheduler.now_ms + self.spec.retry_backoff_ms
        if self._blocked:
            if not self.link.cache.partition_count(self.topic):
                self.link.cache.request_update()  # Producer.send keeps asking, one refresh per backoff
            else:
                self._blocked = False
                if self._bursts:
                    self.scheduler.after(0, self._send_bursts, label=f"burst {self.process}")
                if self.running:
                    self._app_after(0)
        self._run_sender()

    # -- outcomes -------------------------------------------------------------------------------
    def _on_batch_done(self, batch: ProducerBatch) -> None:
        tracked = self._tracked.pop(batch, None)
        if tracked is None:
            return
        history, tp = self.history, batch.tp
        error = batch.error
        outcome: str
        if error is not None:
            definite = batch.attempts == 0 or (tracked.definite >= batch.attempts and error.code in DEFINITE_FAILURES)
            outcome = FAIL if definite else INFO
            for send, _ in tracked.sends:
                history.complete_send(send, error=error, outcome=outcome)
        elif self.spec.acks == 0:
            outcome = INFO
            for send, _ in tracked.sends:
                history.complete_send(send)
        elif batch.base_offset < 0:  # DUPLICATE_SEQUENCE_NUMBER: written before, offset unknown
            outcome = OK
            for send, _ in tracked.sends:
                history.complete_send(send, outcome=OK)
        else:
            outcome = OK
            broker, sent_ms = self._answering or (None, self.scheduler.now_ms)
            ledger = self.on_acknowledged if self.spec.acks == -1 else None
            for i, (send, _) in enumerate(tracked.sends):
                history.complete_send(send, offset=batch.base_offset + i)
                if broker is not None:
                    self.acknowledged_by[send.value] = broker
                if ledger is not None:
                    ledger(TopicPartition(tp.topic, tp.partition), batch.base_offset + i, send.value, sent_ms)
        fields: dict[str, Any] = {"partition": tp.partition, "records": batch.record_count, "outcome": outcome,
                                  "attempts": batch.attempts, "first": tracked.sends[0][0].value.decode()}
        if error is not None:
            fields["error"] = error_name(int(error.code)) if error.code is not None else str(error)
        elif batch.base_offset >= 0:
            fields["base_offset"] = batch.base_offset
            if self._answering is not None:
                fields["leader"] = self._answering[0]
        if batch.base_sequence >= 0:
            fields["base_sequence"] = batch.base_sequence
        self.note("ProduceSettled", **fields)
        for _, burst in tracked.sends:
            if burst is not None:
                burst.left -= 1
                if burst.left == 0:
                    self._burst_done(burst)
