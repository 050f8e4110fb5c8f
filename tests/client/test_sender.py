"""SenderCore: Produce requests per leader and every kind of answer, with Kafka's error codes."""

from __future__ import annotations

import pytest

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import validate_batches
from brokerlab.v1 import broker_pb2
from client.producer.accumulator import RecordAccumulator
from client.producer.sender import SenderCore, classify_transport_error, parse_acks


class FakeMetadata:
    def __init__(self, leaders: dict[TopicPartition, int]) -> None:
        self.leaders = dict(leaders)
        self.epochs: dict[TopicPartition, int] = {tp: 0 for tp in leaders}
        self.update_requests = 0

    def leader_for(self, tp: TopicPartition) -> int | None:
        return self.leaders.get(tp)

    def leader_epoch_for(self, tp: TopicPartition) -> int:
        return self.epochs.get(tp, -1)

    def move(self, tp: TopicPartition, leader: int) -> None:
        self.leaders[tp] = leader
        self.epochs[tp] = self.epochs.get(tp, -1) + 1

    def request_update(self) -> None:
        self.update_requests += 1


T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)


def setup(acks="all", **acc_overrides):
    config = dict(batch_size=16384, linger_ms=0, delivery_timeout_ms=10_000,
                  retry_backoff_ms=100, retry_backoff_max_ms=1000)
    config.update(acc_overrides)
    acc = RecordAccumulator(**config)
    metadata = FakeMetadata({T0: 1, T1: 2})
    sender = SenderCore(acc, metadata, acks=acks, request_timeout_ms=3000, node="client-test")
    return acc, metadata, sender


def send_records(acc, tp=T0, count=3, now_ms=0):
    batch = None
    for i in range(count):
        batch = acc.append(tp.topic, tp.partition, 1000 + i, None, b"value-%d" % i, (), now_ms)
    return batch


def answer(envelope, *results):
    response = broker_pb2.ProduceResponse()
    for topic, partition, code, base_offset in results:
        response.partitions.add(topic=topic, partition=partition, error_code=code, base_offset=base_offset,
                                log_append_time_ms=-1, error_message="" if code == 0 else "broker says no")
    return envelope.reply(response)


def test_error_codes_are_kafkas() -> None:
    assert ErrorCode.NOT_LEADER_OR_FOLLOWER == 6
    assert ErrorCode.MESSAGE_TOO_LARGE == 10
    assert ErrorCode.REQUEST_TIMED_OUT == 7
    assert ErrorCode.NETWORK_EXCEPTION == 13


def test_one_produce_request_per_leader_then_success_completes_with_offsets() -> None:
    acc, _, sender = setup()
    a = send_records(acc, T0, 3)
    b = send_records(acc, T1, 2)
    effects = sender.tick(0)
    assert sorted(e.dst for e in effects.sends) == ["broker-1", "broker-2"]
    to_1 = next(e for e in effects.sends if e.dst == "broker-1")
    assert to_1.src == "client-test" and to_1.rpc == "Produce" and not to_1.is_response
    request = to_1.message
    assert request.acks == -1 and request.timeout_ms == 3000
    assert [(p.topic, p.partition) for p in request.partitions] == [("t", 0)]
    assert validate_batches(request.partitions[0].records)[0].record_count == 3
    assert sender.in_flight_request_count() == 2
    sender.step(answer(to_1, ("t", 0, 0, 42)), 5)
    assert a.done and a.error is None
    assert [a.metadata(i, 0).offset for i in range(3)] == [42, 43, 44]
    assert not b.done
    assert acc.in_flight_requests(1) == 0 and acc.in_flight_requests(2) == 1
    assert sender.in_flight_request_count() == 1


