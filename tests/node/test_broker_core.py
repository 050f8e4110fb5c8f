"""BrokerCore driven purely by envelopes and now_ms, over MemoryDisk and the real LogManager."""

from __future__ import annotations

from broker_harness import (
    BrokerHarness,
    batch,
    fence_record,
    leader_change_record,
    partition_record,
    register_record,
    remove_topic_record,
    topic_record,
    unfence_record,
)

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import decode_records
from brokerlab.v1 import broker_pb2, controller_pb2
from node.lifecycle import BrokerState

# Partition 0 has an ISR of the leader alone: its high watermark follows its log end at once
# (replication itself is tested in tests/replication).
ORDERS = [topic_record("orders", "T1"), partition_record("T1", 0, [1, 2, 3], leader=1, isr=[1]),
          partition_record("T1", 1, [2, 3, 1], leader=2), partition_record("T1", 2, [2, 3], leader=2)]


# ---------------------------------------------------------------- lifecycle


def test_first_tick_registers_and_starts_following_metadata() -> None:
    h = BrokerHarness()
    fx = h.tick()
    [register] = h.sent(fx, "RegisterBroker")
    assert register.dst == "controller" and register.src == "broker-1"
    assert register.message.broker_id == 1 and register.message.incarnation_id == "incarnation-1"
    assert (register.message.endpoint.host, register.message.endpoint.port, register.message.rack) == ("127.0.0.1", 9001, "rack-a")
    [fetch] = h.sent(fx, "FetchMetadataRecords")
    assert fetch.message.fetch_offset == 0 and fetch.message.max_wait_ms == h.config.metadata_fetch_max_wait_ms
    assert not h.sent(fx, "BrokerHeartbeat")
    assert not h.tick(50).sends  # both calls in flight: nothing more
    assert h.core.state is BrokerState.STARTING and not h.core.is_ready


def test_registration_retries_with_backoff_then_heartbeats_on_the_interval() -> None:
    h = BrokerHarness()
    [register] = h.sent(h.tick(), "RegisterBroker")
    h.fail(register)
    assert h.core.next_deadline_ms() == h.now_ms + 100
    assert not h.sent(h.tick(99), "RegisterBroker")
    [register] = h.sent(h.tick(1), "RegisterBroker")
    h.answer(register, controller_pb2.RegisterBrokerResponse(error_code=ErrorCode.NOT_CONTROLLER))
    assert h.core.next_deadline_ms() == h.now_ms + 200  # doubled
    [register] = h.sent(h.tick(200), "RegisterBroker")
    fx = h.answer(register, controller_pb2.RegisterBrokerResponse(broker_epoch=42))
    assert "BrokerRegistered" in h.event_names() and h.core.state is BrokerState.RECOVERY
    [heartbeat] = h.sent(fx, "BrokerHeartbeat")
    assert (heartbeat.message.broker_id, heartbeat.message.broker_epoch, heartbeat.message.current_metadata_offset) == (1, 42, -1)
    h.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(is_fenced=True))
    assert h.core.next_deadline_ms() == h.now_ms + 100  # broker.heartbeat.interval.ms
    assert not h.sent(h.tick(99), "BrokerHeartbeat")
    [heartbeat] = h.sent(h.tick(1), "BrokerHeartbeat")
    # One heartbeat in flight at a time, however late its answer.
    assert not h.sent(h.tick(500), "BrokerHeartbeat")
    fx = h.fail(heartbeat)
    [heartbeat] = h.sent(fx, "BrokerHeartbeat")  # overdue: goes out at once
    assert h.event_names().count("HeartbeatFailed") == 1


