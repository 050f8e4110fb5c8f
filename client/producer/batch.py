"""A producer batch: records of one partition, encoded as they are appended, completed as one.

Each ``send`` gets a light handle (the batch plus the record's index in it); the batch resolves
every handle at once when the broker answers, so there is no per-record future. A batch is
completed exactly once, either with its base offset or with a ``KafkaError``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from brokerlab.errors import KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import (
    BATCH_HEADER_BYTES,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    build_batch,
)


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed. ``offset`` is -1 with ``acks=0``."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class ProducerBatch:
    __slots__ = (
        "tp",
        "parts",
        "size_bytes",
        "record_count",
        "base_timestamp_ms",
        "max_timestamp_ms",
        "created_ms",
        "sequence",
        "reserved_bytes",
        "full",
        "attempts",
        "retry_at_ms",
        "in_flight",
        "leader_epoch",
        "awaiting_leader_change",
        "last_error",
        "payload",
        "producer_id",
        "producer_epoch",
        "base_sequence",
        "sequence_sent",
        "sent_behind_unacked",
        "done",
        "base_offset",
        "log_append_time_ms",
        "error",
        "callbacks",
        "waiter",
        "record_callbacks",
    )

    def __init__(self, tp: TopicPartition, created_ms: int, base_timestamp_ms: int, sequence: int, reserved_bytes: int) -> None:
        self.tp = tp
        self.parts: list[bytes] = []
        self.size_bytes = BATCH_HEADER_BYTES
        self.record_count = 0
        self.base_timestamp_ms = base_timestamp_ms
        self.max_timestamp_ms = base_timestamp_ms
        self.created_ms = created_ms
        # Creation order within the partition: retries go back in this order.
        self.sequence = sequence
        self.reserved_bytes = reserved_bytes
        # Closed for appends (the next record did not fit, or it was drained).
        self.full = False
        self.attempts = 0
        self.retry_at_ms = 0
        self.in_flight = False
        # The leader epoch (from metadata) of the last attempt's leader, -1 when unknown. A batch
        # that failed because the leader may have moved retries without backoff once metadata
        # shows a newer epoch (Kafka 3.7, KIP-951).
        self.leader_epoch = -1
        self.awaiting_leader_change = False
        # The error of the last failed attempt: reported if the delivery timeout ends the retries.
        self.last_error: KafkaError | None = None
        self.payload: bytes | None = None
        # Idempotence (client/producer/idempotence.py) numbers the batch when it is first sent.
        self.producer_id = NO_PRODUCER_ID
        self.producer_epoch = NO_PRODUCER_EPOCH
        self.base_sequence = NO_SEQUENCE
        # Sent with its current sequence at least once (a retry may be a duplicate at the broker).
        self.sequence_sent = False
        # An earlier batch of the partition was unacknowledged when this one was last sent.
        self.sent_behind_unacked = False
        self.done = False
        self.base_offset = -1
        self.log_append_time_ms = -1
        self.error: KafkaError | None = None
        self.callbacks: list[Callable[["ProducerBatch"], Any]] | None = None
        # Opaque slots for the asyncio facade: one future per batch (made on the first await), and
        # per-record callbacks kept flat so no per-record object outlives the send.
        self.waiter: Any = None
        self.record_callbacks: list | None = None

    def __repr__(self) -> str:
        state = "done" if self.done else ("in-flight" if self.in_flight else "queued")
        return f"<ProducerBatch {self.tp} seq={self.sequence} records={self.record_count} {state}>"

    def build(self) -> bytes:
        """The batch bytes as sent (built once; a retry resends the same bytes)."""
        if self.payload is None:
            self.full = True
            self.payload = build_batch(
                b"".join(self.parts),
                self.record_count,
                self.base_timestamp_ms,
                self.max_timestamp_ms,
                producer_id=self.producer_id,
                producer_epoch=self.producer_epoch,
                base_sequence=self.base_sequence,
            )
            self.parts = []
        return self.payload

    def set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        """Number the batch (idempotence); already built bytes are rebuilt with the new header."""
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.sequence_sent = False
        payload = self.payload
        if payload is not None:
            self.payload = None
            self.parts = [payload[BATCH_HEADER_BYTES:]]
            self.build()

    # ---- completion ----------------------------------------------------------------------

    def add_done_callback(self, callback: Callable[["ProducerBatch"], Any]) -> None:
        """Call ``callback(batch)`` on completion (at once when already done)."""
        if self.done:
            callback(self)
        elif self.callbacks is None:
            self.callbacks = [callback]
        else:
            self.callbacks.append(callback)

    def complete(self, base_offset: int, log_append_time_ms: int = -1) -> bool:
        """Acknowledged at ``base_offset`` (-1 for acks=0). False if it was already done."""
        if self.done:
            return False
        self.base_offset = base_offset
        self.log_append_time_ms = log_append_time_ms
        self._finish()
        return True

    def fail(self, error: KafkaError) -> bool:
        if self.done:
            return False
        self.error = error
        self._finish()
        return True

    def _finish(self) -> None:
        self.done = True
        self.in_flight = False
        self.parts = []
        self.payload = None
        callbacks, self.callbacks = self.callbacks, None
        if callbacks:
            for callback in callbacks:
                callback(self)

    def metadata(self, index: int, timestamp_ms: int) -> RecordMetadata:
        """The RecordMetadata of record ``index`` (raises the batch's error if it failed)."""
        if self.error is not None:
            raise self.error
        offset = -1 if self.base_offset < 0 else self.base_offset + index
        if self.log_append_time_ms >= 0:
            timestamp_ms = self.log_append_time_ms
        return RecordMetadata(self.tp.topic, self.tp.partition, offset, timestamp_ms)