def test_several_batches_of_a_partition_travel_back_to_back_and_get_consecutive_offsets() -> None:
    acc, metadata, sender = setup(batch_size=200)
    metadata.leaders[T1] = 1
    first = acc.append("t", 0, 1, None, b"x" * 100, (), 0)
    second = acc.append("t", 0, 2, None, b"y" * 100, (), 0)  # did not fit: a new batch
    third = acc.append("t", 1, 3, None, b"z", (), 0)
    assert first is not second
    (request,) = sender.tick(0).sends
    assert [(p.partition, len(validate_batches(p.records))) for p in request.message.partitions] == [(0, 2), (1, 1)]
    sender.step(answer(request, ("t", 0, 0, 10), ("t", 1, 0, 3)), 1)
    assert (first.base_offset, second.base_offset, third.base_offset) == (10, 11, 3)


def test_an_error_for_a_partition_retries_all_its_batches_in_order() -> None:
    acc, metadata, sender = setup(batch_size=200)
    first = acc.append("t", 0, 1, None, b"x" * 100, (), 0)
    second = acc.append("t", 0, 2, None, b"y" * 100, (), 0)
    (request,) = sender.tick(0).sends
    sender.step(answer(request, ("t", 0, ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)), 1)
    assert list(acc.queue("t", 0).batches) == [first, second]
    (retry,) = sender.tick(101).sends
    sender.step(answer(retry, ("t", 0, 0, 0)), 102)
    assert (first.base_offset, second.base_offset) == (0, 1)


def test_not_leader_refreshes_metadata_and_retries_to_the_new_leader_after_backoff() -> None:
    acc, metadata, sender = setup()
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    effects = sender.step(answer(request, ("t", 0, ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)), 10)
    assert not batch.done and metadata.update_requests == 1
    assert [e.name for e in effects.events] == ["ProduceRetried"]
    assert effects.events[0].fields["error"] == "NOT_LEADER_OR_FOLLOWER"
    assert sender.next_deadline_ms() == 110
    assert sender.tick(109).sends == []
    metadata.leaders[T0] = 3  # the refreshed metadata names a new leader
    (retry,) = sender.tick(110).sends
    assert retry.dst == "broker-3"
    assert retry.message.partitions[0].records == request.message.partitions[0].records  # same bytes
    sender.step(answer(retry, ("t", 0, 0, 7)), 120)
    assert batch.done and batch.metadata(0, 0).offset == 7 and batch.attempts == 2


def test_message_too_large_is_fatal() -> None:
    acc, metadata, sender = setup()
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    effects = sender.step(answer(request, ("t", 0, ErrorCode.MESSAGE_TOO_LARGE, -1)), 5)
    assert batch.done and batch.error.code == ErrorCode.MESSAGE_TOO_LARGE == 10
    assert batch.error.message == "broker says no"
    assert [e.name for e in effects.events] == ["BatchFailed"]
    assert metadata.update_requests == 0
    with pytest.raises(Exception) as info:
        batch.metadata(0, 0)
    assert info.value is batch.error
    assert sender.tick(1000).sends == [] and acc.free_bytes == acc.buffer_memory


def test_retriable_error_after_the_delivery_timeout_fails_the_batch() -> None:
    acc, _, sender = setup(delivery_timeout_ms=5000)
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    sender.step(answer(request, ("t", 0, ErrorCode.NOT_ENOUGH_REPLICAS, -1)), 5000)
    assert batch.done and batch.error.code == ErrorCode.NOT_ENOUGH_REPLICAS
    assert "delivery.timeout.ms=5000" in batch.error.message


def test_transport_failure_retries_every_batch_of_the_request() -> None:
    acc, metadata, sender = setup()
    metadata.leaders[T1] = 1
    a = send_records(acc, T0)
    b = send_records(acc, T1)
    (request,) = sender.tick(0).sends
    assert len(request.message.partitions) == 2
    effects = sender.step(request.failed("UNAVAILABLE: connection refused"), 3)
    assert not a.done and not b.done and metadata.update_requests >= 1
    assert "ProduceRequestFailed" in [e.name for e in effects.events]
    assert acc.in_flight_requests(1) == 0
    (again,) = sender.tick(103).sends
    sender.step(answer(again, ("t", 0, 0, 0), ("t", 1, 0, 10)), 104)
    assert a.metadata(0, 0).offset == 0 and b.metadata(2, 0).offset == 12