def test_ready_needs_unfenced_and_caught_up() -> None:
    h = BrokerHarness()
    fx = h.tick()
    [register], [fetch] = h.sent(fx, "RegisterBroker"), h.sent(fx, "FetchMetadataRecords")
    [heartbeat] = h.sent(h.answer(register, controller_pb2.RegisterBrokerResponse(broker_epoch=2)), "BrokerHeartbeat")
    h.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(is_fenced=False))
    assert not h.core.is_ready  # not caught up yet
    h.journal.extend([*ORDERS[:2], register_record(1, 2), unfence_record(1, 2)])  # broker_epoch = its offset
    fx = h.answer(fetch, controller_pb2.FetchMetadataRecordsResponse(base_offset=0, records=h.journal[:2], end_offset=4))
    assert not h.core.is_ready  # 2 of 4 records
    [fetch] = h.sent(fx, "FetchMetadataRecords")
    assert fetch.message.fetch_offset == 2
    h.fetch_answer(fetch, [])
    assert h.core.is_ready and h.core.state is BrokerState.RUNNING
    assert h.core.image.last_applied_offset == 3


def _restart_with_old_leadership(h: BrokerHarness) -> tuple:
    """A restarted broker 1 whose first metadata answer ends before its new registration: the
    journal still shows its previous incarnation (epoch 0) leading orders-0 at leader epoch 3."""
    fx = h.tick()
    [register], [fetch] = h.sent(fx, "RegisterBroker"), h.sent(fx, "FetchMetadataRecords")
    old = [register_record(1, 0), unfence_record(1, 0), register_record(2, 2), unfence_record(2, 2),
           topic_record("orders", "T1"), partition_record("T1", 0, [1, 2], leader=1, leader_epoch=3)]
    return register, h.fetch_answer(fetch, old)


def test_a_restarted_broker_acts_on_no_metadata_before_its_registration_is_applied() -> None:
    h = BrokerHarness()
    register, fx = _restart_with_old_leadership(h)
    [fetch] = h.sent(fx, "FetchMetadataRecords")
    # Caught up with that answer's journal end, but it predates our registration: no roles, no serving.
    assert "BecameLeader" not in h.event_names() and not h.core.replicas
    assert not h.core.lifecycle.initial_catch_up_done and not h.core.is_ready
    assert h.produce("orders", 0, batch(b"x")).error_code != ErrorCode.NONE
    # The registration answer names offset 6 (not applied yet): still nothing.
    h.answer(register, controller_pb2.RegisterBrokerResponse(broker_epoch=6))
    assert "BecameLeader" not in h.event_names() and not h.core.replicas
    # The controller moved the leadership away when the new incarnation registered (fenced).
    h.fetch_answer(fetch, [register_record(1, 6), leader_change_record("T1", 0, leader=2, leader_epoch=4)])
    assert "BecameLeader" not in h.event_names() and "MetadataCaughtUp" in h.event_names()
    assert h.core.replicas[TopicPartition("orders", 0)].leader_epoch == 4
    assert not h.core.replicas[TopicPartition("orders", 0)].is_leader
    assert h.core.log_manager.get(TopicPartition("orders", 0)) is not None


def test_a_registration_answered_after_its_record_was_applied_lets_the_broker_act_at_once() -> None:
    h = BrokerHarness()
    register, fx = _restart_with_old_leadership(h)
    [fetch] = h.sent(fx, "FetchMetadataRecords")
    h.fetch_answer(fetch, [register_record(1, 6), leader_change_record("T1", 0, leader=2, leader_epoch=4)])
    assert not h.core.replicas and not h.core.lifecycle.initial_catch_up_done
    h.answer(register, controller_pb2.RegisterBrokerResponse(broker_epoch=6))
    assert h.core.lifecycle.initial_catch_up_done and "BecameLeader" not in h.event_names()
    assert h.core.replicas[TopicPartition("orders", 0)].leader_epoch == 4


