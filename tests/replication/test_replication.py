"""Replication between three real BrokerCores and the real ControllerCore, delivered by hand.

High watermark, acks=all purgatory, min.insync.replicas, ISR shrink/expand through
AlterPartition, truncation of a zombie's tail by leader epoch, leader-epoch fencing of requests.
"""

from __future__ import annotations

import pytest
from replication_harness import ReplicationCluster, batch

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.sansio import Envelope
from brokerlab.v1 import broker_pb2

LEADER = 1


def cluster(controller_config: dict[str, str] | None = None, **broker_config) -> ReplicationCluster:
    """Brokers 1-3 ready and topic "orders" (one partition, replicas [1, 2, 3], leader 1)."""
    c = ReplicationCluster(broker_config=broker_config, controller_config=controller_config)
    c.wait_ready()
    c.create_topic("orders", assignment=[[1, 2, 3]])
    c.advance(10)
    assert c.leader("orders") == LEADER
    return c


def fetch_from(broker_id: int) -> "callable":
    """Matches the follower Fetch requests ``broker_id`` sends (to hold them back)."""
    return lambda e: e.rpc == "Fetch" and not e.is_response and e.src == f"broker-{broker_id}"


def fetched_by(broker_id: int) -> "callable":
    """Matches the answers to ``broker_id``'s follower fetches (to keep the data from it)."""
    return lambda e: e.rpc == "Fetch" and e.is_response and e.dst == f"broker-{broker_id}"


def test_high_watermark_advances_only_when_every_isr_member_has_the_data() -> None:
    c = cluster()
    c.hold(fetched_by(3))
    assert c.answer(c.produce("orders", 0, batch(b"a", b"b"), acks=1)).error_code == 0
    leader_log = c.log(LEADER, "orders")
    assert leader_log.log_end_offset == 2 and c.log(2, "orders").log_end_offset == 2
    assert c.log(3, "orders").log_end_offset == 0
    assert leader_log.high_watermark == 0  # broker 3 is in the ISR and does not have it
    assert c.values("orders") == []  # consumers read only up to the high watermark
    c.release_holds()
    assert leader_log.high_watermark == 2 and c.values("orders") == [b"a", b"b"]
    # Followers learn the high watermark from the leader's answers, never beyond their own end.
    c.produce("orders", 0, batch(b"c"), acks=-1)
    for broker_id in (2, 3):
        log = c.log(broker_id, "orders")
        assert log.log_end_offset == 3 and log.high_watermark <= log.log_end_offset
    c.advance(600)  # the followers' next long-polls come back with the new high watermark
    assert [c.log(b, "orders").high_watermark for b in (1, 2, 3)] == [3, 3, 3]


def test_acks_all_waits_for_the_isr_and_is_released_by_the_follower_fetch() -> None:
    c = cluster()
    c.hold(fetch_from(2))
    c.hold(fetch_from(3))
    request_id = c.produce("orders", 0, batch(b"x", b"y", b"z"), acks=-1)
    assert c.answer(request_id) is None and len(c.core(LEADER).replica_manager.produces) == 1
    # acks=1 behind it is answered at once.
    assert c.answer(c.produce("orders", 0, batch(b"w"), acks=1)).base_offset == 3
    # Both followers got the batches (their parked long-polls were answered by the appends);
    # their next fetches report the new position and are held here.
    [from_2], [from_3] = c.take(fetch_from(2)), c.take(fetch_from(3))
    assert from_2.message.partitions[0].fetch_offset == 3  # the acks=1 batch came after
    c.deliver([from_2])
    assert c.answer(request_id) is None  # broker 3's position is still 0 as far as the leader knows
    c.deliver([from_3])
    out = c.answer(request_id)
    assert (out.error_code, out.base_offset) == (ErrorCode.NONE, 0)
    assert c.log(LEADER, "orders").high_watermark == 3


