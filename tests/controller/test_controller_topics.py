"""CreateTopics / DeleteTopics through the core: records, Kafka's validation and error codes."""

from __future__ import annotations

from collections import Counter

import pytest
from controller_harness import Harness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb
from brokerlab.v1.metadata_pb2 import TopicConfig
from controller.config import ControllerConfig


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.start_brokers([1, 2, 3])
    return harness


def test_create_topic_writes_topic_and_partition_records(h):
    start = h.core.journal.end_offset
    result = h.create_topic("orders", 6, 3)
    assert (result.error_code, result.num_partitions, result.replication_factor) == (0, 6, 3)
    assert len(result.topic_id) == 22
    records = h.core.journal.read(start, 100)
    assert [r.WhichOneof("record") for r in records] == ["topic"] + ["partition"] * 6
    assert records[0].topic.name == "orders" and records[0].topic.topic_id == result.topic_id
    partitions = h.partitions("orders")
    for p in partitions:
        assert p.isr == p.replicas and p.leader_id == p.replicas[0]
        assert (p.leader_epoch, p.partition_epoch) == (0, 0)
    assert sorted(Counter(p.leader_id for p in partitions).values()) == [2, 2, 2]
    created = [e for e in h.events if e.name == "TopicCreated"]
    assert created[-1].fields == {"topic": "orders", "topic_id": result.topic_id, "partitions": 6, "replication_factor": 3}


def test_defaults_apply_for_minus_one():
    h = Harness(ControllerConfig(num_partitions=4, default_replication_factor=2))
    h.start_brokers([1, 2, 3])
    result = h.create_topic("t")
    assert (result.num_partitions, result.replication_factor) == (4, 2)


def test_default_replication_factor_above_live_brokers_is_an_error_as_in_kafka():
    h = Harness()  # default.replication.factor 3
    h.start_brokers([1, 2])
    result = h.create_topic("t")
    assert result.error_code == ErrorCode.INVALID_REPLICATION_FACTOR
    assert (result.num_partitions, result.replication_factor) == (-1, -1)


def test_fenced_brokers_are_not_placed_on(h):
    h.register(4)  # registered, never caught up: fenced
    result = h.create_topic("t", 8, 3)
    assert result.error_code == 0
    assert all(4 not in p.replicas for p in h.partitions("t"))
    assert h.create_topic("t4", 1, 4).error_code == ErrorCode.INVALID_REPLICATION_FACTOR


