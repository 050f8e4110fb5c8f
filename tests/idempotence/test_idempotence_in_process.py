"""The idempotent producer against real broker and controller cores (one thread, virtual time).

A slow broker (``test.produce.response.delay.ms`` past the producer's request.timeout.ms) makes
the producer retry batches the leader already wrote: with idempotence every record is in the
log exactly once and acknowledged with the offset of its first write; without it the same
scenario writes duplicates. A leader that dies with answers in flight: the new leader, whose
producer state came from replicating the batches, recognises the retries.
"""

from __future__ import annotations

from collections import Counter

import pytest
from producer_harness import ProducingCluster

TOPIC = "orders"
SLOW = {"test.produce.response.delay.ms": 1_500, "test.produce.response.delay.every": 2}


def slow_cluster(idempotence: bool) -> ProducingCluster:
    cluster = ProducingCluster(idempotence=idempotence, request_timeout_ms=1_000, broker_config=SLOW)
    cluster.wait_ready()
    cluster.create_topic(TOPIC, assignment=[[1, 2, 3]])
    cluster.advance(50)
    return cluster


def produce_through_slow_acks(idempotence: bool) -> ProducingCluster:
    cluster = slow_cluster(idempotence)
    for i in range(40):
        cluster.send(TOPIC, 0, b"v%d" % i)
        cluster.advance(7)
    cluster.wait_done()
    cluster.settle(3_000)  # late answers and replication settle
    return cluster


def test_slow_acks_with_idempotence_write_each_record_once_at_its_acknowledged_offset() -> None:
    cluster = produce_through_slow_acks(idempotence=True)
    log = cluster.committed(TOPIC)
    values = [v for _, v in log]
    assert values == [b"v%d" % i for i in range(40)], "each record once, in send order"
    assert not cluster.failed()
    assert cluster.acknowledged() == [(v, o) for o, v in log]  # acknowledged where it was first written
    # The knob delayed answers and the producer did retry: the leader answered duplicates.
    assert cluster.named("DuplicateProduceAnswered")
    assert cluster.core(1).delayed_answers.delayed > 0


def test_the_same_slow_acks_without_idempotence_write_duplicates() -> None:
    cluster = produce_through_slow_acks(idempotence=False)
    values = [v for _, v in cluster.committed(TOPIC)]
    counts = Counter(values)
    assert set(counts) == {b"v%d" % i for i in range(40)}
    assert any(n > 1 for n in counts.values()), "retries of written batches were written again"


@pytest.mark.parametrize("idempotence", [True, False])
def test_leader_killed_with_answers_in_flight(idempotence: bool) -> None:
    """The leader appends and replicates, then dies before answering: the producer retries on
    the new leader, which knows the batches from replication."""
    cluster = ProducingCluster(idempotence=idempotence, request_timeout_ms=1_000)
    cluster.wait_ready()
    cluster.create_topic(TOPIC, assignment=[[1, 2, 3]])
    cluster.advance(50)
    cluster.send(TOPIC, 0, b"first")
    cluster.wait_done()
    held = cluster.hold(lambda e: e.rpc == "Produce" and e.is_response and e.dst == "client-producer")
    cluster.send(TOPIC, 0, b"a", b"b")
    cluster.advance(600)  # appended, replicated, high watermark moved: the answers are held
    assert cluster.take(held)  # ... and lost with the leader
    cluster.kill(1)
    cluster.unhold(held)
    cluster.send(TOPIC, 0, b"c")
    cluster.wait_done()
    assert cluster.leader(TOPIC) != 1
    values = [v for _, v in cluster.committed(TOPIC)]
    if idempotence:
        assert values == [b"first", b"a", b"b", b"c"]
        assert [v for v, _ in cluster.acknowledged()] == [b"first", b"a", b"b", b"c"]
    else:
        assert Counter(values)[b"a"] == 2  # the retry wrote it again on the new leader
