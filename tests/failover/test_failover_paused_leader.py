"""SIGSTOP of the leader past the session timeout: fenced, replaced, and on SIGCONT it truncates
its unreplicated tail and rejoins as a follower; nothing acknowledged is lost and nothing it
wrote alone is ever served.

To give the old leader a tail nobody else has, its followers are paused first for longer than
their fetch long-poll (replica.fetch.wait.max.ms=200), so neither has a fetch waiting on the
leader; records produced with acks=1 then stay on the leader alone; then the leader is paused
and the followers resumed, well within their session timeout.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from failover_kit import SESSION_TIMEOUT_S, FailoverTopic, LiveReader, events, pause, resume, wait_async

from lab.checker import check

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(90)]
TOPIC = "zombie"
TAIL = 20  # records the paused-soon leader writes alone


def test_a_paused_leader_is_fenced_truncates_its_tail_and_rejoins(cluster_factory) -> None:
    setup = FailoverTopic.create(cluster_factory, TOPIC)
    cluster, old_leader, history = setup.cluster, setup.old_leader, setup.history

    async def scenario() -> None:
        reader = LiveReader(history, "live-reader", setup.bootstrap, TOPIC).start()
        writer = setup.writer("writer", interval_ms=5, request_timeout_ms=3_000,
                              max_in_flight_requests_per_connection=1)
        tail = setup.writer("tail", acks="1", linger_ms=0)
        try:
            await writer.send(100)
            await writer.wait_acked(100)
            await tail.send(1)  # connected and metadata known before the clock starts
            await tail.wait_acked(1)
            await setup.wait_in_sync()
            writer.start()
            await setup.leader_writes_alone(tail, TAIL)
            pause(cluster, old_leader)
            setup.resume_followers()
            paused_at = time.monotonic()
            state = await setup.new_leader_among_followers()
            assert time.monotonic() - paused_at >= SESSION_TIMEOUT_S * 0.5
            acked = writer.acked()
            await writer.wait_acked(acked + 50)  # the new leader takes acks=all writes
            resume(cluster, old_leader)
            await wait_async(lambda: events(cluster, old_leader, "LogTruncated", topic=TOPIC, partition=0),
                             15, f"broker-{old_leader} to truncate its tail")
            await setup.old_leader_back_in_isr(15)
            await writer.wait_acked(writer.acked() + 50)
            assert state.leader_epoch >= 1
        finally:
            for broker in [old_leader, *setup.followers]:
                resume(cluster, broker)  # never leave a stopped process behind
            await writer.stop()
            await tail.stop()
        await setup.wait_in_sync()
        await setup.read_back()
        await reader.stop()

    asyncio.run(scenario())

    tail_values = {s.value for s in history.sends if s.process == "tail"}
    served = tail_values & history.read_values()
    first = min((s for s in history.sends if s.process == "tail"), key=lambda s: s.index)
    assert served == {first.value}, "records the zombie wrote alone were served to a consumer"
    result = check(history, allowed={"duplicate", "lost-write", "unseen"}, contiguous=True)
    assert result.valid, result.explain()
    lost = {case["value"] for case in result.anomalies["lost-write"]}
    assert lost == {v.decode() for v in tail_values - {first.value}}, result.explain()
    assert result.count("unseen") == result.count("lost-write")
    removed = setup.old_leader_truncated()
    assert removed >= TAIL, f"broker-{old_leader} truncated {removed} records, expected its {TAIL}-record tail"
    assert events(cluster, "controller", "BrokerFenced", broker_id=old_leader)
    assert events(cluster, old_leader, "BecameFollower", topic=TOPIC, partition=0)
    print(result.summary(), f"truncated={removed}")
