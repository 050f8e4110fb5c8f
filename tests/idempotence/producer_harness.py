"""The real producer cores (accumulator, sender, idempotence) against the real brokers and controller
of the in-process replication harness: one thread, virtual time, no sockets.

``ProducingCluster`` is a ``ReplicationCluster`` with one more node, ``client-producer``: its
SenderCore is ticked with the others and gets its answers through the harness's delivery, so
holds, isolation, kills and the brokers' ``test.produce.response.delay.ms`` knob all apply to it.
Metadata comes straight from the controller's state (always fresh: these tests are about
sequences, not about metadata lag).
"""

from __future__ import annotations

import random
from typing import Any

from replication_harness import ReplicationCluster

from brokerlab.ids import TopicPartition
from brokerlab.record_batch import decode_records
from client.producer.accumulator import RecordAccumulator
from client.producer.batch import ProducerBatch
from client.producer.idempotence import IdempotenceManager
from client.producer.sender import SenderCore

PRODUCER = "client-producer"


class HarnessMetadata:
    """What the sender needs of a MetadataCache, read from the controller."""

    def __init__(self, cluster: "ProducingCluster") -> None:
        self.cluster = cluster
        self.update_requests = 0

    def leader_for(self, tp: TopicPartition) -> int | None:
        leader = self.cluster.partition(tp.topic, tp.partition).leader_id
        return leader if leader >= 0 else None

    def leader_epoch_for(self, tp: TopicPartition) -> int:
        return self.cluster.partition(tp.topic, tp.partition).leader_epoch

    def request_update(self) -> None:
        self.update_requests += 1

    def brokers(self) -> dict[int, str]:
        return {b: f"broker-{b}" for b in self.cluster.broker_ids}


class ProducingCluster(ReplicationCluster):
    def __init__(self, *, idempotence: bool = True, request_timeout_ms: int = 1_000,
                 delivery_timeout_ms: int = 60_000, max_in_flight: int = 5, batch_size: int = 16384,
                 retry_backoff_ms: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accumulator = RecordAccumulator(
            batch_size=batch_size, linger_ms=0, delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms, retry_backoff_max_ms=max(retry_backoff_ms, 500),
            max_in_flight_per_broker=max_in_flight, pipeline_min_bytes=0, random=random.Random(3),
            idempotence=IdempotenceManager() if idempotence else None)
        self.metadata = HarnessMetadata(self)
        self.sender = SenderCore(self.accumulator, self.metadata, acks="all", request_timeout_ms=request_timeout_ms,
                                 node=PRODUCER)
        self.sent: list[tuple[ProducerBatch, bytes, int]] = []  # (batch, value, index in batch)

    @property
    def idempotence(self) -> IdempotenceManager | None:
        return self.accumulator.idempotence

    def _deliver(self, envelope) -> None:
        if envelope.dst == PRODUCER:
            self._run(PRODUCER, self.sender.step(envelope, self.now_ms))
            return
        super()._deliver(envelope)

    def _cores(self):
        return super()._cores() + [(PRODUCER, self.sender)]

    def send(self, topic: str, partition: int, *values: bytes) -> list[ProducerBatch]:
        """Append records (one batch each unless they fit the open one) and let the sender run."""
        batches = []
        for value in values:
            batch = self.accumulator.append(topic, partition, self.now_ms, None, value, (), self.now_ms)
            self.sent.append((batch, value, batch.record_count - 1))
            batches.append(batch)
        self.flush_sender()
        return batches

    def flush_sender(self) -> None:
        self._run(PRODUCER, self.sender.tick(self.now_ms))
        self.run()

    def wait_done(self, timeout_ms: int = 60_000, step_ms: int = 10) -> None:
        waited = 0
        while self.accumulator.incomplete:
            assert waited < timeout_ms, f"{len(self.accumulator.incomplete)} batches still pending: " \
                                        f"{sorted(self.accumulator.incomplete, key=lambda b: b.sequence)[:5]}"
            self.advance(step_ms)
            self.flush_sender()
            waited += step_ms

    def acknowledged(self) -> list[tuple[bytes, int]]:
        """(value, offset) of every acknowledged record, in send order."""
        return [(value, batch.base_offset + index if batch.base_offset >= 0 else -1)
                for batch, value, index in self.sent if batch.done and batch.error is None]

    def failed(self) -> list[bytes]:
        return [value for batch, value, _ in self.sent if batch.done and batch.error is not None]

    def committed(self, topic: str, partition: int = 0) -> list[tuple[int, bytes]]:
        """(offset, value) up to the high watermark on the current leader."""
        out = self.consume(topic, partition)
        assert out.error_code == 0, out.error_message
        return [(r.offset, r.value) for r in decode_records(out.records)] if out.records else []
