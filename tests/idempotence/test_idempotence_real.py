"""The idempotent producer on real processes (controller + 3 brokers on 127.0.0.1).

- A broker that acknowledges slowly (``test.produce.response.delay.ms`` past the producer's
  request.timeout.ms): with idempotence every value is read back exactly once; the same load
  without it leaves duplicates.
- kill -9 of a partition leader while producing with retries (RF 3, min ISR 2, acks=all, five
  requests in flight): zero duplicates, zero lost acknowledged records (lab.checker).
- Recovery: batches written through a leader, which is then killed -9, restarted as a follower
  and made leader again (preferred election): retries of its old batches, and of batches written
  while it was down, are recognised and answered with their original offsets.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from failover_kit import FAILOVER_CONFIG, Writer, partition_state, read_back, wait_async, wait_for
from real_cluster import wait_until

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.record_batch import encode_batch
from brokerlab.v1 import broker_pb2
from client import Admin, Consumer, NewTopic, Producer
from lab.checker import check
from lab.history import History

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
TOPIC = "orders"


async def read_all(bootstrap: list[str], topic: str, partition: int = 0) -> list[tuple[int, bytes]]:
    tp = TopicPartition(topic, partition)
    async with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100) as consumer:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        end = await consumer.position(tp)
        await consumer.seek_to_beginning(tp)
        out = []
        while await consumer.position(tp) < end:
            out += [(r.offset, r.value) for r in await consumer.poll(timeout_ms=200)]
        return out


def test_a_slow_broker_makes_retries_that_idempotence_does_not_write_twice(cluster_factory) -> None:
    cluster = cluster_factory(config={"test.produce.response.delay.ms": "1200",
                                      "test.produce.response.delay.every": "3"})
    cluster.create_topic(TOPIC, partitions=1, replication_factor=3)
    bootstrap = cluster.local.bootstrap_servers()

    async def produce(prefix: bytes, idempotence: bool) -> list:
        async with Producer(bootstrap, enable_idempotence=idempotence, request_timeout_ms=800, linger_ms=2,
                            delivery_timeout_ms=60_000, retry_backoff_ms=20) as producer:
            handles = []
            for i in range(60):
                handles.append(await producer.send(TOPIC, b"%s-%d" % (prefix, i), partition=0))
                await asyncio.sleep(0.005)
            return [await h for h in handles]

    async def scenario():
        idempotent = await produce(b"idem", True)
        plain = await produce(b"plain", False)
        return idempotent, plain, await read_all(bootstrap, TOPIC)

    idempotent, plain, log = asyncio.run(scenario())
    counts = Counter(value for _, value in log)
    idem = {v: n for v, n in counts.items() if v.startswith(b"idem-")}
    assert idem == {b"idem-%d" % i: 1 for i in range(60)}, "idempotence: every value exactly once"
    at = {value: offset for offset, value in log}
    assert [m.offset for m in idempotent] == [at[b"idem-%d" % i] for i in range(60)]
    duplicated = sorted(v for v, n in counts.items() if v.startswith(b"plain-") and n > 1)
    assert {v for v in counts if v.startswith(b"plain-")} == {b"plain-%d" % i for i in range(60)}
    assert duplicated, "without idempotence the retries of slow acknowledgements were written again"
    print(f"no idempotence: {len(duplicated)} of 60 values written more than once")


def test_kill_9_of_the_leader_while_producing_duplicates_nothing_and_loses_nothing(cluster_factory) -> None:
    cluster = cluster_factory(config=FAILOVER_CONFIG)
    cluster.create_topic(TOPIC, partitions=3, replication_factor=3, configs={"min.insync.replicas": "2"})
    bootstrap = cluster.local.bootstrap_servers()
    victim = cluster.leader_of(TOPIC, 0)
    others = [b.id for b in cluster.brokers if b.id != victim]
    history = History()

    async def scenario() -> None:
        # Five requests in flight, short request timeout: retries of batches the dying leader
        # (or its successor) may have written already.
        writer = Writer(history, "writer", bootstrap, TOPIC, partitions=(0, 1, 2), interval_ms=1,
                        request_timeout_ms=1_500, retry_backoff_ms=20, enable_idempotence=True).start()
        try:
            await writer.wait_acked(300)
            await asyncio.to_thread(cluster.kill, victim)
            await wait_async(lambda: (p := partition_state(cluster, TOPIC, 0, others)) and p.leader_id in others,
                             10, "a new leader of partition 0")
            await writer.wait_acked(writer.acked() + 400)
            await asyncio.to_thread(cluster.restart, victim)
            await writer.wait_acked(writer.acked() + 200)
        finally:
            await writer.stop()
        assert writer.producer.idempotent
        await read_back(history, bootstrap, TOPIC, range(3))

    asyncio.run(scenario())
    result = check(history, contiguous=True)  # nothing tolerated: not even a duplicate
    assert result.valid, result.explain()
    assert result.count("duplicate") == 0 and result.count("unseen") == 0
    assert result.stats["acknowledged"] >= 900
    print(result.summary())


# ---- recovery: the same batches, replayed by hand -------------------------------------------------


def produce_raw(cluster, broker_id: int, records: bytes, partition: int = 0) -> broker_pb2.PartitionProduceResponse:
    request = broker_pb2.ProduceRequest(acks=-1, timeout_ms=5_000, partitions=[
        broker_pb2.PartitionProduceData(topic=TOPIC, partition=partition, records=records)])
    [answer] = cluster.broker_stub(broker_id).Produce(request, timeout=10).partitions
    return answer


def raw_batch(producer_id: int, sequence: int, count: int = 5) -> bytes:
    return encode_batch([(1_000, None, b"raw-%d" % (sequence + i), ()) for i in range(count)],
                        producer_id=producer_id, producer_epoch=0, base_sequence=sequence)


def test_retries_are_recognised_after_the_leader_recovers_and_leads_again(cluster_factory) -> None:
    config = {**FAILOVER_CONFIG, "log.segment.bytes": "2048"}  # rolls: recovery starts from a snapshot
    cluster = cluster_factory(config=config)
    bootstrap = cluster.local.bootstrap_servers()

    async def create() -> None:
        async with Admin(bootstrap) as admin:
            await admin.create_topics([NewTopic(TOPIC, replica_assignment={0: [1, 2, 3]},
                                                configs={"min.insync.replicas": "2"})])
    asyncio.run(create())
    wait_until(lambda: cluster.leader_of(TOPIC, 0) == 1, message="broker-1 leading partition 0")
    [init] = [cluster.broker_stub(2).InitProducerId(broker_pb2.InitProducerIdRequest(), timeout=10)]
    assert init.error_code == ErrorCode.NONE
    pid = init.producer_id

    first = [produce_raw(cluster, 1, raw_batch(pid, seq)) for seq in range(0, 100, 5)]
    assert all(a.error_code == ErrorCode.NONE for a in first)
    cluster.kill(1)  # kill -9: its producer state must come back from snapshot + log
    wait_until(lambda: cluster.leader_of(TOPIC, 0) in (2, 3), message="a new leader")
    new_leader = cluster.leader_of(TOPIC, 0)
    while_down = [produce_raw(cluster, new_leader, raw_batch(pid, seq)) for seq in range(100, 150, 5)]
    assert all(a.error_code == ErrorCode.NONE for a in while_down)
    # A retry on the new leader of a batch the old one wrote: recognised through replication.
    assert produce_raw(cluster, new_leader, raw_batch(pid, 95)).base_offset == first[-1].base_offset

    cluster.restart(1)
    wait_until(lambda: 1 in partition_state(cluster, TOPIC, 0, [2, 3]).isr, 20, message="broker-1 back in the ISR")

    async def elect() -> None:
        async with Admin(bootstrap) as admin:
            [result] = await admin.elect_leaders("preferred", [(TOPIC, 0)])
            assert result.error is None, result.error
    asyncio.run(elect())
    wait_for(lambda: cluster.leader_of(TOPIC, 0) == 1, 10, "broker-1 leading again")
    end = cluster.log_dirs(1)[(TOPIC, 0)].log_end_offset
    # Retries of batches written before the kill, and while broker-1 was down.
    for sequence, answer in [(95, first[-1]), (145, while_down[-1])]:
        retry = produce_raw(cluster, 1, raw_batch(pid, sequence))
        assert (retry.error_code, retry.base_offset) == (ErrorCode.NONE, answer.base_offset)
    assert cluster.log_dirs(1)[(TOPIC, 0)].log_end_offset == end  # nothing written twice
    gap = produce_raw(cluster, 1, raw_batch(pid, 155))
    assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER  # 150 is next
    assert produce_raw(cluster, 1, raw_batch(pid, 150)).base_offset == end
