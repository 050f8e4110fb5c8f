"""Client side (sans-IO): InitProducerId, numbering, retries with the same sequences, and what the
producer does on each sequence error (Kafka's idempotent TransactionManager, KIP-360)."""

from __future__ import annotations

import pytest

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import iter_headers
from brokerlab.v1 import broker_pb2
from client import Producer
from client.producer.accumulator import RecordAccumulator
from client.producer.idempotence import MAX_EPOCH, IdempotenceManager, resolve_idempotence
from client.producer.sender import SenderCore

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)


class Metadata:
    def __init__(self) -> None:
        self.leaders = {T0: 1, T1: 2}
        self.update_requests = 0

    def leader_for(self, tp):
        return self.leaders.get(tp)

    def leader_epoch_for(self, tp):
        return 0

    def request_update(self):
        self.update_requests += 1

    def brokers(self):
        return {1: "a:1", 2: "b:2"}


class Producer_:
    """A SenderCore with idempotence, driven by hand."""

    def __init__(self, **overrides) -> None:
        config = dict(batch_size=16384, linger_ms=0, delivery_timeout_ms=10_000, retry_backoff_ms=100,
                      retry_backoff_max_ms=1000, pipeline_min_bytes=0)
        config.update(overrides)
        self.acc = RecordAccumulator(idempotence=IdempotenceManager(), **config)
        self.idem = self.acc.idempotence
        self.metadata = Metadata()
        self.sender = SenderCore(self.acc, self.metadata, acks="all", request_timeout_ms=3_000, node="client-t")
        self.now = 0
        self.events = []

    def tick(self, ms: int = 0):
        self.now += ms
        fx = self.sender.tick(self.now)
        self.events += fx.events
        return fx.sends

    def step(self, envelope):
        fx = self.sender.step(envelope, self.now)
        self.events += fx.events
        return fx.sends

    def init(self, producer_id: int = 5, epoch: int = 0):
        [request] = self.tick()
        assert request.rpc == "InitProducerId"
        self.step(request.reply(broker_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=epoch)))

    def send(self, tp=T0, count: int = 1):
        batch = None
        for i in range(count):
            batch = self.acc.append(tp.topic, tp.partition, 1_000, None, b"v%d" % i, (), self.now)
        batch.full = True  # one batch per send() call
        return batch

    def answer(self, request, code=0, base_offset=0, tp=T0):
        response = broker_pb2.ProduceResponse()
        response.partitions.add(topic=tp.topic, partition=tp.partition, error_code=code, base_offset=base_offset,
                                log_append_time_ms=-1, error_message="" if code == 0 else "broker says no")
        return self.step(request.reply(response))

    def names(self):
        return [e.name for e in self.events]


def stamped(request, tp=T0):
    """(producer_id, epoch, base_sequence, record_count) of each batch in a request's partition."""
    data = next(p for p in request.message.partitions if (p.topic, p.partition) == (tp.topic, tp.partition))
    return [(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count) for _, h in iter_headers(data.records)]


# ---- configuration ------------------------------------------------------------------------------


def test_idempotence_is_on_by_default_and_needs_acks_all_and_at_most_five_in_flight() -> None:
    assert resolve_idempotence(None, -1, 5) is True
    assert resolve_idempotence(None, 1, 5) is False  # Kafka 3.0.1+: quietly off when not asked for
    assert resolve_idempotence(None, -1, 6) is False
    assert resolve_idempotence(False, -1, 5) is False
    with pytest.raises(ValueError, match="acks='all'"):
        resolve_idempotence(True, 1, 5)
    with pytest.raises(ValueError, match="<= 5"):
        Producer("x:1", enable_idempotence=True, max_in_flight_requests_per_connection=6)
    assert Producer("x:1").idempotent and not Producer("x:1", acks=1).idempotent
    assert not Producer("x:1", enable_idempotence=False).idempotent


# ---- producer id ----------------------------------------------------------------------------------


