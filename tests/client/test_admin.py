"""Admin against a fake controller and fake brokers: topics, descriptions, cluster, errors."""

from __future__ import annotations

import asyncio

import pytest
from client_fakes import FakeCluster

from brokerlab.errors import ErrorCode, KafkaError
from client import Admin, NewTopic, PartitionDescription


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_create_list_describe_delete_topics():
    async def scenario():
        cluster = await FakeCluster(2).start()
        admin = Admin(cluster.bootstrap)
        try:
            results = await admin.create_topics([NewTopic("orders", 2, 1, {"retention.ms": "1000"})])
            assert results == {"orders": None}
            await admin.create_topics([NewTopic("audit", 1)])
            await admin.wait_for_topics(["orders", "audit"], timeout_ms=2_000)
            assert await admin.list_topics() == ["audit", "orders"]

            cluster.state.append("orders", 1, [b"x"] * 4)
            (orders,) = await admin.describe_topics(["orders"])
            assert orders.name == "orders" and orders.topic_id.startswith("id-")
            assert orders.partitions[0] == PartitionDescription(
                partition=0, leader=1, leader_epoch=0, replicas=(1,), isr=(1,), log_start_offset=0,
                log_end_offset=0, high_watermark=0, size_bytes=0,
            )
            p1 = orders.partitions[1]
            assert (p1.leader, p1.log_end_offset, p1.high_watermark) == (2, 4, 4)
            assert p1.size_bytes > 0
            assert ("broker-2", "DescribeLogDirs") in cluster.state.calls

            everything = await admin.describe_topics()
            assert [t.name for t in everything] == ["audit", "orders"]

            await admin.delete_topics(["audit"])
            assert await admin.list_topics() == ["orders"]
        finally:
            await admin.close()
            await cluster.stop()

    run(scenario())


def test_errors_carry_kafka_codes_and_one_line_messages():
    async def scenario():
        cluster = await FakeCluster(1).start()
        admin = Admin(cluster.bootstrap)
        try:
            await admin.create_topics([NewTopic("orders", 1)])
            with pytest.raises(KafkaError) as info:
                await admin.create_topics([NewTopic("orders", 1)])
            assert info.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
            assert info.value.message.startswith("topic 'orders':")
            results = await admin.create_topics(
                [NewTopic("orders", 1), NewTopic("wide", 1, 3), NewTopic("fine", 1)], raise_on_error=False
            )
            assert results["orders"].code == ErrorCode.TOPIC_ALREADY_EXISTS
            assert results["wide"].code == ErrorCode.INVALID_REPLICATION_FACTOR
            assert results["fine"] is None
            with pytest.raises(KafkaError) as info:
                await admin.delete_topics(["nope"])
            assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            with pytest.raises(KafkaError) as info:
                await admin.describe_topics(["nope"])
            assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        finally:
            await admin.close()
            await cluster.stop()

    run(scenario())


def test_describe_cluster_and_a_leader_that_does_not_answer():
    async def scenario():
        cluster = await FakeCluster(2).start()
        cluster.state.create_topic("orders", 2, [1, 2])
        admin = Admin([cluster.address(1)])
        try:
            description = await admin.describe_cluster()
            assert description.cluster_id == "fake-cluster"
            assert description.controller.node_id == 0
            assert description.controller.address == f"127.0.0.1:{cluster.state.controller_port}"
            assert [(b.node_id, b.address, b.broker_epoch) for b in description.brokers] == [
                (1, cluster.address(1), 11), (2, cluster.address(2), 12),
            ]
            assert description.metadata_end_offset == 7
            await cluster.stop_broker(2)
            (orders,) = await admin.describe_topics(["orders"])
            assert orders.partitions[0].log_end_offset == 0
            assert orders.partitions[1].leader == 2
            assert orders.partitions[1].log_end_offset == -1  # its leader is down: unknown, not an error
        finally:
            await admin.close()
            await cluster.stop()

    run(scenario())
