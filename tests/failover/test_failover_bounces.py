"""Bounces: the leader of partition 0 hard-bounced (kill -9, restart) five times in a row, then
clean-bounced (SIGTERM, restart) five times, then every broker cleanly restarted in turn.

Under a steady acks=all load (RF 3, min ISR 2, one request in flight): nothing acknowledged is
lost, no offset holds two values, no gaps; during the clean steps no produce fails and the
partition is never unavailable for as long as a session timeout (controlled shutdown moves
leadership before the broker goes, instead of the controller noticing it is gone).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest
from failover_kit import SESSION_TIMEOUT_S, FailoverTopic, Writer, partition_state, wait_async

from lab.checker import check

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]
TOPIC = "bounced"
PARTITIONS = 3
BOUNCES = 5


async def _wait_fully_replicated(cluster, broker_ids) -> None:
    def replicated():
        states = [partition_state(cluster, TOPIC, p, broker_ids) for p in range(PARTITIONS)]
        return all(s is not None and s.leader_id >= 0 and set(s.isr) == set(s.replicas) for s in states)

    await wait_async(replicated, 20, "every replica back in every ISR")


async def _bounce(cluster, writer: Writer, broker_id: int, kill: bool) -> tuple[float, float]:
    """Stop one broker (kill -9 or SIGTERM), start it again, wait until it is back in every ISR;
    returns the step's window in history time."""
    everyone = [b.id for b in cluster.brokers]
    started = writer.history.now_ms()
    if kill:
        await asyncio.to_thread(cluster.kill, broker_id)
    else:
        clean = await asyncio.to_thread(cluster.terminate, broker_id)
        assert clean, f"broker-{broker_id} did not exit cleanly on SIGTERM"
    acked = writer.acked()
    await writer.wait_acked(acked + 20)  # served by the other replicas meanwhile
    await asyncio.to_thread(cluster.restart, broker_id)
    await _wait_fully_replicated(cluster, everyone)
    await writer.wait_acked(writer.acked() + 20)
    return started, writer.history.now_ms()


async def _under_load(setup: FailoverTopic, steps: Callable[[Writer], Awaitable[None]]) -> None:
    """``steps(writer)`` while a steady acks=all writer (one request in flight) covers every
    partition; then the whole topic read back."""
    writer = setup.writer("writer", partitions=range(PARTITIONS), interval_ms=3,
                          max_in_flight_requests_per_connection=1).start()
    try:
        await writer.wait_acked(50)
        await steps(writer)
    finally:
        await writer.stop()
    await setup.read_back()


def test_hard_bounces_of_the_leader_lose_nothing(cluster_factory) -> None:
    setup = FailoverTopic.create(cluster_factory, TOPIC, partitions=PARTITIONS)
    cluster, history = setup.cluster, setup.history
    everyone = [b.id for b in cluster.brokers]
    victims = []

    async def bounce_leaders(writer: Writer) -> None:
        for _ in range(BOUNCES):
            victim = partition_state(cluster, TOPIC, 0, everyone).leader_id
            victims.append(victim)
            await _bounce(cluster, writer, victim, kill=True)

    asyncio.run(_under_load(setup, bounce_leaders))
    result = check(history, allowed={"duplicate"}, contiguous=True)
    assert result.valid, result.explain()
    assert result.count("unseen") == 0 and result.stats["failed"] == 0
    assert len(victims) == BOUNCES
    print(f"victims={victims}", result.summary())


def test_clean_bounces_and_a_rolling_restart_fail_no_produce(cluster_factory) -> None:
    setup = FailoverTopic.create(cluster_factory, TOPIC, partitions=PARTITIONS)
    cluster, history = setup.cluster, setup.history
    everyone = [b.id for b in cluster.brokers]
    steps: list[tuple[str, int, float, float]] = []

    async def bounce_leaders_then_roll(writer: Writer) -> None:
        for _ in range(BOUNCES):
            victim = partition_state(cluster, TOPIC, 0, everyone).leader_id
            steps.append(("leader", victim, *await _bounce(cluster, writer, victim, kill=False)))
        for broker_id in everyone:
            steps.append(("rolling", broker_id, *await _bounce(cluster, writer, broker_id, kill=False)))

    asyncio.run(_under_load(setup, bounce_leaders_then_roll))
    result = check(history, allowed={"duplicate"}, contiguous=True)
    assert result.valid, result.explain()
    report = [(kind, broker, len(history.failed_between(start, end)),
               max(history.longest_ack_gap_ms(start, end, partition=(TOPIC, p)) for p in range(PARTITIONS)))
              for kind, broker, start, end in steps]
    print("steps (kind, broker, failed sends, longest gap without an ack ms):", report)
    assert all(failed == 0 for _, _, failed, _ in report), report
    assert all(gap < SESSION_TIMEOUT_S * 1000 for _, _, _, gap in report), (
        f"a clean stop left partitions without a leader for a whole session timeout: {report}")
    assert result.count("unseen") == 0 and result.stats["failed"] == 0