def test_fencing_follows_the_journal_and_stale_epoch_reregisters() -> None:
    h = BrokerHarness()
    h.start([register_record(1, 7), unfence_record(1, 7)])
    [heartbeat] = h.sent(h.tick(200), "BrokerHeartbeat")
    assert heartbeat.message.current_metadata_offset == h.core.image.last_applied_offset
    # A heartbeat answer may be older than the journal: "fenced" there does not stop a running broker.
    h.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(is_fenced=True))
    assert h.core.is_ready
    h.apply([fence_record(1, 7)])
    assert h.core.state is BrokerState.RECOVERY and not h.core.is_ready
    h.apply([unfence_record(1, 7)])
    assert h.core.is_ready
    h.apply([fence_record(1, 7)])
    [heartbeat] = h.sent(h.tick(200), "BrokerHeartbeat")
    h.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(is_fenced=False))  # unfenced by this heartbeat
    assert h.core.is_ready
    [heartbeat] = h.sent(h.tick(200), "BrokerHeartbeat")
    fx = h.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(error_code=ErrorCode.STALE_BROKER_EPOCH))
    assert h.core.state is BrokerState.STARTING
    [register] = h.sent(fx, "RegisterBroker")
    assert register.message.incarnation_id == "incarnation-1"


def test_unfence_record_makes_the_broker_ready_without_waiting_for_a_heartbeat() -> None:
    h = BrokerHarness()
    fx = h.tick()
    [register], [fetch] = h.sent(fx, "RegisterBroker"), h.sent(fx, "FetchMetadataRecords")
    [heartbeat] = h.sent(h.answer(register, controller_pb2.RegisterBrokerResponse(broker_epoch=0)), "BrokerHeartbeat")
    h.answer(heartbeat, controller_pb2.BrokerHeartbeatResponse(is_fenced=True, is_caught_up=False))
    fx = h.fetch_answer(fetch, [register_record(1, 0)])
    assert not h.core.is_ready
    [fetch] = h.sent(fx, "FetchMetadataRecords")
    # Our registration record is applied: heartbeat at once (that is what gets us unfenced).
    [heartbeat] = h.sent(fx, "BrokerHeartbeat")
    assert heartbeat.message.current_metadata_offset == 0
    h.fetch_answer(fetch, [unfence_record(1, 0)])
    assert h.core.is_ready


def test_metadata_offset_out_of_range_rebuilds_the_image() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    assert h.core.image.last_applied_offset == 9
    fetch = h.pending_fetch
    h.answer(fetch, controller_pb2.FetchMetadataRecordsResponse(
        error_code=ErrorCode.OFFSET_OUT_OF_RANGE, base_offset=10, end_offset=2))
    assert h.core.image.last_applied_offset == -1 and "MetadataImageReset" in h.event_names()
    [fetch] = h.sent(h.tick(100), "FetchMetadataRecords")
    assert fetch.message.fetch_offset == 0


def test_metadata_fetch_errors_back_off_and_stale_answers_are_ignored() -> None:
    h = BrokerHarness()
    [fetch] = h.sent(h.tick(), "FetchMetadataRecords")
    h.fail(fetch)
    assert not h.sent(h.tick(99), "FetchMetadataRecords")
    [again] = h.sent(h.tick(1), "FetchMetadataRecords")
    # An answer to the old call changes nothing.
    h.fetch_answer(fetch, ORDERS)
    assert h.core.image.last_applied_offset == -1
    fx = h.fetch_answer(again, [])
    assert h.core.image.last_applied_offset == 3
    [nxt] = h.sent(fx, "FetchMetadataRecords")
    assert nxt.message.fetch_offset == 4


# ---------------------------------------------------------------- metadata -> replicas


