"""AlterPartition: every rejection (in Kafka's order) and every accepted change, with its record."""

from __future__ import annotations

import pytest
from controller_harness import Harness

from brokerlab.errors import ErrorCode
from brokerlab.v1 import controller_pb2 as pb
from controller.config import ControllerConfig

TIMEOUT = ControllerConfig().session_timeout_ms


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.epochs = harness.start_brokers([1, 2, 3, 4])
    harness.create_assigned("t", [[1, 2, 3], [2, 3, 1]])
    return harness


def test_shrink_writes_a_record_and_answers_the_new_state(h):
    start = h.core.journal.end_offset
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1, 3])
    assert result.error_code == ErrorCode.NONE
    assert (result.leader_id, result.leader_epoch, list(result.isr), result.partition_epoch) == (1, 0, [1, 3], 1)
    (record,) = h.records_since(start)
    change = record.partition_change
    assert (change.isr_changed, change.leader_changed, list(change.isr)) == (True, False, [1, 3])
    assert (change.leader_id, change.leader_epoch, change.partition_epoch, change.reason) == (1, 0, 1, "isr_shrink")
    p = h.partition("t", 0)
    assert (p.isr, p.leader_id, p.leader_epoch, p.partition_epoch) == ([1, 3], 1, 0, 1)
    shrunk = h.events[-1]
    assert shrunk.name == "IsrShrunk"
    assert {k: shrunk.fields[k] for k in ("topic", "partition", "isr", "partition_epoch", "reason")} == {
        "topic": "t", "partition": 0, "isr": [1, 3], "partition_epoch": 1, "reason": "isr_shrink"
    }


def test_expand_after_a_shrink(h):
    h.alter_isr(1, h.epochs[1], "t", 0, [1])
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1, 2])
    assert (result.error_code, list(result.isr), result.partition_epoch) == (ErrorCode.NONE, [1, 2], 2)
    assert h.events[-1].name == "IsrExpanded" and h.events[-1].fields["isr"] == [1, 2]
    assert h.core.journal.read(h.core.journal.end_offset - 1, 1)[0].partition_change.reason == "isr_expand"


def test_shrink_and_expand_at_once_is_an_isr_change(h):
    h.alter_isr(1, h.epochs[1], "t", 0, [1, 2])
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1, 3])
    assert result.error_code == ErrorCode.NONE
    assert h.events[-1].name == "IsrChanged"
    assert h.core.journal.read(h.core.journal.end_offset - 1, 1)[0].partition_change.reason == "isr_change"


def test_same_isr_writes_nothing_and_answers_the_current_state(h):
    end = h.core.journal.end_offset
    result = h.alter_isr(1, h.epochs[1], "t", 0, [3, 2, 1])
    assert (result.error_code, list(result.isr), result.partition_epoch) == (ErrorCode.NONE, [1, 2, 3], 0)
    assert h.core.journal.end_offset == end


@pytest.mark.parametrize("broker_id, epoch_delta", [(1, 1), (1, -1), (9, 0)])
def test_stale_or_unknown_broker_epoch_rejects_the_whole_request(h, broker_id, epoch_delta):
    end = h.core.journal.end_offset
    epoch = h.epochs.get(broker_id, 0) + epoch_delta
    item = pb.AlterPartitionItem(topic="t", partition=0, leader_epoch=0, new_isr=[1], partition_epoch=0)
    response = h.alter_partition(broker_id, epoch, [item])
    assert response.error_code == ErrorCode.STALE_BROKER_EPOCH
    assert [r.error_code for r in response.partitions] == [ErrorCode.STALE_BROKER_EPOCH]
    assert h.core.journal.end_offset == end


def test_unknown_topic_or_partition(h):
    for topic, index in (("nope", 0), ("t", 7)):
        item = pb.AlterPartitionItem(topic=topic, partition=index, new_isr=[1])
        (result,) = h.alter_partition(1, h.epochs[1], [item]).partitions
        assert result.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_older_leader_epoch_is_fenced_and_newer_is_unknown(h):
    h.heartbeat(2, h.epochs[2], now_ms=TIMEOUT)
    h.heartbeat(3, h.epochs[3], now_ms=TIMEOUT)
    h.heartbeat(4, h.epochs[4], now_ms=TIMEOUT)
    h.tick(TIMEOUT + 1)  # broker 1 is fenced: partition 0 moves to 2 at leader epoch 1
    p = h.partition("t", 0)
    assert (p.leader_id, p.leader_epoch) == (2, 1)
    old = h.alter_isr(2, h.epochs[2], "t", 0, [2], leader_epoch=0)
    assert old.error_code == ErrorCode.FENCED_LEADER_EPOCH
    new = h.alter_isr(2, h.epochs[2], "t", 0, [2], leader_epoch=2)
    assert new.error_code == ErrorCode.UNKNOWN_LEADER_EPOCH


