"""kill -9 of a partition leader under acks=all, RF 3, min ISR 2: nothing acknowledged is lost.

Kafka's replication_test.py shape: 3 brokers, 3 partitions, replication factor 3,
min.insync.replicas=2, acks=all. The producer has no idempotence yet (issue 7), so a retried
batch may be written twice: duplicates are tolerated and counted, nothing else is.
"""

from __future__ import annotations

import asyncio

import pytest
from failover_kit import FailoverTopic, LiveReader, events, partition_state, wait_async

from lab.checker import check

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]
TOPIC = "orders"


def test_kill_9_of_the_leader_under_acks_all_loses_nothing(cluster_factory) -> None:
    setup = FailoverTopic.create(cluster_factory, TOPIC, partitions=3)
    cluster, victim, others, history = setup.cluster, setup.old_leader, setup.followers, setup.history

    async def scenario() -> None:
        # A consumer reads along the whole time: its position must survive the leader change
        # (no poll-skip, no nonmonotonic-poll).
        reader = LiveReader(history, "live-reader", setup.bootstrap, TOPIC, partitions=(0, 1, 2)).start()
        writer = setup.writer("writer", partitions=(0, 1, 2), interval_ms=2,
                              max_in_flight_requests_per_connection=1).start()
        try:
            await writer.wait_acked(150)
            before = partition_state(cluster, TOPIC, 0, others)
            await asyncio.to_thread(cluster.kill, victim)
            moved = await wait_async(
                lambda: (p := partition_state(cluster, TOPIC, 0, others)) and p.leader_id in others and p,
                10, "a new leader of partition 0")
            assert moved.leader_epoch > before.leader_epoch
            acked = writer.acked()
            await writer.wait_acked(acked + 300)  # writes go on through the new leader
            await asyncio.to_thread(cluster.restart, victim)
            await wait_async(lambda: all(victim in partition_state(cluster, TOPIC, p, others).isr for p in range(3)),
                             20, f"broker-{victim} back in every ISR")
            await writer.wait_acked(writer.acked() + 100)
        finally:
            await writer.stop()
        await setup.read_back()
        await reader.stop()
        live = {v for p in history.polls if p.process == "live-reader" for (_, _, _, v) in p.records}
        assert len(live) >= writer.acked() - 100, "the live reader fell behind after the leader change"

    asyncio.run(scenario())
    result = check(history, allowed={"duplicate"}, contiguous=True)
    assert result.valid, result.explain()
    assert result.stats["acknowledged"] >= 550 and result.count("unseen") == 0
    assert result.stats["failed"] == 0, result.explain()
    assert events(cluster, "controller", "BrokerFenced", broker_id=victim)
    print(result.summary())
