"""RecordAccumulator: batching by size and linger, memory, drain, in-flight limits, retries, expiry."""

from __future__ import annotations

import pytest

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import BATCH_HEADER_BYTES, RECORD_HEADER_BYTES, decode_records, validate_batch
from client.producer.accumulator import NoBufferSpace, RecordAccumulator

VALUE = b"v" * 100
RECORD_BYTES = RECORD_HEADER_BYTES + len(VALUE)  # 126, keyless, no headers


def make(**overrides) -> RecordAccumulator:
    config = dict(batch_size=BATCH_HEADER_BYTES + 3 * RECORD_BYTES, linger_ms=5, buffer_memory=1 << 20,
                  delivery_timeout_ms=1000, retry_backoff_ms=100, retry_backoff_max_ms=1000,
                  max_in_flight_per_broker=5, pipeline_min_bytes=0)
    config.update(overrides)
    return RecordAccumulator(**config)


def leaders(mapping: dict[TopicPartition, int]):
    return mapping.get


def append(acc, partition=0, now_ms=0, topic="t", value=VALUE, key=None, ts=1000, headers=()):
    return acc.append(topic, partition, ts, key, value, headers, now_ms)


def test_records_go_into_one_batch_until_batch_size_and_a_full_batch_is_ready_at_once() -> None:
    acc = make()
    first = append(acc)
    assert append(acc) is first and append(acc) is first
    assert first.record_count == 3 and first.size_bytes == BATCH_HEADER_BYTES + 3 * RECORD_BYTES
    assert first.full  # exactly batch.size: not even an empty record fits
    second = append(acc)
    assert second is not first and second.record_count == 1
    # Full -> ready at once, before linger; the open second batch waits for linger.
    requests, unknown = acc.drain(0, leaders({TopicPartition("t", 0): 1}))
    assert requests == {1: [first]} and not unknown
    acc.request_done(1)
    assert acc.drain(4, leaders({TopicPartition("t", 0): 1}))[0] == {}
    assert acc.drain(5, leaders({TopicPartition("t", 0): 1}))[0] == {1: [second]}


def test_a_record_that_does_not_fit_closes_the_batch_and_makes_it_ready() -> None:
    acc = make(batch_size=BATCH_HEADER_BYTES + 2 * RECORD_BYTES + 50)
    first = append(acc)
    append(acc)
    assert not first.full
    second = append(acc)
    assert second is not first and first.full
    assert acc.drain(0, leaders({TopicPartition("t", 0): 1}))[0] == {1: [first]}


def test_linger_holds_a_partial_batch_and_next_ready_ms_says_when() -> None:
    acc = make(linger_ms=20)
    batch = append(acc, now_ms=100)
    assert acc.next_ready_ms(100) == 120
    assert acc.drain(119, leaders({TopicPartition("t", 0): 1}))[0] == {}
    assert acc.drain(120, leaders({TopicPartition("t", 0): 1}))[0] == {1: [batch]}
    assert acc.next_ready_ms(120) is None


def test_flush_and_close_make_partial_batches_ready_at_once() -> None:
    acc = make(linger_ms=1000)
    lookup = leaders({TopicPartition("t", 0): 1, TopicPartition("t", 1): 1})
    append(acc, 0)
    acc.begin_flush()
    assert len(acc.drain(0, lookup)[0][1]) == 1
    acc.end_flush()
    acc.request_done(1)
    append(acc, 1)
    assert acc.drain(0, lookup)[0] == {}
    acc.close()
    assert len(acc.drain(0, lookup)[0][1]) == 1
    with pytest.raises(KafkaError):
        append(acc, 2)


def test_append_without_now_only_fills_an_open_batch() -> None:
    acc = make()
    assert acc.append("t", 0, 1000, None, VALUE) is None  # would open a batch
    batch = append(acc)
    assert acc.append("t", 0, 1000, None, VALUE) is batch
    assert acc.appended_bytes("t", 0) == 2 * RECORD_BYTES


