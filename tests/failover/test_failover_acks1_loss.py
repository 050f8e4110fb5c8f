"""acks=1 with a leader kill may lose acknowledged records, and the test counts exactly how many:
the checker's lost writes equal the records the returning ex-leader's LogTruncated lines removed.

The loss is made certain the same way as in the SIGSTOP test: the followers are paused longer
than their fetch long-poll, the leader takes acks=1 records alone, and is killed (-9) before the
followers resume. It keeps that tail on disk (kill -9 keeps the page cache) and cuts it when it
comes back and follows the new leader.
"""

from __future__ import annotations

import asyncio

import pytest
from failover_kit import (
    FAILOVER_CONFIG,
    Writer,
    events,
    partition_state,
    pause,
    read_back,
    records_truncated,
    resume,
    wait_async,
    wait_in_sync,
)

from lab.checker import check
from lab.history import History

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]
TOPIC = "fast-and-loose"
TAIL = 25
FOLLOWER_PAUSE_S = 0.45  # > replica.fetch.wait.max.ms (200), < broker.session.timeout.ms (1000)


def test_acks_1_loses_exactly_what_the_ex_leader_truncates(cluster_factory) -> None:
    cluster = cluster_factory(config=FAILOVER_CONFIG)
    cluster.create_topic(TOPIC, partitions=1, replication_factor=3, configs={"min.insync.replicas": "2"})
    bootstrap = cluster.local.bootstrap_servers()
    old_leader = cluster.leader_of(TOPIC, 0)
    followers = [b.id for b in cluster.brokers if b.id != old_leader]
    history = History()

    async def scenario() -> None:
        before = Writer(history, "before", bootstrap, TOPIC, acks="1")
        tail = Writer(history, "tail", bootstrap, TOPIC, acks="1", linger_ms=0)
        after = Writer(history, "after", bootstrap, TOPIC, acks="1")
        try:
            await before.send(100)
            await before.wait_acked(100)
            await asyncio.to_thread(wait_in_sync, cluster, TOPIC, 0, [old_leader, *followers])
            for follower in followers:
                pause(cluster, follower)
            await asyncio.sleep(FOLLOWER_PAUSE_S)  # their last long-poll fetches get answered meanwhile
            await tail.send(TAIL)
            await tail.wait_acked(TAIL, timeout_s=5)
            await asyncio.to_thread(cluster.kill, old_leader)
            for follower in followers:
                resume(cluster, follower)
            await wait_async(
                lambda: (p := partition_state(cluster, TOPIC, 0, followers)) and p.leader_id in followers,
                10, "a new leader elected among the followers")
            await after.send(50)
            await after.wait_acked(50)
            await asyncio.to_thread(cluster.restart, old_leader)
            await wait_async(lambda: old_leader in partition_state(cluster, TOPIC, 0, followers).isr,
                             20, f"broker-{old_leader} back in the ISR")
        finally:
            for follower in followers:
                resume(cluster, follower)
            for writer in (before, tail, after):
                await writer.stop()
        await asyncio.to_thread(wait_in_sync, cluster, TOPIC, 0, [old_leader, *followers])
        await read_back(history, bootstrap, TOPIC, [0])

    asyncio.run(scenario())
    removed = records_truncated(cluster, old_leader, TOPIC, 0)
    result = check(history, allowed={"lost-write", "unseen"}, contiguous=True)
    assert result.valid, result.explain()
    lost = result.anomalies["lost-write"]
    assert {case["value"].split("-")[0] for case in lost} == {"tail"}, result.explain()
    assert len(lost) == removed == TAIL, (
        f"lost {len(lost)} acknowledged records, broker-{old_leader} truncated {removed}\n{result.explain()}")
    assert result.count("unseen") == len(lost)
    truncation = events(cluster, old_leader, "LogTruncated", topic=TOPIC, partition=0)[-1]
    assert int(truncation["to_offset"]) - int(truncation["from_offset"]) == TAIL
    print(result.summary(), f"truncated={removed}")