def test_the_answer_leaves_in_the_step_that_handles_the_last_follower_fetch() -> None:
    c = cluster()
    leader = c.core(LEADER)
    tp = TopicPartition("orders", 0)
    request = Envelope("client-x", "broker-1", "Produce", broker_pb2.ProduceRequest(acks=-1, timeout_ms=5000, partitions=[
        broker_pb2.PartitionProduceData(topic="orders", partition=0, records=batch(b"q"))]), 1)
    fx = leader.step(request, c.now_ms)
    assert not [r for r in fx.replies if r.dst == "client-x"]
    # The parked follower long-polls are answered by the append itself (no timer).
    answered = [r for r in fx.replies if r.rpc == "Fetch"]
    assert sorted(r.dst for r in answered) == ["broker-2", "broker-3"]
    assert all(r.message.partitions[0].records for r in answered)
    for broker_id in (2, 3):
        fetch = broker_pb2.FetchRequest(replica_id=broker_id, max_wait_ms=500, min_bytes=1,
                                        replica_broker_epoch=c.controller.state.brokers[broker_id].broker_epoch,
                                        partitions=[broker_pb2.FetchPartition(
                                            topic="orders", partition=0, fetch_offset=1, current_leader_epoch=0,
                                            last_fetched_epoch=0, partition_max_bytes=1 << 20)])
        fx = leader.step(Envelope(f"broker-{broker_id}", "broker-1", "Fetch", fetch, 100 + broker_id), c.now_ms)
    [reply] = [r for r in fx.replies if r.dst == "client-x"]
    assert reply.message.partitions[0].error_code == 0
    assert leader.log_manager.get(tp).high_watermark == 1


def test_acks_all_times_out_when_the_isr_does_not_follow() -> None:
    c = cluster()
    c.hold(fetch_from(3))
    request_id = c.produce("orders", 0, batch(b"slow"), acks=-1, timeout_ms=300)
    c.advance(299)
    assert c.answer(request_id) is None
    c.advance(1)
    out = c.answer(request_id)
    assert out.error_code == ErrorCode.REQUEST_TIMED_OUT and out.base_offset == 0


def test_min_insync_replicas_before_and_after_append() -> None:
    c = cluster(**{"replica.lag.time.max.ms": "400"})
    # A produce that waits while both followers stop fetching...
    c.hold(fetch_from(2))
    c.hold(fetch_from(3))
    waiting = c.produce("orders", 0, batch(b"lonely"), acks=-1, timeout_ms=30_000)
    assert c.answer(waiting) is None
    # ...until the leader drops them from the ISR: the batch is committed by an ISR of one,
    # which is below min.insync.replicas=2.
    c.advance(1_000)
    assert c.partition("orders").isr == [1]
    out = c.answer(waiting)
    assert out.error_code == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND and out.base_offset == 0
    # Now refused before the append: the log does not grow.
    end = c.log(LEADER, "orders").log_end_offset
    out = c.answer(c.produce("orders", 0, batch(b"refused"), acks=-1))
    assert out.error_code == ErrorCode.NOT_ENOUGH_REPLICAS and out.base_offset == -1
    assert c.log(LEADER, "orders").log_end_offset == end
    # acks=1 does not care.
    assert c.answer(c.produce("orders", 0, batch(b"fine"), acks=1)).error_code == 0


def alter_partition(e: Envelope) -> bool:
    return e.rpc == "AlterPartition" and not e.is_response


