"""Helpers for the failover tests: faults on real broker processes, a recorded workload, a full read-back.

Everything the clients do goes into a ``lab.history.History`` and is judged by ``lab.checker``.
Cluster operations that block (kill and wait, restart and wait for health) run in a thread so
the producers and consumers on the event loop keep going meanwhile. Waits are always "until a
condition holds or a deadline passes".
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import grpc
from real_cluster import RunningCluster, read_events

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from brokerlab.v1 import broker_pb2
from client import Consumer, Producer
from lab.history import History

# Fast failure detection (the documented defaults) and short follower long-polls, so a paused
# follower's last fetch is answered well within one session timeout.
FAILOVER_CONFIG = {
    "broker.heartbeat.interval.ms": "100",
    "broker.session.timeout.ms": "1000",
    "replica.fetch.wait.max.ms": "200",
    "min.insync.replicas": "2",
}
SESSION_TIMEOUT_S = 1.0
CALL_TIMEOUT_S = 2.0
# Paused this long, followers have no fetch waiting on the leader: longer than their long-poll
# (replica.fetch.wait.max.ms 200), shorter than a session timeout (broker.session.timeout.ms 1000).
FOLLOWER_PAUSE_S = 0.45


# ---- faults ---------------------------------------------------------------------------------------


def pause(cluster: RunningCluster, broker_id: int) -> None:
    """SIGSTOP: the process stays, its sockets accept, nothing answers."""
    os.kill(cluster.node(broker_id).pid, signal.SIGSTOP)


def resume(cluster: RunningCluster, broker_id: int) -> None:
    os.kill(cluster.node(broker_id).pid, signal.SIGCONT)


# ---- cluster state, asked of chosen brokers (a paused one would hang the call) ------------------


def partition_state(cluster: RunningCluster, topic: str, partition: int,
                    via: Iterable[int]) -> broker_pb2.PartitionMetadata | None:
    for broker_id in via:
        try:
            response = cluster.broker_stub(broker_id).Metadata(
                broker_pb2.MetadataRequest(topics=[topic]), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            continue
        for t in response.topics:
            if t.name == topic and t.error_code == ErrorCode.NONE:
                return next((p for p in t.partitions if p.partition == partition), None)
    return None


def log_end_offset(cluster: RunningCluster, broker_id: int, topic: str, partition: int) -> int:
    info = cluster.log_dirs(broker_id).get((topic, partition))
    return -1 if info is None else info.log_end_offset


def wait_for(condition: Callable[[], Any], timeout_s: float, message: str, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = condition()
        except grpc.RpcError:
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {message}")
        time.sleep(interval_s)


async def wait_async(condition: Callable[[], Any], timeout_s: float, message: str) -> Any:
    """``wait_for`` off the event loop (the condition makes blocking gRPC calls)."""
    return await asyncio.to_thread(wait_for, condition, timeout_s, message)


def wait_in_sync(cluster: RunningCluster, topic: str, partition: int, brokers: Iterable[int],
                 timeout_s: float = 15.0) -> int:
    """Until every broker in ``brokers`` holds the same log end offset; returns it."""
    brokers = list(brokers)

    def same() -> int | None:
        ends = {log_end_offset(cluster, b, topic, partition) for b in brokers}
        return ends.pop() if len(ends) == 1 and -1 not in ends else None

    return wait_for(lambda: (same(),) if same() is not None else None, timeout_s,
                    f"brokers {brokers} to hold the same log of {topic}-{partition}")[0]


def events(cluster: RunningCluster, node: int | str, name: str, **fields: str) -> list[dict[str, str]]:
    """Log lines of one node with ``event=name`` and the given field values."""
    path = cluster.node(node).log if isinstance(node, int) else cluster.local.node(node).log
    return [e for e in read_events(path)
            if e.get("event") == name and all(e.get(k) == str(v) for k, v in fields.items())]


def records_truncated(cluster: RunningCluster, broker_id: int, topic: str, partition: int) -> int:
    return sum(int(e.get("records_removed", 0))
               for e in events(cluster, broker_id, "LogTruncated", topic=topic, partition=partition))


# ---- the workload ---------------------------------------------------------------------------------


class Writer:
    """One producer writing unique values (``<process>-<n>``) to partitions in turn, recorded."""

    def __init__(self, history: History, process: str, bootstrap: list[str], topic: str,
                 partitions: Iterable[int] = (0,), interval_ms: float = 2.0, **producer_settings: Any) -> None:
        self.history = history
        self.process = process
        self.topic = topic
        self.partitions = list(partitions)
        self.interval_s = interval_ms / 1000
        settings = {"acks": "all", "linger_ms": 1, "client_id": process, **producer_settings}
        self.producer = Producer(bootstrap, **settings)
        self.sends: list = []
        self._task: asyncio.Task | None = None

    async def send(self, count: int = 1) -> list:
        """Send ``count`` records now (not waiting for acknowledgements)."""
        sent = []
        for _ in range(count):
            n = len(self.sends)
            value = f"{self.process}-{n}".encode()
            partition = self.partitions[n % len(self.partitions)]
            handle = await self.producer.send(self.topic, value, partition=partition)
            self.sends.append(self.history.track(self.process, handle, value))
            sent.append(handle)
        return sent

    def start(self) -> "Writer":
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while not self._stopping:  # never cancelled inside send: every record sent is recorded
            await self.send()
            await asyncio.sleep(self.interval_s)  # the load's pace

    async def stop(self, settle_timeout_ms: int | None = None) -> None:
        """Stop sending and close the producer, letting what was sent settle."""
        if self._task is not None:
            self._stopping = True
            await self._task
        await self.producer.close(settle_timeout_ms)

    def acked(self) -> int:
        return sum(1 for s in self.sends if s.outcome == "ok")

    async def wait_acked(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acked() < count:
            assert time.monotonic() < deadline, f"{self.process}: only {self.acked()} of {count} acknowledged"
            await asyncio.sleep(0.01)


class LiveReader:
    """A consumer reading a topic from the start for the whole scenario, every poll recorded."""

    def __init__(self, history: History, process: str, bootstrap: list[str], topic: str,
                 partitions: Iterable[int] = (0,)) -> None:
        self.history = history
        self.process = process
        self.tps = [TopicPartition(topic, p) for p in partitions]
        self.consumer = Consumer(bootstrap, auto_offset_reset="earliest", client_id=process,
                                 fetch_max_wait_ms=100, request_timeout_ms=5_000)
        self._task: asyncio.Task | None = None

    def start(self) -> "LiveReader":
        self.consumer.assign(self.tps)
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        while True:
            records = await self.consumer.poll(timeout_ms=100)
            if records:
                self.history.record_poll(self.process, records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.close()


async def read_back(history: History, bootstrap: list[str], topic: str, partitions: Iterable[int],
                    process: str = "read-back", timeout_s: float = 30.0) -> dict[TopicPartition, int]:
    """Read every partition from its start to its current end (the high watermark); returns the ends."""
    tps = [TopicPartition(topic, p) for p in partitions]
    async with Consumer(bootstrap, auto_offset_reset="earliest", client_id=process, request_timeout_ms=10_000,
                        fetch_max_wait_ms=100) as consumer:
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        ends = {tp: await consumer.position(tp) for tp in tps}
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return ends
            assert time.monotonic() < deadline, f"read-back stuck at {positions}, ends {ends}"
            records = await consumer.poll(timeout_ms=200)
            if records:
                history.record_poll(process, records)


# ---- one topic on its own cluster ----------------------------------------------------------------


@dataclass
class FailoverTopic:
    """A fresh FAILOVER_CONFIG cluster with one topic (replication factor 3, min ISR 2), the
    leader of its partition 0 when the test starts (``old_leader``), the other brokers
    (``followers``) and the History the clients record into."""

    cluster: RunningCluster
    topic: str
    partitions: int
    bootstrap: list[str]
    old_leader: int
    followers: list[int]
    history: History

    @classmethod
    def create(cls, cluster_factory: Callable[..., RunningCluster], topic: str, partitions: int = 1) -> "FailoverTopic":
        cluster = cluster_factory(config=FAILOVER_CONFIG)
        cluster.create_topic(topic, partitions=partitions, replication_factor=3, configs={"min.insync.replicas": "2"})
        old_leader = cluster.leader_of(topic, 0)
        followers = [b.id for b in cluster.brokers if b.id != old_leader]
        return cls(cluster, topic, partitions, cluster.local.bootstrap_servers(), old_leader, followers, History())

    def writer(self, process: str, **settings: Any) -> Writer:
        return Writer(self.history, process, self.bootstrap, self.topic, **settings)

    async def wait_in_sync(self) -> None:
        """Until the old leader and the followers hold the same log of partition 0."""
        await asyncio.to_thread(wait_in_sync, self.cluster, self.topic, 0, [self.old_leader, *self.followers])

    async def leader_writes_alone(self, tail: Writer, count: int) -> None:
        """Pause the followers past their fetch long-poll, then have ``tail`` (acks=1) write
        ``count`` records that only the leader holds. The followers stay paused (``resume_followers``)."""
        acked = tail.acked()
        for follower in self.followers:
            pause(self.cluster, follower)
        await asyncio.sleep(FOLLOWER_PAUSE_S)  # their last long-poll fetches get answered meanwhile
        await tail.send(count)
        await tail.wait_acked(acked + count, timeout_s=5)

    def resume_followers(self) -> None:
        for follower in self.followers:
            resume(self.cluster, follower)

    async def new_leader_among_followers(self) -> broker_pb2.PartitionMetadata:
        return await wait_async(
            lambda: (p := partition_state(self.cluster, self.topic, 0, self.followers))
            and p.leader_id in self.followers and p,
            10, "a new leader elected among the followers")

    async def old_leader_back_in_isr(self, timeout_s: float) -> None:
        await wait_async(lambda: self.old_leader in partition_state(self.cluster, self.topic, 0, self.followers).isr,
                         timeout_s, f"broker-{self.old_leader} back in the ISR")

    async def read_back(self) -> None:
        """Read every partition from its start to its high watermark into the history."""
        await read_back(self.history, self.bootstrap, self.topic, range(self.partitions))

    def old_leader_truncated(self) -> int:
        """Records the old leader's LogTruncated lines removed from partition 0."""
        return records_truncated(self.cluster, self.old_leader, self.topic, 0)