def test_nothing_is_drained_before_a_producer_id_and_init_is_retried() -> None:
    p = Producer_()
    p.send()
    [init] = p.tick()
    assert init.rpc == "InitProducerId" and init.dst == "broker-1"
    assert p.tick(1) == []  # one InitProducerId at a time, no Produce yet
    p.step(init.reply(broker_pb2.InitProducerIdResponse(error_code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)))
    assert p.tick(1) == []  # backing off
    [again] = p.tick(500)
    assert again.rpc == "InitProducerId" and again.dst == "broker-2"  # rotates past the first
    p.step(again.failed("UNAVAILABLE: connection refused"))
    [third] = p.tick(1_000)
    p.step(third.reply(broker_pb2.InitProducerIdResponse(producer_id=77, producer_epoch=0)))
    [produce] = p.tick()
    assert stamped(produce) == [(77, 0, 0, 1)]
    assert p.names().count("InitProducerIdFailed") == 2


def test_a_refused_init_fails_every_batch() -> None:
    p = Producer_()
    batch = p.send()
    [init] = p.tick()
    p.step(init.failed("INVALID_REQUEST: InitProducerId to a:1 failed: UNIMPLEMENTED"))
    assert batch.done and batch.error.code == ErrorCode.INVALID_REQUEST
    assert p.sender.fatal_error is not None


# ---- numbering and retries ------------------------------------------------------------------------


def test_batches_are_numbered_per_partition_by_record_count() -> None:
    p = Producer_()
    p.init()
    p.send(T0, 3)
    p.send(T0, 2)
    p.send(T1, 4)
    requests = p.tick()
    by_dst = {r.dst: r for r in requests}
    assert stamped(by_dst["broker-1"], T0) == [(5, 0, 0, 3), (5, 0, 3, 2)]  # back to back in one request
    assert stamped(by_dst["broker-2"], T1) == [(5, 0, 0, 4)]


def test_a_timed_out_batch_is_retried_alone_with_the_same_bytes() -> None:
    p = Producer_()
    p.init()
    first, second = p.send(count=2), p.send(count=1)
    [request] = p.tick()
    payload = request.message.partitions[0].records
    p.send(count=1)
    assert p.tick(3_001) == []  # timed out; the retry backs off, the new batch waits behind it
    [retry] = p.tick(200)
    assert stamped(retry) == [(5, 0, 0, 2)]  # alone: its first write's offsets are one range
    assert retry.message.partitions[0].records == payload[:len(retry.message.partitions[0].records)]
    p.answer(retry, base_offset=10)  # the broker had written it: a duplicate, original offsets
    assert first.base_offset == 10 and not second.done
    [next_retry] = p.tick()
    assert stamped(next_retry) == [(5, 0, 2, 1)]


def test_a_batch_that_overtook_its_predecessor_is_retried_once_that_one_is_settled() -> None:
    p = Producer_(max_in_flight_per_broker=5)
    p.init()
    first = p.send()
    [r1] = p.tick()
    second = p.send()
    [r2] = p.tick()
    assert stamped(r2) == [(5, 0, 1, 1)]
    p.answer(r2, code=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)  # r2 reached the broker first
    assert not second.done and p.tick(1) == []  # waits for the first
    p.answer(r1, base_offset=0)
    [r3] = p.tick()
    assert stamped(r3) == [(5, 0, 1, 1)]  # same sequence, no backoff
    p.answer(r3, base_offset=1)
    assert (first.base_offset, second.base_offset) == (0, 1)
    assert p.idem.epoch_bumps == 0


def test_a_real_gap_fails_the_batch_and_renumbers_the_rest_under_a_new_epoch() -> None:
    p = Producer_(max_in_flight_per_broker=5)
    p.init()
    acked = p.send()
    [r1] = p.tick()
    p.answer(r1, base_offset=0)
    lost, behind = p.send(), p.send()
    [r2] = p.tick()
    assert stamped(r2) == [(5, 0, 1, 1), (5, 0, 2, 1)]
    p.answer(r2, code=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)  # sent with everything before acked
    assert acked.error is None
    assert lost.error.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER  # Kafka reports it to the caller
    assert behind.error is None and not behind.done
    [r3] = p.tick()
    assert stamped(r3) == [(5, 1, 0, 1)]  # epoch bumped by the producer itself, sequence 0
    p.answer(r3, base_offset=2)
    assert behind.base_offset == 2
    assert "ProducerEpochBumped" in p.names() and "PartitionSequencesReset" in p.names()


