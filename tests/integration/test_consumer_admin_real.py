"""Admin and Consumer against real processes (controller + 3 brokers on 127.0.0.1).

Records are written with raw Produce calls so this test depends only on the brokers.
"""

from __future__ import annotations

import asyncio

import pytest
from real_cluster import CALL_TIMEOUT_S, RunningCluster

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import encode_batch
from brokerlab.v1 import broker_pb2
from client import Admin, Consumer, NewTopic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def produce(cluster: RunningCluster, leader: int, partition: int, values: list[bytes]) -> int:
    """acks=all: the leader answers once the ISR has the records, i.e. once its high watermark
    passed them (with acks=1 the high watermark trails by a follower fetch round trip)."""
    records = encode_batch([(1_700_000_000_000 + i, b"k", v, (("h", b"1"),)) for i, v in enumerate(values)])
    response = cluster.broker_stub(leader).Produce(
        broker_pb2.ProduceRequest(acks=-1, timeout_ms=5_000, partitions=[
            broker_pb2.PartitionProduceData(topic="orders", partition=partition, records=records)]),
        timeout=CALL_TIMEOUT_S,
    )
    (out,) = response.partitions
    assert out.error_code == 0, out.error_message
    return out.base_offset


def test_admin_and_consumer_against_real_brokers(cluster: RunningCluster) -> None:
    bootstrap = [b.address for b in cluster.brokers]

    async def scenario() -> None:
        admin = Admin(bootstrap)
        consumer = Consumer(bootstrap, auto_offset_reset="earliest", key_deserializer="str",
                            value_deserializer="str", fetch_max_wait_ms=100)
        try:
            await admin.create_topics([NewTopic("orders", 3, 3)])
            with pytest.raises(KafkaError) as info:
                await admin.create_topics([NewTopic("orders", 3, 3)])
            assert info.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
            await admin.wait_for_topics(["orders"], timeout_ms=15_000)
            assert "orders" in await admin.list_topics()
            cluster_description = await admin.describe_cluster()
            assert [b.node_id for b in cluster_description.brokers] == [1, 2, 3]
            assert cluster_description.controller is not None

            (orders,) = await admin.describe_topics(["orders"])
            leaders = {p.partition: p.leader for p in orders.partitions}
            assert sorted(leaders) == [0, 1, 2]
            assert all(len(p.replicas) == 3 and p.leader in p.replicas for p in orders.partitions)

            for partition, leader in leaders.items():
                values = [f"p{partition}-{i}".encode() for i in range(5 + partition)]
                await asyncio.to_thread(produce, cluster, leader, partition, values)
            (orders,) = await admin.describe_topics(["orders"])
            assert [p.log_end_offset for p in orders.partitions] == [5, 6, 7]
            assert [p.high_watermark for p in orders.partitions] == [5, 6, 7]

            tps = [TopicPartition("orders", p) for p in range(3)]
            consumer.assign(tps)
            await consumer.seek_to_beginning()
            records = []
            deadline = asyncio.get_running_loop().time() + 15
            while len(records) < 18 and asyncio.get_running_loop().time() < deadline:
                records += await consumer.poll(timeout_ms=500)
            assert len(records) == 18
            for p in range(3):
                got = [r for r in records if r.partition == p]
                assert [r.offset for r in got] == list(range(5 + p))
                assert [r.value for r in got] == [f"p{p}-{i}" for i in range(5 + p)]
                assert got[0].key == "k" and got[0].headers == (("h", b"1"),)
                assert await consumer.position(tps[p]) == 5 + p
            await consumer.seek_to_end(tps[0])
            assert await consumer.position(tps[0]) == 5

            await admin.delete_topics(["orders"])
            deadline = asyncio.get_running_loop().time() + 15  # brokers learn of it a moment later
            while "orders" in await admin.list_topics():
                assert asyncio.get_running_loop().time() < deadline, "the deleted topic is still listed"
                await asyncio.sleep(0.05)
        finally:
            await consumer.close()
            await admin.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