@pytest.mark.parametrize(
    "name, code",
    [
        ("", ErrorCode.INVALID_TOPIC_EXCEPTION),
        (".", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("..", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("a" * 250, ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("a" * 249, ErrorCode.NONE),
        ("has space", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("slash/es", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("ünïcode", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("trailing\n", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("Good.name_with-all.3", ErrorCode.NONE),
        ("...", ErrorCode.NONE),
        ("__internal", ErrorCode.NONE),
    ],
)
def test_topic_name_rules(h, name, code):
    assert h.create_topic(name, 1, 1).error_code == code


def test_dot_and_underscore_collide(h):
    assert h.create_topic("a.b", 1, 1).error_code == 0
    result = h.create_topic("a_b", 1, 1)
    assert result.error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert "collides with existing topic: a.b" in result.error_message
    # Also within one request: the second of a colliding pair fails.
    results = h.create_topics(pb.CreatableTopic(name="x_y", num_partitions=1, replication_factor=1),
                              pb.CreatableTopic(name="x.y", num_partitions=1, replication_factor=1))
    assert [r.error_code for r in results] == [0, ErrorCode.INVALID_TOPIC_EXCEPTION]


def test_existing_topic_and_duplicates_in_one_request(h):
    assert h.create_topic("orders", 1, 1).error_code == 0
    assert h.create_topic("orders", 1, 1).error_code == ErrorCode.TOPIC_ALREADY_EXISTS
    results = h.create_topics(pb.CreatableTopic(name="dup", num_partitions=1, replication_factor=1),
                              pb.CreatableTopic(name="dup", num_partitions=1, replication_factor=1))
    assert [r.error_code for r in results] == [ErrorCode.INVALID_REQUEST] * 2
    assert h.core.state.topic_by_name("dup") is None


@pytest.mark.parametrize(
    "partitions, replication_factor, code",
    [
        (0, 1, ErrorCode.INVALID_PARTITIONS),
        (-2, 1, ErrorCode.INVALID_PARTITIONS),
        (1, 0, ErrorCode.INVALID_REPLICATION_FACTOR),
        (1, -2, ErrorCode.INVALID_REPLICATION_FACTOR),
        (1, 4, ErrorCode.INVALID_REPLICATION_FACTOR),
    ],
)
def test_partition_and_replication_factor_checks(h, partitions, replication_factor, code):
    assert h.create_topic("t", partitions, replication_factor).error_code == code


def test_topic_configs_are_checked_and_normalised(h):
    configs = [TopicConfig(name="retention.ms", value=" 60000"), TopicConfig(name="unclean.leader.election.enable", value="TRUE")]
    assert h.create_topic("ok", 1, 1, configs=configs).error_code == 0
    assert h.core.state.topic_by_name("ok").configs == {"retention.ms": "60000", "unclean.leader.election.enable": "true"}
    for bad in (
        [TopicConfig(name="no.such.key", value="1")],
        [TopicConfig(name="retention.ms", value="-2")],
        [TopicConfig(name="segment.bytes", value="lots")],
        [TopicConfig(name="segment.bytes", value=str(2**31))],
        [TopicConfig(name="flush.policy", value="sometimes")],
        [TopicConfig(name="min.insync.replicas", value="1"), TopicConfig(name="min.insync.replicas", value="2")],
    ):
        result = h.create_topic("bad", 1, 1, configs=bad)
        assert result.error_code == ErrorCode.INVALID_CONFIG, bad
    assert h.core.state.topic_by_name("bad") is None


def test_manual_assignment(h):
    assignments = [pb.ReplicaAssignment(partition=0, broker_ids=[3, 1]), pb.ReplicaAssignment(partition=1, broker_ids=[2, 3])]
    result = h.create_topic("manual", assignments=assignments)
    assert (result.error_code, result.num_partitions, result.replication_factor) == (0, 2, 2)
    assert [(p.replicas, p.leader_id) for p in h.partitions("manual")] == [([3, 1], 3), ([2, 3], 2)]
    both = h.create_topic("both", 2, -1, assignments=assignments)
    assert both.error_code == ErrorCode.INVALID_REQUEST
    unknown = h.create_topic("unknown", assignments=[pb.ReplicaAssignment(partition=0, broker_ids=[7])])
    assert unknown.error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT


def test_manual_assignment_leader_is_first_unfenced_replica(h):
    h.register(4)  # fenced
    result = h.create_topic("m", assignments=[pb.ReplicaAssignment(partition=0, broker_ids=[4, 2])])
    assert result.error_code == 0
    (p,) = h.partitions("m")
    assert (p.replicas, p.isr, p.leader_id) == ([4, 2], [2], 2)
    only_fenced = h.create_topic("f", assignments=[pb.ReplicaAssignment(partition=0, broker_ids=[4])])
    assert only_fenced.error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT


def test_validate_only_writes_nothing(h):
    start = h.core.journal.end_offset
    (result,) = h.create_topics(pb.CreatableTopic(name="dry", num_partitions=3, replication_factor=2), validate_only=True)
    assert (result.error_code, result.num_partitions, result.replication_factor, result.topic_id) == (0, 3, 2, "")
    assert h.core.journal.end_offset == start
    assert h.core.state.topic_by_name("dry") is None


def test_one_bad_topic_does_not_fail_the_others(h):
    results = h.create_topics(
        pb.CreatableTopic(name="good", num_partitions=2, replication_factor=2),
        pb.CreatableTopic(name="bad!", num_partitions=2, replication_factor=2),
        pb.CreatableTopic(name="also-good", num_partitions=1, replication_factor=1),
    )
    assert [r.error_code for r in results] == [0, ErrorCode.INVALID_TOPIC_EXCEPTION, 0]
    assert sorted(h.core.state.topic_ids) == ["also-good", "good"]


def test_delete_topics(h):
    created = h.create_topic("orders", 3, 2)
    response = h.call("DeleteTopics", pb.DeleteTopicsRequest(names=["orders", "missing"]))
    assert [(r.name, r.error_code) for r in response.topics] == [("orders", 0), ("missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]
    assert h.core.state.topic_by_name("orders") is None
    assert h.core.journal.read(h.core.journal.end_offset - 1, 1)[0].remove_topic.topic_id == created.topic_id
    assert h.event_names()[-1] == "TopicDeleted"
    dup = h.call("DeleteTopics", pb.DeleteTopicsRequest(names=["x", "x"]))
    assert [r.error_code for r in dup.topics] == [ErrorCode.INVALID_REQUEST] * 2
    # A recreated topic gets a new id.
    again = h.create_topic("orders", 3, 2)
    assert again.error_code == 0 and again.topic_id != created.topic_id


def test_topic_ids_stay_unique_across_restarts_with_the_same_seed(h):
    first = h.create_topic("a", 1, 1).topic_id
    h.call("DeleteTopics", pb.DeleteTopicsRequest(names=["a"]))
    h.restart()  # the same seed replays the same random sequence...
    second = h.create_topic("a", 1, 1).topic_id
    assert second != first  # ...but ids ever used are skipped


def test_describe_cluster(h):
    response = h.call("DescribeCluster", pb.DescribeClusterRequest())
    assert response.cluster_id == "test-cluster"
    assert [(b.broker_id, b.fenced) for b in response.brokers] == [(1, False), (2, False), (3, False)]
    assert response.brokers[0].endpoint.port == 9001
    assert response.metadata_end_offset == h.core.journal.end_offset