def test_isr_shrinks_after_the_lag_time_and_expands_when_caught_up() -> None:
    c = cluster(**{"replica.lag.time.max.ms": "1000"})
    lagging = c.hold(fetch_from(3))
    c.hold(alter_partition)
    c.produce("orders", 0, batch(b"a"), acks=1)
    c.advance(1_000)
    assert not c.take(alter_partition)  # within the lag time
    c.advance(600)  # the leader checks every lag/2
    [shrink] = c.take(alter_partition)
    assert (shrink.message.broker_id, shrink.message.broker_epoch) == (1, c.controller.state.brokers[1].broker_epoch)
    [item] = shrink.message.partitions
    assert (item.topic, item.partition, list(item.new_isr)) == ("orders", 0, [1, 2])
    assert (item.leader_epoch, item.partition_epoch) == (0, 0)
    [proposed] = c.named("IsrChangeProposed", "broker-1")
    assert proposed.fields["replicas"] == [3] and proposed.fields["reason"] == "out_of_sync"
    # While the shrink is pending the high watermark still waits for broker 3 (maximal ISR).
    c.produce("orders", 0, batch(b"b"), acks=1)
    assert c.log(LEADER, "orders").high_watermark == 0
    c.deliver([shrink])
    partition = c.partition("orders")
    assert (partition.isr, partition.partition_epoch) == ([1, 2], 1)
    [shrunk] = c.named("IsrShrunk", "broker-1")
    assert shrunk.fields["isr"] == [1, 2] and shrunk.fields["partition_epoch"] == 1
    assert c.log(LEADER, "orders").high_watermark == 2  # no longer waits for broker 3
    # Broker 3 fetches again and catches up: the leader proposes it back, on partition epoch 1.
    c.unhold(lagging)
    [expand] = c.take(alter_partition)
    [item] = expand.message.partitions
    assert list(item.new_isr) == [1, 2, 3] and item.partition_epoch == 1
    c.deliver([expand])
    partition = c.partition("orders")
    assert (partition.isr, partition.partition_epoch) == ([1, 2, 3], 2)
    assert c.named("IsrExpanded", "broker-1")[-1].fields["isr"] == [1, 2, 3]
    for broker_id in (1, 2, 3):
        assert c.partition("orders", broker_id=broker_id).isr == [1, 2, 3]


def test_a_stale_isr_proposal_is_dropped_and_the_journal_wins() -> None:
    # Timed for a 1 s session: with a shorter one broker 2 is fenced early enough in the 1.2 s
    # that the leader already has a fresh shrink of broker 3 pending when the stale one lands.
    session = {"broker.session.timeout.ms": "1000"}
    c = cluster(session, **{"replica.lag.time.max.ms": "1000"}, **session)
    c.hold(fetch_from(3))
    c.hold(alter_partition)
    c.produce("orders", 0, batch(b"a"), acks=1)
    c.advance(1_600)
    [shrink] = c.take(alter_partition)
    # Meanwhile the controller changes the partition itself (broker 2 is fenced away).
    c.isolate(2)
    c.advance(1_200)
    assert c.partition("orders").isr == [1, 3] and c.partition("orders").partition_epoch == 1
    leader = c.core(LEADER).replica_manager.leaders[TopicPartition("orders", 0)]
    assert leader.isr == [1, 3] and leader.partition_epoch == 1
    c.deliver([shrink])  # based on partition epoch 0: INVALID_UPDATE_VERSION, nothing changes
    assert c.partition("orders").isr == [1, 3]
    assert leader.isr == [1, 3] and not leader.is_pending


