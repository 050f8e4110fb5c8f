"""The producer's sender under failover: refresh, backoff, retry to the new leader, final errors.

Sans-IO: the sender core with a fake metadata view; time is a number, no sockets, no sleeps.
"""

from __future__ import annotations

import random

import pytest
from test_sender import FakeMetadata, answer, send_records

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from client.producer.accumulator import RecordAccumulator
from client.producer.sender import SenderCore

T0 = TopicPartition("t", 0)
LEADER_ERRORS = [
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.FENCED_LEADER_EPOCH,
    ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.LEADER_NOT_AVAILABLE,
]


def setup(max_in_flight=5, seed=None, delivery_timeout_ms=10_000, batch_size=16384):
    acc = RecordAccumulator(batch_size=batch_size, linger_ms=0, delivery_timeout_ms=delivery_timeout_ms,
                            retry_backoff_ms=100, retry_backoff_max_ms=1000,
                            max_in_flight_per_broker=max_in_flight, pipeline_min_bytes=0,
                            random=None if seed is None else random.Random(seed))
    metadata = FakeMetadata({T0: 1})
    return acc, metadata, SenderCore(acc, metadata, acks="all", request_timeout_ms=3000, node="client-test")


@pytest.mark.parametrize("code", LEADER_ERRORS)
def test_leader_errors_refresh_at_once_and_retry_as_soon_as_a_new_leader_epoch_shows(code) -> None:
    acc, metadata, sender = setup()
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    sender.step(answer(request, ("t", 0, code, -1)), 10)
    assert metadata.update_requests >= 1 and not batch.done
    # Metadata still names the old leader: back off, and keep asking for fresh metadata.
    before = metadata.update_requests
    assert sender.tick(20).sends == [] and sender.tick(30).sends == []
    assert metadata.update_requests >= before + 2
    metadata.move(T0, 2)  # a refresh shows leader 2 at a newer epoch, well before the backoff ends
    (retry,) = sender.tick(40).sends
    assert retry.dst == "broker-2" and batch.attempts == 2 and batch.leader_epoch == 1
    sender.step(answer(retry, ("t", 0, 0, 5)), 45)
    assert batch.done and batch.error is None and batch.metadata(0, 0).offset == 5


def test_a_broken_connection_is_retried_on_the_new_leader_without_waiting_out_the_backoff() -> None:
    acc, metadata, sender = setup()
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    sender.step(request.failed("UNAVAILABLE: Socket closed"), 2)
    assert batch.awaiting_leader_change and batch.retry_at_ms == 102
    assert sender.tick(50).sends == []
    metadata.move(T0, 3)
    (retry,) = sender.tick(51).sends
    assert retry.dst == "broker-3"


def test_a_deadline_on_a_paused_leader_counts_as_a_possible_leader_move() -> None:
    acc, metadata, sender = setup()
    batch = send_records(acc)
    sender.tick(0)
    sender.tick(3000)  # no answer within request.timeout.ms: the core times the call out
    assert not batch.done and batch.awaiting_leader_change and metadata.update_requests >= 1
    assert batch.last_error.code == ErrorCode.REQUEST_TIMED_OUT
    metadata.move(T0, 2)
    (retry,) = sender.tick(3001).sends
    assert retry.dst == "broker-2"


def test_same_leader_epoch_waits_for_the_exponential_backoff() -> None:
    acc, metadata, sender = setup()
    batch = send_records(acc)
    at = 0
    retry_gaps = []
    for _ in range(5):
        (request,) = sender.tick(at).sends
        sender.step(request.failed("UNAVAILABLE: connection refused"), at)
        retry_gaps.append(batch.retry_at_ms - at)
        assert sender.tick(batch.retry_at_ms - 1).sends == []
        at = batch.retry_at_ms
    assert retry_gaps == [100, 200, 400, 800, 1000]  # no Random injected: no jitter


def test_backoff_jitter_comes_from_the_injected_random_and_replays_with_its_seed() -> None:
    def gaps(seed):
        acc, _, sender = setup(seed=seed, delivery_timeout_ms=60_000)
        batch = send_records(acc)
        at, out = 0, []
        for _ in range(6):
            (request,) = sender.tick(at).sends
            sender.step(answer(request, ("t", 0, ErrorCode.NOT_ENOUGH_REPLICAS, -1)), at)
            out.append(batch.retry_at_ms - at)
            at = batch.retry_at_ms
        return out

    first = gaps(7)
    assert first == gaps(7) and first != gaps(8)
    for gap, base in zip(first, [100, 200, 400, 800, 1000, 1000]):
        assert 0.8 * base <= gap <= 1.2 * base


