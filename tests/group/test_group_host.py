"""GroupCoordinatorHost against a fake broker: placement, loading, acks=all deferral, failover.

``FakeBroker`` implements the host's BrokerPort over a real LogManager on a MemoryDisk. Its
Produce appends and, like acks=all, answers only when ``commit()`` is called (or at once with
``auto_commit``), or fails with a chosen error.
"""

from __future__ import annotations

from brokerlab.disk import MemoryDisk
from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Effects, Envelope
from brokerlab.v1 import broker_pb2, group_pb2
from node.group.config import OFFSETS_TOPIC, GroupConfig
from node.group.host import GroupCoordinatorHost, SlotState
from node.group.records import partition_for
from node.log.config import LogConfig
from node.log.manager import LogManager


class FakeBroker:
    def __init__(self, broker_id: int = 1, disk: MemoryDisk | None = None, partitions: int = 4) -> None:
        self.broker_id = broker_id
        self.node = f"broker-{broker_id}"
        self.disk = disk or MemoryDisk()
        self.logs = LogManager(self.disk, LogConfig(), 0)
        self.partitions = partitions
        self.topic_exists = True
        self.led: dict[int, int] = {p: 0 for p in range(partitions)}
        self.offset = 0
        self.auto_commit = True
        self.fail_with: int | None = None
        self.held: list[Envelope] = []  # internal produces waiting for "the ISR"
        self.live = 3

    # BrokerPort
    def is_ready(self) -> bool:
        return True

    def metadata_offset(self) -> int:
        return self.offset

    def offsets_partition_count(self) -> int | None:
        return self.partitions if self.topic_exists else None

    def coordinator_endpoint(self, partition: int):
        return (self.broker_id, "127.0.0.1", 9000 + self.broker_id) if partition in self.led else (2, "127.0.0.1", 9002)

    def live_broker_count(self) -> int:
        return self.live

    def min_insync_replicas(self) -> int:
        return 2

    def led_offsets_partitions(self) -> dict[int, int]:
        for p in self.led:
            self.logs.get_or_create(TopicPartition(OFFSETS_TOPIC, p), 0)
        return dict(self.led)

    def _log(self, partition):
        return self.logs.get_or_create(TopicPartition(OFFSETS_TOPIC, partition), 0)

    def log_start_offset(self, partition: int) -> int:
        return self._log(partition).log_start_offset

    def log_end_offset(self, partition: int) -> int:
        return self._log(partition).log_end_offset

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        return self._log(partition).read(offset, max_bytes)

    def produce(self, envelope: Envelope, now_ms: int, fx: Effects) -> None:
        [data] = envelope.message.partitions
        if self.fail_with is not None:
            fx.reply(envelope.reply(broker_pb2.ProduceResponse(partitions=[broker_pb2.PartitionProduceResponse(
                topic=data.topic, partition=data.partition, error_code=self.fail_with)])))
            return
        info = self._log(data.partition).append_as_leader(data.records, 0, now_ms)
        envelope.message.partitions[0].records = b""  # keep the info small
        self.held.append(envelope.reply(broker_pb2.ProduceResponse(partitions=[
            broker_pb2.PartitionProduceResponse(topic=data.topic, partition=data.partition,
                                                base_offset=info.base_offset)])))
        if self.auto_commit:
            self.release(fx)

    def release(self, fx: Effects) -> None:
        held, self.held = self.held, []
        fx.replies.extend(held)


class HostHarness:
    def __init__(self, broker: FakeBroker | None = None, **config) -> None:
        config.setdefault("initial_rebalance_delay_ms", 0)
        config.setdefault("offsets_topic_num_partitions", 4)
        self.broker = broker or FakeBroker()
        self.host = GroupCoordinatorHost(GroupConfig(**config), self.broker, "inc")
        self.now_ms = 1000
        self.ids = 0
        self.replies: dict[int, object] = {}
        self.events: list = []
        self.sends: list = []
        self.step_after()

    def _run(self, fx: Effects) -> Effects:
        self.host.after(self.now_ms, fx)
        for reply in fx.replies:
            self.replies[reply.request_id] = reply.message
        self.events += fx.events
        self.sends += fx.sends
        return fx

    def step_after(self) -> None:
        self._run(Effects())

    def call(self, rpc: str, message) -> int:
        self.ids += 1
        fx = Effects()
        self.host.handle(Envelope("client-1", self.broker.node, rpc, message, self.ids), self.now_ms, fx)
        self._run(fx)
        return self.ids

    def commit_writes(self) -> None:
        fx = Effects()
        self.broker.release(fx)
        self._run(fx)

    def tick(self, advance_ms: int = 0) -> None:
        self.now_ms += advance_ms
        fx = Effects()
        self.host.tick(self.now_ms, fx)
        self._run(fx)

    def join_and_sync(self, group: str = "g") -> tuple[str, int]:
        join = group_pb2.JoinGroupRequest(group_id=group, session_timeout_ms=5000, rebalance_timeout_ms=5000,
                                          protocol_type="consumer", client_id="c",
                                          protocols=[group_pb2.JoinGroupProtocol(name="range")])
        first = self.replies[self.call("JoinGroup", join)]
        join.member_id = first.member_id
        answer = self.replies[self.call("JoinGroup", join)]
        assert answer.error_code == 0, answer
        sync = group_pb2.SyncGroupRequest(group_id=group, member_id=answer.member_id, generation_id=answer.generation_id,
                                          assignments=[group_pb2.SyncGroupAssignment(member_id=answer.member_id,
                                                                                     assignment=b"")])
        rid = self.call("SyncGroup", sync)
        return answer.member_id, rid


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
