"""In-memory stand-ins for the client's Producer, Consumer and Admin (no sockets, no processes)."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from brokerlab.errors import ErrorCode, KafkaError


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Any
    value: Any
    headers: list


class PartitionDescription(NamedTuple):
    partition: int
    leader: int
    leader_epoch: int
    replicas: list
    isr: list
    log_end_offset: int
    high_watermark: int


class TopicDescription(NamedTuple):
    name: str
    topic_id: str
    partitions: list
    configs: dict = {}


def topic(name: str, partitions: int = 3) -> TopicDescription:
    parts = [PartitionDescription(p, p + 1, 0, [p + 1, (p + 1) % 3 + 1], [p + 1], 5 * p, 5 * p)
             for p in range(partitions)]
    return TopicDescription(name, f"id-{name}", parts, {"retention.ms": "1000"})


class FakeAdmin:
    def __init__(self, topics: dict[str, TopicDescription]) -> None:
        self.topics = topics
        self.closed = False

    async def describe_topics(self, names=None):
        names = names if names is not None else sorted(self.topics)
        missing = [n for n in names if n not in self.topics]
        if missing:
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {missing[0]!r} does not exist")
        return [self.topics[n] for n in names]

    async def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Acknowledges every record at once, except values listed in ``fail_values``."""

    instances: list["FakeProducer"] = []

    def __init__(self, bootstrap, fail_values=(), **settings) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.fail_values = set(fail_values)
        self.sent: list[tuple] = []
        self.closed = False
        FakeProducer.instances.append(self)

    async def send(self, topic, value, key=None, partition=None, headers=None, timestamp_ms=None):
        if value == "refuse":
            raise KafkaError(ErrorCode.MESSAGE_TOO_LARGE, "the record is too large")
        future = asyncio.get_running_loop().create_future()
        if value in self.fail_values:
            future.set_exception(KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, "leader moved"))
        else:
            part = partition if partition is not None else len(self.sent) % 3
            future.set_result(RecordMetadata(topic, part, len(self.sent), 0))
        self.sent.append((topic, key, value, partition, headers))
        return future

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FakeConsumer:
    """Serves ``records`` (per partition lists) in polls of at most ``per_poll``."""

    def __init__(self, bootstrap, records: dict[int, list[ConsumerRecord]], per_poll: int = 2, **settings) -> None:
        self.records = records
        self.per_poll = per_poll
        self.settings = settings
        self.positions: dict = {}
        self.assigned: list = []
        self.closed = False

    def assign(self, tps) -> None:
        self.assigned = list(tps)

    def seek(self, tp, offset) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, *tps) -> None:
        for tp in tps:
            self.positions[tp] = 0

    async def seek_to_end(self, *tps) -> None:
        for tp in tps:
            self.positions[tp] = len(self.records.get(tp.partition, []))

    async def poll(self, timeout_ms: int = 0):
        out = []
        for tp in self.assigned:
            records = self.records.get(tp.partition, [])
            position = self.positions.get(tp, 0)
            batch = records[position:position + self.per_poll - len(out)]
            self.positions[tp] = position + len(batch)
            out += batch
            if len(out) >= self.per_poll:
                break
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def close(self) -> None:
        self.closed = True


def records(partition: int, count: int, topic: str = "orders") -> list[ConsumerRecord]:
    return [ConsumerRecord(topic, partition, offset, 1000 + offset, f"k{offset}".encode(),
                           f"p{partition}-v{offset}".encode(), [("h", b"1")]) for offset in range(count)]
