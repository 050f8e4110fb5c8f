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
  one, as in Kafka (idempotent producers, a later issue, close that gap).
"""

from __future__ import annotations

from typing import Protocol

from brokerlab.errors import REFRESH_METADATA, ErrorCode, KafkaError, error_name, is_retriable
from brokerlab.ids import TopicPartition, broker_node
from brokerlab.sansio import Effects, Envelope, RequestIds
from brokerlab.v1 import broker_pb2
from client.producer.accumulator import RecordAccumulator
from client.producer.batch import ProducerBatch

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
        acc = self.accumulator
        for batch in acc.expire(now_ms):
            effects.event("BatchExpired", topic=batch.tp.topic, partition=batch.tp.partition,
                          record_count=batch.record_count)
        requests, metadata_wanted = acc.drain(now_ms, self.metadata.leader_for, self.metadata.leader_epoch_for)
        if metadata_wanted:
            self.metadata.request_update()
        for broker_id, batches in requests.items():
            effects.send(self._produce_request(broker_id, batches, now_ms))
        return effects

    def step(self, envelope: Envelope, now_ms: int) -> Effects:
        """One Produce answer (or the failure of one Produce call)."""
        self._now_ms = now_ms
        effects = Effects()
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
        return deadline

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
        if is_retriable(code):
            refresh = code in REFRESH_METADATA
            if refresh:
                self.metadata.request_update()
            batch.last_error = KafkaError(code, message or error_name(code))
            if not acc.delivery_deadline_passed(batch, now_ms):
                acc.reenqueue(batch, now_ms, leader_moved=leader_moved or refresh)
                effects.event("ProduceRetried", topic=tp.topic, partition=tp.partition,
                              error=error_name(code), attempts=batch.attempts)
                return
            message = (f"{message}; not retried: delivery.timeout.ms={acc.delivery_timeout_ms} "
                       f"has passed since batch creation")
        acc.fail(batch, KafkaError(code, message or f"producing to {tp} failed"))
        effects.event("BatchFailed", topic=tp.topic, partition=tp.partition,
                      error=error_name(code), record_count=batch.record_count)