def test_batch_bytes_decode_back_to_the_records() -> None:
    acc = make(batch_size=16384)
    batch = append(acc, ts=5000, key=b"k1", value=b"a", headers=(("h", b"x"), ("n", None)))
    append(acc, ts=4990, key=None, value=None)
    append(acc, ts=5007, key=b"k3", value=b"c")
    data = batch.build()
    header = validate_batch(data)
    assert header.record_count == 3
    assert header.base_timestamp == 5000 and header.max_timestamp == 5007
    assert header.producer_id == -1 and header.base_sequence == -1  # idempotence comes later
    records = decode_records(data)
    assert [(r.offset, r.timestamp_ms, r.key, r.value) for r in records] == [
        (0, 5000, b"k1", b"a"), (1, 4990, None, None), (2, 5007, b"k3", b"c")]
    assert records[0].headers == (("h", b"x"), ("n", None))


def test_buffer_memory_is_reserved_per_batch_and_exhaustion_raises_until_freed() -> None:
    batch_size = BATCH_HEADER_BYTES + 3 * RECORD_BYTES
    acc = make(buffer_memory=2 * batch_size)
    a = append(acc, 0)
    b = append(acc, 1)
    assert acc.free_bytes == 0
    append(acc, 0)  # fits in the open batch: no memory needed
    with pytest.raises(NoBufferSpace) as info:
        append(acc, 2)
    assert info.value.needed_bytes == batch_size and info.value.free_bytes == 0
    acc.drain(10, leaders({TopicPartition("t", 0): 1, TopicPartition("t", 1): 1}))
    acc.complete(a, 0)
    assert acc.free_bytes == batch_size
    assert append(acc, 2) is not None
    acc.fail(b, KafkaError(ErrorCode.MESSAGE_TOO_LARGE))
    assert acc.free_bytes == batch_size and acc.incomplete == {acc.queue("t", 2).batches[0]}


def test_a_record_larger_than_batch_size_gets_its_own_batch_but_not_beyond_the_limits() -> None:
    acc = make(batch_size=1000, buffer_memory=5000, max_request_size=4000)
    big = append(acc, value=b"x" * 2000)
    assert big.record_count == 1 and big.reserved_bytes == BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + 2000
    assert big.full
    with pytest.raises(KafkaError) as info:
        append(acc, 1, value=b"x" * 4100)
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE and "max.request.size" in info.value.message
    acc = make(batch_size=1000, buffer_memory=3000, max_request_size=10_000)
    with pytest.raises(KafkaError) as info:
        append(acc, value=b"x" * 4000)
    assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE and "buffer.memory" in info.value.message


def test_drain_groups_by_leader_fairly_then_packs_each_partitions_backlog_in_order() -> None:
    acc = make(linger_ms=0)
    lookup = leaders({TopicPartition("t", p): 1 + p % 2 for p in range(4)})
    for p in range(4):
        for _ in range(4):  # two batches per partition (3 records fit in one)
            append(acc, p)
    requests, _ = acc.drain(0, lookup)
    assert sorted(requests) == [1, 2]
    # First pass: one batch per partition; second pass: the rest of each partition's backlog.
    assert [(b.tp.partition, b.record_count) for b in requests[1]] == [(0, 3), (2, 3), (0, 1), (2, 1)]
    assert [(b.tp.partition, b.record_count) for b in requests[2]] == [(1, 3), (3, 3), (1, 1), (3, 1)]
    assert all(b.in_flight for bs in requests.values() for b in bs)
    assert not acc.has_queued()
    assert acc.in_flight_requests(1) == 1 and acc.in_flight_requests(2) == 1


def test_the_backlog_pass_stops_at_a_batch_that_is_not_ready() -> None:
    acc = make(linger_ms=10)
    lookup = leaders({TopicPartition("t", 0): 1})
    for _ in range(4):
        append(acc)  # a full batch and an open one still lingering
    requests, _ = acc.drain(0, lookup)
    assert [b.record_count for b in requests[1]] == [3]
    assert [b.record_count for b in acc.queue("t", 0).batches] == [1]