def test_partition_records_create_local_replicas_and_leadership() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    assert sorted(h.log_manager.partitions()) == [TopicPartition("orders", 0), TopicPartition("orders", 1)]
    created = [e.fields["partition"] for e in h.events if e.name == "PartitionCreated"]
    assert created == [0, 1]
    assert [(e.name, e.fields["partition"]) for e in h.events if e.name.startswith("Became")] == [
        ("BecameLeader", 0), ("BecameFollower", 1)]
    assert h.core.replicas[TopicPartition("orders", 0)].is_leader
    assert "MetadataApplied" in h.event_names()

    h.events.clear()
    h.apply([leader_change_record("T1", 1, leader=1, leader_epoch=1), leader_change_record("T1", 0, leader=3, leader_epoch=1)])
    assert [(e.name, e.fields["partition"], e.fields["leader_epoch"]) for e in h.events if e.name.startswith("Became")] == [
        ("BecameFollower", 0, 1), ("BecameLeader", 1, 1)]

    h.events.clear()
    h.apply([remove_topic_record("T1")])
    assert h.log_manager.partitions() == []
    assert sorted(e.fields["partition"] for e in h.events if e.name == "PartitionDeleted") == [0, 1]
    assert h.produce("orders", 1, batch(b"x")).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_replaying_the_journal_acts_only_on_the_final_state() -> None:
    # A restarted broker replays old leaderships before the changes that moved them away.
    h = BrokerHarness()
    h.start(ORDERS + [leader_change_record("T1", 0, leader=2, leader_epoch=1), remove_topic_record("T1"),
                      topic_record("orders", "T9"), partition_record("T9", 0, [1, 3], leader=3)])
    assert [(e.name, e.fields["partition"]) for e in h.events if e.name.startswith("Became")] == [("BecameFollower", 0)]
    assert [e.fields["topic_id"] for e in h.events if e.name == "PartitionCreated"] == ["T9"]
    assert h.log_manager.partitions() == [TopicPartition("orders", 0)]
    # Recreated under the same name: the old topic's log is replaced, not reused.
    h.apply([remove_topic_record("T9"), topic_record("orders", "T10"), partition_record("T10", 0, [1], leader=1)])
    [created] = [e for e in h.events if e.name == "PartitionCreated" and e.fields["topic_id"] == "T10"]
    assert created.fields["replaced"] is True


def test_nothing_is_served_before_the_first_catch_up() -> None:
    h = BrokerHarness()
    fx = h.tick()
    [fetch] = h.sent(fx, "FetchMetadataRecords")
    h.journal.extend(ORDERS)
    h.answer(fetch, controller_pb2.FetchMetadataRecordsResponse(base_offset=0, records=h.journal[:2], end_offset=4))
    out = h.produce("orders", 0, batch(b"x"))
    assert out.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER and "catching up" in out.error_message
    assert h.fetch("orders", 0, 0).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER


def test_metadata_and_describe_log_dirs() -> None:
    h = BrokerHarness(log_dirs="/data/b1")
    h.start(ORDERS)
    response = h.call("Metadata", broker_pb2.MetadataRequest())
    assert [b.broker_id for b in response.brokers] == [1, 2, 3]
    assert response.cluster_id == "cluster-x" and response.controller_endpoint.port == 9093
    assert [p.leader_id for p in response.topics[0].partitions] == [1, 2, 2]
    assert h.produce("orders", 0, batch(b"a", b"b")).error_code == 0
    dirs = h.call("DescribeLogDirs", broker_pb2.DescribeLogDirsRequest())
    assert dirs.broker_id == 1 and dirs.log_dir == "/data/b1"
    assert [(r.partition, r.is_leader, r.log_end_offset, r.high_watermark, r.segment_count >= 1)
            for r in dirs.replicas] == [(0, True, 2, 2, True), (1, False, 0, 0, True)]
    assert dirs.replicas[0].size_bytes > 0
    assert h.call("DescribeLogDirs", broker_pb2.DescribeLogDirsRequest(topics=["other"])).replicas == []


# ---------------------------------------------------------------- produce


def test_produce_then_fetch_round_trip() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    first = h.produce("orders", 0, batch(b"a", b"b", b"c"))
    second = h.produce("orders", 0, batch(b"d"), acks=0)
    assert (first.error_code, first.base_offset, second.base_offset) == (0, 0, 3)
    out = h.fetch("orders", 0, 0)
    assert out.error_code == 0 and (out.high_watermark, out.log_end_offset, out.log_start_offset) == (4, 4, 0)
    records = decode_records(out.records)
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
    assert h.fetch("orders", 0, 4).records == b""
    assert h.fetch("orders", 0, 2).records[:8] != b""  # from the batch holding offset 2


