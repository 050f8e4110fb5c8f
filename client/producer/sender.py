"""The producer's sender (sans-IO): drained batches -> Produce requests, responses -> outcomes.

Kafka's ``Sender``. ``tick(now_ms)`` expires old batches, drains the ready ones and returns one
``Produce`` envelope per leader broker; ``step(response, now_ms)`` settles each partition's
batch: success completes it with its base offset, a retriable error puts it back (after a
metadata refresh when the leader may have moved) with exponential backoff while
``delivery.timeout.ms`` allows, anything else fails it with a ``KafkaError``. With ``acks=0``
batches complete with offset -1 as soon as they are sent and the answer is not looked at.

The caller executes the sends (gRPC in real mode, the simulated network in tests), hands back
each answer as a response envelope (``transport_error`` set when the call failed) and runs the
metadata refresh that the core asks for through ``metadata.request_update()``.

Failover (the retriable/fatal split is ``brokerlab.errors.RETRIABLE``, REFERENCE.md's table):

- NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, LEADER_NOT_AVAILABLE,
  UNKNOWN_TOPIC_OR_PARTITION, NETWORK_EXCEPTION and a failed call (UNAVAILABLE, a broken
  connection, a deadline): metadata is refreshed at once, the batch backs off exponentially
  (``retry.backoff.ms`` doubling up to ``retry.backoff.max.ms``, +-20 % jitter from the
  accumulator's injected Random), and metadata keeps being refreshed (the facade limits it to
  one per ``retry.backoff.ms``) until it names a newer leader epoch, when the batch goes at
  once (Kafka 3.7, KIP-951).
- NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT and other retriable
  codes: retried with backoff, no refresh, until ``delivery.timeout.ms``; the final failure
  carries the last code.
- Ordering: retried batches go back in creation order before anything newer of their
  partition. With ``max.in.flight.requests.per.connection=1`` order holds across retries and
  leader moves; with more in flight and no idempotence a retried batch can land after a later
  one, as in Kafka.

Idempotence (``idempotence``: client/producer/idempotence.py): before anything is drained the
core asks a broker for a producer id (``InitProducerId``, to the broker with the fewest requests
in flight; retriable errors and failed calls are retried with backoff, anything else fails every
batch). Every retry resends the same bytes, so the same sequences; DUPLICATE_SEQUENCE_NUMBER is
a success (the batch was written before; offset unknown); sequence errors are decided by the
idempotence manager (retry without backoff, or fail and reset the partition's sequences).
"""

from __future__ import annotations

from typing import Protocol

from brokerlab.errors import REFRESH_METADATA, ErrorCode, KafkaError, error_name, is_retriable
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from client.producer.accumulator import RecordAccumulator
from client.producer.batch import ProducerBatch
from client.producer.idempotence import Decision

ACKS = {"all": -1, "-1": -1, "0": 0, "1": 1, -1: -1, 0: 0, 1: 1}


def parse_acks(acks: str | int) -> int:
    """``"all"``/-1, 0 or 1 -> the wire value (-1, 0, 1)."""
    try:
        return ACKS[acks]
    except (KeyError, TypeError):
        raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}") from None


# A failed call's ``transport_error`` starts with a gRPC status name (the simulator, raw gRPC)
# or a Kafka error name (ClusterLink's KafkaError), then ':'. gRPC statuses map as below;
# anything unknown (UNAVAILABLE, CANCELLED, ...) is a retriable NETWORK_EXCEPTION.
_TRANSPORT_CODES = {
    "DEADLINE_EXCEEDED": ErrorCode.REQUEST_TIMED_OUT,
    "INVALID_ARGUMENT": ErrorCode.INVALID_REQUEST,
    "RESOURCE_EXHAUSTED": ErrorCode.MESSAGE_TOO_LARGE,
}


def classify_transport_error(reason: str) -> int:
    status = reason.split(":", 1)[0].strip().upper()
    if status in _TRANSPORT_CODES:
        return _TRANSPORT_CODES[status]
    member = ErrorCode.__members__.get(status)
    return ErrorCode.NETWORK_EXCEPTION if member is None or member == ErrorCode.NONE else member


