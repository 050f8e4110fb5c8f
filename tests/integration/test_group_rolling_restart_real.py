"""Rolling restart of every member of a group: eager vs cooperative vs static membership.

Three member processes share six partitions; each in turn is stopped cleanly (SIGTERM: commit,
revoke, LeaveGroup unless static) and started again. The test measures, for each mode, how long
partitions were without an owner (partition-seconds, from the members' own assign/revoke
events) and how many generations the restarts cost. It checks what each mode promises:
cooperative members keep the partitions that do not move (they flow through every rebalance),
static members come back within the session timeout with no rebalance at all, and no mode ever
has a partition owned by two members at once.
"""

from __future__ import annotations

import time

import pytest
from real_cluster import wait_until
from test_consumer_groups_real import Member, assert_single_owner, member_config, ownership_intervals, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 6


def unowned_seconds(members: dict[str, Member], start: float, end: float) -> float:
    """Partition-seconds in [start, end] with no owner."""
    total = 0.0
    spans = ownership_intervals(members, end)
    for partition in range(PARTITIONS):
        covered = sorted((max(a, start), min(b, end)) for a, b, _ in spans.get(partition, []) if b > start and a < end)
        cursor, gaps = start, 0.0
        for a, b in covered:
            if a > cursor:
                gaps += a - cursor
            cursor = max(cursor, b)
        gaps += max(0.0, end - cursor)
        total += gaps
    return total


def generations(members: dict[str, Member]) -> set[int]:
    return {e["generation"] for m in members.values() for e in m.of("assigned") + m.of("committed")}


def all_owned(live: list[Member]) -> bool:
    owned = [m.owned() for m in live]
    return set().union(*owned) == set(range(PARTITIONS)) and sum(len(o) for o in owned) == PARTITIONS


@pytest.mark.parametrize("mode", ["eager", "cooperative", "static"])
def test_rolling_restart(cluster, mode):
    bootstrap = cluster.local.bootstrap_servers()
    topic = f"roll-{mode}"
    cluster.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
    produce(bootstrap, topic, PARTITIONS, 600)
    strategy = "cooperative-sticky" if mode == "cooperative" else "range"
    session_ms = 6000 if mode == "static" else 3000

    def config(i: int) -> dict:
        extra = {"instance_id": f"instance-{i}"} if mode == "static" else {}
        return member_config(bootstrap, f"g-{mode}", topic, f"m{i}", strategy=strategy, process_ms=20,
                             max_records=5, session_timeout_ms=session_ms, **extra)

    everyone: dict[str, Member] = {}
    live: dict[int, Member] = {}
    for i in range(3):
        live[i] = everyone[f"m{i}"] = Member(f"m{i}", config(i))
    try:
        wait_until(lambda: all_owned(list(live.values())) and all(m.owned() for m in live.values()),
                   timeout_s=60, message="three members sharing six partitions")
        before = generations(everyone)
        start = time.time()
        kept_by_others = []
        for i in range(3):
            others = {j: set(m.owned()) for j, m in live.items() if j != i}
            old = live[i]
            old.stop()
            old.killed_at = time.time()
            live[i] = everyone[f"m{i}#2"] = Member(f"m{i}#2", config(i))
            wait_until(lambda i=i: all_owned(list(live.values())) and live[i].owned(), timeout_s=60,
                       message=f"the group settled after restarting m{i}")
            # What the other members owned when m{i} stopped and never gave up since.
            settled = time.time()
            spans = ownership_intervals(everyone, settled)
            for j, owned in others.items():
                name = live[j].name
                kept_by_others.append(sum(1 for p in owned if any(
                    who == name and a <= old.killed_at and b >= settled - 0.001 for a, b, who in spans[p])))
        end = time.time()
        lost = unowned_seconds(everyone, start, end)
        new_generations = generations(everyone) - before
        print(f"\n{mode}: 3 restarts in {end - start:.1f} s; partitions without an owner {lost:.2f} partition-s "
              f"({lost / PARTITIONS:.2f} s per partition); new generations {sorted(new_generations)}; "
              f"partitions other members kept through each restart: {kept_by_others}")
        assert_single_owner(everyone)
        if mode == "static":
            assert not new_generations, "a static member restarting within its session caused a rebalance"
        if mode == "cooperative":
            assert all(kept > 0 for kept in kept_by_others), "unaffected partitions kept flowing"
        if mode == "eager":
            assert all(kept == 0 for kept in kept_by_others), "eager members give up everything"
    finally:
        for member in everyone.values():
            member.stop()