def test_produce_errors_leave_the_log_untouched() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    assert h.produce("orders", 1, batch(b"x")).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert h.produce("orders", 9, batch(b"x")).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert h.produce("nope", 0, batch(b"x")).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    bad = bytearray(batch(b"hello"))
    bad[-1] ^= 0xFF
    out = h.produce("orders", 0, bytes(bad))
    assert out.error_code == ErrorCode.CORRUPT_MESSAGE and "CRC" in out.error_message
    # A good batch followed by a bad one: nothing of either is appended.
    out = h.produce("orders", 0, batch(b"ok") + bytes(bad))
    assert out.error_code == ErrorCode.CORRUPT_MESSAGE
    out = h.produce("orders", 0, batch(b"x"), acks=2)
    assert out.error_code == ErrorCode.INVALID_REQUIRED_ACKS
    assert h.core.log_manager.get(TopicPartition("orders", 0)).log_end_offset == 0


def test_message_too_large() -> None:
    h = BrokerHarness()
    h.start([topic_record("small", "T2", **{"max.message.bytes": "200"}), partition_record("T2", 0, [1], leader=1)])
    out = h.produce("small", 0, batch(b"x" * 500))
    assert out.error_code == ErrorCode.MESSAGE_TOO_LARGE and out.base_offset == -1
    assert h.produce("small", 0, batch(b"x" * 10)).error_code == 0
    assert h.core.log_manager.get(TopicPartition("small", 0)).log_end_offset == 1


def test_acks_all_enforces_min_insync_replicas_against_the_isr() -> None:
    h = BrokerHarness()
    h.start([topic_record("t", "T3"), partition_record("T3", 0, [1, 2, 3], leader=1, isr=[1]),
             topic_record("lax", "T4", **{"min.insync.replicas": "1"}), partition_record("T4", 0, [1, 2], leader=1, isr=[1])])
    out = h.produce("t", 0, batch(b"x"), acks=-1)
    assert out.error_code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert h.produce("t", 0, batch(b"x"), acks=1).error_code == 0  # acks=1 does not care
    assert h.produce("lax", 0, batch(b"x"), acks=-1).error_code == 0  # the topic's own override
    assert h.core.log_manager.get(TopicPartition("t", 0)).log_end_offset == 1


# ---------------------------------------------------------------- fetch


def test_fetch_errors_and_limits() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    assert h.fetch("orders", 1, 0).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert h.fetch("nope", 0, 0).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert h.fetch("orders", 0, 5).error_code == ErrorCode.OFFSET_OUT_OF_RANGE
    big = batch(b"x" * 300)
    for _ in range(3):
        h.produce("orders", 0, big)
    # At least one whole batch even when it exceeds every limit.
    out = h.fetch("orders", 0, 0, max_bytes=10)
    assert [r.offset for r in decode_records(out.records)] == [0]
    out = h.fetch("orders", 0, 0, max_bytes=len(big) * 2)
    assert [r.offset for r in decode_records(out.records)] == [0, 1]
    out = h.fetch("orders", 0, 3)
    assert out.error_code == 0 and out.records == b""


def test_fetch_max_bytes_spans_partitions() -> None:
    h = BrokerHarness()
    h.start([topic_record("two", "T5"), partition_record("T5", 0, [1], leader=1), partition_record("T5", 1, [1], leader=1)])
    big = batch(b"y" * 300)
    h.produce("two", 0, big)
    h.produce("two", 1, big)
    request = broker_pb2.FetchRequest(replica_id=-1, max_bytes=len(big) + 10, partitions=[
        broker_pb2.FetchPartition(topic="two", partition=p, fetch_offset=0, partition_max_bytes=1 << 20) for p in (0, 1)])
    response = h.call("Fetch", request)
    assert [len(p.records) for p in response.partitions] == [len(big), 0]
    assert [p.error_code for p in response.partitions] == [0, 0]


