"""GroupCoordinatorHost against a fake broker: placement, loading, acks=all deferral, failover."""

from __future__ import annotations

from host_fakes import FakeBroker, HostHarness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import group_pb2
from node.group.config import OFFSETS_TOPIC
from node.group.host import SlotState
from node.group.records import partition_for


def commit_request(group: str, member: str, generation: int, offset: int) -> group_pb2.OffsetCommitRequest:
    return group_pb2.OffsetCommitRequest(group_id=group, member_id=member, generation_id=generation, topics=[
        group_pb2.OffsetCommitTopic(name="t", partitions=[group_pb2.OffsetCommitPartition(
            partition_index=0, committed_offset=offset, committed_leader_epoch=-1)])])


def test_find_coordinator_uses_the_partition_leader():
    h = HostHarness()
    response = h.replies[h.call("FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=["g", ""]))]
    found, empty = response.coordinators
    assert found.node_id == 1 and found.endpoint.port == 9001
    assert empty.error_code == ErrorCode.INVALID_GROUP_ID


def test_first_find_coordinator_asks_the_controller_to_create_the_offsets_topic():
    broker = FakeBroker()
    broker.topic_exists = False
    broker.led = {}
    h = HostHarness(broker)
    rid = h.call("FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=["g"]))
    [coordinator] = h.replies[rid].coordinators
    assert coordinator.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    [create] = [s for s in h.sends if s.rpc == "CreateTopics"]
    [topic] = create.message.topics
    assert (topic.name, topic.num_partitions, topic.replication_factor) == (OFFSETS_TOPIC, 4, 3)
    assert {c.name: c.value for c in topic.configs} == {"retention.ms": "-1", "min.insync.replicas": "2"}
    # A second FindCoordinator while the creation is in flight sends nothing new.
    h.call("FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=["g"]))
    assert len([s for s in h.sends if s.rpc == "CreateTopics"]) == 1
    assert h.host.owns(create.reply(None))


def test_offsets_topic_waits_for_enough_live_brokers():
    broker = FakeBroker()
    broker.topic_exists, broker.live, broker.led = False, 1, {}
    h = HostHarness(broker)
    [coordinator] = h.replies[h.call("FindCoordinator", group_pb2.FindCoordinatorRequest(group_ids=["g"]))].coordinators
    assert "offsets.topic.replication.factor=3" in coordinator.error_message
    assert not [s for s in h.sends if s.rpc == "CreateTopics"]


def test_requests_for_groups_of_other_partitions_get_not_coordinator():
    broker = FakeBroker()
    broker.led = {p: 0 for p in range(4) if p != partition_for("g", 4)}
    h = HostHarness(broker)
    response = h.replies[h.call("Heartbeat", group_pb2.HeartbeatRequest(group_id="g"))]
    assert response.error_code == ErrorCode.NOT_COORDINATOR


def test_offset_commit_is_answered_only_once_committed():
    broker = FakeBroker()
    h = HostHarness(broker)
    member, _ = h.join_and_sync()
    broker.auto_commit = False
    rid = h.call("OffsetCommit", commit_request("g", member, 1, 42))
    assert rid not in h.replies, "acks=all: no answer before the ISR has the record"
    fetch_id = h.call("OffsetFetch", group_pb2.OffsetFetchRequest(group_id="g"))
    assert fetch_id not in h.replies, "reads wait behind the uncommitted write too"
    h.commit_writes()
    assert h.replies[rid].topics[0].partitions[0].error_code == 0
    assert h.replies[fetch_id].topics[0].partitions[0].committed_offset == 42


def test_failed_write_fails_waiting_answers_and_reloads_from_the_log():
    broker = FakeBroker()
    h = HostHarness(broker)
    member, _ = h.join_and_sync()
    h.replies[h.call("OffsetCommit", commit_request("g", member, 1, 5))]
    broker.fail_with = ErrorCode.NOT_ENOUGH_REPLICAS
    rid = h.call("OffsetCommit", commit_request("g", member, 1, 9))
    assert h.replies[rid].topics[0].partitions[0].error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert "GroupWriteFailed" in [e.name for e in h.events]
    broker.fail_with = None
    response = h.replies[h.call("OffsetFetch", group_pb2.OffsetFetchRequest(group_id="g"))]
    assert response.topics[0].partitions[0].committed_offset == 5, "the reloaded state is the log's"


def test_new_leader_loads_groups_and_offsets_from_the_log():
    broker = FakeBroker()
    h = HostHarness(broker)
    member, _ = h.join_and_sync()
    h.call("OffsetCommit", commit_request("g", member, 1, 77))
    # Another broker with the same log (a replica) becomes the leader.
    other = FakeBroker(broker_id=2, disk=broker.disk)
    other.logs = broker.logs
    h2 = HostHarness(other)
    assert all(slot.state is SlotState.ACTIVE for slot in h2.host.slots.values())
    assert "GroupsLoaded" in [e.name for e in h2.events]
    response = h2.replies[h2.call("OffsetFetch", group_pb2.OffsetFetchRequest(group_id="g"))]
    assert response.topics[0].partitions[0].committed_offset == 77
    described = h2.replies[h2.call("DescribeGroups", group_pb2.DescribeGroupsRequest(groups=["g"]))].groups[0]
    assert described.group_state == "Stable" and described.members[0].member_id == member
    assert described.coordinator_id == 2
    # The member's session restarted at load; without heartbeats it expires.
    h2.tick(5001)
    described = h2.replies[h2.call("DescribeGroups", group_pb2.DescribeGroupsRequest(groups=["g"]))].groups[0]
    assert described.group_state == "Empty"


def test_losing_leadership_answers_parked_requests_with_not_coordinator():
    broker = FakeBroker()
    h = HostHarness(broker, initial_rebalance_delay_ms=1000)
    join = group_pb2.JoinGroupRequest(group_id="g", session_timeout_ms=5000, protocol_type="consumer",
                                      protocols=[group_pb2.JoinGroupProtocol(name="range")])
    join.member_id = h.replies[h.call("JoinGroup", join)].member_id
    rid = h.call("JoinGroup", join)
    assert rid not in h.replies  # parked in the initial delay
    broker.led.pop(partition_for("g", 4))
    broker.offset += 1
    h.step_after()
    assert h.replies[rid].error_code == ErrorCode.NOT_COORDINATOR
    assert "GroupsUnloaded" in [e.name for e in h.events]


def test_loading_is_chunked_and_answers_load_in_progress():
    broker = FakeBroker()
    h = HostHarness(broker)
    member, _ = h.join_and_sync()
    for offset in range(50):
        h.call("OffsetCommit", commit_request("g", member, 1, offset))
    h2 = HostHarness(FakeBroker(broker_id=2, disk=broker.disk), offsets_load_buffer_size=64)
    h2.broker.logs = broker.logs
    h2.host.slots.clear()
    h2.broker.offset += 1
    h2.step_after()
    slot = h2.host.slots[partition_for("g", 4)]
    assert slot.state is SlotState.LOADING
    response = h2.replies[h2.call("Heartbeat", group_pb2.HeartbeatRequest(group_id="g"))]
    assert response.error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    while slot.state is SlotState.LOADING:
        h2.tick()
    response = h2.replies[h2.call("OffsetFetch", group_pb2.OffsetFetchRequest(group_id="g"))]
    assert response.topics[0].partitions[0].committed_offset == 49


def test_list_describe_and_delete_groups():
    h = HostHarness()
    member, _ = h.join_and_sync("busy")
    h.call("OffsetCommit", group_pb2.OffsetCommitRequest(group_id="idle", generation_id=-1, topics=[
        group_pb2.OffsetCommitTopic(name="t", partitions=[group_pb2.OffsetCommitPartition(committed_offset=3)])]))
    listed = h.replies[h.call("ListGroups", group_pb2.ListGroupsRequest())].groups
    assert {(g.group_id, g.group_state) for g in listed} == {("busy", "Stable"), ("idle", "Empty")}
    deleted = h.replies[h.call("DeleteGroups", group_pb2.DeleteGroupsRequest(groups_names=["busy", "idle", "nope"]))]
    assert [(r.group_id, r.error_code) for r in deleted.results] == [
        ("busy", ErrorCode.NON_EMPTY_GROUP), ("idle", 0), ("nope", ErrorCode.GROUP_ID_NOT_FOUND)]
    listed = h.replies[h.call("ListGroups", group_pb2.ListGroupsRequest())].groups
    assert [g.group_id for g in listed] == ["busy"]
