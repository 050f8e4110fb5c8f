"""The record accumulator (sans-IO): per-partition queues of batches, memory, readiness, drain.

Kafka's ``RecordAccumulator``. Records are encoded into the partition's open batch as they
are appended (``encode_record``), so a send costs one struct pack and a list append. A batch
is ready to go when it is full (or a newer batch exists behind it), when it has waited
``linger.ms``, when its retry backoff is over, or at once while a flush, a close or a caller
waiting for buffer memory is in progress. ``drain`` groups ready batches by leader broker
(fairly, then topping requests up with a partition's backlog), stops a request at
``max.request.size`` and keeps at most ``max.in.flight.requests.per.connection`` requests per
broker.

Memory: each batch reserves ``max(batch.size, its first record)`` bytes of ``buffer.memory``
when it opens and gives them back when it completes. With none left, ``append`` raises
``NoBufferSpace`` and the caller (the asyncio facade) waits for memory, up to
``max.block.ms``.

Ordering: a batch that failed with a retriable error goes back to the *front* of its queue,
sorted by creation, after a backoff; nothing behind it in that partition is sent before it.
With one request in flight per broker, a partition is also muted while it has a batch in
flight (Kafka's ``guaranteeMessageOrder``), so order holds across leader moves too. With more
in flight, two batches of one partition can be in flight at once and, if the first fails and
the second succeeds, land out of order, exactly as in Kafka without idempotence.

Idempotence (``idempotence``, client/producer/idempotence.py) gates the first batch of each
partition (``may_send``: a producer id is known, a retry goes only when it is the partition's
first unacknowledged batch, a reset renumbers first), numbers batches as they are taken, and
keeps a batch that was already sent with its sequence alone in its request.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import BATCH_HEADER_BYTES, RECORD_HEADER_BYTES, encode_record
from brokerlab.sansio import Random
from client.producer.batch import ProducerBatch
from client.producer.idempotence import IdempotenceManager


class NoBufferSpace(Exception):
    """``buffer.memory`` has fewer than ``needed_bytes`` free: wait for batches to complete."""

    def __init__(self, needed_bytes: int, free_bytes: int) -> None:
        super().__init__(f"need {needed_bytes} bytes, {free_bytes} free")
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class BufferExhaustedError(KafkaError):
    """``send`` waited ``max.block.ms`` for buffer memory in vain (Kafka's BufferExhaustedException,
    a TimeoutException: REQUEST_TIMED_OUT)."""

    def __init__(self, max_block_ms: int, buffer_memory: int) -> None:
        super().__init__(
            ErrorCode.REQUEST_TIMED_OUT,
            f"buffer exhausted: no memory freed within max.block.ms={max_block_ms}; all of "
            f"buffer.memory={buffer_memory} bytes hold batches not yet acknowledged "
            f"(brokers slow or unreachable, or records produced faster than they can be sent)",
        )
        self.max_block_ms = max_block_ms
        self.buffer_memory = buffer_memory


class PartitionQueue:
    """One partition's batches, oldest first; the last one may still be open for appends."""

    __slots__ = ("tp", "batches", "next_sequence", "appended_bytes", "in_flight")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.batches: deque[ProducerBatch] = deque()
        self.next_sequence = 0
        # Running total of record bytes appended (the sticky partitioner measures with it).
        self.appended_bytes = 0
        self.in_flight = 0


