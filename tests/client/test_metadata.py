"""MetadataCache: updates, leader lookup, leader-epoch guard, staleness (no I/O)."""

from __future__ import annotations

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.v1 import broker_pb2, common_pb2
from client.metadata import MetadataCache, PartitionInfo


def response(topics=(), brokers=(1, 2, 3), controller=("127.0.0.1", 9000), cluster_id="c1"):
    """topics: (name, topic_id, [(partition, leader, epoch, replicas, isr)], error_code)."""
    msg = broker_pb2.MetadataResponse(cluster_id=cluster_id, controller_id=0)
    for broker_id in brokers:
        msg.brokers.add(broker_id=broker_id, endpoint=common_pb2.Endpoint(host="127.0.0.1", port=9100 + broker_id))
    if controller:
        msg.controller_endpoint.CopyFrom(common_pb2.Endpoint(host=controller[0], port=controller[1]))
    for name, topic_id, partitions, error in topics:
        t = msg.topics.add(name=name, topic_id=topic_id, error_code=error)
        for partition, leader, epoch, replicas, isr in partitions:
            t.partitions.add(partition=partition, leader_id=leader, leader_epoch=epoch, replicas=replicas, isr=isr)
    return msg


ORDERS = ("orders", "id-1", [(1, 2, 0, [2, 3], [2, 3]), (0, 1, 0, [1, 2], [1])], 0)


def test_update_fills_brokers_controller_and_partitions_sorted():
    cache = MetadataCache()
    cache.update(response([ORDERS]), now_ms=1_000)
    assert cache.brokers() == {1: "127.0.0.1:9101", 2: "127.0.0.1:9102", 3: "127.0.0.1:9103"}
    assert cache.broker_address(2) == "127.0.0.1:9102"
    assert cache.broker_address(9) is None
    assert cache.controller_address() == "127.0.0.1:9000"
    assert cache.cluster_id == "c1"
    assert cache.partition_count("orders") == 2
    assert cache.partitions_for("orders") == [
        PartitionInfo("orders", 0, 1, 0, (1, 2), (1,)),
        PartitionInfo("orders", 1, 2, 0, (2, 3), (2, 3)),
    ]
    assert cache.leader_for(TopicPartition("orders", 1)) == 2
    assert cache.leader_epoch_for(TopicPartition("orders", 0)) == 0


def test_unknown_topics_partitions_and_leaderless_partitions():
    cache = MetadataCache()
    cache.update(response([("t", "id", [(0, -1, 3, [1], [])], 0)]), now_ms=0)
    assert cache.leader_for(TopicPartition("t", 0)) is None
    assert cache.leader_for(TopicPartition("t", 5)) is None
    assert cache.leader_for(TopicPartition("nope", 0)) is None
    assert cache.partitions_for("nope") is None
    assert cache.partition_count("nope") is None
    assert cache.leader_epoch_for(TopicPartition("nope", 0)) == -1


def test_topic_error_drops_the_topic_and_records_the_code():
    cache = MetadataCache()
    cache.update(response([ORDERS]), now_ms=0)
    cache.update(response([("orders", "", [], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]), now_ms=1)
    assert cache.partitions_for("orders") is None
    assert cache.topic_errors == {"orders": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}


def test_partial_update_merges_and_full_update_replaces():
    cache = MetadataCache()
    cache.update(response([ORDERS]), now_ms=0)
    cache.update(response([("audit", "id-2", [(0, 3, 0, [3], [3])], 0)]), now_ms=1)
    assert cache.topics() == ["audit", "orders"]
    cache.update(response([("audit", "id-2", [(0, 3, 0, [3], [3])], 0)]), now_ms=2, full=True)
    assert cache.topics() == ["audit"]


def test_leader_epoch_never_goes_backwards_for_the_same_topic_id():
    cache = MetadataCache()
    cache.update(response([("t", "id", [(0, 2, 5, [1, 2], [1, 2])], 0)]), now_ms=0)
    # A lagging broker still thinks broker 1 leads at epoch 4: keep epoch 5.
    cache.update(response([("t", "id", [(0, 1, 4, [1, 2], [1, 2])], 0)]), now_ms=1)
    assert cache.leader_for(TopicPartition("t", 0)) == 2
    cache.update(response([("t", "id", [(0, 1, 6, [1, 2], [1])], 0)]), now_ms=2)
    assert cache.leader_for(TopicPartition("t", 0)) == 1
    # A re-created topic (new id) starts its epochs again.
    cache.update(response([("t", "id-new", [(0, 3, 0, [3], [3])], 0)]), now_ms=3)
    assert cache.leader_for(TopicPartition("t", 0)) == 3


def test_staleness_requests_and_new_topics():
    cache = MetadataCache(metadata_max_age_ms=1_000)
    assert cache.needs_update(0)  # never filled
    cache.update(response([ORDERS]), now_ms=10)
    assert not cache.needs_update(10)
    assert not cache.needs_update(1_009)
    assert cache.needs_update(1_010)  # metadata.max.age.ms passed
    cache.update(response([ORDERS]), now_ms=2_000)
    cache.request_update()
    assert cache.needs_update(2_000)
    cache.update(response([ORDERS]), now_ms=2_001)
    assert not cache.needs_update(2_001)
    cache.add_topics(["orders"])  # already known: no refresh needed
    assert not cache.needs_update(2_002)
    cache.add_topics(["orders", "fresh"])
    assert cache.needs_update(2_002)
    assert cache.wanted_topics() == ["fresh", "orders"]


def test_controller_endpoint_kept_when_a_response_lacks_one():
    cache = MetadataCache()
    cache.update(response(), now_ms=0)
    cache.update(response(controller=None), now_ms=1)
    assert cache.controller_address() == "127.0.0.1:9000"
    cache.update(response(brokers=(2,)), now_ms=2)
    assert cache.brokers() == {2: "127.0.0.1:9102"}
