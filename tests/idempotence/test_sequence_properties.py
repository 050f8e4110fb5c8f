"""Hypothesis: the producer's sequence bookkeeping against the broker's producer state.

The real accumulator, sender and idempotence manager talk to a broker made of real
``PartitionLog``s (``append_as_leader``: the leader's sequence checks, duplicate answers) over a
network that Hypothesis controls: it delivers requests and answers in any order, loses them,
delivers a request twice, and moves the clock so calls time out and batches are retried.
Whatever it does:

- at every step each partition's log is a prefix of what was sent to it, in send order (never a
  record twice, never one before an earlier one);
- once the network heals, every record is acknowledged, each log holds every record exactly
  once, in order, and each acknowledged offset is where the record is.

A further rule makes the broker forget the producer in a partition where it is idle (every
batch acknowledged, nothing in the network), as producer-id expiration does: its next batch gets
UNKNOWN_PRODUCER_ID, and the producer renumbers from 0 under a bumped epoch. The same
properties hold.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from brokerlab.disk import MemoryDisk
from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import decode_records
from brokerlab.sansio import Envelope
from brokerlab.v1 import broker_pb2
from client.producer.accumulator import RecordAccumulator
from client.producer.idempotence import IdempotenceManager
from client.producer.sender import SenderCore
from node.log.config import LogConfig
from node.log.errors import CorruptBatchError, LogError
from node.log.partition_log import PartitionLog

TOPIC = "t"
PARTITIONS = 2
REQUEST_TIMEOUT_MS = 1_000


class OneBroker:
    """Leader of every partition; ``leader_for`` etc. for the sender."""

    def __init__(self) -> None:
        disk = MemoryDisk()
        # Small segments: rolls (and producer snapshots) happen along the way.
        config = LogConfig(segment_bytes=1_100)
        self.logs = [PartitionLog.create(disk, f"{TOPIC}-{p}", TopicPartition(TOPIC, p), config, 0)
                     for p in range(PARTITIONS)]

    def leader_for(self, tp):
        return 1

    def leader_epoch_for(self, tp):
        return 0

    def request_update(self):
        pass

    def brokers(self):
        return {1: "broker-1"}

    def handle(self, envelope: Envelope, now_ms: int) -> Envelope:
        if envelope.rpc == "InitProducerId":
            return envelope.reply(broker_pb2.InitProducerIdResponse(producer_id=42, producer_epoch=0))
        response = broker_pb2.ProduceResponse()
        for data in envelope.message.partitions:
            log = self.logs[data.partition]
            out = response.partitions.add(topic=data.topic, partition=data.partition, base_offset=-1,
                                          log_append_time_ms=-1, log_start_offset=log.log_start_offset)
            try:
                info = log.append_as_leader(data.records, 0, now_ms)
            except CorruptBatchError as exc:
                out.error_code, out.error_message = ErrorCode.CORRUPT_MESSAGE, exc.reason
            except LogError as exc:
                out.error_code, out.error_message = exc.error_code, str(exc)
            else:
                out.base_offset = info.base_offset
                log.high_watermark = log.log_end_offset
        return envelope.reply(response)

    def values(self, partition: int) -> list[tuple[int, bytes]]:
        log = self.logs[partition]
        data = log.read(0, 1 << 30)
        return [(r.offset, r.value) for r in decode_records(data)] if data else []


class Sequences(RuleBasedStateMachine):
    @initialize(batch_size=st.sampled_from([90, 200, 1_000]), max_in_flight=st.integers(1, 5))
    def start(self, batch_size: int, max_in_flight: int) -> None:
        self.now_ms = 1_000
        self.broker = OneBroker()
        self.accumulator = RecordAccumulator(
            batch_size=batch_size, linger_ms=0, delivery_timeout_ms=10**9, retry_backoff_ms=20,
            retry_backoff_max_ms=200, max_in_flight_per_broker=max_in_flight, pipeline_min_bytes=0,
            random=random.Random(0), idempotence=IdempotenceManager())
        self.sender = SenderCore(self.accumulator, self.broker, acks="all", request_timeout_ms=REQUEST_TIMEOUT_MS,
                                 node="client-p")
        self.requests: list[Envelope] = []  # on their way to the broker
        self.answers: list[Envelope] = []  # on their way back
        self.sent: dict[int, list[tuple[object, bytes, int]]] = {p: [] for p in range(PARTITIONS)}
        self.count = 0

    # ---- the producer --------------------------------------------------------------------

    def _tick(self) -> None:
        self.requests.extend(self.sender.tick(self.now_ms).sends)

    @rule(partition=st.integers(0, PARTITIONS - 1), records=st.integers(1, 4))
    def send(self, partition: int, records: int) -> None:
        for _ in range(records):
            value = b"r%05d" % self.count
            self.count += 1
            batch = self.accumulator.append(TOPIC, partition, self.now_ms, None, value, (), self.now_ms)
            self.sent[partition].append((batch, value, batch.record_count - 1))
        self._tick()

    @rule(ms=st.sampled_from([1, 10, 50, 300, REQUEST_TIMEOUT_MS + 1]))
    def advance(self, ms: int) -> None:
        self.now_ms += ms
        self._tick()

    # ---- the network ---------------------------------------------------------------------

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), twice=st.booleans())
    def deliver_request(self, data, twice: bool) -> None:
        index = data.draw(st.integers(0, len(self.requests) - 1), label="request")
        envelope = self.requests[index] if twice else self.requests.pop(index)
        self.answers.append(self.broker.handle(envelope, self.now_ms))

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def lose_request(self, data) -> None:
        self.requests.pop(data.draw(st.integers(0, len(self.requests) - 1), label="lost request"))

    @precondition(lambda self: self.answers)
    @rule(data=st.data(), lose=st.booleans())
    def deliver_answer(self, data, lose: bool) -> None:
        answer = self.answers.pop(data.draw(st.integers(0, len(self.answers) - 1), label="answer"))
        if not lose:
            self.requests.extend(self.sender.step(answer, self.now_ms).sends)
            self._tick()

    @precondition(lambda self: not self.requests and not self.answers)
    @rule(partition=st.integers(0, PARTITIONS - 1))
    def broker_forgets_an_idle_producer(self, partition: int) -> None:
        if all(batch.done for batch, _, _ in self.sent[partition]):
            self.broker.logs[partition].producer_state.clear()

    # ---- properties ----------------------------------------------------------------------

    @invariant()
    def logs_are_prefixes_of_what_was_sent(self) -> None:
        if not hasattr(self, "broker"):
            return
        for partition in range(PARTITIONS):
            written = [v for _, v in self.broker.values(partition)]
            sent = [v for _, v, _ in self.sent[partition]]
            assert written == sent[:len(written)], f"partition {partition}: {written} vs sent {sent}"

    def teardown(self) -> None:
        if not hasattr(self, "broker"):
            return
        # The network heals: everything in flight arrives, in order, and time moves on.
        for _ in range(2_000):
            if not self.accumulator.incomplete:
                break
            while self.requests or self.answers:
                while self.requests:
                    self.answers.append(self.broker.handle(self.requests.pop(0), self.now_ms))
                while self.answers:
                    self.requests.extend(self.sender.step(self.answers.pop(0), self.now_ms).sends)
            self.now_ms += 50
            self._tick()
        assert not self.accumulator.incomplete, "batches never settled"
        for partition in range(PARTITIONS):
            log = self.broker.values(partition)
            at = {value: offset for offset, value in log}
            assert len(at) == len(log), f"partition {partition}: a record written twice"
            sent = self.sent[partition]
            assert [v for _, v in log] == [v for _, v, _ in sent], f"partition {partition}"
            for batch, value, index in sent:
                assert batch.error is None, batch.error
                assert value in at, f"{value} acknowledged but not in the log"
                if batch.base_offset >= 0:  # -1: DUPLICATE_SEQUENCE_NUMBER (written long before)
                    assert batch.base_offset + index == at[value], (value, batch.base_offset + index, at[value])


Sequences.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
test_sequence_bookkeeping = Sequences.TestCase