def test_a_retried_expansion_refused_as_stale_keeps_the_maximal_isr() -> None:
    """The controller applies an ISR expansion but its answer is lost, and so is the journal
    on its way to the leader; the leader's retry (same proposal, old partition epoch) gets
    INVALID_UPDATE_VERSION. That does not say the change was not applied: the leader keeps
    waiting for the new member until the journal says, so acks=all is never answered without a
    replica the controller has in the ISR (found by the simulator, power-loss-leader seed 448)."""
    c = cluster(**{"replica.lag.time.max.ms": "1000"})
    lagging = c.hold(fetch_from(3))
    c.hold(alter_partition)
    c.produce("orders", 0, batch(b"a"), acks=1)
    c.advance(1_600)
    c.deliver(c.take(alter_partition))  # shrink to [1, 2], partition epoch 1
    assert c.partition("orders").isr == [1, 2]
    journal_to_leader = c.hold(lambda e: e.rpc == "FetchMetadataRecords" and e.is_response and e.dst == "broker-1")
    answer_to_leader = c.hold(lambda e: e.rpc == "AlterPartition" and e.is_response)
    c.unhold(lagging)  # broker 3 catches up: the leader proposes [1, 2, 3] on partition epoch 1
    [expand] = c.take(alter_partition)
    c.deliver([expand])
    assert (c.partition("orders").isr, c.partition("orders").partition_epoch) == ([1, 2, 3], 2)  # applied
    [lost] = c.take(answer_to_leader)
    c.deliver([Envelope(lost.src, lost.dst, lost.rpc, None, lost.request_id, True, "DEADLINE_EXCEEDED: lost")])
    c.advance(1_000)  # the retry, still based on partition epoch 1
    retries = c.take(alter_partition)
    assert [list(p.new_isr) for r in retries for p in r.message.partitions] == [[1, 2, 3]]
    c.deliver(retries)
    [refused] = c.take(answer_to_leader)
    assert refused.message.partitions[0].error_code == ErrorCode.INVALID_UPDATE_VERSION
    c.deliver([refused])
    leader = c.core(LEADER).replica_manager.leaders[TopicPartition("orders", 0)]
    assert leader.is_pending and leader.partition_epoch == 1
    # Broker 3 stops fetching; an acks=all write must wait for it (it is in the ISR).
    c.hold(fetch_from(3))
    c.advance(200)
    request = c.produce("orders", 0, batch(b"b"), acks=-1)
    c.advance(100)
    assert c.answer(request) is None
    assert c.log(LEADER, "orders").high_watermark == 1
    # The journal arrives: the committed ISR [1, 2, 3] replaces the pending one.
    c.unhold(journal_to_leader)
    c.advance(50)
    assert (leader.isr, leader.partition_epoch, leader.is_pending) == ([1, 2, 3], 2, False)
    assert c.answer(request) is None


def test_list_offsets_says_offset_not_available_until_a_new_leader_knows_its_high_watermark() -> None:
    """KIP-207: right after an election the new leader's high watermark may trail the start of
    its epoch (followers learn the high watermark from later fetch answers); "latest" would then
    go back in time, so it answers OFFSET_NOT_AVAILABLE (retriable) until a follower fetches."""
    c = cluster()
    lagging = c.hold(fetched_by(2))
    assert c.answer(c.produce("orders", 0, batch(b"a", b"b", b"c"), acks=1)).error_code == 0
    c.unhold(lagging)  # broker 2 gets the records ...
    c.hold(fetched_by(2))  # ... but not the next answer, which would carry the high watermark 3
    c.advance(600)
    assert c.log(LEADER, "orders").high_watermark == 3 and c.log(2, "orders").log_end_offset == 3
    assert c.log(2, "orders").high_watermark < 3
    c.hold(fetch_from(3))  # and nobody fetches from the new leader for now
    c.kill(LEADER)
    c.advance(1_500)
    assert c.leader("orders") == 2

    def latest() -> broker_pb2.ListOffsetsPartitionResponse:
        [answer] = c.call("broker-2", "ListOffsets", broker_pb2.ListOffsetsRequest(replica_id=-1, partitions=[
            broker_pb2.ListOffsetsPartition(topic="orders", partition=0, timestamp_ms=-1,
                                            current_leader_epoch=-1)])).partitions
        return answer

    assert latest().error_code == ErrorCode.OFFSET_NOT_AVAILABLE
    c.release_holds()
    c.advance(600)  # broker 3 fetches in the new epoch: the high watermark reaches 3
    answer = latest()
    assert (answer.error_code, answer.offset) == (0, 3)


