"""Consumer end to end against fake gRPC brokers: assign, seek, poll, position, leader moves."""

from __future__ import annotations

import asyncio

import pytest
from client_fakes import FakeCluster

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from client import Consumer, ConsumerRecord

TP0 = TopicPartition("orders", 0)
TP1 = TopicPartition("orders", 1)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def poll_until(consumer, count, timeout_s=10.0):
    records = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(records) < count:
        assert asyncio.get_running_loop().time() < deadline, f"got {len(records)} of {count} records"
        records.extend(await consumer.poll(timeout_ms=500))
    return records


async def cluster_with_orders():
    cluster = await FakeCluster(2).start()
    cluster.state.create_topic("orders", 2, [1, 2])  # partition 0 on broker 1, 1 on broker 2
    return cluster


def test_assign_seek_to_beginning_poll_and_positions():
    async def scenario():
        cluster = await cluster_with_orders()
        for i in range(3):
            cluster.state.append("orders", 0, [f"a{i}-{j}".encode() for j in range(10)])
        cluster.state.append("orders", 1, [b"b0", None], key=b"k")
        consumer = Consumer(cluster.bootstrap, value_deserializer="str", key_deserializer="str",
                            max_poll_records=7, fetch_max_wait_ms=100)
        try:
            consumer.assign([TP0, TP1])
            assert consumer.assignment() == {TP0, TP1}
            await consumer.seek_to_beginning()
            assert await consumer.position(TP0) == 0
            first = await consumer.poll(timeout_ms=5_000)
            assert 0 < len(first) <= 7  # max_poll_records
            records = first + await poll_until(consumer, 32 - len(first))
            by_partition = {0: [], 1: []}
            for r in records:
                assert isinstance(r, ConsumerRecord)
                by_partition[r.partition].append(r)
            assert [r.offset for r in by_partition[0]] == list(range(30))
            assert by_partition[0][12].value == "a1-2"
            assert [(r.key, r.value, r.offset) for r in by_partition[1]] == [("k", "b0", 0), ("k", None, 1)]
            assert await consumer.position(TP0) == 30
            assert await consumer.position(TP1) == 2
            assert await consumer.poll(timeout_ms=50) == []
            # New data arrives while a long-poll is parked: it is delivered.
            cluster.state.append("orders", 0, [b"late"])
            (late,) = await poll_until(consumer, 1)
            assert (late.offset, late.value) == (30, "late")
            consumer.seek(TP0, 5)
            again = await poll_until(consumer, 1)
            assert again[0].offset == 5 and again[0].partition == 0
        finally:
            await consumer.close()
            await cluster.stop()

    run(scenario())


def test_latest_default_and_seek_to_end_only_see_new_records():
    async def scenario():
        cluster = await cluster_with_orders()
        cluster.state.append("orders", 0, [b"old"] * 5)
        consumer = Consumer(cluster.bootstrap, fetch_max_wait_ms=100)
        try:
            consumer.assign([TP0])
            assert await consumer.position(TP0) == 5  # auto.offset.reset=latest
            cluster.state.append("orders", 0, [b"new"])
            (record,) = await poll_until(consumer, 1)
            assert (record.offset, record.value) == (5, b"new")
            cluster.state.append("orders", 0, [b"skipped"] * 3)
            await consumer.seek_to_end(TP0)
            assert await consumer.position(TP0) == 9
        finally:
            await consumer.close()
            await cluster.stop()

    run(scenario())


def test_out_of_range_resets_to_earliest_or_raises_with_none():
    async def scenario():
        cluster = await cluster_with_orders()
        cluster.state.append("orders", 0, [b"x"] * 4)
        earliest = Consumer(cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50)
        strict = Consumer(cluster.bootstrap, auto_offset_reset="none", fetch_max_wait_ms=50)
        try:
            earliest.assign([TP0])
            earliest.seek(TP0, 100)
            records = await poll_until(earliest, 4)
            assert [r.offset for r in records] == [0, 1, 2, 3]

            strict.assign([TP0])
            with pytest.raises(KafkaError) as info:
                await strict.position(TP0)  # no position and no reset policy
            assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
            strict.seek(TP0, 100)
            with pytest.raises(KafkaError) as info:
                await poll_until(strict, 1)
            assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
            strict.seek(TP0, 2)
            assert [r.offset for r in await poll_until(strict, 2)] == [2, 3]
        finally:
            await earliest.close()
            await strict.close()
            await cluster.stop()

    run(scenario())


def test_leader_move_is_followed_after_not_leader_or_follower():
    async def scenario():
        cluster = await cluster_with_orders()
        cluster.state.append("orders", 0, [b"before"] * 3)
        consumer = Consumer(cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                            retry_backoff_ms=20)
        try:
            consumer.assign([TP0])
            assert len(await poll_until(consumer, 3)) == 3
            cluster.state.move_leader("orders", 0, 2)  # broker 1 now answers NOT_LEADER_OR_FOLLOWER
            cluster.state.append("orders", 0, [b"after"] * 2)
            records = await poll_until(consumer, 2)
            assert [(r.offset, r.value) for r in records] == [(3, b"after"), (4, b"after")]
            assert ("broker-2", "Fetch") in cluster.state.calls
            assert await consumer.position(TP0) == 5
        finally:
            await consumer.close()
            await cluster.stop()

    run(scenario())


def test_a_broker_that_dies_and_returns_is_fetched_from_again():
    async def scenario():
        cluster = await cluster_with_orders()
        consumer = Consumer(cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                            retry_backoff_ms=20)
        try:
            consumer.assign([TP1])
            cluster.state.append("orders", 1, [b"one"])
            assert len(await poll_until(consumer, 1)) == 1
            await cluster.stop_broker(2)
            assert await consumer.poll(timeout_ms=200) == []  # fetches fail; no error for retriable ones
            cluster.state.append("orders", 1, [b"two"])
            await cluster.start_broker(2)  # same port
            (record,) = await poll_until(consumer, 1)
            assert (record.offset, record.value) == (1, b"two")
        finally:
            await consumer.close()
            await cluster.stop()

    run(scenario())


def test_closed_consumer_refuses_work_and_bad_config_is_rejected():
    async def scenario():
        consumer = Consumer("127.0.0.1:1")
        await consumer.close()
        with pytest.raises(KafkaError):
            await consumer.poll()
        with pytest.raises(ValueError):
            Consumer("127.0.0.1:1", auto_offset_reset="smallest")
        with pytest.raises(ValueError):
            Consumer("127.0.0.1:1").seek(TP0, 1)  # not assigned

    run(scenario())


def test_position_on_a_missing_topic_times_out_naming_the_metadata_error():
    async def scenario():
        cluster = await cluster_with_orders()
        consumer = Consumer(cluster.bootstrap, request_timeout_ms=300, retry_backoff_ms=20)
        try:
            consumer.assign([TopicPartition("ghost", 0)])
            with pytest.raises(KafkaError) as info:
                await consumer.position(TopicPartition("ghost", 0))
            assert info.value.code == ErrorCode.REQUEST_TIMED_OUT
            assert "ghost: UNKNOWN_TOPIC_OR_PARTITION" in info.value.message
        finally:
            await consumer.close()
            await cluster.stop()

    run(scenario())