@pytest.mark.parametrize("code", [ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND])
def test_not_enough_replicas_is_retried_until_the_delivery_timeout_then_reported_with_its_code(code) -> None:
    acc, metadata, sender = setup(delivery_timeout_ms=5000)
    batch = send_records(acc)
    at, attempts = 0, 0
    while not batch.done:
        effects = sender.tick(at)
        for request in effects.sends:
            attempts += 1
            sender.step(answer(request, ("t", 0, code, -1)), at + 1)
        at += 50
    assert attempts >= 4  # 100 + 200 + 400 + 800 + 1000 ... within 5 s
    assert batch.error.code == code
    assert metadata.update_requests == 0  # not a leader problem: no refresh, no early retry
    assert "delivery.timeout.ms=5000" in batch.error.message


def test_a_queued_batch_expiring_after_not_enough_replicas_keeps_that_code() -> None:
    acc, _, sender = setup(delivery_timeout_ms=1000)
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    sender.step(answer(request, ("t", 0, ErrorCode.NOT_ENOUGH_REPLICAS, -1)), 950)
    assert not batch.done  # retried, backing off until 1050 - past the deadline
    effects = sender.tick(1000)
    assert [e.name for e in effects.events] == ["BatchExpired"]
    assert batch.error.code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert "delivery.timeout.ms=1000" in batch.error.message and "last error" in batch.error.message


def test_a_batch_never_sent_still_expires_with_request_timed_out() -> None:
    acc, metadata, sender = setup(delivery_timeout_ms=1000)
    metadata.leaders.clear()
    batch = send_records(acc)
    sender.tick(0)
    sender.tick(1000)
    assert batch.error.code == ErrorCode.REQUEST_TIMED_OUT


def test_one_in_flight_keeps_partition_order_across_a_leader_move() -> None:
    acc, metadata, sender = setup(max_in_flight=1, batch_size=200)
    first = acc.append("t", 0, 1, None, b"a" * 100, (), 0)
    (request,) = sender.tick(0).sends
    second = acc.append("t", 0, 2, None, b"b" * 100, (), 1)
    assert second is not first
    assert sender.tick(1).sends == []  # the partition is muted while `first` is in flight
    sender.step(answer(request, ("t", 0, ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)), 2)
    metadata.move(T0, 2)
    (retry,) = sender.tick(3).sends  # the retried batch first, then the one queued behind it
    records = retry.message.partitions[0].records
    assert records.index(b"a" * 100) < records.index(b"b" * 100)
    sender.step(answer(retry, ("t", 0, 0, 10)), 4)
    assert (first.base_offset, second.base_offset) == (10, 11)


def test_several_in_flight_may_reorder_on_retry_as_in_kafka_without_idempotence() -> None:
    acc, metadata, sender = setup(max_in_flight=5, batch_size=200)
    first = acc.append("t", 0, 1, None, b"a" * 100, (), 0)
    (one,) = sender.tick(0).sends
    second = acc.append("t", 0, 2, None, b"b" * 100, (), 1)
    (two,) = sender.tick(1).sends  # pipelined: two requests of one partition in flight
    sender.step(answer(one, ("t", 0, ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)), 2)
    sender.step(answer(two, ("t", 0, 0, 20)), 3)  # the later batch was appended
    (retry,) = sender.tick(200).sends
    sender.step(answer(retry, ("t", 0, 0, 21)), 201)
    assert second.base_offset < first.base_offset  # documented: order needs max.in.flight=1


def test_fatal_errors_are_not_retried() -> None:
    for code in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.INVALID_REQUIRED_ACKS, ErrorCode.RECORD_LIST_TOO_LARGE,
                 ErrorCode.INVALID_TOPIC_EXCEPTION, ErrorCode.UNKNOWN_SERVER_ERROR):
        acc, metadata, sender = setup()
        batch = send_records(acc)
        (request,) = sender.tick(0).sends
        sender.step(answer(request, ("t", 0, code, -1)), 1)
        assert batch.done and batch.error.code == code and batch.attempts == 1
