"""The follower's fetch loop seen from the wire: back-off on errors, one long-poll per leader,
superseded answers ignored, divergence sends it back to truncation."""

from __future__ import annotations

from replication_harness import ReplicationCluster, batch

from brokerlab.errors import ErrorCode
from brokerlab.v1 import broker_pb2


def cluster(**broker_config) -> ReplicationCluster:
    c = ReplicationCluster(broker_config=broker_config)
    c.wait_ready()
    c.create_topic("orders", assignment=[[1, 2, 3]])
    c.advance(10)
    return c


def fetches_of(broker_id: int):
    return lambda e: e.rpc == "Fetch" and not e.is_response and e.src == f"broker-{broker_id}"


def error_answer(request, code: int) -> broker_pb2.FetchResponse:
    response = broker_pb2.FetchResponse()
    for p in request.message.partitions:
        response.partitions.add(topic=p.topic, partition=p.partition, error_code=code)
    return response


def test_partition_errors_and_failed_calls_back_off_exponentially() -> None:
    c = cluster(**{"replica.fetch.backoff.ms": "20", "retry.backoff.max.ms": "1000"})
    held = c.hold(fetches_of(3))
    c.produce("orders", 0, batch(b"a"), acks=1)  # answers broker 3's parked long-poll
    [request] = c.take(held)
    c.deliver([request.reply(error_answer(request, ErrorCode.UNKNOWN_LEADER_EPOCH))])
    [failed] = c.named("ReplicaFetchFailed", "broker-3")
    assert failed.fields["error"] == "UNKNOWN_LEADER_EPOCH" and failed.fields["retry_in_ms"] == 20
    c.advance(19)
    assert not c.take(held)
    c.advance(1)
    [request] = c.take(held)
    c.deliver([request.reply(error_answer(request, ErrorCode.NOT_LEADER_OR_FOLLOWER))])
    c.advance(39)
    assert not c.take(held)  # doubled: 40 ms
    c.advance(1)
    [request] = c.take(held)
    c.deliver([request.failed("UNAVAILABLE: connection refused")])  # the whole call failed
    c.advance(19)
    assert not c.take(held)
    c.advance(1)
    [request] = c.take(held)
    c._holds.remove(held)
    c.deliver([request])
    assert c.log(3, "orders").log_end_offset == 1  # back to normal


def test_a_superseded_answer_is_ignored() -> None:
    c = cluster()
    held = c.hold(fetches_of(3))
    c.produce("orders", 0, batch(b"a"), acks=1)
    [first] = c.take(held)
    c.create_topic("second", assignment=[[1, 3]])
    c.run()
    [second] = c.take(held)  # a new partition to fetch from broker 1: a new fetch covers both
    assert sorted(p.topic for p in second.message.partitions) == ["orders", "second"]
    c.deliver([first])  # parked at the leader (nothing new)...
    c.deliver([second])  # ...and answered, empty, when the newer fetch arrives
    assert not c.take(held)  # the empty answer to the old fetch started nothing
    # One long-poll parked per follower (broker 2's, and broker 3's newer one).
    assert sorted(p.operation.message.replica_id for p in c.core(1).fetches.all()) == [2, 3]
    c._holds.remove(held)
    c.produce("second", 0, batch(b"s"), acks=-1)
    assert c.log(3, "second").log_end_offset == 1


def test_a_diverging_epoch_sends_the_follower_back_to_truncation() -> None:
    c = cluster()
    held = c.hold(fetches_of(3))
    questions = c.hold(lambda e: e.rpc == "OffsetForLeaderEpoch" and not e.is_response)
    c.produce("orders", 0, batch(b"a"), acks=1)
    [request] = c.take(held)
    response = broker_pb2.FetchResponse()
    response.partitions.add(topic="orders", partition=0, high_watermark=0, log_end_offset=1,
                            diverging_epoch=broker_pb2.EpochEndOffset(epoch=0, end_offset=0))
    c.deliver([request.reply(response)])
    [question] = c.take(questions)
    [asked] = question.message.partitions
    assert (asked.topic, asked.current_leader_epoch, asked.leader_epoch) == ("orders", 0, 0)
    assert question.message.replica_id == 3
    c._holds.clear()
    c.deliver([question])
    c.run()
    assert c.log(3, "orders").log_end_offset == 1 and not c.named("LogTruncated", "broker-3")


def test_isr_expansion_needs_the_followers_current_broker_epoch() -> None:
    c = cluster(**{"replica.lag.time.max.ms": "1000"})
    held = c.hold(fetches_of(3))
    c.produce("orders", 0, batch(b"a"), acks=1)
    c.advance(2_000)
    assert c.partition("orders").isr == [1, 2]
    [request] = c.take(held)
    request.message.replica_broker_epoch += 1000  # a fetch from an older or unknown registration
    proposals = len(c.named("IsrChangeProposed", "broker-1"))
    c.deliver([request])
    assert len(c.named("IsrChangeProposed", "broker-1")) == proposals
    c._holds.remove(held)
    c.advance(600)  # its next fetch carries the right epoch
    assert c.partition("orders").isr == [1, 2, 3]