def test_fatal_transport_statuses_fail_the_batches() -> None:
    acc, _, sender = setup()
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    sender.step(request.failed("INVALID_ARGUMENT: malformed"), 3)
    assert batch.error.code == ErrorCode.INVALID_REQUEST


def test_a_request_without_answer_times_out_in_the_core_and_a_late_answer_is_ignored() -> None:
    acc, _, sender = setup()
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    assert sender.next_deadline_ms() == 3000
    effects = sender.tick(3000)
    assert effects.sends == [] and not batch.done  # re-queued, backing off
    assert sender.in_flight_request_count() == 0 and acc.in_flight_requests(1) == 0
    sender.step(answer(request, ("t", 0, 0, 99)), 3001)  # too late: ignored
    assert not batch.done
    (retry,) = sender.tick(3100).sends
    sender.step(answer(retry, ("t", 0, 0, 5)), 3101)
    assert batch.metadata(0, 0).offset == 5


def test_a_missing_partition_in_the_answer_fails_its_batch() -> None:
    acc, metadata, sender = setup()
    metadata.leaders[T1] = 1
    a = send_records(acc, T0)
    b = send_records(acc, T1)
    (request,) = sender.tick(0).sends
    sender.step(answer(request, ("t", 0, 0, 1)), 1)
    assert a.metadata(0, 0).offset == 1
    assert b.error.code == ErrorCode.UNKNOWN_SERVER_ERROR and "no result" in b.error.message


def test_acks_zero_completes_on_send_with_offset_minus_one_and_ignores_the_answer() -> None:
    acc, _, sender = setup(acks=0)
    batch = send_records(acc)
    (request,) = sender.tick(0).sends
    assert request.message.acks == 0
    assert batch.done and batch.metadata(0, 1234).offset == -1
    assert acc.free_bytes == acc.buffer_memory
    # The request still counts against the in-flight limit until its call returns.
    assert acc.in_flight_requests(1) == 1
    sender.step(answer(request, ("t", 0, ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)), 1)
    assert batch.error is None and acc.in_flight_requests(1) == 0


def test_acks_one_and_parsing() -> None:
    acc, _, sender = setup(acks="1")
    send_records(acc)
    (request,) = sender.tick(0).sends
    assert request.message.acks == 1
    assert [parse_acks(v) for v in ("all", -1, "-1", 0, "0", 1, "1")] == [-1, -1, -1, 0, 0, 1, 1]
    with pytest.raises(ValueError):
        parse_acks(2)


def test_no_leader_asks_for_metadata_and_sends_nothing() -> None:
    acc, metadata, sender = setup()
    del metadata.leaders[T0]
    send_records(acc)
    assert sender.tick(0).sends == [] and metadata.update_requests == 1


def test_expired_batches_are_reported() -> None:
    acc, metadata, sender = setup(delivery_timeout_ms=1000)
    del metadata.leaders[T0]
    batch = send_records(acc)
    effects = sender.tick(1000)
    assert batch.error.code == ErrorCode.REQUEST_TIMED_OUT
    assert [e.name for e in effects.events] == ["BatchExpired"]


def test_classify_transport_error() -> None:
    assert classify_transport_error("DEADLINE_EXCEEDED") == ErrorCode.REQUEST_TIMED_OUT
    assert classify_transport_error("UNAVAILABLE: down") == ErrorCode.NETWORK_EXCEPTION
    assert classify_transport_error("BROKER_NOT_AVAILABLE: broker 3 unknown") == ErrorCode.BROKER_NOT_AVAILABLE
    assert classify_transport_error("RESOURCE_EXHAUSTED: too big") == ErrorCode.MESSAGE_TOO_LARGE
    assert classify_transport_error("something odd") == ErrorCode.NETWORK_EXCEPTION