def test_a_follower_is_not_the_leader(h):
    result = h.alter_isr(2, h.epochs[2], "t", 0, [1, 2])
    assert result.error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER


def test_stale_partition_epoch_is_an_invalid_update_version(h):
    h.alter_isr(1, h.epochs[1], "t", 0, [1, 2])
    end = h.core.journal.end_offset
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1], partition_epoch=0)
    assert result.error_code == ErrorCode.INVALID_UPDATE_VERSION
    assert h.core.journal.end_offset == end and h.partition("t", 0).isr == [1, 2]


@pytest.mark.parametrize("new_isr", [[], [2, 3], [1, 4], [1, 1, 2]])
def test_malformed_isr_is_an_invalid_request(h, new_isr):
    assert h.alter_isr(1, h.epochs[1], "t", 0, new_isr).error_code == ErrorCode.INVALID_REQUEST


def test_fenced_replica_is_ineligible(h):
    h.alter_isr(1, h.epochs[1], "t", 0, [1, 2])
    for b in (1, 2, 4):
        h.heartbeat(b, h.epochs[b], now_ms=TIMEOUT)
    h.tick(TIMEOUT + 1)  # broker 3 is fenced
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1, 2, 3])
    assert result.error_code == ErrorCode.INELIGIBLE_REPLICA and "fenced" in result.error_message


def test_replica_in_controlled_shutdown_is_ineligible(h):
    h.alter_isr(1, h.epochs[1], "t", 0, [1, 2])
    assert not h.heartbeat(3, h.epochs[3], want_shut_down=True).should_shut_down  # it leaves partition 1's ISR
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1, 2, 3])
    assert result.error_code == ErrorCode.INELIGIBLE_REPLICA and "shutting down" in result.error_message


def test_a_partition_named_twice_is_answered_once(h):
    items = [
        pb.AlterPartitionItem(topic="t", partition=0, leader_epoch=0, new_isr=[1, 2], partition_epoch=0),
        pb.AlterPartitionItem(topic="t", partition=0, leader_epoch=0, new_isr=[1], partition_epoch=0),
    ]
    response = h.alter_partition(1, h.epochs[1], items)
    assert [r.error_code for r in response.partitions] == [ErrorCode.NONE, ErrorCode.INVALID_REQUEST]
    assert h.partition("t", 0).isr == [1, 2]


def test_items_succeed_or_fail_on_their_own(h):
    items = [
        pb.AlterPartitionItem(topic="t", partition=0, leader_epoch=0, new_isr=[1, 2], partition_epoch=0),
        pb.AlterPartitionItem(topic="t", partition=1, leader_epoch=0, new_isr=[2], partition_epoch=0),  # led by 2
    ]
    response = h.alter_partition(1, h.epochs[1], items)
    assert [r.error_code for r in response.partitions] == [ErrorCode.NONE, ErrorCode.NOT_LEADER_OR_FOLLOWER]


def test_restarted_broker_rejoins_only_when_its_leader_expands_the_isr(h):
    new_epoch = h.register(3, incarnation="restarted").broker_epoch
    assert all(3 not in p.isr for p in h.partitions("t"))
    h.heartbeat(3, new_epoch)  # caught up with the journal: unfenced
    assert not h.core.state.brokers[3].fenced
    assert all(3 not in p.isr for p in h.partitions("t"))  # unfencing does not put it back
    result = h.alter_isr(1, h.epochs[1], "t", 0, [1, 2, 3])
    assert result.error_code == ErrorCode.NONE and h.partition("t", 0).isr == [1, 2, 3]


def test_leader_in_controlled_shutdown_hands_over_when_a_follower_catches_up():
    h = Harness()
    epochs = h.start_brokers([1, 2, 3])
    h.create_assigned("t", [[1, 2, 3]])
    h.create_assigned("u", [[2, 3, 1]])
    h.alter_isr(1, epochs[1], "t", 0, [1])  # its followers fell behind
    first = h.heartbeat(1, epochs[1], want_shut_down=True)  # it leaves u's ISR; keeps t (no other ISR member)
    assert not first.should_shut_down
    assert h.partition("t", 0).leader_id == 1
    result = h.alter_isr(1, epochs[1], "t", 0, [1, 3])  # 3 caught up meanwhile
    assert result.error_code == ErrorCode.NEW_LEADER_ELECTED
    assert (result.leader_id, result.leader_epoch, list(result.isr), result.partition_epoch) == (3, 1, [3], 2)
    p = h.partition("t", 0)
    assert (p.leader_id, p.isr, p.leader_epoch) == (3, [3], 1)
    assert h.events[-1].name == "LeaderChanged" and h.events[-1].fields["reason"] == "controlled_shutdown"