def test_unknown_producer_for_the_first_unacked_batch_renumbers_and_retries_it() -> None:
    """The broker dropped the state of an idle producer (expiration): nothing is lost."""
    p = Producer_()
    p.init()
    p.send()
    [r1] = p.tick()
    p.answer(r1, base_offset=0)
    batch = p.send()
    [r2] = p.tick()
    p.answer(r2, code=ErrorCode.UNKNOWN_PRODUCER_ID)
    assert not batch.done
    [r3] = p.tick()
    assert stamped(r3) == [(5, 1, 0, 1)]
    p.answer(r3, base_offset=1)
    assert batch.base_offset == 1


def test_other_partitions_finish_in_the_old_epoch_then_start_again_at_0() -> None:
    p = Producer_(max_in_flight_per_broker=5)
    p.init()
    p.send(T1)
    [t1_first] = p.tick()
    p.send(T0)
    [t0] = p.tick()
    p.answer(t0, code=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)  # T0 bumps the epoch ...
    p.send(T0)
    p.tick()
    p.send(T1)
    assert [r for r in p.tick() if r.dst == "broker-2"] == []  # ... T1 waits for its old-epoch batch
    p.answer(t1_first, base_offset=0, tp=T1)
    [t1_next] = [r for r in p.tick() if r.dst == "broker-2"]
    assert stamped(t1_next, T1) == [(5, 1, 0, 1)]


def test_a_bump_for_another_partition_during_one_drain_does_not_renumber_a_new_batch() -> None:
    """One drain checks every partition's head, then numbers the batches it takes. When T1's
    reset bumps the epoch in between, T0's new batch keeps T0's identity (epoch 0, next
    sequence) -- numbered as epoch 1 / sequence 1 it would be refused forever (found by the
    Hypothesis state machine: the last record of a partition never written)."""
    stamps = set()
    for drain_start in (0, 1):
        p = Producer_(max_in_flight_per_broker=5)
        p.init()
        p.send(T0)
        [r0] = p.tick()
        p.answer(r0, base_offset=0)
        p.send(T1)
        [r1] = p.tick()
        p.answer(r1, code=ErrorCode.UNKNOWN_PRODUCER_ID, tp=T1)  # T1 will bump the epoch
        p.send(T0)
        p.acc._drain_start = drain_start
        [t0] = [r for r in p.tick() if r.dst == "broker-1"]
        stamps.add(stamped(t0)[0])
    # T0 checked first: old identity, next sequence; T1 first: renumbered from 0 under epoch 1.
    assert stamps == {(5, 0, 1, 1), (5, 1, 0, 1)}


def test_a_batch_expiring_after_it_was_sent_resets_the_sequences() -> None:
    p = Producer_(delivery_timeout_ms=4_000)
    p.init()
    expired = p.send()
    [r1] = p.tick()
    p.tick(3_001)  # no answer: retried ...
    p.tick(1_000)  # ... until delivery.timeout.ms passes: failed, its write unknown
    assert expired.done and expired.error is not None
    p.send()
    [r2] = p.tick()
    assert stamped(r2) == [(5, 1, 0, 1)]


def test_the_epoch_overflow_asks_for_a_new_producer_id() -> None:
    p = Producer_()
    p.init(producer_id=5, epoch=MAX_EPOCH)
    p.send()
    [r1] = p.tick()
    p.answer(r1, code=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    batch = p.send()
    [init] = p.tick()
    assert init.rpc == "InitProducerId"
    p.step(init.reply(broker_pb2.InitProducerIdResponse(producer_id=6, producer_epoch=0)))
    [r2] = p.tick()
    assert stamped(r2) == [(6, 0, 0, 1)]
    p.answer(r2, base_offset=1)
    assert batch.base_offset == 1


def test_duplicate_sequence_number_counts_as_written() -> None:
    p = Producer_()
    p.init()
    batch = p.send()
    [r1] = p.tick()
    p.answer(r1, code=ErrorCode.DUPLICATE_SEQUENCE_NUMBER, base_offset=-1)
    assert batch.done and batch.error is None and batch.base_offset == -1