class LeaderLookup(Protocol):
    """What the sender needs of ``client.metadata.MetadataCache``."""

    def leader_for(self, tp: TopicPartition) -> int | None: ...

    def leader_epoch_for(self, tp: TopicPartition) -> int: ...

    def request_update(self) -> None: ...

    def brokers(self) -> dict[int, str]: ...


class InFlightRequest:
    __slots__ = ("request_id", "broker_id", "batches", "deadline_ms")

    def __init__(self, request_id: int, broker_id: int, batches: dict, deadline_ms: int) -> None:
        self.request_id = request_id
        self.broker_id = broker_id
        # (topic, partition) -> its batches in this request, in order (sent back to back).
        self.batches: dict[tuple[str, int], list[ProducerBatch]] = batches
        self.deadline_ms = deadline_ms


class SenderCore:
    def __init__(
        self,
        accumulator: RecordAccumulator,
        metadata: LeaderLookup,
        *,
        acks: str | int = "all",
        request_timeout_ms: int = 30_000,
        node: str = "client",
    ) -> None:
        self.accumulator = accumulator
        self.metadata = metadata
        self.acks = parse_acks(acks)
        self.request_timeout_ms = request_timeout_ms
        self.node = node
        self._ids = RequestIds()
        self._in_flight: dict[int, InFlightRequest] = {}
        self._now_ms = 0
        # Idempotence lives in the accumulator (it gates and numbers batches as they drain).
        self.idempotence = accumulator.idempotence
        if self.idempotence is not None and self.acks != -1:
            raise ValueError("an idempotent producer needs acks=all")
        self._init_request: tuple[int, int] | None = None  # (request id, deadline_ms) of InitProducerId
        self._init_attempts = 0
        self._init_retry_at_ms = 0
        # Set when the producer cannot go on (InitProducerId refused for good); batches failed with it.
        self.fatal_error: KafkaError | None = None

    # ---- the core contract ---------------------------------------------------------------

    def tick(self, now_ms: int) -> Effects:
        """Time out silent requests, expire old batches, send what is ready."""
        self._now_ms = now_ms
        effects = Effects()
        for request in [r for r in self._in_flight.values() if r.deadline_ms <= now_ms]:
            self._settle_failed_request(
                request,
                f"DEADLINE_EXCEEDED: no answer within request.timeout.ms={self.request_timeout_ms}",
                now_ms,
                effects,
            )
        if self._init_request is not None and self._init_request[1] <= now_ms:
            self._init_failed(f"REQUEST_TIMED_OUT: no answer within request.timeout.ms={self.request_timeout_ms}",
                              ErrorCode.REQUEST_TIMED_OUT, now_ms, effects)
        acc = self.accumulator
        for batch in acc.expire(now_ms):
            effects.event("BatchExpired", topic=batch.tp.topic, partition=batch.tp.partition,
                          record_count=batch.record_count)
        requests, metadata_wanted = acc.drain(now_ms, self.metadata.leader_for, self.metadata.leader_epoch_for)
        if metadata_wanted:
            self.metadata.request_update()
        for broker_id, batches in requests.items():
            effects.send(self._produce_request(broker_id, batches, now_ms))
        self._maybe_init_producer_id(now_ms, effects)  # after the drain: a reset may have used up the epochs
        if self.idempotence is not None and self.idempotence.events:
            effects.events.extend(self.idempotence.drain_events())
        return effects

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        """One Produce answer (or the failure of one Produce call)."""
        self._now_ms = now_ms
        effects = Effects()
        if envelope.rpc == "InitProducerId" and envelope.is_response:
            self.on_init_producer_id_response(envelope, now_ms, effects)
            return effects
        if envelope.rpc != "Produce" or not envelope.is_response:
            return effects
        request = self._in_flight.get(envelope.request_id)
        if request is None:
            return effects  # answer to a request we already gave up on
        if envelope.transport_error is not None:
            self._settle_failed_request(request, envelope.transport_error, now_ms, effects)
            return effects
        del self._in_flight[envelope.request_id]
        self.accumulator.request_done(request.broker_id)
        self.on_produce_response(request, envelope.message, now_ms, effects)
        return effects

    def next_deadline_ms(self) -> int | None:
        deadline = self.accumulator.next_ready_ms(self._now_ms)
        for request in self._in_flight.values():
            if deadline is None or request.deadline_ms < deadline:
                deadline = request.deadline_ms
        idem = self.idempotence
        if idem is not None and idem.needs_producer_id and self.fatal_error is None:
            due = self._init_request[1] if self._init_request is not None else self._init_retry_at_ms
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    # ---- InitProducerId ------------------------------------------------------------------

    def _maybe_init_producer_id(self, now_ms: int, effects: Effects) -> None:
        idem = self.idempotence
        if (idem is None or not idem.needs_producer_id or self._init_request is not None
                or self.fatal_error is not None or now_ms < self._init_retry_at_ms):
            return
        brokers = sorted(self.metadata.brokers())
        if not brokers:
            self.metadata.request_update()
            self._init_retry_at_ms = now_ms + self.accumulator.retry_backoff_ms
            return
        # Kafka asks its least loaded node; rotating on failures moves past a dead broker.
        acc = self.accumulator
        start = self._init_attempts % len(brokers)
        order = brokers[start:] + brokers[:start]
        broker_id = min(order, key=acc.in_flight_requests)
        request_id = self._ids.next()
        self._init_request = (request_id, now_ms + self.request_timeout_ms)
        effects.send(Envelope(self.node, broker_node(broker_id), "InitProducerId",
                              broker_pb2.InitProducerIdRequest(), request_id))

    def on_init_producer_id_response(self, envelope: Envelope, now_ms: int, effects: Effects) -> None:
        if self._init_request is None or envelope.request_id != self._init_request[0]:
            return  # an answer we gave up waiting for
        if envelope.transport_error is not None:
            reason = envelope.transport_error
            self._init_failed(reason, classify_transport_error(reason), now_ms, effects)
            return
        response = envelope.message
        if response.error_code != ErrorCode.NONE:
            self._init_failed(response.error_message or error_name(response.error_code), response.error_code,
                              now_ms, effects)
            return
        self._init_request = None
        self._init_attempts = 0
        self.idempotence.set_producer_id(response.producer_id, response.producer_epoch)
        effects.events.extend(self.idempotence.drain_events())

    def _init_failed(self, reason: str, code: int, now_ms: int, effects: Effects) -> None:
        self._init_request = None
        self._init_attempts += 1
        effects.event("InitProducerIdFailed", error=error_name(code), reason=reason, attempts=self._init_attempts)
        if is_retriable(code) or code == ErrorCode.REQUEST_TIMED_OUT:
            self._init_retry_at_ms = now_ms + self.accumulator.backoff_ms(self._init_attempts)
            return
        # Kafka's producer goes into a fatal error state: nothing can be sent idempotently.
        self.fatal_error = KafkaError(code, f"InitProducerId failed: {reason}")
        for batch in self.accumulator.abort_all(self.fatal_error):
            effects.event("BatchFailed", topic=batch.tp.topic, partition=batch.tp.partition,
                          error=error_name(code), record_count=batch.record_count)

    # ---- requests ------------------------------------------------------------------------

    def _produce_request(self, broker_id: int, batches: list[ProducerBatch], now_ms: int) -> Envelope:
        request = broker_pb2.ProduceRequest(acks=self.acks, timeout_ms=self.request_timeout_ms)
        by_partition: dict[tuple[str, int], list[ProducerBatch]] = {}
        for batch in batches:  # in order within each partition
            key = (batch.tp.topic, batch.tp.partition)
            group = by_partition.get(key)
            if group is None:
                by_partition[key] = [batch]
            else:
                group.append(batch)
        partitions = request.partitions
        for (topic, partition), group in by_partition.items():
            records = group[0].build() if len(group) == 1 else b"".join(b.build() for b in group)
            partitions.add(topic=topic, partition=partition, records=records)
        request_id = self._ids.next()
        self._in_flight[request_id] = InFlightRequest(
            request_id, broker_id, by_partition, now_ms + self.request_timeout_ms
        )
        if self.acks == 0:
            # Kafka's acks=0: done once handed to the network; the answer is not awaited.
            for batch in batches:
                self.accumulator.complete(batch, -1)
        return Envelope(self.node, broker_node(broker_id), "Produce", request, request_id)

    def in_flight_request_count(self) -> int:
        return len(self._in_flight)

    # ---- responses -----------------------------------------------------------------------

    def on_produce_response(
        self, request: InFlightRequest, response: broker_pb2.ProduceResponse, now_ms: int, effects: Effects
    ) -> None:
        if self.acks == 0:
            return
        batches = request.batches
        acc = self.accumulator
        for result in response.partitions:
            group = batches.pop((result.topic, result.partition), None)
            if group is None:
                continue
            if result.error_code == ErrorCode.NONE:
                # The broker appended the batches back to back from base_offset.
                offset = result.base_offset
                for batch in group:
                    acc.complete(batch, offset, result.log_append_time_ms)
                    offset += batch.record_count
            elif result.error_code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER and self.idempotence is not None:
                # Written long ago (before the broker's retained batches): done, offset unknown.
                for batch in group:
                    acc.complete(batch, -1)
            else:
                for batch in group:
                    if not batch.done:
                        self._on_partition_error(batch, result.error_code, result.error_message, now_ms, effects)
        for group in batches.values():
            for batch in group:
                if not batch.done:
                    self._on_partition_error(
                        batch, ErrorCode.UNKNOWN_SERVER_ERROR,
                        f"the broker's answer had no result for {batch.tp}", now_ms, effects,
                    )

    def _settle_failed_request(self, request: InFlightRequest, reason: str, now_ms: int, effects: Effects) -> None:
        del self._in_flight[request.request_id]
        self.accumulator.request_done(request.broker_id)
        effects.event("ProduceRequestFailed", broker_id=request.broker_id, reason=reason)
        if self.acks == 0:
            return
        code = classify_transport_error(reason)
        # A broker we cannot reach (killed, paused, restarting) may no longer be the leader:
        # refresh at once, as Kafka does on a disconnect, and retry as soon as a new leader shows.
        self.metadata.request_update()
        for group in request.batches.values():
            for batch in group:
                if not batch.done:
                    self._on_partition_error(batch, code, reason, now_ms, effects, leader_moved=True)

    def _on_partition_error(
        self, batch: ProducerBatch, code: int, message: str, now_ms: int, effects: Effects,
        leader_moved: bool = False,
    ) -> None:
        """Retry a retriable error inside delivery.timeout.ms, fail anything else.

        NOT_ENOUGH_REPLICAS(_AFTER_APPEND) are retriable (Kafka's RetriableException): the
        batch is retried with backoff until the delivery timeout, and then fails with that code.
        """
        acc = self.accumulator
        tp = batch.tp
        decision = None
        if self.idempotence is not None:
            decision = self.idempotence.on_error(batch, code)
        if decision is Decision.RETRY_NOW or (decision is None and is_retriable(code)):
            refresh = code in REFRESH_METADATA
            if refresh:
                self.metadata.request_update()
            batch.last_error = KafkaError(code, message or error_name(code))
            if not acc.delivery_deadline_passed(batch, now_ms):
                acc.reenqueue(batch, now_ms, leader_moved=leader_moved or refresh,
                              backoff=decision is not Decision.RETRY_NOW)
                effects.event("ProduceRetried", topic=tp.topic, partition=tp.partition,
                              error=error_name(code), attempts=batch.attempts)
                return
            message = (f"{message}; not retried: delivery.timeout.ms={acc.delivery_timeout_ms} "
                       f"has passed since batch creation")
        acc.fail(batch, KafkaError(code, message or f"producing to {tp} failed"))
        effects.event("BatchFailed", topic=tp.topic, partition=tp.partition,
                      error=error_name(code), record_count=batch.record_count)
