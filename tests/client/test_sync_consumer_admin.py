"""SyncConsumer / SyncAdmin: the blocking facades, against fake brokers served from another loop thread."""

from __future__ import annotations

import pytest
from client_fakes import FakeCluster

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from client.admin import NewTopic
from client.sync import EventLoopThread, SyncAdmin, SyncConsumer


@pytest.fixture
def fake_cluster():
    server_loop = EventLoopThread("fake-cluster")

    async def start():
        return await FakeCluster(2).start()

    cluster = server_loop.run(start())
    yield cluster, server_loop
    server_loop.run(cluster.stop())
    server_loop.stop()


def test_sync_admin_and_consumer(fake_cluster):
    cluster, server_loop = fake_cluster
    with SyncAdmin(cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("orders", 2)])
        admin.wait_for_topics(["orders"], timeout_ms=2_000)
        assert admin.list_topics() == ["orders"]
        assert admin.describe_cluster().cluster_id == "fake-cluster"
        with pytest.raises(KafkaError) as info:
            admin.create_topics([NewTopic("orders", 2)])
        assert info.value.code == ErrorCode.TOPIC_ALREADY_EXISTS

        async def append():
            cluster.state.append("orders", 1, [b"a", b"b", b"c"])

        server_loop.run(append())
        (orders,) = admin.describe_topics(["orders"])
        assert orders.partitions[1].log_end_offset == 3

    tp = TopicPartition("orders", 1)
    with SyncConsumer(cluster.bootstrap, value_deserializer="str", fetch_max_wait_ms=50) as consumer:
        consumer.assign([tp])
        assert consumer.assignment() == {tp}
        consumer.seek_to_beginning(tp)
        assert consumer.position(tp) == 0
        records = []
        for _ in range(50):
            records += consumer.poll(timeout_ms=200)
            if len(records) == 3:
                break
        assert [r.value for r in records] == ["a", "b", "c"]
        assert consumer.position(tp) == 3
        assert consumer.high_watermark(tp) == 3
        consumer.seek(tp, 1)
        assert consumer.poll(timeout_ms=2_000)[0].offset == 1
        consumer.seek_to_end()
        assert consumer.position(tp) == 3
