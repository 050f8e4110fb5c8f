"""The asyncio Producer and SyncProducer against an in-process fake ClusterLink (no sockets)."""

from __future__ import annotations

import asyncio
import time

import pytest

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.record_batch import decode_records, validate_batches
from brokerlab.v1 import broker_pb2, common_pb2
from client import BufferExhaustedError, Producer, RecordMetadata
from client.metadata import MetadataCache
from client.producer.partitioner import partition_for_key
from client.sync import SyncProducer


class FakeLink:
    """ClusterLink's surface the producer uses; Produce answers from an in-memory log."""

    def __init__(self, partitions: int = 6, brokers=(1, 2, 3)) -> None:
        self.cache = MetadataCache()
        self.partitions = partitions
        self.brokers = brokers
        self.leaders = {p: brokers[p % len(brokers)] for p in range(partitions)}
        self.logs: dict[int, list] = {p: [] for p in range(partitions)}
        self.refreshes = 0
        self.producer_ids = 0
        self.calls: list[tuple[int, broker_pb2.ProduceRequest]] = []
        self.gate: asyncio.Event | None = None  # when set up, Produce waits for it
        self.errors: list[tuple[int, int]] = []  # (partition, error code) answered once each
        self.closed = False
        # partition -> refresh count after which it gets its leader back (leader -1 until then)
        self.leaderless_until: dict[int, int] = {}

    def now_ms(self) -> int:
        return int(time.monotonic() * 1000)

    async def refresh_metadata(self, topics=None) -> None:
        self.refreshes += 1
        for partition, until in list(self.leaderless_until.items()):
            self.leaders[partition] = -1 if self.refreshes <= until else self.brokers[0]
        response = broker_pb2.MetadataResponse(cluster_id="c", controller_id=0)
        for b in self.brokers:
            response.brokers.add(broker_id=b, endpoint=common_pb2.Endpoint(host="127.0.0.1", port=9000 + b))
        for name in topics or ["orders"]:
            if name != "orders":
                response.topics.add(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            t = response.topics.add(name="orders", topic_id="id")
            for p in range(self.partitions):
                t.partitions.add(partition=p, leader_id=self.leaders[p], leader_epoch=self.refreshes,
                                 replicas=[self.leaders[p]], isr=[self.leaders[p]])
        self.cache.update(response, self.now_ms())

    async def call_broker(self, broker_id, rpc, request, timeout_ms=None):
        if rpc == "InitProducerId":  # an idempotent producer (the default with acks=all) asks first
            self.producer_ids += 1
            return broker_pb2.InitProducerIdResponse(producer_id=1000 + self.producer_ids, producer_epoch=0)
        assert rpc == "Produce"
        self.calls.append((broker_id, request))
        if self.gate is not None:
            await self.gate.wait()
        response = broker_pb2.ProduceResponse()
        for data in request.partitions:
            out = response.partitions.add(topic=data.topic, partition=data.partition, log_append_time_ms=-1)
            injected = next((e for e in self.errors if e[0] == data.partition), None)
            if injected is not None:
                self.errors.remove(injected)
                out.error_code = injected[1]
            elif self.leaders[data.partition] != broker_id:
                out.error_code = ErrorCode.NOT_LEADER_OR_FOLLOWER
            else:
                log = self.logs[data.partition]
                out.base_offset = len(log)
                header = validate_batches(data.records)[0]
                log.extend(decode_records(data.records))
                assert header.record_count > 0
        await asyncio.sleep(0)
        return response

    async def close(self) -> None:
        self.closed = True


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_send_returns_handles_that_resolve_with_offsets_per_partition() -> None:
    async def scenario():
        link = FakeLink()
        async with Producer("fake:1", link=link, linger_ms=1, batch_size=1000) as producer:
            handles = [await producer.send("orders", b"v%d" % i) for i in range(300)]
            results = [await h for h in handles]
        assert link.closed is False  # not ours to close
        return link, results

    link, results = run(scenario())
    assert all(isinstance(r, RecordMetadata) and r.topic == "orders" for r in results)
    by_partition: dict[int, list[int]] = {}
    for r in results:
        by_partition.setdefault(r.partition, []).append(r.offset)
    assert len(by_partition) > 1  # the sticky partitioner moved on after each batch's worth
    for partition, offsets in by_partition.items():
        assert offsets == list(range(len(offsets)))
        assert [rec.value for rec in link.logs[partition]] == [
            b"v%d" % i for i, r in enumerate(results) if r.partition == partition]


def test_keyed_records_follow_murmur2_and_serializers_apply() -> None:
    async def scenario():
        link = FakeLink()
        async with Producer("fake:1", link=link, key_serializer="str", value_serializer="json") as producer:
            handles = [await producer.send("orders", {"n": i}, key=f"user-{i % 10}") for i in range(50)]
            return link, [await h for h in handles]

    link, results = run(scenario())
    for i, r in enumerate(results):
        assert r.partition == partition_for_key(f"user-{i % 10}".encode(), 6)
    first = next(rec for rec in link.logs[results[0].partition])
    assert first.key == b"user-0" and first.value == b'{"n":0}'


def test_explicit_partition_headers_and_timestamp() -> None:
    async def scenario():
        link = FakeLink()
        async with Producer("fake:1", link=link) as producer:
            handle = await producer.send("orders", b"x", key=b"k", partition=4,
                                         headers=[("trace", b"abc"), ("text", "é")], timestamp_ms=1234)
            assert handle.partition == 4
            metadata = await handle
            with pytest.raises(KafkaError) as info:
                await producer.send("orders", b"x", partition=6)
            assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            with pytest.raises(TypeError, match="serializer"):
                await producer.send("orders", "not bytes")
        return link, metadata

    link, metadata = run(scenario())
    assert metadata == RecordMetadata("orders", 4, 0, 1234)
    record = link.logs[4][0]
    assert record.headers == (("trace", b"abc"), ("text", "é".encode()))
    assert record.timestamp_ms == 1234 and record.key == b"k"


def test_unknown_topic_fails_after_max_block_ms() -> None:
    async def scenario():
        async with Producer("fake:1", link=FakeLink(), max_block_ms=50, retry_backoff_ms=10) as producer:
            started = time.monotonic()
            with pytest.raises(KafkaError) as info:
                await producer.send("missing", b"x")
            return info.value, time.monotonic() - started

    error, elapsed = run(scenario())
    assert error.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and "50 ms" in error.message
    assert 0.04 <= elapsed < 5


def test_not_leader_refreshes_metadata_and_the_retry_lands() -> None:
    async def scenario():
        link = FakeLink()
        async with Producer("fake:1", link=link, retry_backoff_ms=5) as producer:
            await (await producer.send("orders", b"warm", partition=0))
            link.leaders[0] = 2  # the leader moved; the producer still thinks broker 1
            refreshes = link.refreshes
            metadata = await (await producer.send("orders", b"after-move", partition=0))
            return link, refreshes, metadata

    link, refreshes_before, metadata = run(scenario())
    assert metadata.offset == 1 and link.refreshes > refreshes_before
    assert [broker for broker, _ in link.calls] == [1, 1, 2]


def test_a_leaderless_partition_is_retried_through_rate_limited_metadata_refreshes() -> None:
    async def scenario():
        link = FakeLink()
        link.leaderless_until[0] = 3  # no leader in the first three answers
        async with Producer("fake:1", link=link, retry_backoff_ms=5) as producer:
            handle = await producer.send("orders", b"x", partition=0)
            metadata = await asyncio.wait_for(handle, 5)
        return link, metadata

    link, metadata = run(scenario())
    assert metadata.offset == 0 and link.refreshes >= 4
    assert [broker for broker, _ in link.calls] == [1]


def test_fatal_error_fails_the_records_of_the_batch_only() -> None:
    async def scenario():
        link = FakeLink()
        link.errors.append((1, ErrorCode.MESSAGE_TOO_LARGE))
        async with Producer("fake:1", link=link) as producer:
            bad = await producer.send("orders", b"a", partition=1)
            good = await producer.send("orders", b"b", partition=2)
            with pytest.raises(KafkaError) as info:
                await bad
            assert (await good).offset == 0
            assert bad.done() and bad.exception() is not None
            return info.value

    assert run(scenario()).code == ErrorCode.MESSAGE_TOO_LARGE


def test_buffer_memory_blocks_send_until_batches_complete() -> None:
    async def scenario():
        link = FakeLink()
        link.gate = asyncio.Event()
        async with Producer("fake:1", link=link, batch_size=200, buffer_memory=400, linger_ms=0,
                            max_block_ms=10_000) as producer:
            await producer.send("orders", b"a" * 100, partition=0)
            await producer.send("orders", b"b" * 100, partition=1)
            blocked = asyncio.ensure_future(producer.send("orders", b"c" * 100, partition=2))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not blocked.done()  # both batches hold all of buffer.memory
            link.gate.set()
            handle = await asyncio.wait_for(blocked, 5)
            return await handle

    assert run(scenario()).partition == 2


def test_buffer_exhausted_error_after_max_block_ms() -> None:
    async def scenario():
        link = FakeLink()
        link.gate = asyncio.Event()  # never opened: nothing completes
        producer = Producer("fake:1", link=link, batch_size=200, buffer_memory=400, max_block_ms=30)
        first = await producer.send("orders", b"a" * 100, partition=0)
        await producer.send("orders", b"b" * 100, partition=1)
        with pytest.raises(BufferExhaustedError) as info:
            await producer.send("orders", b"c" * 100, partition=2)
        await producer.close(timeout_ms=10)  # gives up on what is stuck
        with pytest.raises(KafkaError):
            await first
        with pytest.raises(KafkaError, match="closed"):
            await producer.send("orders", b"d")
        return info.value

    error = run(scenario())
    assert isinstance(error, KafkaError) and error.code == ErrorCode.REQUEST_TIMED_OUT
    assert "max.block.ms=30" in error.message and "buffer.memory=400" in error.message


def test_flush_sends_lingering_batches_at_once() -> None:
    async def scenario():
        link = FakeLink()
        async with Producer("fake:1", link=link, linger_ms=60_000) as producer:
            handles = [await producer.send("orders", b"x", partition=p) for p in range(3)]
            await asyncio.wait_for(producer.flush(), 5)
            assert all(h.done() for h in handles)
            return [h.result().offset for h in handles]

    assert run(scenario()) == [0, 0, 0]


def test_acks_zero_gives_offset_minus_one() -> None:
    async def scenario():
        async with Producer("fake:1", link=FakeLink(), acks=0) as producer:
            return await (await producer.send("orders", b"x", partition=0))

    assert run(scenario()).offset == -1


def test_callbacks_run_on_completion_and_a_raising_one_does_not_break_the_producer() -> None:
    async def scenario():
        link = FakeLink()
        seen = []
        async with Producer("fake:1", link=link) as producer:
            handle = await producer.send("orders", b"x", partition=0)
            handle.add_done_callback(lambda h: seen.append(h.result().offset))
            handle.add_done_callback(lambda h: 1 / 0)
            await producer.flush()
            later = await (await producer.send("orders", b"y", partition=0))
        return seen, later

    seen, later = run(scenario())
    assert seen == [0] and later.offset == 1


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="partitioner"):
        Producer("fake:1", link=FakeLink(), partitioner="hash")
    with pytest.raises(ValueError, match="acks"):
        Producer("fake:1", link=FakeLink(), acks=2)
    with pytest.raises(ValueError, match="delivery_timeout_ms"):
        Producer("fake:1", link=FakeLink(), delivery_timeout_ms=1000)


def test_round_robin_partitioner_spreads_keyed_records_too() -> None:
    async def scenario():
        async with Producer("fake:1", link=FakeLink(), partitioner="round_robin") as producer:
            handles = [await producer.send("orders", b"x", key=b"same") for _ in range(12)]
            return [h.partition for h in handles]

    assert run(scenario()) == [0, 1, 2, 3, 4, 5] * 2


def test_sync_producer() -> None:
    link = FakeLink()
    with SyncProducer("fake:1", link=link, linger_ms=1) as producer:
        handles = [producer.send("orders", b"v", partition=3) for _ in range(5)]
        assert [h.result(timeout=5).offset for h in handles] == [0, 1, 2, 3, 4]
        assert handles[0].done() and handles[0].exception() is None and handles[0].partition == 3
        producer.flush(timeout=5)
    assert len(link.logs[3]) == 5
