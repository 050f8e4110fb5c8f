"""MetadataImage: replay of the controller's records, queries and the MetadataResponse."""

from __future__ import annotations

from broker_harness import fence_record, register_record, remove_topic_record, topic_record, unfence_record

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.v1 import metadata_pb2
from node.metadata_image import MetadataImage


def register(broker_id: int, epoch: int, fenced: bool = True) -> metadata_pb2.MetadataRecord:
    return register_record(broker_id, epoch, fenced, rack=f"r{broker_id}")


def partition(topic_id: str, index: int, replicas: list[int], leader: int, epoch: int = 0) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(partition=metadata_pb2.PartitionRecord(
        topic_id=topic_id, partition=index, replicas=replicas, isr=replicas, leader_id=leader,
        leader_epoch=epoch, partition_epoch=0))


def change(topic_id: str, index: int, **fields) -> metadata_pb2.MetadataRecord:
    return metadata_pb2.MetadataRecord(partition_change=metadata_pb2.PartitionChangeRecord(
        topic_id=topic_id, partition=index, **fields))


def cluster() -> MetadataImage:
    image = MetadataImage()
    for record in [
        register(1, 10), register(2, 11), register(3, 12),
        unfence_record(1, 10), unfence_record(2, 11), unfence_record(3, 12),
        topic_record("orders", "T1", **{"retention.ms": "1000"}),
        partition("T1", 0, [1, 2, 3], 1), partition("T1", 1, [2, 3, 1], 2),
    ]:
        image.replay(record)
    return image


def test_replay_tracks_offsets_and_builds_brokers_topics_partitions() -> None:
    image = cluster()
    assert image.last_applied_offset == 8
    assert sorted(image.brokers) == [1, 2, 3]
    assert image.broker(2).broker_epoch == 11 and not image.broker(2).fenced
    orders = image.topic("orders")
    assert orders is image.topic_by_id("T1")
    assert orders.configs == {"retention.ms": "1000"}
    p1 = image.partition(TopicPartition("orders", 1))
    assert (p1.leader_id, p1.leader_epoch, p1.replicas, p1.isr, p1.partition_epoch) == (2, 0, [2, 3, 1], [2, 3, 1], 0)
    assert [p.partition for p in image.replicas_of(1)] == [0, 1]
    assert image.leader_of(TopicPartition("orders", 0)) == 1
    assert image.leader_of(TopicPartition("nope", 0)) == -1


def test_explicit_offsets_are_kept() -> None:
    image = MetadataImage()
    image.replay(register(1, 5), offset=41)
    assert image.last_applied_offset == 41
    image.replay(unfence_record(1, 5))
    assert image.last_applied_offset == 42


def test_partition_change_uses_stated_epochs_or_bumps_them() -> None:
    image = cluster()
    tp = TopicPartition("orders", 0)
    image.replay(change("T1", 0, leader_id=2, leader_changed=True, leader_epoch=5, partition_epoch=7))
    p = image.partition(tp)
    assert (p.leader_id, p.leader_epoch, p.partition_epoch, p.isr) == (2, 5, 7, [1, 2, 3])
    # ISR shrink without epochs stated: partition epoch bumps, leader epoch stays.
    image.replay(change("T1", 0, isr=[2, 3], isr_changed=True))
    p = image.partition(tp)
    assert (p.leader_id, p.leader_epoch, p.partition_epoch, p.isr) == (2, 5, 8, [2, 3])
    # Leader change without epochs stated: both bump (Kafka's replay); -1 means no leader.
    image.replay(change("T1", 0, leader_id=-1, leader_changed=True, isr=[], isr_changed=True))
    p = image.partition(tp)
    assert (p.leader_id, p.leader_epoch, p.partition_epoch, p.isr) == (-1, 6, 9, [])


def test_fencing_respects_the_broker_epoch() -> None:
    image = cluster()
    image.replay(fence_record(1, 9))  # an older registration: ignored
    assert not image.broker(1).fenced
    image.replay(fence_record(1, 10))
    assert image.broker(1).fenced
    image.replay(register(1, 20, fenced=True))
    image.replay(unfence_record(1, 10))  # stale
    assert image.broker(1).fenced
    image.replay(unfence_record(1, 20))
    assert not image.broker(1).fenced


def test_remove_topic_and_records_about_unknown_things_are_ignored() -> None:
    image = cluster()
    image.replay(remove_topic_record("T1"))
    assert image.topic("orders") is None and image.topic_by_id("T1") is None
    assert image.partitions() == []
    image.replay(partition("T1", 0, [1], 1))
    image.replay(change("T9", 0, leader_id=1, leader_changed=True))
    image.replay(fence_record(7, 1))
    image.replay(metadata_pb2.MetadataRecord())
    assert image.partitions() == [] and image.last_applied_offset == 13


def test_recreated_topic_name_gets_the_new_id() -> None:
    image = cluster()
    image.replay(remove_topic_record("T1"))
    image.replay(topic_record("orders", "T2"))
    image.replay(partition("T2", 0, [3], 3))
    assert image.topic("orders").topic_id == "T2"
    assert image.partition(TopicPartition("orders", 0)).replicas == [3]


def test_metadata_response_lists_unfenced_brokers_and_marks_unknown_topics() -> None:
    image = cluster()
    image.replay(fence_record(3, 12))
    response = image.metadata_response([], controller_id=0, controller_endpoint=("127.0.0.1", 9093), cluster_id="c1")
    assert [b.broker_id for b in response.brokers] == [1, 2]
    assert response.brokers[0].endpoint.port == 9001 and response.brokers[0].rack == "r1"
    assert (response.controller_endpoint.host, response.controller_endpoint.port) == ("127.0.0.1", 9093)
    assert response.cluster_id == "c1" and response.metadata_offset == image.last_applied_offset
    [orders] = response.topics
    assert orders.name == "orders" and orders.topic_id == "T1" and orders.error_code == 0
    assert [(p.partition, p.leader_id, list(p.replicas)) for p in orders.partitions] == [(0, 1, [1, 2, 3]), (1, 2, [2, 3, 1])]
    assert list(orders.partitions[0].offline_replicas) == [3]

    named = image.metadata_response(["missing", "orders"], controller_id=0, controller_endpoint=None)
    assert [(t.name, t.error_code) for t in named.topics] == [
        ("missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), ("orders", ErrorCode.NONE)]
    assert not named.HasField("controller_endpoint")


def test_partition_without_leader_is_leader_not_available() -> None:
    image = cluster()
    image.replay(change("T1", 1, leader_id=-1, leader_changed=True))
    response = image.metadata_response(["orders"], controller_id=0, controller_endpoint=None)
    assert response.topics[0].partitions[1].error_code == ErrorCode.LEADER_NOT_AVAILABLE
    internal = MetadataImage()
    internal.replay(topic_record("__consumer_offsets", "X"))
    assert internal.metadata_response([], controller_id=0, controller_endpoint=None).topics[0].is_internal
