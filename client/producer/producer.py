"""The asyncio Producer: serializers, partitioner and accumulator in ``send``, a sender task.

``send`` does the per-record work in the caller's task (serialize, pick a partition, encode
into the open batch) and returns a light :class:`RecordHandle`; a background task runs the
sans-IO :class:`SenderCore`: it drains batches when they fill up or linger expires, issues one
``Produce`` call per leader broker through ``ClusterLink`` (up to
``max_in_flight_requests_per_connection`` per broker), feeds the answers back, and refreshes
metadata when the core asks. Every record of a batch resolves when the batch does.

Idempotence (Kafka 3.0+ default): ``enable_idempotence=None`` turns it on unless ``acks`` is not
``all`` or more than 5 requests may be in flight per broker, where it is quietly off (Kafka's
rule since 3.0.1); ``True`` insists and raises ValueError on those settings; ``False`` keeps the
plain producer, whose retries may write a record twice (the lab shows it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from brokerlab.errors import ErrorCode, KafkaError, error_name
from brokerlab.ids import broker_id_of
from brokerlab.sansio import Effects, Envelope
from client.producer.accumulator import BufferExhaustedError, NoBufferSpace, RecordAccumulator
from client.producer.batch import ProducerBatch, RecordMetadata
from client.producer.idempotence import IdempotenceManager, resolve_idempotence
from client.producer.partitioner import RoundRobinPartitioner, StickyPartitioner, partition_for_key
from client.producer.sender import SenderCore, parse_acks
from client.rpc.cluster_link import ClusterLink
from client.serde import Serializer, serializer

log = logging.getLogger("brokerlab.producer")
PARTITIONERS = ("default", "round_robin")
_producer_ids = iter(range(1, 1 << 62))


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _batch_future(batch: ProducerBatch) -> asyncio.Future:
    """One future per batch, made on the first await of one of its records."""
    future = batch.waiter
    if future is None:
        future = batch.waiter = asyncio.get_running_loop().create_future()
        batch.add_done_callback(_resolve_batch_future)
    return future


def _resolve_batch_future(batch: ProducerBatch) -> None:
    future = batch.waiter
    if future is not None and not future.done():
        future.set_result(None)  # the outcome is read from the batch, never raised here


class RecordHandle:
    """What ``send`` returns: ``await handle`` -> RecordMetadata, or raises KafkaError."""

    __slots__ = ("_batch", "_index", "topic", "partition", "timestamp_ms")

    def __init__(self, batch: ProducerBatch, index: int, topic: str, partition: int, timestamp_ms: int) -> None:
        self._batch = batch
        self._index = index
        self.topic = topic
        self.partition = partition
        self.timestamp_ms = timestamp_ms

    def __await__(self):
        batch = self._batch
        if not batch.done:
            yield from _batch_future(batch).__await__()
        return batch.metadata(self._index, self.timestamp_ms)

    def __repr__(self) -> str:
        return f"<RecordHandle {self.topic}-{self.partition} #{self._index} done={self._batch.done}>"

    def done(self) -> bool:
        return self._batch.done

    def result(self) -> RecordMetadata:
        """The metadata of a completed send; raises its KafkaError, or InvalidStateError if pending."""
        if not self._batch.done:
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        return self._batch.metadata(self._index, self.timestamp_ms)

    def exception(self) -> KafkaError | None:
        if not self._batch.done:
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        return self._batch.error

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordHandle) and other._batch is self._batch and other._index == self._index

    def __hash__(self) -> int:
        return hash((id(self._batch), self._index))

    def add_done_callback(self, callback: Callable[["RecordHandle"], Any]) -> None:
        """``callback(handle)`` once the record is acknowledged or failed, in the event loop.

        Unlike asyncio's, it runs right when the batch completes (at once if already done), which
        saves a loop round trip per record; an exception it raises is logged, not propagated.
        The handle passed may be a new object equal to this one (same batch and index): the
        batch keeps ``[callback, index, timestamp, ...]`` flat instead of a closure per record,
        because thousands of live per-record objects make the garbage collector cost more than
        the rest of ``send``.
        """
        batch = self._batch
        if batch.done:
            _run_callback(callback, self)
            return
        entries = batch.record_callbacks
        if entries is None:
            entries = batch.record_callbacks = []
            batch.add_done_callback(_run_record_callbacks)
        entries += (callback, self._index, self.timestamp_ms)


def _run_callback(callback: Callable[[RecordHandle], Any], handle: RecordHandle) -> None:
    try:
        callback(handle)
    except Exception:
        log.exception("a send callback raised")


def _run_record_callbacks(batch: ProducerBatch) -> None:
    entries, batch.record_callbacks = batch.record_callbacks, None
    topic, partition = batch.tp
    for i in range(0, len(entries), 3):
        _run_callback(entries[i], RecordHandle(batch, entries[i + 1], topic, partition, entries[i + 2]))


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"the {what} must be bytes (or pass a {what}_serializer), not {type(data).__name__}")


def _normalize_headers(headers: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> tuple:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for name, value in items:
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif value is not None and type(value) is not bytes:
            value = _as_bytes(value, "header value")
        out.append((str(name), value))
    return tuple(out)


def _resolve_serializer(value: Serializer | str | None) -> Serializer | None:
    return serializer(value) if isinstance(value, str) else value


class Producer:
    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        acks: str | int = "all",
        batch_size: int = 16384,
        linger_ms: int = 5,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60_000,
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1000,
        max_in_flight_requests_per_connection: int = 5,
        partitioner: str = "default",
        key_serializer: Serializer | str | None = None,
        value_serializer: Serializer | str | None = None,
        client_id: str | None = None,
        max_request_size: int = 1024 * 1024,
        metadata_max_age_ms: int = 300_000,
        pipeline_min_bytes: int = 256 * 1024,
        enable_idempotence: bool | None = None,
        link: Any = None,
    ) -> None:
        if partitioner not in PARTITIONERS:
            raise ValueError(f"partitioner must be one of {', '.join(PARTITIONERS)}, not {partitioner!r}")
        if batch_size < 1 or buffer_memory < batch_size or max_in_flight_requests_per_connection < 1:
            raise ValueError("need batch_size >= 1, buffer_memory >= batch_size, max_in_flight >= 1")
        if delivery_timeout_ms < linger_ms + request_timeout_ms:
            # Kafka's rule, so a batch gets at least one full attempt.
            raise ValueError("delivery_timeout_ms must be at least linger_ms + request_timeout_ms")
        self.idempotent = resolve_idempotence(enable_idempotence, parse_acks(acks),
                                              max_in_flight_requests_per_connection)
        self.client_id = client_id or f"producer-{next(_producer_ids)}"
        self._bootstrap = bootstrap
        self._link = link
        self._owns_link = link is None
        self._max_block_ms = max_block_ms
        self._request_timeout_ms = request_timeout_ms
        self._retry_backoff_ms = retry_backoff_ms
        self._metadata_max_age_ms = metadata_max_age_ms
        self._key_serializer = _resolve_serializer(key_serializer)
        self._value_serializer = _resolve_serializer(value_serializer)
        self._random = random.Random()
        self._acc = RecordAccumulator(
            batch_size=batch_size,
            linger_ms=linger_ms,
            buffer_memory=buffer_memory,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            max_in_flight_per_broker=max_in_flight_requests_per_connection,
            max_request_size=max_request_size,
            pipeline_min_bytes=pipeline_min_bytes,
            random=self._random,
            idempotence=IdempotenceManager() if self.idempotent else None,
        )
        self._acks = parse_acks(acks)
        self._sticky = StickyPartitioner(batch_size, self._random)
        self._round_robin = RoundRobinPartitioner() if partitioner == "round_robin" else None
        self._core: SenderCore | None = None
        self._topics: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        self._sender_task: asyncio.Task | None = None
        self._rpc_tasks: set[asyncio.Task] = set()
        self._refresh_task: asyncio.Task | None = None
        self._next_refresh_ms = 0
        self._wakeup: asyncio.Future | None = None
        self._woken = False
        self._memory_freed: asyncio.Future | None = None
        self._closed = False
        self._stopping = False
        # Set once sends must fail (closed, or the sender task died): one check on the hot path.
        self._refusal: KafkaError | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> "Producer":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the sender task (``send`` does it on first use too)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._sender_task is not None:
            return
        if self._link is None:
            self._link = ClusterLink(self._bootstrap, self._metadata_max_age_ms, self._request_timeout_ms)
        self._core = SenderCore(
            self._acc, self._link.cache, acks=self._acks,
            request_timeout_ms=self._request_timeout_ms, node=f"client-{self.client_id}",
        )
        self._sender_task = asyncio.get_running_loop().create_task(self._run_sender())

    async def flush(self) -> None:
        """Send everything buffered now (ignoring linger) and wait until each record is settled."""
        self._ensure_started()
        acc = self._acc
        acc.begin_flush()
        self._wake()
        try:
            for batch in list(acc.incomplete):
                if not batch.done:
                    await _batch_future(batch)
        finally:
            acc.end_flush()

    async def close(self, timeout_ms: int | None = None) -> None:
        """Deliver what is buffered (waiting up to ``timeout_ms``, default without limit), then stop.

        Records still unsettled at the timeout fail with a KafkaError.
        """
        if self._closed:
            return
        self._closed = True
        self._refusal = self._refusal or KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, "send after the producer was closed")
        if self._sender_task is not None:
            loop = asyncio.get_running_loop()
            deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000
            self._acc.close()
            self._wake()
            try:
                await asyncio.wait_for(self._settle_all(), None if timeout_ms is None else timeout_ms / 1000)
            except asyncio.TimeoutError:
                self._acc.abort_all(KafkaError(ErrorCode.REQUEST_TIMED_OUT, "the producer closed before delivery"))
            self._stopping = True
            self._wake()
            await asyncio.gather(self._sender_task, return_exceptions=True)
            # acks=0 settles a batch when it is handed to the network, so its Produce call may still
            # be under way: let in-flight calls finish (bounded) instead of cancelling them unsent.
            # Bounded by request.timeout.ms and by what is left of the caller's close timeout.
            wait_s = self._request_timeout_ms / 1000
            if deadline is not None:
                wait_s = min(wait_s, deadline - loop.time())
            if self._rpc_tasks and wait_s > 0:
                await asyncio.wait(list(self._rpc_tasks), timeout=wait_s)
            for task in list(self._rpc_tasks) + ([self._refresh_task] if self._refresh_task else []):
                task.cancel()
            await asyncio.gather(*self._rpc_tasks, return_exceptions=True)
        if self._owns_link and self._link is not None:
            await self._link.close()

    async def _settle_all(self) -> None:
        while self._acc.incomplete:
            batch = next(iter(self._acc.incomplete))
            await _batch_future(batch)

    # ---- send (the hot path) -------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        partition: int | None = None,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordHandle:
        """Buffer one record; returns at once (unless waiting for metadata or buffer memory)."""
        if self._sender_task is None or self._refusal is not None:
            self._check_can_send()
        if self._value_serializer is not None:
            value = self._value_serializer(value)
        elif value is not None and type(value) is not bytes:
            value = _as_bytes(value, "value")
        if key is not None:
            if self._key_serializer is not None:
                key = self._key_serializer(key)
            elif type(key) is not bytes:
                key = _as_bytes(key, "key")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        headers = _normalize_headers(headers) if headers else ()
        info = self._topics.get(topic)
        if info is None or info[0] != self._link.cache.update_count:
            info = await self._topic_info(topic)
        _, num_partitions, available = info
        sticky = False
        if partition is None:
            if self._round_robin is not None:
                partition = self._round_robin.partition(topic, num_partitions, available)
            elif key is None:
                partition = self._sticky.partition(topic, num_partitions, available)
                sticky = True
            else:
                partition = partition_for_key(key, num_partitions)
        elif not 0 <= partition < num_partitions:
            raise KafkaError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"partition {partition} is not in [0, {num_partitions}) for topic {topic!r}",
            )
        acc = self._acc
        try:
            batch = acc.append(topic, partition, timestamp_ms, key, value, headers)
            if batch is None:  # the record needs a new batch
                if sticky:
                    partition = self._sticky.on_new_batch(
                        topic, partition, acc.appended_bytes(topic, partition), num_partitions, available
                    )
                batch = acc.append(topic, partition, timestamp_ms, key, value, headers, self._link.now_ms())
        except NoBufferSpace:
            batch = await self._append_when_memory_frees(topic, partition, timestamp_ms, key, value, headers)
        if acc.wakeup:
            # A batch opened or filled: let the sender task run (a tight send loop never yields).
            acc.wakeup = False
            self._wake()
            await asyncio.sleep(0)
        return RecordHandle(batch, batch.record_count - 1, topic, partition, timestamp_ms)

    def _check_can_send(self) -> None:
        refusal = self._refusal
        if refusal is not None:
            raise KafkaError(refusal.code, refusal.message)  # a fresh one: tracebacks don't pile up
        self._ensure_started()

    async def _topic_info(self, topic: str) -> tuple[int, int, tuple[int, ...]]:
        """Partition count and partitions with a leader, waiting up to max.block.ms for metadata."""
        cache = self._link.cache
        cache.add_topics([topic])
        deadline = self._link.now_ms() + self._max_block_ms
        while True:
            partitions = cache.partitions_for(topic)
            if partitions:
                available = tuple(p.partition for p in partitions if p.leader_id >= 0)
                info = (cache.update_count, len(partitions), available)
                self._topics[topic] = info
                return info
            remaining_ms = deadline - self._link.now_ms()
            if remaining_ms <= 0:
                code = cache.topic_errors.get(topic, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                raise KafkaError(
                    code, f"topic {topic!r} not present in metadata after {self._max_block_ms} ms"
                )
            try:
                await asyncio.wait_for(self._link.refresh_metadata(cache.wanted_topics()), remaining_ms / 1000)
            except (KafkaError, asyncio.TimeoutError) as exc:
                log.debug("metadata refresh for %s failed: %s", topic, exc)
            if not cache.partitions_for(topic):
                await asyncio.sleep(min(self._retry_backoff_ms, max(remaining_ms, 0)) / 1000)

    async def _append_when_memory_frees(self, topic, partition, timestamp_ms, key, value, headers) -> ProducerBatch:
        """buffer.memory is used up: wait for batches to complete, up to max.block.ms."""
        acc = self._acc
        loop = asyncio.get_running_loop()
        deadline = self._link.now_ms() + self._max_block_ms
        acc.waiting_for_memory += 1  # makes every batch ready at once, like Kafka
        self._wake()
        try:
            while True:
                remaining_ms = deadline - self._link.now_ms()
                if remaining_ms <= 0:
                    raise BufferExhaustedError(self._max_block_ms, acc.buffer_memory)
                if self._memory_freed is None:
                    self._memory_freed = loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(self._memory_freed), remaining_ms / 1000)
                except asyncio.TimeoutError:
                    continue
                if self._refusal is not None:
                    self._check_can_send()
                try:
                    return acc.append(topic, partition, timestamp_ms, key, value, headers, self._link.now_ms())
                except NoBufferSpace:
                    continue
        finally:
            acc.waiting_for_memory -= 1

    # ---- the sender task -----------------------------------------------------------------

    def _wake(self) -> None:
        self._woken = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _run_sender(self) -> None:
        loop = asyncio.get_running_loop()
        core = self._core
        link = self._link
        try:
            while not self._stopping:
                self._woken = False
                now_ms = link.now_ms()
                self._execute(core.tick(now_ms))
                self._maybe_refresh_metadata(now_ms)
                if self._woken:
                    await asyncio.sleep(0)
                    continue
                deadline_ms = core.next_deadline_ms()
                if self._refresh_task is None and link.cache.needs_update(now_ms):
                    # A refresh is due but rate-limited: come back when it may run.
                    if deadline_ms is None or self._next_refresh_ms < deadline_ms:
                        deadline_ms = self._next_refresh_ms
                self._wakeup = loop.create_future()
                timer = None
                if deadline_ms is not None:
                    delay_ms = max(deadline_ms - link.now_ms(), 0)
                    # A cheap floor so a deadline "now" that nothing can act on does not spin.
                    timer = loop.call_later(max(delay_ms, 1) / 1000, self._wake)
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                    if timer is not None:
                        timer.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave callers waiting forever
            log.exception("producer sender task failed")
            self._refusal = KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, f"the producer's sender failed: {exc!r}")
            self._acc.abort_all(self._refusal)
            self._notify_memory()

    def _execute(self, effects: Effects) -> None:
        if effects.sends:
            loop = asyncio.get_running_loop()
            for envelope in effects.sends:
                task = loop.create_task(self._call(envelope))
                self._rpc_tasks.add(task)
                task.add_done_callback(self._rpc_tasks.discard)
        if effects.events and log.isEnabledFor(logging.DEBUG):
            for event in effects.events:
                log.debug("event=%s %s", event.name, " ".join(f"{k}={v}" for k, v in event.fields.items()))
        fatal = self._core.fatal_error
        if fatal is not None and self._refusal is None:
            self._refusal = fatal  # e.g. no broker will give us a producer id
        self._notify_memory()

    def _notify_memory(self) -> None:
        freed = self._memory_freed
        if freed is not None and not freed.done():
            self._memory_freed = None
            freed.set_result(None)

    async def _call(self, envelope: Envelope) -> None:
        """Execute one send of the core (Produce, InitProducerId); feed the answer (or the failure) back."""
        try:
            response = await self._link.call_broker(
                broker_id_of(envelope.dst), envelope.rpc, envelope.message, timeout_ms=self._request_timeout_ms
            )
            answer = envelope.reply(response)
        except KafkaError as exc:
            answer = envelope.failed(f"{error_name(int(exc.code))}: {exc.message}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the call settles its batches, never hangs them
            answer = envelope.failed(f"NETWORK_EXCEPTION: {exc!r}")
        self._execute(self._core.step(answer, self._link.now_ms()))
        self._wake()

    def _maybe_refresh_metadata(self, now_ms: int) -> None:
        cache = self._link.cache
        if self._refresh_task is not None or now_ms < self._next_refresh_ms or not cache.needs_update(now_ms):
            return
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_metadata())

    async def _refresh_metadata(self) -> None:
        try:
            await self._link.refresh_metadata(self._link.cache.wanted_topics() or None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # KafkaError, or the link closing under us: try again later
            log.debug("metadata refresh failed: %s", exc)
        finally:
            # At most one refresh per retry.backoff.ms, so a leaderless partition does not spin.
            self._next_refresh_ms = self._link.now_ms() + self._retry_backoff_ms
            self._refresh_task = None
            self._wake()

