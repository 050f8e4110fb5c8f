"""Throughput and latency benchmarks through the real client (behind ``brokerlab bench``).

produce: ``records`` values of ``record_size`` bytes, no key (the sticky partitioner fills whole
batches), sent as fast as the producer accepts them; the clock runs from the first send to the
last acknowledgement. Latency is send -> acknowledgement, sampled on every ``sample_every``-th
record (sampling keeps the measuring cheap next to a ~2 us per record budget).

consume: all partitions of the topic from the earliest offset until ``records`` records arrived;
latency is the duration of each ``poll`` that returned records.

Figures: records/s, MiB/s (key + value bytes / 2**20 per second, as Kafka's perf tools print
"MB/sec"), latency p50/p99/max in ms. The result also names the settings that produced them
(batch size, linger, acks, the cluster's flush policy), because a figure without them means little.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition

MIB = 1024 * 1024
PROGRESS_INTERVAL_S = 2.0
CHECK_AT = 1 << 20  # handles kept before settled ones are checked and dropped (~100 MB)


@dataclass
class Latency:
    p50: float
    p99: float
    max: float


@dataclass
class BenchResult:
    kind: str  # "produce" | "consume"
    topic: str
    records: int
    bytes: int
    elapsed_s: float
    records_per_sec: float
    mb_per_sec: float
    latency_ms: Latency
    failed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    first_error: BaseException | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        error, self.first_error = self.first_error, None
        try:
            data = asdict(self)
        finally:
            self.first_error = error
        del data["first_error"]
        data.update(data.pop("settings"))
        return data


def percentiles(samples_ms: list[float]) -> Latency:
    if not samples_ms:
        return Latency(0.0, 0.0, 0.0)
    ordered = sorted(samples_ms)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(ordered[min(last, int(q * len(ordered)))], 3)

    return Latency(at(0.50), at(0.99), round(ordered[-1], 3))


def rates(records: int, total_bytes: int, elapsed_s: float) -> tuple[float, float]:
    elapsed_s = max(elapsed_s, 1e-9)
    return round(records / elapsed_s, 1), round(total_bytes / MIB / elapsed_s, 3)


async def bench_produce(
    bootstrap: list[str],
    topic: str,
    records: int,
    record_size: int,
    acks: str = "1",
    batch_size: int = 16384,
    linger_ms: int = 5,
    producer_factory: Callable[..., Any] | None = None,
    sample_every: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    producer_settings: dict | None = None,
    throughput: float = -1,
) -> BenchResult:
    """``throughput`` caps the send rate in records/s (Kafka's producer-perf-test ``--throughput``;
    -1 = as fast as possible), for latency at a given fraction of the peak."""
    if producer_factory is None:
        from client import Producer as producer_factory
    if records < 1 or record_size < 0:
        raise KafkaError(ErrorCode.INVALID_REQUEST, "--records must be >= 1 and --record-size >= 0")
    sample_every = sample_every or max(1, records // 20_000)
    value = os.urandom(record_size)
    latencies: list[float] = []
    failures: list[BaseException] = []
    now = time.perf_counter

    # Latency: a done-callback on sampled records only. Failures: every handle is kept and its
    # outcome read after the fact (a callback per record would cost more than the send itself);
    # settled handles are checked and dropped once CHECK_AT are kept, to bound memory.
    def timed(started: float) -> Callable[[Any], None]:
        def done(handle: Any) -> None:
            if handle.exception() is None:
                latencies.append((now() - started) * 1000)
        return done

    def check(handles: list, keep_pending: bool) -> list:
        pending = []
        for handle in handles:
            if keep_pending and not handle.done():
                pending.append(handle)
                continue
            error = handle.exception()
            if error is not None:
                failures.append(error)
        return pending

    settings = dict(acks=acks, batch_size=batch_size, linger_ms=linger_ms, client_id="brokerlab-bench",
                    **(producer_settings or {}))
    producer = producer_factory(bootstrap, **settings)
    handles: list = []
    # The kept handles are a million live objects: with the cyclic GC on, each collection walks
    # them all and the bench measures itself (~20 % of the figure). Refcounting still frees the
    # producer's garbage; timeit turns the GC off for the same reason.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # One record first, so metadata lookup and connection set-up stay out of the figures.
        await _completed(await producer.send(topic, value))
        started = last_report = now()
        send = producer.send
        keep = handles.append
        index = 0
        while index < records:
            # One timed record, then sample_every - 1 plain ones (the hot loop does nothing else).
            sent_at = now()
            handle = await send(topic, value)
            handle.add_done_callback(timed(sent_at))
            keep(handle)
            step = min(sample_every, records - index)
            for _ in range(step - 1):
                keep(await send(topic, value))
            index += step
            if throughput > 0:
                ahead_s = index / throughput - (now() - started)
                if ahead_s > 0:
                    await asyncio.sleep(ahead_s)
            if len(handles) >= CHECK_AT:
                handles[:] = check(handles, keep_pending=True)
            if progress is not None and now() - last_report >= PROGRESS_INTERVAL_S:
                last_report = now()
                progress(index, last_report - started)
        handle = handles[-1]
        await producer.flush()
        await _completed(handle)
        elapsed = now() - started
    finally:
        if gc_was_enabled:
            gc.enable()
        await producer.close()
    check(handles, keep_pending=False)
    records_per_sec, mb_per_sec = rates(records, records * record_size, elapsed)
    return BenchResult("produce", topic, records, records * record_size, round(elapsed, 3), records_per_sec,
                       mb_per_sec, percentiles(latencies), failed=len(failures),
                       settings={"record_size": record_size, "acks": acks, "batch_size": batch_size,
                                 "linger_ms": linger_ms, "idempotence": getattr(producer, "idempotent", None),
                                 "throughput": throughput},
                       first_error=failures[0] if failures else None)


async def _completed(handle: Any) -> None:
    """Wait for a delivery; its failure is counted by callbacks, not raised here."""
    try:
        await handle
    except KafkaError:
        pass


async def bench_consume(
    bootstrap: list[str],
    topic: str,
    records: int,
    partitions: int,
    consumer_factory: Callable[..., Any] | None = None,
    timeout_ms: int = 10_000,
    progress: Callable[[int, float], None] | None = None,
    consumer_settings: dict | None = None,
) -> BenchResult:
    """Read ``records`` records from the start of every partition (fails if they never come)."""
    if consumer_factory is None:
        from client import Consumer as consumer_factory
    settings = dict(client_id="brokerlab-bench", auto_offset_reset="earliest", **(consumer_settings or {}))
    consumer = consumer_factory(bootstrap, **settings)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    latencies: list[float] = []
    count = total_bytes = 0
    now = time.perf_counter
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = last_record = last_report = now()
        while count < records:
            before = now()
            batch = await consumer.poll(timeout_ms=min(500, timeout_ms))
            after = now()
            if not batch:
                if (after - last_record) * 1000 >= timeout_ms:
                    raise KafkaError(ErrorCode.REQUEST_TIMED_OUT,
                                     f"only {count} of {records} records in {topic} after {timeout_ms} ms without data")
                continue
            latencies.append((after - before) * 1000)
            last_record = after
            for record in batch:
                total_bytes += len(record.value or b"") + len(record.key or b"")
            count += len(batch)
            if progress is not None and after - last_report >= PROGRESS_INTERVAL_S:
                last_report = after
                progress(count, after - started)
        elapsed = now() - started
    finally:
        await consumer.close()
    records_per_sec, mb_per_sec = rates(count, total_bytes, elapsed)
    return BenchResult("consume", topic, count, total_bytes, round(elapsed, 3), records_per_sec, mb_per_sec,
                       percentiles(latencies), settings={"partitions": partitions})