def test_a_zombie_leaders_unreplicated_tail_is_truncated_by_leader_epoch() -> None:
    c = cluster()
    assert c.answer(c.produce("orders", 0, batch(b"c0", b"c1", b"c2"), acks=-1)).error_code == 0
    # Broker 1 loses the cluster but not its clients: it still thinks it leads epoch 0 and
    # appends alone (acks=1 is acknowledged by the leader only).
    c.isolate(LEADER)
    for value in (b"z3", b"z4"):
        assert c.answer(c.produce("orders", 0, batch(value), acks=1, broker_id=LEADER)).error_code == 0
    assert c.log(LEADER, "orders").log_end_offset == 5
    # The controller fences it and elects broker 2 (epoch 1), which takes new writes.
    c.advance(1_500)
    assert c.leader("orders") == 2 and c.partition("orders").leader_epoch == 1
    assert c.answer(c.produce("orders", 0, batch(b"n3"), acks=1)).error_code == 0
    assert c.log(1, "orders").log_end_offset == 5  # the zombie still has its own tail
    # Back in touch: broker 1 learns it is a follower, asks broker 2 where epoch 0 ended (3)
    # and cuts exactly its two zombie records, then replicates the new leader's.
    c.heal()
    c.settle(2_000)
    [cut] = c.named("LogTruncated", "broker-1")
    assert (cut.fields["from_offset"], cut.fields["to_offset"], cut.fields["records_removed"]) == (3, 5, 2)
    assert cut.fields["reason"] == "leader_epoch" and cut.fields["leader"] == 2
    assert (cut.fields["topic"], cut.fields["partition"]) == ("orders", 0)
    for broker_id in (1, 2, 3):
        assert c.log_values(broker_id, "orders") == [b"c0", b"c1", b"c2", b"n3"]
    assert not c.named("LogTruncated", "broker-3") and not c.named("LogTruncated", "broker-2")
    assert c.values("orders") == [b"c0", b"c1", b"c2", b"n3"]
    # Broker 1 rejoins the ISR once caught up.
    assert sorted(c.partition("orders").isr) == [1, 2, 3]


@pytest.mark.parametrize("rpc", ["Fetch", "ListOffsets", "OffsetForLeaderEpoch"])
def test_current_leader_epoch_is_checked(rpc: str) -> None:
    c = cluster()
    c.kill(LEADER)
    c.advance(1_500)  # broker 2 leads epoch 1
    assert (c.leader("orders"), c.partition("orders").leader_epoch) == (2, 1)

    def ask(broker_id: int, epoch: int) -> int:
        if rpc == "Fetch":
            return c.consume("orders", broker_id=broker_id, current_leader_epoch=epoch).error_code
        if rpc == "ListOffsets":
            message = broker_pb2.ListOffsetsRequest(replica_id=-1, partitions=[broker_pb2.ListOffsetsPartition(
                topic="orders", partition=0, timestamp_ms=-1, current_leader_epoch=epoch)])
        else:
            message = broker_pb2.OffsetForLeaderEpochRequest(replica_id=-1, partitions=[
                broker_pb2.OffsetForLeaderEpochPartition(topic="orders", partition=0, current_leader_epoch=epoch,
                                                         leader_epoch=0)])
        return c.call(f"broker-{broker_id}", rpc, message).partitions[0].error_code

    assert ask(2, 1) == ErrorCode.NONE
    assert ask(2, -1) == ErrorCode.NONE  # unknown: not checked
    assert ask(2, 0) == ErrorCode.FENCED_LEADER_EPOCH
    assert ask(2, 2) == ErrorCode.UNKNOWN_LEADER_EPOCH
    assert ask(3, 1) == ErrorCode.NOT_LEADER_OR_FOLLOWER  # the right epoch, the wrong broker
    assert ask(3, 0) == ErrorCode.FENCED_LEADER_EPOCH


def test_offset_for_leader_epoch_answers_from_the_epoch_cache() -> None:
    c = cluster()
    c.answer(c.produce("orders", 0, batch(b"a", b"b"), acks=-1))
    c.kill(LEADER)
    c.advance(1_500)
    c.answer(c.produce("orders", 0, batch(b"c"), acks=-1))

    def ask(epoch: int) -> tuple[int, int]:
        response = c.call("broker-2", "OffsetForLeaderEpoch", broker_pb2.OffsetForLeaderEpochRequest(
            replica_id=-1, partitions=[broker_pb2.OffsetForLeaderEpochPartition(
                topic="orders", partition=0, current_leader_epoch=-1, leader_epoch=epoch)]))
        out = response.partitions[0]
        return out.leader_epoch, out.end_offset

    assert ask(0) == (0, 2)  # epoch 0 ended where epoch 1 began
    assert ask(1) == (1, 3)  # the current epoch ends at the log end
    assert ask(5) == (-1, -1)  # an epoch the leader never had


