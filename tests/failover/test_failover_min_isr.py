"""Two of three replicas down: acks=all fails with NOT_ENOUGH_REPLICAS and is never acknowledged
(nor ever read); acks=1 still works (Kafka's min.insync.replicas binds acks=all only); service
resumes when one replica returns."""

from __future__ import annotations

import asyncio

import pytest
from failover_kit import FailoverTopic, partition_state, wait_async

from brokerlab.errors import ErrorCode
from lab.checker import check

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]
TOPIC = "durable"
REFUSED = 10


def test_acks_all_is_refused_below_min_isr_and_resumes_when_a_replica_returns(cluster_factory) -> None:
    setup = FailoverTopic.create(cluster_factory, TOPIC)
    cluster, leader, followers, history = setup.cluster, setup.old_leader, setup.followers, setup.history

    async def scenario() -> None:
        before = setup.writer("before")
        refused = setup.writer("refused", delivery_timeout_ms=2_500, request_timeout_ms=2_000, retry_backoff_ms=50)
        acks_one = setup.writer("acks-1", acks="1")
        after = setup.writer("after")
        try:
            await before.send(50)
            await before.wait_acked(50)
            for follower in followers:
                await asyncio.to_thread(cluster.kill, follower)
            await wait_async(lambda: list(partition_state(cluster, TOPIC, 0, [leader]).isr) == [leader],
                             10, "the ISR to shrink to the leader alone")
            handles = await refused.send(REFUSED)
            outcomes = await asyncio.gather(*handles, return_exceptions=True)
            assert [getattr(o, "code", o) for o in outcomes] == [ErrorCode.NOT_ENOUGH_REPLICAS] * REFUSED
            await acks_one.send(5)
            await acks_one.wait_acked(5)
            await asyncio.to_thread(cluster.restart, followers[0])
            await wait_async(lambda: followers[0] in partition_state(cluster, TOPIC, 0, [leader]).isr,
                             20, f"broker-{followers[0]} back in the ISR")
            await after.send(50)
            await after.wait_acked(50)
        finally:
            for writer in (before, refused, acks_one, after):
                await writer.stop()
        await setup.read_back()

    asyncio.run(scenario())
    result = check(history, contiguous=True)
    assert result.valid, result.explain()
    refused = [s for s in history.sends if s.process == "refused"]
    assert all(s.outcome == "fail" and s.error == "NOT_ENOUGH_REPLICAS" for s in refused)
    assert result.stats["failed"] == REFUSED and result.count("aborted-read") == 0
    assert result.stats["acknowledged"] == 105 and result.count("unseen") == 0
    print(result.summary())