def test_long_poll_is_parked_then_released_by_an_append() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    request = broker_pb2.FetchRequest(replica_id=-1, max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, partitions=[
        broker_pb2.FetchPartition(topic="orders", partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])
    envelope, fx = h.request("Fetch", request)
    assert not fx.replies and len(h.core.fetches) == 1
    assert h.core.next_deadline_ms() <= h.now_ms + 500
    h.now_ms += 100
    _, fx = h.request("Produce", broker_pb2.ProduceRequest(acks=1, partitions=[
        broker_pb2.PartitionProduceData(topic="orders", partition=0, records=batch(b"late"))]))
    released = [r for r in fx.replies if r.request_id == envelope.request_id]
    assert len(released) == 1 and len(h.core.fetches) == 0
    [part] = released[0].message.partitions
    assert [r.value for r in decode_records(part.records)] == [b"late"] and part.high_watermark == 1


def test_long_poll_expires_on_tick() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    request = broker_pb2.FetchRequest(replica_id=-1, max_wait_ms=300, min_bytes=1, max_bytes=1 << 20, partitions=[
        broker_pb2.FetchPartition(topic="orders", partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])
    envelope, fx = h.request("Fetch", request)
    assert not fx.replies
    deadline = h.now_ms + 300
    assert h.core.next_deadline_ms() <= deadline
    assert not h.tick(299).replies
    fx = h.tick(1)
    [reply] = fx.replies
    assert reply.request_id == envelope.request_id and reply.message.partitions[0].records == b""
    assert len(h.core.fetches) == 0


def test_parked_fetch_is_answered_when_leadership_moves() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    parked = []
    for epoch in (-1, 0):  # unknown epoch / the epoch the leadership moves away from
        request = broker_pb2.FetchRequest(replica_id=-1, max_wait_ms=5000, min_bytes=1, partitions=[
            broker_pb2.FetchPartition(topic="orders", partition=0, fetch_offset=0, partition_max_bytes=1 << 20,
                                      current_leader_epoch=epoch)])
        parked.append(h.request("Fetch", request)[0])
    fx = h.apply([leader_change_record("T1", 0, leader=2, leader_epoch=1)])
    codes = [next(r for r in fx.replies if r.request_id == e.request_id).message.partitions[0].error_code
             for e in parked]
    assert codes == [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH]


# ---------------------------------------------------------------- list offsets


def test_list_offsets_earliest_latest_and_by_timestamp() -> None:
    h = BrokerHarness()
    h.start(ORDERS)
    h.produce("orders", 0, batch(b"a", b"b", timestamp_ms=1000))
    h.produce("orders", 0, batch(b"c", timestamp_ms=5000))

    def offsets(*timestamps: int, partition: int = 0):
        response = h.call("ListOffsets", broker_pb2.ListOffsetsRequest(replica_id=-1, partitions=[
            broker_pb2.ListOffsetsPartition(topic="orders", partition=partition, timestamp_ms=ts) for ts in timestamps]))
        return [(p.error_code, p.offset) for p in response.partitions]

    assert offsets(-2, -1) == [(0, 0), (0, 3)]
    assert offsets(1000, 1001, 4000, 5000, 6000) == [(0, 0), (0, 1), (0, 2), (0, 2), (0, -1)]
    assert offsets(-1, partition=1) == [(ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)]
    response = h.call("ListOffsets", broker_pb2.ListOffsetsRequest(partitions=[
        broker_pb2.ListOffsetsPartition(topic="orders", partition=0, timestamp_ms=1001)]))
    assert response.partitions[0].timestamp_ms == 1001 and response.partitions[0].leader_epoch == 0