def test_drain_respects_max_in_flight_per_broker() -> None:
    one_batch = BATCH_HEADER_BYTES + 3 * RECORD_BYTES
    acc = make(linger_ms=0, max_in_flight_per_broker=2, max_request_size=one_batch)
    lookup = leaders({TopicPartition("t", 0): 1, TopicPartition("t", 1): 2})
    for _ in range(4 * 3):
        append(acc, 0)
    append(acc, 1)
    assert set(acc.drain(0, lookup)[0]) == {1, 2}
    assert set(acc.drain(0, lookup)[0]) == {1}
    assert acc.drain(0, lookup)[0] == {}  # broker 1 has 2 requests in flight
    acc.request_done(1)
    assert set(acc.drain(0, lookup)[0]) == {1}
    assert acc.in_flight_requests(1) == 2


def test_a_busy_broker_gets_another_request_only_for_enough_bytes() -> None:
    one_batch = BATCH_HEADER_BYTES + 3 * RECORD_BYTES
    acc = make(linger_ms=0, pipeline_min_bytes=3 * one_batch)
    lookup = leaders({TopicPartition("t", 0): 1, TopicPartition("t", 1): 2})
    for _ in range(3):
        append(acc, 0)
    assert len(acc.drain(0, lookup)[0][1]) == 1  # idle broker: at once
    for _ in range(2 * 3):
        append(acc, 0)
    append(acc, 1)
    requests, _ = acc.drain(0, lookup)
    assert list(requests) == [2]  # broker 1 is busy and has only two batches' worth
    for _ in range(3):
        append(acc, 0)
    assert [b.record_count for b in acc.drain(0, lookup)[0][1]] == [3, 3, 3]  # enough now
    for _ in range(3):
        append(acc, 0)
    acc.begin_flush()  # a flush does not wait
    assert len(acc.drain(0, lookup)[0][1]) == 1
    acc.end_flush()
    assert acc.in_flight_requests(1) == 3


def test_drain_stops_a_request_at_max_request_size() -> None:
    acc = make(linger_ms=0, max_request_size=2 * (BATCH_HEADER_BYTES + RECORD_BYTES))
    lookup = leaders({TopicPartition("t", p): 1 for p in range(3)})
    for p in range(3):
        append(acc, p)
    first, _ = acc.drain(0, lookup)
    assert len(first[1]) == 2
    second, _ = acc.drain(0, lookup)
    assert len(second[1]) == 1


def test_unknown_leader_is_reported_and_the_batch_stays() -> None:
    acc = make(linger_ms=0)
    batch = append(acc)
    requests, unknown = acc.drain(0, leaders({}))
    assert requests == {} and unknown
    assert acc.drain(0, leaders({TopicPartition("t", 0): 3}))[0] == {3: [batch]}


def test_retried_batches_go_in_creation_order_one_request_at_a_time_too() -> None:
    one_batch = BATCH_HEADER_BYTES + RECORD_BYTES
    acc = make(linger_ms=0, delivery_timeout_ms=60_000, max_request_size=one_batch, max_in_flight_per_broker=5)
    lookup = leaders({TopicPartition("t", 0): 1})
    a = append(acc)
    b = append(acc, ts=1001)  # lands in a's batch
    assert a is b
    acc.drain(0, lookup)
    c = append(acc)
    acc.drain(0, lookup)
    acc.request_done(1)
    acc.request_done(1)
    acc.reenqueue(c, 0)
    acc.reenqueue(a, 0)
    first = acc.drain(100, lookup)[0][1]
    second = acc.drain(100, lookup)[0][1]
    assert first == [a] and second == [c]