class RecordAccumulator:
    def __init__(
        self,
        *,
        batch_size: int = 16384,
        linger_ms: int = 5,
        buffer_memory: int = 32 * 1024 * 1024,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1000,
        max_in_flight_per_broker: int = 5,
        max_request_size: int = 1024 * 1024,
        pipeline_min_bytes: int = 256 * 1024,
        random: Random | None = None,
        idempotence: IdempotenceManager | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.buffer_memory = buffer_memory
        self.free_bytes = buffer_memory
        self.delivery_timeout_ms = delivery_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = max(retry_backoff_max_ms, retry_backoff_ms)
        self.max_in_flight_per_broker = max_in_flight_per_broker
        self.max_request_size = max_request_size
        # brokerlab, not Kafka: see drain(). 0 pipelines like Kafka (a call per ready batch).
        self.pipeline_min_bytes = min(pipeline_min_bytes, max_request_size)
        self._random = random
        self.idempotence = idempotence
        self._guarantee_order = max_in_flight_per_broker == 1
        self._topics: dict[str, list[PartitionQueue | None]] = {}
        self._queues: list[PartitionQueue] = []
        self._drain_start = 0
        self._in_flight: dict[int, int] = {}
        # Batches created and not yet completed (flush waits for these).
        self.incomplete: set[ProducerBatch] = set()
        # Set when a batch opened or filled up: the sender should look again. The facade clears it.
        self.wakeup = False
        self.flushes_in_progress = 0
        self.waiting_for_memory = 0
        self.closed = False

    # ---- append (the hot path) -----------------------------------------------------------

    def queue(self, topic: str, partition: int) -> PartitionQueue:
        queues = self._topics.get(topic)
        if queues is None:
            queues = self._topics[topic] = []
        if partition >= len(queues):
            queues.extend([None] * (partition + 1 - len(queues)))
        pq = queues[partition]
        if pq is None:
            pq = queues[partition] = PartitionQueue(TopicPartition(topic, partition))
            self._queues.append(pq)
        return pq

    def append(
        self,
        topic: str,
        partition: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        now_ms: int | None = None,
    ) -> ProducerBatch | None:
        """Encode one record into the partition's open batch; returns the batch.

        The record's index in the batch is ``batch.record_count - 1`` right after. Without
        ``now_ms`` it only appends to an open batch and returns None (appending nothing) when
        the record needs a new one; the caller then reads its clock, lets the sticky
        partitioner reconsider, and calls again with ``now_ms`` (so the common case costs no
        clock read). Raises ``NoBufferSpace`` when a new batch is needed and ``buffer.memory``
        is used up.
        """
        queues = self._topics.get(topic)
        if queues is not None and partition < len(queues):
            pq = queues[partition]
            if pq is None:
                pq = self.queue(topic, partition)
        else:
            pq = self.queue(topic, partition)
        dq = pq.batches
        if dq:
            batch = dq[-1]
            if not batch.full:
                record = encode_record(
                    batch.record_count, timestamp_ms - batch.base_timestamp_ms, key, value, headers
                )
                size = len(record)
                if batch.size_bytes + size <= self.batch_size:
                    batch.parts.append(record)
                    batch.record_count += 1
                    batch.size_bytes += size
                    pq.appended_bytes += size
                    if timestamp_ms > batch.max_timestamp_ms:
                        batch.max_timestamp_ms = timestamp_ms
                    if batch.size_bytes + RECORD_HEADER_BYTES > self.batch_size:
                        batch.full = True  # not even an empty record fits: ready now
                        self.wakeup = True
                    return batch
                batch.full = True
                self.wakeup = True
        if now_ms is None:
            return None
        return self._append_new_batch(pq, timestamp_ms, key, value, headers, now_ms)

    def _append_new_batch(self, pq, timestamp_ms, key, value, headers, now_ms) -> ProducerBatch:
        if self.closed:
            raise KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, "the producer is closed")
        record = encode_record(0, 0, key, value, headers)
        size = len(record)
        reserve = max(self.batch_size, BATCH_HEADER_BYTES + size)
        if BATCH_HEADER_BYTES + size > self.max_request_size:
            raise KafkaError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"the record is {size} bytes serialized, more than max.request.size={self.max_request_size}",
            )
        if reserve > self.buffer_memory:
            raise KafkaError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"the record is {size} bytes serialized, more than buffer.memory={self.buffer_memory}",
            )
        if reserve > self.free_bytes:
            raise NoBufferSpace(reserve, self.free_bytes)
        self.free_bytes -= reserve
        batch = ProducerBatch(pq.tp, now_ms, timestamp_ms, pq.next_sequence, reserve)
        pq.next_sequence += 1
        batch.parts.append(record)
        batch.record_count = 1
        batch.size_bytes += size
        pq.appended_bytes += size
        if batch.size_bytes + RECORD_HEADER_BYTES > self.batch_size:
            batch.full = True
        pq.batches.append(batch)
        self.incomplete.add(batch)
        self.wakeup = True
        return batch

    def appended_bytes(self, topic: str, partition: int) -> int:
        return self.queue(topic, partition).appended_bytes

    # ---- readiness and drain -------------------------------------------------------------

    def _sendable(self, batch: ProducerBatch, queued: int, now_ms: int) -> bool:
        if batch.retry_at_ms:
            return batch.retry_at_ms <= now_ms
        return (
            batch.full
            or queued > 1
            or now_ms - batch.created_ms >= self.linger_ms
            or self.flushes_in_progress > 0
            or self.waiting_for_memory > 0
            or self.closed
        )

    def drain(
        self,
        now_ms: int,
        leader_for: Callable[[TopicPartition], "int | None"],
        leader_epoch_for: Callable[[TopicPartition], int] | None = None,
    ) -> tuple[dict[int, list[ProducerBatch]], bool]:
        """Take the ready batches whose leader can take another request.

        Returns ``({broker_id: [batch, ...]}, metadata_wanted)``: one list per request to send,
        and whether the caller should refresh metadata: some ready batch has no known leader, or
        a batch backs off after a leader error and metadata does not show a new leader yet.
        Each returned list counts as one request in flight for its broker until
        :meth:`request_done`.

        ``leader_epoch_for`` (the metadata's leader epoch, -1 unknown) lets a batch that failed
        because its leader moved skip the rest of its backoff once a newer leader epoch is
        known, as Kafka 3.7 does (KIP-951); it is also stamped on each batch taken.

        A first pass takes the first ready batch of each partition, starting one partition
        further each time (Kafka's fair drain). Unlike Kafka, a second pass then tops each
        request up with the *further* ready batches of the partitions it already holds, in
        order, up to ``max.request.size``: the wire format carries several batches back to
        back per partition and the broker appends them atomically at consecutive offsets.

        Also unlike Kafka, a broker that already has a request in flight gets another only
        when at least ``pipeline_min_bytes`` are ready for it (or a flush, a close or a caller
        short of memory is waiting). A Python gRPC call costs about as much CPU as encoding a
        hundred records, so many small pipelined calls are slower than fewer full ones; an idle
        broker still gets its request at once, so latency at low load is unchanged.
        """
        queues = self._queues
        count = len(queues)
        plans: dict[int, list[tuple[PartitionQueue, int]]] = {}  # leader -> (queue, batches to take)
        plan_bytes: dict[int, int] = {}
        leader_unknown = False
        in_flight = self._in_flight
        limit = self.max_in_flight_per_broker
        max_bytes = self.max_request_size
        start = self._drain_start % count if count else 0
        idem = self.idempotence
        for i in range(count):
            pq = queues[(start + i) % count]
            dq = pq.batches
            if not dq:
                continue
            batch = dq[0]
            if not self._sendable(batch, len(dq), now_ms):
                if not batch.awaiting_leader_change:
                    continue
                if leader_epoch_for is None or not self._leader_moved(pq, leader_epoch_for(pq.tp)):
                    leader_unknown = True  # keep looking for the new leader while backing off
                    continue
            if self._guarantee_order and pq.in_flight:
                continue
            if idem is not None and not idem.may_send(batch, pq.in_flight):
                continue
            leader = leader_for(pq.tp)
            if leader is None or leader < 0:
                leader_unknown = True
                continue
            if in_flight.get(leader, 0) >= limit:
                continue
            plan = plans.get(leader)
            if plan is None:
                plans[leader] = [(pq, 1)]
                plan_bytes[leader] = batch.size_bytes
            elif plan_bytes[leader] + batch.size_bytes <= max_bytes:
                plan.append((pq, 1))
                plan_bytes[leader] += batch.size_bytes
        for leader, plan in plans.items():
            for index, (pq, taken) in enumerate(plan):
                dq = pq.batches
                if idem is not None and not idem.may_add(dq[0]):
                    continue  # a batch sent before with its sequence goes alone
                while taken < len(dq) and self._sendable(dq[taken], len(dq) - taken, now_ms):
                    if idem is not None and not idem.may_add(dq[taken]):
                        break
                    size = dq[taken].size_bytes
                    if plan_bytes[leader] + size > max_bytes:
                        break
                    plan_bytes[leader] += size
                    taken += 1
                plan[index] = (pq, taken)
        urgent = self.flushes_in_progress > 0 or self.waiting_for_memory > 0 or self.closed
        requests: dict[int, list[ProducerBatch]] = {}
        for leader, plan in plans.items():
            if in_flight.get(leader, 0) and plan_bytes[leader] < self.pipeline_min_bytes and not urgent:
                continue  # wait for the call in flight; the backlog keeps growing meanwhile
            # First batches in the fair order, then each partition's backlog, in order.
            batches = [self._take(pq) for pq, _ in plan]
            for pq, taken in plan:
                batches.extend(self._take(pq) for _ in range(taken - 1))
            if leader_epoch_for is not None:
                for batch in batches:
                    batch.leader_epoch = leader_epoch_for(batch.tp)
            requests[leader] = batches
            in_flight[leader] = in_flight.get(leader, 0) + 1
        self._drain_start = start + 1
        return requests, leader_unknown

    @staticmethod
    def _leader_moved(pq: PartitionQueue, epoch: int) -> bool:
        """A newer leader epoch is known: the batches that failed on the old leader go now."""
        if epoch < 0 or epoch <= pq.batches[0].leader_epoch:
            return False
        for batch in pq.batches:
            if batch.awaiting_leader_change and batch.leader_epoch < epoch:
                batch.retry_at_ms = 0
                batch.awaiting_leader_change = False
        return True

    def _take(self, pq: PartitionQueue) -> ProducerBatch:
        batch = pq.batches.popleft()
        if self.idempotence is not None:
            self.idempotence.on_send(batch)  # numbered before its bytes are built
        batch.build()
        batch.in_flight = True
        batch.retry_at_ms = 0
        batch.awaiting_leader_change = False
        batch.attempts += 1
        pq.in_flight += 1
        return batch

    def request_done(self, broker_id: int) -> None:
        """A request drained for ``broker_id`` got its answer (or failed)."""
        left = self._in_flight.get(broker_id, 0) - 1
        if left > 0:
            self._in_flight[broker_id] = left
        else:
            self._in_flight.pop(broker_id, None)

    def in_flight_requests(self, broker_id: int) -> int:
        return self._in_flight.get(broker_id, 0)

    def next_ready_ms(self, now_ms: int) -> int | None:
        """When a queued batch next becomes ready or expires, for the sender's timer.

        Batches that are ready but blocked (no leader, broker at its in-flight limit) are left
        out: what unblocks them (a metadata update, a response) wakes the sender anyway.
        """
        earliest: int | None = None
        for pq in self._queues:
            dq = pq.batches
            if not dq:
                continue
            batch = dq[0]
            expiry = batch.created_ms + self.delivery_timeout_ms
            if self._sendable(batch, len(dq), now_ms):
                due = expiry
            elif batch.retry_at_ms:
                due = min(batch.retry_at_ms, expiry)
            else:
                due = min(batch.created_ms + self.linger_ms, expiry)
            if earliest is None or due < earliest:
                earliest = due
        return earliest

    def has_queued(self) -> bool:
        return any(pq.batches for pq in self._queues)

    # ---- completion, retry, expiry -------------------------------------------------------

    def _settle(self, batch: ProducerBatch) -> None:
        if batch.in_flight:
            batch.in_flight = False
            self.queue(*batch.tp).in_flight -= 1
        if batch in self.incomplete:
            self.incomplete.discard(batch)
            self.free_bytes += batch.reserved_bytes

    def complete(self, batch: ProducerBatch, base_offset: int, log_append_time_ms: int = -1) -> bool:
        """Acknowledge a batch and free its memory; False if it was already done."""
        self._settle(batch)
        return batch.complete(base_offset, log_append_time_ms)

    def fail(self, batch: ProducerBatch, error: KafkaError) -> bool:
        """Fail a batch (not retriable, or out of time) and free its memory."""
        self._settle(batch)
        return batch.fail(error)

    def backoff_ms(self, attempts: int) -> int:
        """Kafka's exponential retry backoff (KIP-580): base * 2^(attempts-1), capped, 20% jitter."""
        backoff = self.retry_backoff_ms * (1 << min(max(attempts - 1, 0), 30))
        backoff = min(backoff, self.retry_backoff_max_ms)
        if self._random is not None and backoff > 0:
            backoff = int(backoff * (0.8 + 0.4 * self._random.random()))
        return max(backoff, 1)

    def reenqueue(self, batch: ProducerBatch, now_ms: int, leader_moved: bool = False, backoff: bool = True) -> None:
        """Put a batch that failed retriably back, in creation order, due after its backoff.

        ``leader_moved``: the error says the leader may have changed (NOT_LEADER_OR_FOLLOWER,
        FENCED_LEADER_EPOCH, an unreachable broker...); the backoff ends early once metadata
        shows a newer leader epoch than the one the batch was sent to (see :meth:`drain`).
        """
        pq = self.queue(*batch.tp)
        if batch.in_flight:
            batch.in_flight = False
            pq.in_flight -= 1
        # Without backoff (a batch that overtook its predecessor): 0 is "ready", as for a new batch.
        batch.retry_at_ms = now_ms + self.backoff_ms(batch.attempts) if backoff else 0
        batch.awaiting_leader_change = leader_moved
        dq = pq.batches
        # Retried batches sit at the front; insert before the first younger batch.
        index = 0
        for queued in dq:
            if queued.sequence > batch.sequence:
                break
            index += 1
        dq.insert(index, batch)

    def delivery_deadline_passed(self, batch: ProducerBatch, now_ms: int) -> bool:
        return now_ms - batch.created_ms >= self.delivery_timeout_ms

    def expire(self, now_ms: int) -> list[ProducerBatch]:
        """Fail queued batches older than ``delivery.timeout.ms`` (Kafka's TimeoutException).

        Batches in flight are left to their request: it answers or times out within
        ``request.timeout.ms``, and then a retry past the deadline fails instead.
        """
        expired = []
        for pq in self._queues:
            dq = pq.batches
            while dq and now_ms - dq[0].created_ms >= self.delivery_timeout_ms:
                batch = dq.popleft()
                batch.full = True
                elapsed = now_ms - batch.created_ms
                message = (f"expiring {batch.record_count} record(s) for {pq.tp}: {elapsed} ms has "
                           f"passed since batch creation (delivery.timeout.ms={self.delivery_timeout_ms})")
                self.fail(batch, self.expiry_error(batch, message))
                expired.append(batch)
        return expired

    @staticmethod
    def expiry_error(batch: ProducerBatch, message: str) -> KafkaError:
        """The error a batch fails with when its delivery timeout ends its retries.

        Kafka reports a TimeoutException (REQUEST_TIMED_OUT) here. brokerlab reports the code of
        the last failed attempt when there was one, so a send refused by NOT_ENOUGH_REPLICAS
        until the timeout fails with NOT_ENOUGH_REPLICAS; a batch never tried (no leader, say)
        still fails with REQUEST_TIMED_OUT.
        """
        last = batch.last_error
        if last is None:
            return KafkaError(ErrorCode.REQUEST_TIMED_OUT, message)
        return KafkaError(last.code, f"{message}; last error: {last}")

    def abort_all(self, error: KafkaError) -> list[ProducerBatch]:
        """Fail every incomplete batch, queued or in flight (a forced close)."""
        for pq in self._queues:
            pq.batches.clear()
        aborted = [batch for batch in list(self.incomplete) if not batch.done]
        for batch in aborted:
            self.fail(batch, error)
        return aborted

    # ---- flush and close -----------------------------------------------------------------

    def begin_flush(self) -> None:
        self.flushes_in_progress += 1

    def end_flush(self) -> None:
        self.flushes_in_progress -= 1

    def close(self) -> None:
        """No more appends; everything queued is ready at once."""
        self.closed = True
