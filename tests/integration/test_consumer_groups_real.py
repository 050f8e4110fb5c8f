"""Consumer groups against real processes (controller + 3 brokers on 127.0.0.1).

- kill -9 one of three member processes: its partitions are reassigned within the session
  timeout + 1 s, no committed offset is lost, and the records it had received but not committed
  are delivered again to the new owner (counted exactly);
- a member that stops polling past max.poll.interval.ms is removed, its commit fails with a
  clear error, and it rejoins when it polls again;
- a clean LeaveGroup of one member of six: rebalance complete within 1 s;
- the lag in ``brokerlab group describe`` is exact;
- kill -9 of the coordinator's broker while the group consumes and commits: the group goes on
  with a new coordinator, commits are intact, no partition ever has two owners at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from real_cluster import wait_until

from brokerlab.ids import TopicPartition
from client import CommitFailedError, Consumer
from client.sync import SyncAdmin, SyncProducer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SESSION_MS = 3000
HEARTBEAT_MS = 300


class Member:
    """A group member process (group_member.py) whose JSON events are collected as they come."""

    def __init__(self, name: str, config: dict) -> None:
        self.name = name
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen([sys.executable, str(HERE / "group_member.py"), json.dumps(config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["ev"] == kind]

    def owned(self) -> set[int]:
        """Partitions owned after the latest assignment event (eager: assigned = everything)."""
        owned: set[int] = set()
        for event in list(self.events):
            if event["ev"] == "assigned":
                owned |= set(event["partitions"])
            elif event["ev"] in ("revoked", "lost"):
                owned -= set(event["partitions"])
        return owned

    def kill(self) -> float:
        self.process.kill()
        self.process.wait(10)
        return time.time()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def produce(bootstrap: list[str], topic: str, partitions: int, count: int) -> None:
    with SyncProducer(bootstrap, acks="all", linger_ms=1) as producer:
        handles = [producer.send(topic, str(i).encode(), partition=i % partitions) for i in range(count)]
        producer.flush()
        for handle in handles:
            handle.result(30)


def ownership_intervals(members: dict[str, Member], end: float) -> dict[int, list[tuple[float, float, str]]]:
    """Per partition: (from, to, member) while each member believed it owned it."""
    out: dict[int, list[tuple[float, float, str]]] = {}
    for name, member in members.items():
        since: dict[int, float] = {}
        for event in member.events:
            if event["ev"] == "assigned":
                for p in event["partitions"]:
                    since.setdefault(p, event["t"])
            elif event["ev"] in ("revoked", "lost"):
                for p in event["partitions"]:
                    if p in since:
                        out.setdefault(p, []).append((since.pop(p), event["t"], name))
        stop = getattr(member, "killed_at", None) or end
        for p, start in since.items():
            out.setdefault(p, []).append((start, stop, name))
    return out


def assert_single_owner(members: dict[str, Member]) -> None:
    for partition, spans in ownership_intervals(members, time.time()).items():
        spans.sort()
        latest_end, latest_owner = float("-inf"), None
        for start, end, owner in spans:
            assert start >= latest_end - 0.001, (
                f"partition {partition}: {owner} owned it from {start} while {latest_owner} did until {latest_end}")
            if end > latest_end:
                latest_end, latest_owner = end, owner


def delivered(members: dict[str, Member]) -> dict[str, int]:
    """value -> how many times it was delivered (to anyone)."""
    counts: dict[str, int] = {}
    for member in members.values():
        for event in member.of("records"):
            for _, _, _, values in event["partitions"].values():
                for value in values:
                    counts[value] = counts.get(value, 0) + 1
    return counts


def member_config(bootstrap, group, topic, name, **extra) -> dict:
    return {"bootstrap": bootstrap, "group": group, "topic": topic, "client_id": name,
            "session_timeout_ms": SESSION_MS, "heartbeat_ms": HEARTBEAT_MS, **extra}


# ---------------------------------------------------------------------------- kill -9 of a member


def test_kill9_member_partitions_reassigned_within_session_timeout(cluster):
    bootstrap = cluster.local.bootstrap_servers()
    topic, partitions, total = "orders", 6, 3000
    cluster.create_topic(topic, partitions=partitions, replication_factor=3)
    produce(bootstrap, topic, partitions, total)
    members = {f"m{i}": Member(f"m{i}", member_config(bootstrap, "g-kill", topic, f"m{i}", process_ms=50,
                                                      max_records=10)) for i in range(3)}
    try:
        wait_until(lambda: all(m.owned() for m in members.values())
                   and set().union(*(m.owned() for m in members.values())) == set(range(partitions))
                   and sum(len(m.of("committed")) for m in members.values()) >= 15,
                   timeout_s=60, message="three members sharing the six partitions and committing")
        victim_name = max(members, key=lambda n: len(members[n].owned()))
        victim = members[victim_name]
        victim_partitions = victim.owned()
        committed_before = {}
        for member in members.values():
            for event in member.of("committed"):
                for p, offset in event["offsets"].items():
                    committed_before[int(p)] = max(committed_before.get(int(p), 0), offset)
        victim.killed_at = kill_time = victim.kill()
        survivors = {n: m for n, m in members.items() if n != victim_name}

        def covered_at() -> float | None:
            owned = set().union(*(m.owned() for m in survivors.values()))
            if owned != set(range(partitions)):
                return None
            return max(e["t"] for m in survivors.values() for e in m.of("assigned"))

        reassigned = wait_until(covered_at, timeout_s=SESSION_MS / 1000 + 10, message="survivors owning everything")
        took = reassigned - kill_time
        print(f"\nkill -9 of {victim_name} ({sorted(victim_partitions)}): partitions reassigned after {took:.3f} s")
        assert took <= SESSION_MS / 1000 + 1.0

        wait_until(lambda: len(delivered(members)) == total, timeout_s=90, message="every record delivered")
        with SyncAdmin(bootstrap) as admin:
            final = wait_until(lambda: (lambda c: c if all(c.get(TopicPartition(topic, p)) == total // partitions
                                                           for p in range(partitions)) else None)(
                admin.list_group_offsets("g-kill")), timeout_s=30, message="final commits")
        for p, offset in committed_before.items():
            assert final[TopicPartition(topic, p)] >= offset, f"committed offset of partition {p} went back"
        # What the victim received but had not committed is delivered again, exactly that.
        expected = 0
        for p in victim_partitions:
            received = [e["partitions"][str(p)] for e in victim.of("records") if str(p) in e["partitions"]]
            last_received = received[-1][1] + 1 if received else 0
            commits = [e["offsets"][str(p)] for e in victim.of("committed") if str(p) in e["offsets"]]
            last_committed = commits[-1] if commits else 0
            expected += max(0, last_received - last_committed)
        counts = delivered(members)
        redelivered = sum(n - 1 for n in counts.values())
        print(f"redelivered after the kill: {redelivered} record(s) (received but not committed by {victim_name})")
        assert redelivered == expected
        assert_single_owner(members)
    finally:
        for member in members.values():
            member.stop()


# ---------------------------------------------------------------------------- kill -9 of the coordinator


def test_kill9_coordinator_broker_group_carries_on(cluster):
    bootstrap = cluster.local.bootstrap_servers()
    topic, partitions, total = "payments", 6, 3000
    cluster.create_topic(topic, partitions=partitions, replication_factor=3)
    produce(bootstrap, topic, partitions, total)
    members = {f"c{i}": Member(f"c{i}", member_config(bootstrap, "g-coord", topic, f"c{i}", process_ms=40,
                                                      max_records=10)) for i in range(3)}
    try:
        wait_until(lambda: set().union(*(m.owned() for m in members.values())) == set(range(partitions))
                   and sum(len(m.of("committed")) for m in members.values()) >= 15,
                   timeout_s=60, message="the group consuming and committing")
        with SyncAdmin(bootstrap) as admin:
            [description] = admin.describe_groups(["g-coord"])
        coordinator = description.coordinator_id
        committed_before = {}
        for member in members.values():
            for event in member.of("committed"):
                for p, offset in event["offsets"].items():
                    committed_before[int(p)] = max(committed_before.get(int(p), 0), offset)
        commits_before = sum(len(m.of("committed")) for m in members.values())
        kill_time = time.time()
        cluster.kill(coordinator)
        print(f"\nkilled broker-{coordinator}, the coordinator of g-coord")
        wait_until(lambda: sum(len(m.of("committed")) for m in members.values()) > commits_before + 10,
                   timeout_s=60, message="commits going on after the coordinator died")
        resumed = min(e["t"] for m in members.values() for e in m.of("committed")
                      if e["t"] > kill_time and e["coordinator"] != coordinator)
        generations = sorted({e["generation"] for m in members.values() for e in m.of("committed")})
        print(f"first commit acknowledged by the new coordinator {resumed - kill_time:.3f} s after the kill; "
              f"generations seen: {generations}")
        wait_until(lambda: len(delivered(members)) == total, timeout_s=120, message="every record delivered")
        remaining = [b.id for b in cluster.brokers if b.id != coordinator]
        with SyncAdmin([cluster.node(b).address for b in remaining]) as admin:
            final = wait_until(lambda: (lambda c: c if all(c.get(TopicPartition(topic, p)) == total // partitions
                                                           for p in range(partitions)) else None)(
                admin.list_group_offsets("g-coord")), timeout_s=30, message="final commits")
            [after] = admin.describe_groups(["g-coord"])
        assert after.coordinator_id != coordinator
        for p, offset in committed_before.items():
            assert final[TopicPartition(topic, p)] >= offset
        failed = [e["error"] for m in members.values() for e in m.of("commit_failed")]
        print(f"commits refused around the failover (retried by the next batch): {len(failed)}")
        assert_single_owner(members)
    finally:
        for member in members.values():
            member.stop()


# ---------------------------------------------------------------------------- in-process members


async def _poll_forever(consumer: Consumer, stop: asyncio.Event, sink: list | None = None) -> None:
    while not stop.is_set():
        records = await consumer.poll(timeout_ms=50)
        if sink is not None:
            sink.extend(records)


def test_poll_interval_exceeded_removes_member_commit_fails_and_it_rejoins(cluster):
    bootstrap = cluster.local.bootstrap_servers()
    topic = "slow"
    cluster.create_topic(topic, partitions=4, replication_factor=3)
    produce(bootstrap, topic, 4, 40)

    async def scenario() -> None:
        settings = dict(group_id="g-slow", auto_offset_reset="earliest", enable_auto_commit=False,
                        session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS, max_poll_interval_ms=1500)
        slow, busy = Consumer(bootstrap, client_id="slow", **settings), Consumer(bootstrap, client_id="busy", **settings)
        slow.subscribe([topic])
        busy.subscribe([topic])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (slow.assignment() and busy.assignment()):
            assert loop.time() < deadline, "both members never got partitions"
            await asyncio.gather(slow.poll(timeout_ms=50), busy.poll(timeout_ms=50))
        positions = {tp: await slow.position(tp) for tp in slow.assignment()}
        busy_task = asyncio.ensure_future(_poll_forever(busy, stop))
        stalled_at = loop.time()
        while len(busy.assignment()) < 4:  # slow does not poll: its heartbeat task notices
            assert loop.time() - stalled_at < 1.5 + 4, "the stalled member was never removed"
            await asyncio.sleep(0.05)
        print(f"\nstalled member removed, busy member owns all after {loop.time() - stalled_at:.2f} s")
        assert slow.group_metadata()["generation_id"] == -1
        with pytest.raises(CommitFailedError) as failure:
            await slow.commit(positions)
        assert "max.poll.interval.ms" in failure.value.message
        print(f"commit of the stalled member: {failure.value}")
        deadline = loop.time() + 20

        def shared() -> bool:
            slow_meta, busy_meta = slow.group_metadata(), busy.group_metadata()
            return (slow_meta["state"] == busy_meta["state"] == "STABLE"
                    and slow_meta["generation_id"] == busy_meta["generation_id"]
                    and slow.assignment() and busy.assignment()
                    and len(slow.assignment() | busy.assignment()) == 4
                    and not slow.assignment() & busy.assignment())

        while not shared():  # it polls again: its old partitions are lost, it rejoins, they share
            assert loop.time() < deadline, "the stalled member never rejoined"
            await slow.poll(timeout_ms=100)
        await slow.commit()
        stop.set()
        await busy_task
        await slow.close()
        await busy.close()

    asyncio.run(scenario())


def test_clean_leave_of_one_of_six_rebalances_within_one_second(cluster):
    bootstrap = cluster.local.bootstrap_servers()
    topic = "six"
    cluster.create_topic(topic, partitions=12, replication_factor=3)

    async def scenario() -> float:
        stamps: dict[str, float] = {}

        def on_assigned(name):
            def record(_tps):
                stamps[name] = time.monotonic()
            return record

        consumers = {}
        for i in range(6):
            consumer = Consumer(bootstrap, group_id="g-six", client_id=f"m{i}", session_timeout_ms=SESSION_MS,
                                heartbeat_interval_ms=200, auto_offset_reset="earliest")
            consumer.subscribe([topic], on_partitions_assigned=on_assigned(f"m{i}"))
            consumers[f"m{i}"] = consumer
        stop = asyncio.Event()
        tasks = {n: asyncio.ensure_future(_poll_forever(c, stop)) for n, c in consumers.items()}
        loop = asyncio.get_running_loop()

        def settled(names) -> bool:
            owned = [consumers[n].assignment() for n in names]
            generations = {consumers[n].group_metadata()["generation_id"] for n in names}
            return set().union(*owned) == {TopicPartition(topic, p) for p in range(12)} \
                and sum(len(o) for o in owned) == 12 and len(generations) == 1 and -1 not in generations

        deadline = loop.time() + 30
        while not settled(list(consumers)):
            assert loop.time() < deadline, "six members never settled"
            await asyncio.sleep(0.05)
        generation = consumers["m0"].group_metadata()["generation_id"]
        leaving = consumers.pop("m5")
        tasks.pop("m5").cancel()  # it stops polling (its poll is cancelled, as a closing app would)
        started = time.monotonic()
        await leaving.close()  # LeaveGroup
        while not (settled(list(consumers)) and consumers["m0"].group_metadata()["generation_id"] > generation):
            assert time.monotonic() - started < 10, "the five never settled after the leave"
            await asyncio.sleep(0.01)
        took = max(stamps[n] for n in consumers) - started
        stop.set()
        await asyncio.gather(*tasks.values())
        for consumer in consumers.values():
            await consumer.close()
        return took

    took = asyncio.run(scenario())
    print(f"\nclean LeaveGroup of 1 of 6: all 12 partitions owned again after {took * 1000:.0f} ms")
    assert took <= 1.0


def test_group_describe_lag_is_exact(cluster):
    bootstrap = cluster.local.bootstrap_servers()
    topic = "lagged"
    cluster.create_topic(topic, partitions=3, replication_factor=3)
    with SyncProducer(bootstrap, acks="all") as producer:
        for partition, count in enumerate((10, 20, 30)):
            for i in range(count):
                producer.send(topic, f"{partition}-{i}".encode(), partition=partition)
        producer.flush()

    async def commit_some() -> None:
        consumer = Consumer(bootstrap, group_id="g-lag", client_id="lagger", auto_offset_reset="earliest",
                            enable_auto_commit=False, heartbeat_interval_ms=HEARTBEAT_MS, session_timeout_ms=SESSION_MS)
        consumer.subscribe([topic])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(consumer.assignment()) < 3:
            assert loop.time() < deadline
            await consumer.poll(timeout_ms=100)
        await consumer.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 20})
        return consumer

    async def run() -> dict:
        consumer = await commit_some()
        try:
            live = describe_json(bootstrap, "g-lag")
        finally:
            await consumer.close()  # leaves; its close commits nothing (auto-commit is off)
        return live

    live = asyncio.run(run())
    rows = {row["partition"]: row for row in live["offsets"]}
    assert (rows[0]["current_offset"], rows[0]["log_end_offset"], rows[0]["lag"]) == (4, 10, 6)
    assert (rows[1]["current_offset"], rows[1]["log_end_offset"], rows[1]["lag"]) == (20, 20, 0)
    assert rows[2]["current_offset"] is None and rows[2]["lag"] is None and rows[2]["log_end_offset"] == 30
    assert {row["client_id"] for row in rows.values()} == {"lagger"}
    after = describe_json(bootstrap, "g-lag")
    assert after["state"] == "Empty"
    assert [(r["partition"], r["lag"]) for r in after["offsets"]] == [(0, 6), (1, 0)]


def describe_json(bootstrap: list[str], group: str) -> dict:
    """``brokerlab group describe G --json`` as a real CLI process."""
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "brokerlab"), "group", "describe", group, "--json",
                             "--bootstrap", ",".join(bootstrap)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_pattern_subscription_picks_up_new_topics(cluster):
    bootstrap = cluster.local.bootstrap_servers()
    cluster.create_topic("audit-a", partitions=2, replication_factor=3)

    async def scenario() -> None:
        consumer = Consumer(bootstrap, group_id="g-pattern", client_id="watcher", metadata_max_age_ms=500,
                            heartbeat_interval_ms=HEARTBEAT_MS, session_timeout_ms=SESSION_MS)
        consumer.subscribe(pattern=r"audit-.*")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while consumer.assignment() != {TopicPartition("audit-a", 0), TopicPartition("audit-a", 1)}:
            assert loop.time() < deadline, f"audit-a never assigned: {consumer.assignment()}"
            await consumer.poll(timeout_ms=100)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: cluster.create_topic("audit-b", partitions=1, replication_factor=3))
        deadline = loop.time() + 20
        while TopicPartition("audit-b", 0) not in consumer.assignment():
            assert loop.time() < deadline, "the new matching topic was never assigned"
            await consumer.poll(timeout_ms=100)
        assert consumer.subscription() == {"audit-a", "audit-b"}
        await consumer.close()

    asyncio.run(scenario())