def test_retries_back_off_exponentially_and_go_back_in_creation_order() -> None:
    acc = make(linger_ms=0, delivery_timeout_ms=60_000)
    lookup = leaders({TopicPartition("t", 0): 1})
    a = append(acc)
    acc.drain(0, lookup)
    b = append(acc)
    acc.drain(0, lookup)
    assert a.in_flight and b.in_flight and a.sequence < b.sequence
    c = append(acc)
    # Both fail; b's answer arrives first. a must still go before b, and both before c.
    acc.request_done(1)
    acc.request_done(1)
    acc.reenqueue(b, 10)
    acc.reenqueue(a, 10)
    assert list(acc.queue("t", 0).batches) == [a, b, c]
    assert a.retry_at_ms == 110  # retry.backoff.ms after the first attempt
    assert acc.drain(109, lookup)[0] == {}  # backing off: nothing behind a goes either
    assert acc.next_ready_ms(50) == 110
    assert acc.drain(110, lookup)[0] == {1: [a, b, c]}  # one request, in creation order
    assert a.attempts == 2 and b.attempts == 2 and c.attempts == 1


def test_backoff_doubles_up_to_the_max() -> None:
    acc = make(retry_backoff_ms=100, retry_backoff_max_ms=1000)
    assert [acc.backoff_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]


def test_backoff_jitter_stays_within_twenty_percent() -> None:
    import random

    acc = make(retry_backoff_ms=100, retry_backoff_max_ms=1000, random=random.Random(5))
    values = [acc.backoff_ms(2) for _ in range(200)]
    assert 160 <= min(values) and max(values) <= 240 and len(set(values)) > 10


def test_one_in_flight_mutes_the_partition_across_leader_moves() -> None:
    acc = make(linger_ms=0, max_in_flight_per_broker=1)
    a = append(acc)
    acc.drain(0, leaders({TopicPartition("t", 0): 1}))
    append(acc)
    # The leader moved to broker 2, which has nothing in flight; still a's fate comes first.
    assert acc.drain(0, leaders({TopicPartition("t", 0): 2}))[0] == {}
    acc.request_done(1)
    acc.complete(a, 0)
    assert len(acc.drain(0, leaders({TopicPartition("t", 0): 2}))[0][2]) == 1


def test_delivery_timeout_expires_queued_batches_not_in_flight_ones() -> None:
    acc = make(linger_ms=0, delivery_timeout_ms=1000)
    lookup = leaders({TopicPartition("t", 0): 1})
    sent = append(acc, 0, now_ms=0)
    acc.drain(0, lookup)
    queued = append(acc, 1, now_ms=0)  # no leader for partition 1
    later = append(acc, 2, now_ms=500)
    assert acc.next_ready_ms(500) == 1000  # ready but leaderless: wake for the expiry
    assert acc.expire(999) == []
    assert acc.expire(1000) == [queued]
    assert queued.done and queued.error.code == ErrorCode.REQUEST_TIMED_OUT
    assert "delivery.timeout.ms=1000" in queued.error.message
    assert not sent.done and not later.done
    assert acc.delivery_deadline_passed(sent, 1000)
    assert acc.free_bytes == acc.buffer_memory - sent.reserved_bytes - later.reserved_bytes


def test_abort_all_fails_queued_and_in_flight_batches() -> None:
    acc = make(linger_ms=0)
    a = append(acc, 0)
    acc.drain(0, leaders({TopicPartition("t", 0): 1}))
    b = append(acc, 1)
    aborted = acc.abort_all(KafkaError(ErrorCode.REQUEST_TIMED_OUT, "closed"))
    assert set(aborted) == {a, b} and a.error and b.error
    assert acc.free_bytes == acc.buffer_memory and not acc.incomplete and not acc.has_queued()


def test_completion_resolves_callbacks_once_and_frees_memory() -> None:
    acc = make()
    batch = append(acc)
    append(acc)
    seen = []
    batch.add_done_callback(seen.append)
    acc.drain(10, leaders({TopicPartition("t", 0): 1}))
    assert acc.complete(batch, 40, -1)
    assert not acc.complete(batch, 99) and not acc.fail(batch, KafkaError(ErrorCode.NETWORK_EXCEPTION))
    assert seen == [batch]
    assert batch.metadata(1, 1234) == ("t", 0, 41, 1234)
    assert acc.free_bytes == acc.buffer_memory
    late = []
    batch.add_done_callback(late.append)
    assert late == [batch]