def test_one_fetch_per_leader_covers_every_followed_partition() -> None:
    c = ReplicationCluster()
    c.wait_ready()
    c.create_topic("many", assignment=[[1, 2, 3], [1, 3, 2], [2, 1, 3]])
    c.advance(10)
    c.hold(lambda e: e.rpc == "Fetch" and not e.is_response)
    c.call("broker-1", "Produce", broker_pb2.ProduceRequest(acks=1, timeout_ms=1000, partitions=[
        broker_pb2.PartitionProduceData(topic="many", partition=p, records=batch(b"v")) for p in (0, 1)]))
    # The answers to broker 2's and 3's long-polls at broker 1 went out; their next fetches are held.
    to_1 = [e for e in c.held if e.dst == "broker-1"]
    assert sorted(e.src for e in to_1) == ["broker-2", "broker-3"]
    for envelope in to_1:
        assert sorted(p.partition for p in envelope.message.partitions) == [0, 1]
        assert all(p.fetch_offset == 1 and p.current_leader_epoch == 0 and p.last_fetched_epoch == 0
                   for p in envelope.message.partitions)
        assert envelope.message.replica_id == int(envelope.src.split("-")[1])
        assert envelope.message.replica_broker_epoch == c.controller.state.brokers[envelope.message.replica_id].broker_epoch
    assert len(c.core(1).fetches) == 0  # both answered by the appends
    c.release_holds()
    # Each follower keeps exactly one long-poll parked per leader.
    assert len(c.core(1).fetches) == 2 and len(c.core(2).fetches) == 2


def test_a_new_partition_supersedes_the_parked_long_poll() -> None:
    c = ReplicationCluster()
    c.wait_ready()
    c.create_topic("first", assignment=[[1, 2]])
    c.advance(10)
    leader = c.core(1)
    assert len(leader.fetches) == 1  # broker 2's long-poll for "first"
    before = c.now_ms
    c.create_topic("second", assignment=[[1, 2]])
    c.run()
    # Broker 2 did not wait for the 500 ms long-poll to come back: a new fetch covers both.
    assert c.now_ms == before
    [parked] = leader.fetches.all()
    assert sorted(p.topic for p in parked.operation.message.partitions) == ["first", "second"]
    c.produce("second", 0, batch(b"now"), acks=-1)
    assert c.log(2, "second").log_end_offset == 1


def test_a_follower_far_behind_the_leaders_log_start_restarts_its_log() -> None:
    c = cluster()
    c.hold(fetch_from(3))
    for i in range(3):
        c.answer(c.produce("orders", 0, batch(f"v{i}".encode()), acks=1))
    leader_log = c.log(LEADER, "orders")
    c.log(2, "orders")
    # Pretend retention removed the start of the leader's log (as DeleteRecords would).
    leader_log.high_watermark = 3
    leader_log.maybe_increment_log_start_offset(2)
    c.release_holds()
    [cut] = c.named("LogTruncated", "broker-3")
    assert cut.fields["reason"] == "behind_leader_log_start" and cut.fields["log_start_offset"] == 2
    log3 = c.log(3, "orders")
    assert (log3.log_start_offset, log3.log_end_offset) == (2, 3)


def test_flush_policy_batch_applies_on_followers() -> None:
    c = cluster(**{"log.flush.policy": "batch"})
    c.answer(c.produce("orders", 0, batch(b"durable"), acks=-1))
    for broker_id in (1, 2, 3):
        log = c.log(broker_id, "orders")
        assert log.recovery_point == log.log_end_offset == 1


def test_high_watermarks_are_checkpointed() -> None:
    from node.log import checkpoints

    c = cluster()
    c.answer(c.produce("orders", 0, batch(b"a", b"b"), acks=-1))
    c.advance(6_000)  # replica.high.watermark.checkpoint.interval.ms (5 s)
    for broker_id in (1, 2, 3):
        offsets, problem = checkpoints.read_offsets(c.disks[broker_id], checkpoints.REPLICATION_CHECKPOINT)
        assert problem is None and offsets[TopicPartition("orders", 0)] == 2
