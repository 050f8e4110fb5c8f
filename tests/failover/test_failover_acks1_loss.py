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
from failover_kit import FailoverTopic, events

from lab.checker import check

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]
TOPIC = "fast-and-loose"
TAIL = 25


def test_acks_1_loses_exactly_what_the_ex_leader_truncates(cluster_factory) -> None:
    setup = FailoverTopic.create(cluster_factory, TOPIC)
    cluster, old_leader, history = setup.cluster, setup.old_leader, setup.history

    async def scenario() -> None:
        before = setup.writer("before", acks="1")
        tail = setup.writer("tail", acks="1", linger_ms=0)
        after = setup.writer("after", acks="1")
        try:
            await before.send(100)
            await before.wait_acked(100)
            await setup.wait_in_sync()
            await setup.leader_writes_alone(tail, TAIL)
            await asyncio.to_thread(cluster.kill, old_leader)
            setup.resume_followers()
            await setup.new_leader_among_followers()
            await after.send(50)
            await after.wait_acked(50)
            await asyncio.to_thread(cluster.restart, old_leader)
            await setup.old_leader_back_in_isr(20)
        finally:
            setup.resume_followers()
            for writer in (before, tail, after):
                await writer.stop()
        await setup.wait_in_sync()
        await setup.read_back()

    asyncio.run(scenario())
    removed = setup.old_leader_truncated()
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
